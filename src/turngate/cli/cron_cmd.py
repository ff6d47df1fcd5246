"""``turngate cron``: the scheduled jobs of a running gateway."""

from __future__ import annotations

import argparse
import json
from typing import Any

from turngate.cli.common import (
    ExitCode,
    GatewayClient,
    client_options,
    iso_time,
    json_option,
    print_help_of,
    utc_time,
    wall_of,
)

DESCRIPTION = """\
The cron jobs of a running gateway (configured under [[agents.cron]] in the TOML file): list
them with their next and last fire, or fire one now, outside its schedule.
"""
EPILOG = """\
examples:
  turngate cron list
  turngate cron run digest
  turngate cron --url http://127.0.0.1:18789 list --json
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``cron`` and its subcommands to ``commands``."""
    group = commands.add_parser(
        "cron",
        parents=[client_options(), json_option()],
        help="list or fire the scheduled jobs of a running gateway",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    group.set_defaults(func=print_help_of(group))
    sub = group.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    ls = sub.add_parser(
        "list",
        parents=[client_options(), json_option()],
        help="jobs with their next and last fire (UTC)",
        description="List the cron jobs of a running gateway, with their next and last fire.",
        epilog="examples:\n  turngate cron list\n  turngate cron list --json\n",
    )
    ls.set_defaults(func=run_list)
    run = sub.add_parser(
        "run",
        parents=[client_options(), json_option()],
        help="fire one job now",
        description="Fire one cron job now, outside its schedule. Its turn runs in the job's"
        " session; 'cron list' then shows this as its last fire.",
        epilog="examples:\n  turngate cron run digest\n",
    )
    run.add_argument("job", metavar="JOB", help="the job's id, as 'cron list' shows it")
    run.set_defaults(func=run_fire)


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    """A job from ``GET /cron`` with its times in ISO 8601 UTC (whatever the gateway sent)."""
    return {
        **job,
        "nextFireAt": iso_time(wall_of(job.get("nextFireAt"))),
        "lastFireAt": iso_time(wall_of(job.get("lastFireAt"))),
    }


def run_list(args: argparse.Namespace) -> int:
    """``turngate cron list``."""
    jobs = GatewayClient(args.url, args.token).call("GET", "/cron").get("jobs", [])
    if args.json:
        for job in jobs:
            print(json.dumps(job_json(job)))
        return ExitCode.OK
    if not jobs:
        print("no cron jobs configured")
        return ExitCode.OK
    print(f"{'JOB':<24} {'SCHEDULE':<18} {'NEXT FIRE (UTC)':<20} {'LAST FIRE (UTC)':<20} SESSION")
    for job in jobs:
        print(
            f"{job['id']:<24} {job['schedule']:<18} {utc_time(wall_of(job['nextFireAt'])):<20}"
            f" {utc_time(wall_of(job['lastFireAt'])):<20} {job['sessionKey']}"
        )
    return ExitCode.OK


def run_fire(args: argparse.Namespace) -> int:
    """``turngate cron run``."""
    answer = GatewayClient(args.url, args.token).call("POST", "/cron/run", {"job": args.job})
    if args.json:
        print(json.dumps(answer))
    else:
        print(f"fired {args.job}: runId {answer['runId']} on {answer['sessionKey']}")
    return ExitCode.OK
