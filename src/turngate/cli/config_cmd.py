"""``turngate config check`` and ``turngate config show``: the configuration validated, or
shown value by value with where each value came from, without starting anything.

``check`` reports every problem at once, each naming its source (file and line, environment
variable, flag) and its key, and also what ``gateway`` checks at start-up before it listens:
that the API key variable of every provider a model uses is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from turngate.cli.common import ExitCode, flag, json_option, state_options
from turngate.config import ConfigError, GatewayConfig, load_config_with_sources
from turngate.config_sources import (
    ConfigLayers,
    Problem,
    Setting,
    effective_settings,
)

DESCRIPTION = """\
Check or show the configuration the gateway would run with: defaults, then the TOML file
(--config, TURNGATE_CONFIG, or STATE_DIR/turngate.toml if present), then TURNGATE_*
environment variables. Nothing is started and the state directory is not touched.
"""

CHECK_DESCRIPTION = """\
Validate the configuration without starting the gateway. Every problem is reported at once,
one per line on stderr, each naming its source (file and line, environment variable or flag)
and its key; each provider a model uses must have its API key variable set. Exits 0 when the
gateway would accept the configuration, 8 when it would not.
"""

CHECK_EPILOG = """\
examples:
  $ turngate config check
  config OK: /home/me/.turngate/turngate.toml, 2 agents, 2 providers
  $ turngate config check --config broken.toml
  environment TURNGATE_LOG_FORMAT: log_format must be one of 'text' or 'json', got 'xml'
  file broken.toml line 1: port must be <= 65535, got 70000
  file broken.toml line 5: agents[0].stall_timout is not a setting (did you mean stall_timeout?)
  config invalid: 3 problems
"""

SHOW_DESCRIPTION = """\
Print every setting's effective value and its source: default, file and line, environment
variable or flag. Agents and providers are shown one table per row. Secrets (token, and
anything named like a key, secret or password) are shown as [redacted], never their value.
"""

SHOW_EPILOG = """\
examples:
  $ turngate config show
  KEY            VALUE                        SOURCE
  host           "127.0.0.1"                  default
  port           18800                        environment TURNGATE_PORT
  token          "[redacted]"                 file /home/me/.turngate/turngate.toml line 4
  agents[0]      {"id": "main", ...}          file /home/me/.turngate/turngate.toml line 12
  $ turngate config show --json | jq '.settings[] | select(.key == "port")'
"""

NOT_SET = "(not set)"


GROUP_EPILOG = """\
examples:
  turngate config check
  turngate config show --config turngate.toml
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config`` with its subcommands ``check`` and ``show`` to ``commands``."""
    config = commands.add_parser(
        "config",
        parents=[state_options()],
        help="check or show the configuration",
        description=DESCRIPTION,
        epilog=GROUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = config.add_subparsers(dest="config_command", required=True, metavar="{check,show}")
    check = sub.add_parser(
        "check",
        parents=[state_options(), json_option()],
        help="validate the configuration without starting (exit 8 if invalid)",
        description=CHECK_DESCRIPTION,
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.set_defaults(func=check_config)
    show = sub.add_parser(
        "show",
        parents=[state_options(), json_option()],
        help="print each setting's value and source (secrets redacted)",
        description=SHOW_DESCRIPTION,
        epilog=SHOW_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.set_defaults(func=show_config)


def check_config(args: argparse.Namespace) -> ExitCode:
    """``config check``: "config OK: ..." and 0, or every problem on stderr and 8."""
    try:
        config, layers = _load(args)
    except ConfigError as exc:
        return _report(args, exc.problems)
    problems = api_key_problems(config, layers, os.environ)
    if problems:
        return _report(args, problems)
    where = str(layers.file) if layers.file is not None else "defaults + environment"
    agents, providers = len(config.agents), len(config.all_providers)
    if args.json:
        summary = {"ok": True, "file": _file(layers), "agents": agents, "providers": providers}
        print(json.dumps({**summary, "problems": []}, indent=2))
    else:
        print(f"config OK: {where}, {_count(agents, 'agent')}, {_count(providers, 'provider')}")
    return ExitCode.OK


def show_config(args: argparse.Namespace) -> ExitCode:
    """``config show``: a key / value / source table (or JSON), secrets redacted."""
    try:
        config, layers = _load(args)
    except ConfigError as exc:
        return _report(args, exc.problems)
    settings = effective_settings(config, layers)
    if args.json:
        rows = [{"key": s.key, "value": s.value, "source": str(s.source)} for s in settings]
        print(json.dumps({"file": _file(layers), "settings": rows}, indent=2))
    else:
        print(format_table(settings))
    return ExitCode.OK


def api_key_problems(
    config: GatewayConfig, layers: ConfigLayers, env: Mapping[str, str]
) -> list[Problem]:
    """Providers a model uses whose ``api_key_env`` variable is unset or empty, and channels
    whose ``token_env`` is: the gateway would refuse to start
    (``turngate.gateway.assembly`` reads them)."""
    refs = config.model_refs("main")
    for agent in config.agents:
        refs += config.model_refs(agent.id)
    problems = []
    for i, provider in enumerate(config.providers):
        var = provider.api_key_env
        used = [ref for ref in refs if ref.partition("/")[0] == provider.id]
        if var is not None and used and not env.get(var):
            problems.append(
                layers.problem(
                    ("providers", i, "api_key_env"),
                    f"names {var}, which is not set in the environment (model {used[0]}"
                    " needs its API key)",
                )
            )
    for i, channel in enumerate(config.channels):
        if channel.token_env is not None and not env.get(channel.token_env):
            problems.append(
                layers.problem(
                    ("channels", i, "token_env"),
                    f"names {channel.token_env}, which is not set in the environment (channel"
                    f" {channel.id} needs its token)",
                )
            )
    return problems


def format_table(settings: Sequence[Setting]) -> str:
    """Key, value (JSON, or "(not set)") and source, in aligned columns."""
    rows = [("KEY", "VALUE", "SOURCE")]
    rows += [(s.key, _value(s.value), str(s.source)) for s in settings]
    key_width = max(len(row[0]) for row in rows)
    # A long value (a prompt, an agent's table) does not widen every row: it pushes its own
    # source along instead.
    value_width = min(max(len(row[1]) for row in rows), 40)
    return "\n".join(
        f"{key:<{key_width}}  {value:<{value_width}}  {source}" for key, value, source in rows
    )


def _load(args: argparse.Namespace) -> tuple[GatewayConfig, ConfigLayers]:
    return load_config_with_sources(
        args.config, env=os.environ, overrides={"state_dir": flag(args, "state_dir")}
    )


def _report(args: argparse.Namespace, problems: Sequence[Problem]) -> ExitCode:
    if args.json:
        rows = [{"key": p.key, "source": str(p.source), "message": str(p)} for p in problems]
        print(json.dumps({"ok": False, "problems": rows}, indent=2))
    else:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"config invalid: {_count(len(problems), 'problem')}", file=sys.stderr)
    return ExitCode.CONFIG


def _file(layers: ConfigLayers) -> str | None:
    return str(layers.file) if layers.file is not None else None


def _value(value: Any) -> str:
    return NOT_SET if value is None else json.dumps(value, ensure_ascii=False)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
