"""``turngate status``: what a running gateway is doing, read from its ``GET /health``.

It prints whether the gateway is up, its version, uptime and address, the state directory and
who holds it, storage, sessions (active, running, queued), stalled and slow runs with their
ages, the lanes with their next fires, the channels with their connection state, and the
providers with the agents that use them.

Exit codes: 0 the gateway is live; 1 it is up but degraded (storage refuses writes); 6 it
refused the request (a wrong or missing token); 7 it is down (unreachable, no answer in time,
or not a turngate gateway), printed as one line ``down: <why>``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from turngate.cli.common import CliError, ExitCode, GatewayClient, client_options, json_option
from turngate.store.statedir import describe_holder

STATUS_TIMEOUT_S = 10.0
"""A gateway that has not answered ``/health`` by then counts as down."""

DESCRIPTION = """Ask a running gateway (GET /health) whether it is up and what it is doing:
version, uptime, address, state directory and its lock holder, storage, sessions, stalled
and slow runs with their ages, lanes with their next fires, and providers."""
EPILOG = """examples:
  turngate status
  turngate status --url http://10.0.0.5:18789 --json | jq .stalled

exit codes: 0 live, 1 degraded (storage refuses writes), 6 refused (token), 7 down"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status`` to ``commands``."""
    parser = commands.add_parser(
        "status",
        parents=[client_options(), json_option()],
        help="is the gateway up, and what is it doing",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Ask the gateway at ``args.url`` for its health and print it (see the module
    docstring for the exit codes)."""
    client = GatewayClient(args.url, args.token, timeout_s=STATUS_TIMEOUT_S)
    try:
        health = client.call("GET", "/health")
    except CliError as exc:
        if exc.exit_code is not ExitCode.UNREACHABLE:
            raise
        if args.json:
            print(json.dumps({"up": False, "url": client.url, "error": exc.message}))
        else:
            print(f"down: {exc.message}")
        return ExitCode.UNREACHABLE
    if not isinstance(health, dict) or "status" not in health:
        print(f"down: {client.url}/health answered, but not with turngate's health")
        return ExitCode.UNREACHABLE
    if args.json:
        print(json.dumps({"up": True, "url": client.url, **health}, indent=2))
    else:
        for line in render(health, client.url):
            print(line)
    return ExitCode.OK if health.get("status") == "live" else ExitCode.PROBLEMS


def render(health: dict[str, Any], url: str) -> list[str]:
    """The text ``turngate status`` prints for a ``/health`` body."""
    now = _gateway_now(health)
    uptime = health.get("uptimeS")
    lines = [
        f"up: turngate {health.get('version', '?')} at {health.get('address') or url},"
        f" {health.get('status')}" + (f", up {duration(uptime)}" if uptime is not None else "")
    ]
    lock = health.get("lock")
    holder = describe_holder(json.dumps(lock)) if lock else "no lock record"
    lines.append(f"state dir: {health.get('stateDir', '?')} (held by {holder})")
    process = health.get("process") or {}
    if process:
        lines.append(
            f"process: {process.get('name', '?')}, pid {process.get('pid')} on"
            f" {process.get('host')}, {process.get('sessionsHeld', 0)} sessions held,"
            f" {health.get('leasesHeld', 0)} running"
        )
    lines.append(f"storage: {_storage(health.get('storage') or {})}")
    lines.append(
        f"sessions: {health.get('sessions', '?')} stored, {health.get('activeSessions', 0)}"
        f" active, {health.get('runningTurns', 0)} running, {health.get('queuedTurns', 0)}"
        " queued"
    )
    lines += _section("stalled", health.get("stalled") or [], _lease)
    lines += _section("slow", health.get("slow") or [], _lease)
    lines += _section("lanes", _lanes(health.get("lanes") or {}, now), str)
    lines += _section("channels", health.get("channels") or [], _channel)
    lines += _section("providers", health.get("providers") or [], _provider)
    return lines


def _section(title: str, items: list[Any], line: Callable[[Any], str]) -> list[str]:
    if not items:
        return [f"{title}: none"]
    return [f"{title} ({len(items)}):", *(f"  {line(item)}" for item in items)]


def _storage(storage: dict[str, Any]) -> str:
    kind, path = storage.get("kind"), storage.get("path")
    where = f"{kind} {path}, " if kind and path else f"{kind}, " if kind else ""
    if storage.get("writable", True) and not storage.get("waitingSessions"):
        return f"{where}writable"
    waiting = storage.get("waitingSessions") or []
    text = f"{where}REFUSING WRITES ({storage.get('reason') or 'unknown reason'})"
    return text + (f"; {len(waiting)} sessions wait for it" if waiting else "")


def _lease(lease: dict[str, Any]) -> str:
    return (
        f"{lease.get('sessionKey')}  run {lease.get('runId')}  {lease.get('state')}"
        f"  age {duration(lease.get('ageS', 0))},"
        f" no progress for {duration(lease.get('sinceProgressS', 0))}"
    )


def _lanes(lanes: dict[str, Any], now: float) -> list[str]:
    lines = [
        f"heartbeat {beat.get('agentId')} on {beat.get('sessionKey')}"
        f" every {duration(beat.get('everyS', 0))}: next {when(beat.get('nextTickAt'), now)},"
        f" fired {beat.get('fired', 0)}, skipped {beat.get('skipped', 0)}"
        for beat in lanes.get("heartbeat") or []
    ]
    cron = lanes.get("cron") or {}
    lines += [
        f"cron {job.get('id')} ({job.get('agentId')}, {job.get('schedule')}):"
        f" next {when(job.get('nextFireAt'), now)}"
        for job in cron.get("next") or []
    ]
    return lines


def _channel(channel: dict[str, Any]) -> str:
    state = str(channel.get("state"))
    if channel.get("stopped"):
        state = f"STOPPED ({channel.get('lastError') or 'refused'})"
    return (
        f"{channel.get('id')} ({channel.get('type')}, agent {channel.get('agentId')}): {state},"
        f" {channel.get('reconnects', 0)} reconnects, {channel.get('sent', 0)} sent,"
        f" {channel.get('failed', 0)} failed"
    )


def _provider(provider: dict[str, Any]) -> str:
    where = f", {provider['baseUrl']}" if provider.get("baseUrl") else ""
    uses = [
        f"{use.get('agentId')} {use.get('model')}" + (" (fallback)" if use.get("fallback") else "")
        for use in provider.get("models") or []
    ]
    return f"{provider.get('id')} ({provider.get('kind')}{where}): {', '.join(uses) or 'unused'}"


def _gateway_now(health: dict[str, Any]) -> float:
    """The gateway's wall clock when it answered (this machine's if it did not say)."""
    started, uptime = health.get("startedAt"), health.get("uptimeS")
    if isinstance(started, int | float) and isinstance(uptime, int | float):
        return float(started) + float(uptime)
    return time.time()


def duration(seconds: float) -> str:
    """``4.2s``, ``12m 04s``, ``2h 03m``, ``3d 04h``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"


def when(wall: float | None, now: float) -> str:
    """``in 12m 04s (2026-12-02 09:00:00 UTC)``, or ``unknown``."""
    if wall is None:
        return "unknown"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))
    delta = wall - now
    relative = f"in {duration(delta)}" if delta >= 0 else f"{duration(-delta)} overdue"
    return f"{relative} ({stamp})"
