"""``turngate send`` and ``turngate probe``: turns sent to a running gateway."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from turngate.cli.common import (
    ExitCode,
    GatewayClient,
    client_options,
    float_at_least,
    int_at_least,
    json_option,
)

STATUS_EXIT = {
    "ok": ExitCode.OK,
    "failed": ExitCode.TURN_FAILED,
    "aborted": ExitCode.TURN_ABORTED,
    "rejected": ExitCode.TURN_REJECTED,
    "expired": ExitCode.TURN_EXPIRED,
}
"""The exit code of ``send`` for each status of its turn."""
SEND_WAIT_S = 960.0
"""How long ``send`` waits for a reply without ``--timeout-ms``: the gateway's default turn
deadline (900 s) and a margin. With ``--timeout-ms``, that deadline and the same margin."""
SEND_MARGIN_S = 60.0

SEND_DESCRIPTION = """\
Send one message to a session of a running gateway and print the reply.

Exit codes: 0 replied; 2 the turn failed, 3 aborted, 4 rejected (busy, queue full),
5 expired; 6, 7: see 'turngate --help'.
"""
SEND_EPILOG = """\
examples:
  turngate send "hello"
  turngate send --session agent:main:work --mode collect "and also this"
  TURNGATE_TOKEN=... turngate send --url http://gateway.lan:18789 --json "hi"
"""
PROBE_DESCRIPTION = """\
Reproduce the field reports: sequential sends to one session, each after the previous answer
and a gap, one line per call as it completes (PASS: the reply contains the call's own token;
a canned or empty reply fails), then a summary. With --burst K, K sends at once, which must
each get their own reply and start in the order they were accepted.

Exit codes: 0 every call passed; 1 a call failed; 6, 7: see 'turngate --help'.
"""
PROBE_EPILOG = """\
examples:
  turngate probe
  turngate probe --calls 20 --gap 0 --session agent:test:probe
  turngate probe --burst 8
"""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``send`` and ``probe`` to ``commands``."""
    send = commands.add_parser(
        "send",
        parents=[client_options(), json_option()],
        help="send one message to a running gateway, print the reply",
        description=SEND_DESCRIPTION,
        epilog=SEND_EPILOG,
    )
    send.add_argument("message", metavar="MESSAGE", help="the message text")
    _turn_options(send, default_session="agent:main:main")
    add = send.add_argument_group("send").add_argument
    add(
        "--idempotency-key",
        metavar="KEY",
        help="retry-safe id; becomes the runId (default: the gateway makes one)",
    )
    add(
        "--no-wait",
        action="store_true",
        help="return once the turn is stored, print its runId (default: wait for the reply)",
    )
    send.set_defaults(func=run_send)

    probe = commands.add_parser(
        "probe",
        parents=[client_options()],
        help="sequential sends to one session, PASS/FAIL each (the field reports' repro)",
        description=PROBE_DESCRIPTION,
        epilog=PROBE_EPILOG,
    )
    _turn_options(probe, default_session="agent:test:main")
    add = probe.add_argument_group("probe").add_argument
    add("--calls", metavar="N", type=int_at_least(1), default=10, help="calls (default 10)")
    add(
        "--gap",
        metavar="S",
        type=float_at_least(0),
        default=1.0,
        help="seconds between calls (default 1)",
    )
    add(
        "--burst",
        metavar="K",
        type=int_at_least(0),
        default=0,
        help="send K at once instead of --calls in sequence (default 0: sequential)",
    )
    probe.set_defaults(func=run_probe_command)


def _turn_options(parser: argparse.ArgumentParser, default_session: str) -> None:
    add = parser.add_argument_group("turn").add_argument
    add(
        "--session",
        metavar="KEY",
        default=default_session,
        help=f"session key (default {default_session})",
    )
    add(
        "--mode",
        metavar="MODE",
        help="queue mode: followup, collect, steer, interrupt, ... (default: the gateway's)",
    )
    add(
        "--timeout-ms",
        metavar="MS",
        type=int_at_least(1),
        help="the turn's deadline in milliseconds (default: the gateway's)",
    )


def turn_body(args: argparse.Namespace, message: str) -> dict[str, Any]:
    """The ``/chat.send`` body for ``message`` with the turn options of ``args``."""
    body: dict[str, Any] = {"sessionKey": args.session, "message": message}
    if args.mode:
        body["queueMode"] = args.mode
    if args.timeout_ms is not None:
        body["timeoutMs"] = args.timeout_ms
    return body


def run_send(args: argparse.Namespace) -> int:
    """``turngate send``."""
    body = turn_body(args, args.message)
    if args.idempotency_key:
        body["idempotencyKey"] = args.idempotency_key
    if args.no_wait:
        body["wait"] = False
    wait_s = SEND_WAIT_S if args.timeout_ms is None else args.timeout_ms / 1000 + SEND_MARGIN_S
    answer = GatewayClient(args.url, args.token, timeout_s=wait_s).call("POST", "/chat.send", body)
    status = str(answer.get("status"))
    if args.json:
        print(json.dumps(answer, indent=2))
    elif status == "ok":
        print(answer.get("reply", ""))
    elif isinstance(answer.get("error"), dict):
        error = answer["error"]
        print(f"{status}: {error.get('message')} [{error.get('code')}]", file=sys.stderr)
    else:
        print(f"{status}: runId {answer.get('runId')}")
    return STATUS_EXIT.get(status, ExitCode.OK)


def run_probe_command(args: argparse.Namespace) -> int:
    """``turngate probe``."""
    from turngate.probe import run_probe

    return asyncio.run(run_probe(args))
