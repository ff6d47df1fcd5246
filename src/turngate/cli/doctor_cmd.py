"""``turngate doctor``: offline checks of what a gateway needs to start and to work, each
with a verdict (ok, warning, problem) and what to do (the checks: :mod:`turngate.doctor`).

Exit code: the number of problems found (0 when all is well; at most 63). Warnings do not
count.
"""

from __future__ import annotations

import argparse
import json

from turngate.cli.common import flag, json_option, state_options
from turngate.doctor import Finding, Target, Verdict, problems, run_checks

EXIT_PROBLEMS_MAX = 63
"""Exit codes above this mean other things (64: a wrong command line)."""

DESCRIPTION = """Check, without a running gateway, what one needs: a valid configuration,
a writable state directory no other gateway holds, a free port, a token when listening
beyond loopback, each provider's API key variable and server, and free disk space.
The exit code is the number of problems found (warnings do not count)."""
EPILOG = """examples:
  turngate doctor
  turngate doctor --config /etc/turngate.toml --host 0.0.0.0 --port 8080
  turngate doctor --json | jq '.[] | select(.verdict != "ok")'"""
WIDTH_VERDICT = 8


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``doctor`` to ``commands``."""
    parser = commands.add_parser(
        "doctor",
        parents=[state_options(), json_option()],
        help="check the set-up before starting a gateway (exit code: number of problems)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host", metavar="HOST", help="the address the gateway would listen on (default: config)"
    )
    parser.add_argument(
        "--port", metavar="PORT", type=int, help="the port it would listen on (default: config)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run every check, print the verdicts; the exit code is the number of problems."""
    findings = run_checks(Target(args.config, flag(args, "state_dir"), args.host, args.port))
    if args.json:
        print(json.dumps([finding.as_json() for finding in findings], indent=2))
    else:
        for line in render(findings):
            print(line)
    return min(problems(findings), EXIT_PROBLEMS_MAX)


def render(findings: list[Finding]) -> list[str]:
    """One line per check (and one more with the fix, for what is not ok), then a count."""
    width = max((len(finding.check) for finding in findings), default=0)
    lines = []
    for finding in findings:
        lines.append(
            f"{finding.verdict.value:<{WIDTH_VERDICT}} {finding.check:<{width}}  {finding.message}"
        )
        if finding.fix and finding.verdict is not Verdict.OK:
            lines.append(f"{'':<{WIDTH_VERDICT}} {'':<{width}}  -> {finding.fix}")
    count = problems(findings)
    warnings = sum(1 for finding in findings if finding.verdict is Verdict.WARNING)
    lines.append(f"{count} problem{'s' * (count != 1)}, {warnings} warning{'s' * (warnings != 1)}")
    return lines
