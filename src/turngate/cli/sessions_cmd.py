"""``turngate sessions``: read a state directory's sessions; ``unstick`` on a running gateway.

``list``, ``show`` and ``export`` open the database read-only, so they work beside a running
gateway and never change anything. Their JSON uses the field names and time format of the
HTTP and WebSocket APIs: camelCase, times in ISO 8601 UTC.

A transcript entry's ``role`` says what it is: ``user`` and ``assistant`` (with ``text``),
``toolCalls`` (with ``toolCalls``: each call's ``id``, ``name`` and ``arguments``, the JSON
text the model sent) and ``toolResult`` (with ``toolCallId``, ``toolName``, ``isError`` and
the result as ``text``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from turngate.cli.common import (
    CliError,
    ExitCode,
    GatewayClient,
    client_options,
    flag,
    int_at_least,
    iso_time,
    json_option,
    print_help_of,
    state_options,
    time_ago,
    utc_time,
)
from turngate.config import load_config
from turngate.core.transcript import EntryKind
from turngate.gateway.frames import WIRE_STATUS
from turngate.store.base import SessionRecord, Store, TranscriptEntry, TurnRecord
from turngate.store.configured import open_store, sqlite_path

KEY_WIDTH = 40
EXPORT_ENTRIES_MAX = 1_000_000
"""``export`` writes at most this many transcript entries (a bound, far above real use)."""

DESCRIPTION = """\
Inspect the sessions stored in a state directory (read-only: safe beside a running gateway),
or force a stuck session free on a running gateway.
"""
EPILOG = """\
examples:
  turngate sessions list
  turngate sessions list --state-dir ~/.turngate --verbose
  turngate sessions show agent:main:main
  turngate sessions export agent:main:main -o main.jsonl
  turngate sessions unstick agent:main:main
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``sessions`` and its subcommands to ``commands``."""
    # The group takes every shared option its subcommands take, so they may come before the
    # subcommand too ("sessions --state-dir X list" and "sessions list --state-dir X").
    group = commands.add_parser(
        "sessions",
        parents=[state_options(), client_options(), json_option()],
        help="inspect sessions in a state directory; unstick one",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    group.set_defaults(func=print_help_of(group))
    sub = group.add_subparsers(title="subcommands", metavar="SUBCOMMAND")

    ls = sub.add_parser(
        "list",
        parents=[state_options(), json_option()],
        help="sessions, most recently active first",
        description="List the sessions of a state directory, most recently active first.",
        epilog="examples:\n  turngate sessions list\n  turngate sessions list --json --limit 500\n",
    )
    ls.add_argument(
        "--limit", metavar="N", type=int_at_least(1), default=50, help="at most N (default 50)"
    )
    ls.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="also show the fencing epoch, the lease and the creation time (default: off)",
    )
    ls.set_defaults(func=run_list)

    show = sub.add_parser(
        "show",
        parents=[state_options(), json_option()],
        help="one session: its turns and transcript, with times",
        description="Show one session: its last turns and transcript, with their times (UTC).",
        epilog="examples:\n  turngate sessions show agent:main:main --limit 5\n",
    )
    show.add_argument("key", metavar="SESSION_KEY", help="the session, e.g. agent:main:main")
    show.add_argument(
        "--limit",
        metavar="N",
        type=int_at_least(1),
        default=20,
        help="the last N turns and 2N transcript entries (default 20)",
    )
    show.set_defaults(func=run_show)

    export = sub.add_parser(
        "export",
        parents=[state_options()],
        help="write a session's whole transcript as JSON lines",
        description="Write a session's whole transcript as JSON lines (one entry per line;"
        " fields as in the HTTP API).",
        epilog="examples:\n  turngate sessions export agent:main:main -o main.jsonl\n",
    )
    export.add_argument("key", metavar="SESSION_KEY", help="the session, e.g. agent:main:main")
    export.add_argument(
        "-o", "--output", metavar="FILE", type=Path, help="file to write (default: stdout)"
    )
    export.set_defaults(func=run_export)

    unstick = sub.add_parser(
        "unstick",
        parents=[client_options(), json_option()],
        help="force a session free on a running gateway (audited)",
        description="Force a session free on a running gateway: its running turn is aborted"
        " and fenced off, its lease released. The gateway logs who did it.",
        epilog="examples:\n  turngate sessions unstick agent:main:main --url http://127.0.0.1:18789\n",
    )
    unstick.add_argument("key", metavar="SESSION_KEY", help="the session, e.g. agent:main:main")
    unstick.set_defaults(func=run_unstick)


# -- reading the state directory ------------------------------------------------------------


def state_store(args: argparse.Namespace) -> Store:
    """The configured store: the state directory's SQLite file, read-only (these commands
    never write), or the PostgreSQL database ``store`` names."""
    config = load_config(args.config, overrides={"state_dir": flag(args, "state_dir")})
    if config.store is not None:
        return open_store(config, readonly=True)
    path = sqlite_path(config)
    if not path.is_file():
        raise CliError(
            f"state dir {config.state_path}: no {path.name} (has a gateway run there? give"
            " --state-dir or TURNGATE_STATE_DIR)",
            ExitCode.STATE_DIR,
        )
    return open_store(config, readonly=True)


def no_such_session(key: str) -> CliError:
    """The error of ``show`` and ``export`` for a session the state directory does not have."""
    return CliError(f"no session {key!r} in this state directory", ExitCode.REFUSED)


def session_json(record: SessionRecord) -> dict[str, Any]:
    """A session as the APIs name its fields."""
    return {
        "sessionKey": record.key,
        "agentId": record.agent_id,
        "turns": record.turns_total,
        "openTurns": record.turns_open,
        "lastActivityAt": iso_time(record.updated_wall),
        "createdAt": iso_time(record.created_wall),
        "epoch": record.epoch,
        "leaseRunId": record.lease_run_id,
        "leaseGrantedAt": iso_time(record.lease_granted_wall),
    }


def turn_json(record: TurnRecord) -> dict[str, Any]:
    """A turn as ``GET /turns/{runId}`` names its fields."""
    body: dict[str, Any] = {
        "runId": record.turn_id,
        "sessionKey": record.session_key,
        "status": WIRE_STATUS[record.state],
        "seq": record.seq,
        "lane": record.lane,
        "delivery": record.delivery,
        "queueMode": record.queue_mode,
        "attempts": record.attempts,
        "epoch": record.epoch,
        "acceptedAt": iso_time(record.accepted_wall),
        "startedAt": iso_time(record.started_wall),
        "endedAt": iso_time(record.ended_wall),
    }
    if record.error_code is not None:
        body["error"] = {"code": record.error_code.value, "message": record.error_message}
    return body


ENTRY_ROLE = {
    EntryKind.USER: "user",
    EntryKind.ASSISTANT: "assistant",
    EntryKind.TOOL_CALLS: "toolCalls",
    EntryKind.TOOL_RESULT: "toolResult",
}
"""The JSON ``role`` of each kind of transcript entry (see the module docstring)."""


def entry_json(entry: TranscriptEntry) -> dict[str, Any]:
    """A transcript entry as the APIs name its fields."""
    item = entry.item
    body: dict[str, Any] = {
        "seq": entry.seq,
        "sessionKey": entry.session_key,
        "role": ENTRY_ROLE[item.kind],
    }
    if item.kind is EntryKind.TOOL_CALLS:
        body["toolCalls"] = [
            {"id": call.id, "name": call.name, "arguments": call.arguments}
            for call in item.tool_calls
        ]
    elif item.kind is EntryKind.TOOL_RESULT:
        body.update(toolCallId=item.call_id, toolName=item.tool_name, isError=item.is_error)
    elif item.turn_id is not None:
        body["turnId"] = item.turn_id
    if item.kind is not EntryKind.TOOL_CALLS:
        body["text"] = item.text
    body.update(runId=entry.run_id, epoch=entry.epoch, at=iso_time(entry.at_wall))
    return body


def entry_lines(entry: TranscriptEntry) -> list[str]:
    """What ``show`` prints of a transcript entry: one line, or one per tool call; the lines
    of a text after its first are indented under it, so entries stay apart."""
    item = entry.item
    when = utc_time(entry.at_wall)
    if item.kind is EntryKind.TOOL_CALLS:
        return [
            f"  {when}  [tool call {call.id}] {call.name} {call.arguments}"
            for call in item.tool_calls
        ]
    if item.kind is EntryKind.TOOL_RESULT:
        what = "tool error" if item.is_error else "tool result"
        head = f"  {when}  [{what} {item.call_id}] {item.tool_name}: "
    else:
        head = f"  {when}  [{item.kind.value}] "
    first, *rest = item.text.split("\n")
    indent = " " * (len(when) + 4)
    return [head + first, *(indent + line for line in rest)]


def run_list(args: argparse.Namespace) -> int:
    """``turngate sessions list``."""

    async def read() -> list[SessionRecord]:
        store = state_store(args)
        await store.open()
        try:
            return await store.sessions(args.limit)
        finally:
            await store.close()

    rows = asyncio.run(read())
    if args.json:
        for row in rows:
            print(json.dumps(session_json(row)))
        return ExitCode.OK
    if not rows:
        print("no sessions yet")
        return ExitCode.OK
    now = time.time()
    header = f"{'SESSION':<{KEY_WIDTH}} {'TURNS':>6} {'OPEN':>5}  LAST ACTIVITY"
    if args.verbose:
        header += f"{'':<28} {'EPOCH':>6}  {'CREATED (UTC)':<19}  LEASE"
    print(header)
    for row in rows:
        line = (
            f"{row.key:<{KEY_WIDTH}} {row.turns_total:>6} {row.turns_open:>5}"
            f"  {time_ago(row.updated_wall, now):<41}"
        )
        if args.verbose:
            line += f" {row.epoch:>6}  {utc_time(row.created_wall):<19}  {row.lease_run_id or '-'}"
        print(line.rstrip())
    return ExitCode.OK


def run_show(args: argparse.Namespace) -> int:
    """``turngate sessions show``."""

    async def read() -> tuple[SessionRecord, list[TurnRecord], list[TranscriptEntry]]:
        store = state_store(args)
        await store.open()
        try:
            session = await store.session(args.key)
            if session is None:
                raise no_such_session(args.key)
            turns = await store.session_turns(args.key, args.limit)
            transcript = await store.transcript(args.key, args.limit * 2)
        finally:
            await store.close()
        return session, turns, transcript

    session, turns, transcript = asyncio.run(read())
    if args.json:
        body = session_json(session)
        body["turnList"] = [turn_json(turn) for turn in turns]
        body["transcript"] = [entry_json(entry) for entry in transcript]
        print(json.dumps(body, indent=2))
        return ExitCode.OK
    now = time.time()
    print(f"session {session.key}  (agent {session.agent_id})")
    print(f"  last activity {time_ago(session.updated_wall, now)}")
    print(f"  created       {utc_time(session.created_wall)} UTC")
    lease = session.lease_run_id or "none"
    print(f"  epoch {session.epoch}, lease {lease}")
    print(
        f"turns: {session.turns_total} ({session.turns_open} open); the last {len(turns)},"
        " times UTC:"
    )
    for turn in turns:
        error = f" {turn.error_code.value}" if turn.error_code else ""
        lane = turn.lane + (f" ({turn.delivery})" if turn.delivery else "")
        print(
            f"  {utc_time(turn.accepted_wall)}  #{turn.seq:<5} {turn.turn_id:<34}"
            f" {WIRE_STATUS[turn.state]:<9} {lane}{error}"
        )
    print("transcript (times UTC):")
    for entry in transcript:
        for line in entry_lines(entry):
            print(line)
    return ExitCode.OK


def run_export(args: argparse.Namespace) -> int:
    """``turngate sessions export``."""

    async def read() -> list[TranscriptEntry]:
        store = state_store(args)
        await store.open()
        try:
            if await store.session(args.key) is None:
                raise no_such_session(args.key)
            return await store.transcript(args.key, EXPORT_ENTRIES_MAX)
        finally:
            await store.close()

    entries = asyncio.run(read())
    text = "".join(json.dumps(entry_json(entry)) + "\n" for entry in entries)
    if args.output is None:
        sys.stdout.write(text)
        return ExitCode.OK
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror}", ExitCode.USAGE) from None
    return ExitCode.OK


def run_unstick(args: argparse.Namespace) -> int:
    """``turngate sessions unstick``: on a running gateway."""
    answer = GatewayClient(args.url, args.token).call(
        "POST", "/sessions/unstick", {"sessionKey": args.key}
    )
    if args.json:
        print(json.dumps(answer))
    elif answer.get("unstuck"):
        print(f"{args.key}: forced free; ended {', '.join(answer.get('runIds', []))}")
    else:
        print(f"{args.key}: nothing was running")
    return ExitCode.OK
