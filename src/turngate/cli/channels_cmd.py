"""``turngate channels``: the chat platform bots of a running gateway, read from ``/health``.

``list`` names each channel with its platform, agent and connection state; ``status`` adds
the connection's generation, reconnects, zombies, stale callbacks ignored and heartbeat
round trip, the platform session it resumes (id, the sequence stored through, resumes and
identifies) for platforms that have one, its last error, and what the channel's outbox sent,
retried and failed, plus the deliveries the store holds by state. Exit codes of ``status``:
0 every channel is ready; 1 one is not (connecting, backing off, stopped); 6 refused (token);
7 the gateway is down.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from turngate.cli.common import ExitCode, GatewayClient, client_options, json_option, print_help_of

DESCRIPTION = """\
The chat platform bots of a running gateway (configured under [[channels]] in the TOML file):
list them, or show each connection and outbox in detail.
"""
EPILOG = """\
examples:
  turngate channels list
  turngate channels status
  turngate channels status --json | jq '.[] | select(.state != "ready")'

exit codes of status: 0 every channel ready, 1 one is not, 6 refused (token), 7 down
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``channels`` and its subcommands to ``commands``."""
    group = commands.add_parser(
        "channels",
        parents=[client_options(), json_option()],
        help="list the chat platform bots of a running gateway, or show their state",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group.set_defaults(func=print_help_of(group))
    sub = group.add_subparsers(title="subcommands", metavar="SUBCOMMAND")
    ls = sub.add_parser(
        "list",
        parents=[client_options(), json_option()],
        help="each channel: id, platform, agent, connection state",
        description="List the channels of a running gateway with their connection state.",
        epilog="examples:\n  turngate channels list\n  turngate channels list --json\n",
    )
    ls.set_defaults(func=run_list)
    status = sub.add_parser(
        "status",
        parents=[client_options(), json_option()],
        help="each channel's connection and outbox in detail",
        description="Show each channel's connection (state, generation, reconnects, zombies,"
        " stale callbacks ignored, last error) and outbox (sent, retried, failed).",
        epilog="examples:\n  turngate channels status\n\nexit codes: 0 every channel ready,"
        " 1 one is not, 6 refused, 7 down\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.set_defaults(func=run_status)


def _health(args: argparse.Namespace) -> dict[str, Any]:
    health = GatewayClient(args.url, args.token).call("GET", "/health")
    return health if isinstance(health, dict) else {}


def run_list(args: argparse.Namespace) -> int:
    """``turngate channels list``."""
    channels = _health(args).get("channels") or []
    if args.json:
        for channel in channels:
            print(json.dumps(channel))
        return ExitCode.OK
    if not channels:
        print("no channels configured")
        return ExitCode.OK
    print(f"{'CHANNEL':<20} {'PLATFORM':<10} {'AGENT':<16} STATE")
    for channel in channels:
        print(
            f"{channel['id']:<20} {channel['type']:<10} {channel['agentId']:<16} {channel['state']}"
        )
    return ExitCode.OK


def run_status(args: argparse.Namespace) -> int:
    """``turngate channels status``."""
    health = _health(args)
    channels = health.get("channels") or []
    if args.json:
        print(json.dumps(channels, indent=2))
    else:
        for line in render(channels, health.get("deliveries")):
            print(line)
    ready = all(channel.get("state") == "ready" for channel in channels)
    return ExitCode.OK if ready else ExitCode.PROBLEMS


def render(channels: list[dict[str, Any]], deliveries: dict[str, int] | None) -> list[str]:
    """The text ``turngate channels status`` prints."""
    if not channels:
        return ["no channels configured"]
    lines = []
    for channel in channels:
        state = channel["state"]
        if channel.get("stopped"):
            state += " (stopped for good: fix its configuration and restart)"
        elif channel.get("nextAttemptInS") is not None:
            state += f" (next attempt in {channel['nextAttemptInS']:.1f}s)"
        lines += [
            f"{channel['id']} ({channel['type']}, agent {channel['agentId']}): {state}",
            f"  connection: generation {channel['generation']}, {channel['reconnects']}"
            f" reconnects, {channel['zombies']} zombies, {channel['staleCallbacksIgnored']}"
            " stale callbacks ignored" + _heartbeat(channel),
            *_session(channel),
            f"  outbox: {channel['sent']} sent, {channel['retries']} retried,"
            f" {channel['failed']} failed",
        ]
        if channel.get("lastError"):
            lines.append(f"  last error: {channel['lastError']}")
    if deliveries is not None:
        lines.append(
            "deliveries in the store: "
            + ", ".join(f"{count} {state}" for state, count in deliveries.items())
        )
    return lines


def _heartbeat(channel: dict[str, Any]) -> str:
    rtt = channel.get("heartbeatRttS")
    return "" if rtt is None else f", heartbeat rtt {rtt * 1000:.0f}ms"


def _session(channel: dict[str, Any]) -> list[str]:
    """The platform session line, for channels that resume one (Discord, the IM server)."""
    session, identifies = channel.get("sessionId"), channel.get("identifies", 0)
    if session is None and not identifies:
        return []
    sequence = channel.get("lastSequence")
    return [
        f"  session: {session or 'none'}, stored through sequence"
        f" {'-' if sequence is None else sequence}, {channel.get('resumes', 0)} resumes,"
        f" {identifies} identifies"
    ]
