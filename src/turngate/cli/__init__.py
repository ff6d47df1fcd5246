"""The ``turngate`` command: ``gateway``, ``send``, ``probe``, ``sessions``.

Exit codes of ``send`` and ``probe``: 0 ok; 2 failed; 3 aborted; 4 rejected; 5 expired;
6 the gateway refused the request (4xx); 7 the gateway could not be reached or did not answer;
1 a probe saw at least one call fail.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from turngate import __version__
from turngate.config import DEFAULT_PORT, GatewayConfig, load_config
from turngate.errors import ErrorCode, TurngateError
from turngate.logs import configure_logging

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
STATUS_EXIT = {"ok": 0, "failed": 2, "aborted": 3, "rejected": 4, "expired": 5}
EXIT_REFUSED = 6
EXIT_UNREACHABLE = 7


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``turngate`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:
        from turngate.sim.command import main as sim_main

        return sim_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except TurngateError as exc:
        print(f"turngate: {exc.message} [{exc.code.value}]", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turngate", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"turngate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gw = sub.add_parser("gateway", help="run the gateway server")
    gw.add_argument("--config", type=Path, help="TOML config file (or TURNGATE_CONFIG)")
    gw.add_argument("--host", help="address to bind (default 127.0.0.1)")
    gw.add_argument("--port", type=int, help=f"port to bind, 0 for any (default {DEFAULT_PORT})")
    gw.add_argument("--state-dir", type=Path, help="state directory (default ~/.turngate)")
    gw.add_argument("--provider", help="the default agent's provider id (default echo)")
    gw.add_argument("--echo-latency-ms", type=float, help="echo provider latency")
    gw.add_argument("--queue-mode", help="default queue mode (default followup)")
    gw.add_argument("--stall-timeout-s", type=float, help="abort a run with no progress for this")
    gw.add_argument("--run-timeout-s", type=float, help="abort a run older than this")
    gw.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    gw.add_argument("--model", help="the default agent's model at --provider")
    gw.add_argument(
        "--token", help="gateway token clients must present (or TURNGATE_TOKEN; prefer the env)"
    )
    gw.set_defaults(func=_cmd_gateway)

    send = sub.add_parser("send", help="send one message to a running gateway, print the reply")
    _client_args(send)
    send.add_argument("message")
    send.add_argument("--idempotency-key", help="retry-safe id; becomes the runId")
    send.add_argument("--no-wait", action="store_true", help="return once the turn is stored")
    send.add_argument("--json", action="store_true", help="print the whole response body")
    send.set_defaults(func=_cmd_send)

    probe = sub.add_parser(
        "probe", help="the field reports' repro: sequential sends to one session, PASS/FAIL each"
    )
    _client_args(probe, default_session="agent:test:main")
    probe.add_argument("--calls", type=int, default=10, help="sequential calls (default 10)")
    probe.add_argument("--gap", type=float, default=1.0, help="seconds between calls (default 1)")
    probe.add_argument("--burst", type=int, default=0, help="send K at once instead")
    probe.set_defaults(func=_cmd_probe)

    # Handled before parsing (its options are the simulator's own); listed for --help.
    sub.add_parser("sim", help="run the deterministic simulator: turngate sim --help")

    sessions = sub.add_parser("sessions", help="inspect sessions in a state directory")
    sessions.add_argument("--state-dir", type=Path, help="state directory (default ~/.turngate)")
    sessions.add_argument("--config", type=Path, help="TOML config file")
    ssub = sessions.add_subparsers(dest="sessions_command", required=True)
    ls = ssub.add_parser("list", help="sessions, most recent first")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_cmd_sessions_list)
    show = ssub.add_parser("show", help="one session: its turns and transcript")
    show.add_argument("key")
    show.add_argument("--limit", type=int, default=20)
    show.set_defaults(func=_cmd_sessions_show)
    unstick = ssub.add_parser("unstick", help="force a session free on a running gateway (audited)")
    unstick.add_argument("key")
    unstick.add_argument(
        "--url", default=os.environ.get("TURNGATE_URL", DEFAULT_URL), help="gateway base URL"
    )
    unstick.set_defaults(func=_cmd_sessions_unstick)
    export = ssub.add_parser("export", help="write a session's transcript as JSONL")
    export.add_argument("key")
    export.add_argument("-o", "--output", type=Path, help="file to write (default stdout)")
    export.set_defaults(func=_cmd_sessions_export)
    cron = sub.add_parser("cron", help="scheduled jobs of a running gateway")
    csub = cron.add_subparsers(dest="cron_command", required=True)
    for name, help_text in (("list", "jobs with their next and last fire"), ("run", "fire now")):
        command = csub.add_parser(name, help=help_text)
        command.add_argument(
            "--url", default=os.environ.get("TURNGATE_URL", DEFAULT_URL), help="gateway base URL"
        )
        if name == "run":
            command.add_argument("job")
        command.set_defaults(func=_cmd_cron_run if name == "run" else _cmd_cron_list)
    return parser


def _client_args(parser: argparse.ArgumentParser, default_session: str = "agent:main:main") -> None:
    parser.add_argument(
        "--url", default=os.environ.get("TURNGATE_URL", DEFAULT_URL), help="gateway base URL"
    )
    parser.add_argument("--session", default=default_session, help="session key")
    parser.add_argument("--mode", help="queue mode for the message(s)")
    parser.add_argument("--timeout-ms", type=int, help="the turn's deadline")


# -- gateway ------------------------------------------------------------------------------


def _cmd_gateway(args: argparse.Namespace) -> int:
    from turngate.gateway.app import create_app
    from turngate.gateway.server import GatewayServer, listening_socket, uvicorn_config
    from turngate.store.statedir import StateDirLock

    config = load_config(
        args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "state_dir": args.state_dir,
            "provider": args.provider,
            "echo_latency_ms": args.echo_latency_ms,
            "queue_mode": args.queue_mode,
            "stall_timeout_s": args.stall_timeout_s,
            "run_timeout_s": args.run_timeout_s,
            "log_level": args.log_level,
            "model": args.model,
            "token": args.token,
        },
    )
    configure_logging(config.log_level, config.log_format, secrets=config_secrets(config))
    # The state directory first: a second gateway on it is told who holds it, even when the
    # two also ask for the same port.
    lock = StateDirLock(config.state_path)
    lock.acquire()
    try:
        sock = listening_socket(config.host, config.port)
    except OSError as exc:
        lock.release()
        raise TurngateError(_bind_error(config.host, config.port, exc)) from None
    host, port = sock.getsockname()[:2]
    address = f"http://{host}:{port}"
    lock.record(address)

    def ready() -> None:
        print(f"turngate listening on {address} (state in {config.state_path})", flush=True)

    app = create_app(config, lock=lock)
    loop = "uvloop" if _has_uvloop() else "asyncio"
    GatewayServer(uvicorn_config(app, config, loop=loop), on_ready=ready).run(sockets=[sock])
    return 0


def config_secrets(config: GatewayConfig) -> list[str]:
    """The credentials this configuration uses: what the logs must never show."""
    secrets = [config.token] if config.token else []
    for provider in config.all_providers:
        if provider.api_key_env and os.environ.get(provider.api_key_env):
            secrets.append(os.environ[provider.api_key_env])
    return secrets


def _bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another turngate, or OpenClaw's own"
            " gateway, whose default port is the same); stop it or choose --port"
        )
    return f"cannot listen on {host}:{port}: {exc.strerror}"


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


# -- send and probe -----------------------------------------------------------------------


def _send_body(args: argparse.Namespace, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"sessionKey": args.session, "message": message, **extra}
    if args.mode:
        body["queueMode"] = args.mode
    if args.timeout_ms:
        body["timeoutMs"] = args.timeout_ms
    return body


def _cmd_send(args: argparse.Namespace) -> int:
    import httpx2

    extra: dict[str, Any] = {}
    if args.idempotency_key:
        extra["idempotencyKey"] = args.idempotency_key
    if args.no_wait:
        extra["wait"] = False
    try:
        with httpx2.Client(base_url=args.url, timeout=httpx2.Timeout(10.0, read=None)) as client:
            response = client.post("/chat.send", json=_send_body(args, args.message, **extra))
    except httpx2.HTTPError as exc:
        print(f"turngate: cannot reach {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    body = response.json()
    if args.json:
        print(json.dumps(body, indent=2))
    status = body.get("status")
    if status is None:
        error = body.get("error", {})
        print(f"turngate: refused: {error.get('message')} [{error.get('code')}]", file=sys.stderr)
        return EXIT_REFUSED
    if not args.json:
        if status == "ok":
            print(body["reply"])
        elif "error" in body:
            error = body["error"]
            print(f"{status}: {error['message']} [{error['code']}]", file=sys.stderr)
        else:
            print(f"{status}: runId {body['runId']}")
    return STATUS_EXIT.get(status, 0)


def _cmd_probe(args: argparse.Namespace) -> int:
    from turngate.probe import run_probe

    return asyncio.run(run_probe(args))


def _call(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request to a running gateway; its JSON body, or an error raised as TurngateError."""
    import httpx2

    try:
        with httpx2.Client(base_url=url, timeout=30.0) as client:
            response = client.request(method, path, json=body)
    except httpx2.HTTPError as exc:
        raise TurngateError(f"cannot reach {url}: {exc}") from exc
    payload = response.json()
    if response.status_code >= 400 and "error" in payload:
        error = payload["error"]
        raise TurngateError(f"{error['message']}", code=ErrorCode(error["code"]))
    return payload


def _cmd_cron_list(args: argparse.Namespace) -> int:
    jobs = _call(args.url, "GET", "/cron")["jobs"]
    print(f"{'JOB':<24} {'SCHEDULE':<18} {'NEXT FIRE (UTC)':<20} {'LAST FIRE (UTC)':<20} SESSION")
    for job in jobs:
        print(
            f"{job['id']:<24} {job['schedule']:<18} {_when(job['nextFireAt']):<20}"
            f" {_when(job['lastFireAt']):<20} {job['sessionKey']}"
        )
    return 0


def _cmd_cron_run(args: argparse.Namespace) -> int:
    body = _call(args.url, "POST", "/cron/run", {"job": args.job})
    print(f"fired {args.job}: runId {body['runId']} on {body['sessionKey']}")
    return 0


def _when(wall: float | None) -> str:
    if wall is None:
        return "-"
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cmd_sessions_unstick(args: argparse.Namespace) -> int:
    body = _call(args.url, "POST", "/sessions/unstick", {"sessionKey": args.key})
    if body["unstuck"]:
        print(f"{args.key}: forced free; ended {', '.join(body['runIds'])}")
    else:
        print(f"{args.key}: nothing was running")
    return 0


# -- sessions -----------------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> Any:
    from turngate.gateway.app import DB_FILE
    from turngate.store.sqlite import SqliteStore

    config = load_config(args.config, overrides={"state_dir": args.state_dir})
    path = config.state_path / DB_FILE
    if not path.exists():
        raise TurngateError(
            f"state dir {config.state_path}: no {DB_FILE} (has a gateway run here?)"
        )
    # Read-only: these commands work beside a running gateway and never write.
    return SqliteStore(path, readonly=True)


def _cmd_sessions_list(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = _open_store(args)
        await store.open()
        try:
            rows = await store.sessions(args.limit)
        finally:
            await store.close()
        if args.json:
            for row in rows:
                print(json.dumps(_as_dict(row)))
            return 0
        print(f"{'SESSION':<48} {'TURNS':>6} {'OPEN':>5} {'EPOCH':>6}  LEASE")
        for row in rows:
            print(
                f"{row.key:<48} {row.turns_total:>6} {row.turns_open:>5} {row.epoch:>6}"
                f"  {row.lease_run_id or '-'}"
            )
        return 0

    return asyncio.run(go())


def _cmd_sessions_show(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = _open_store(args)
        await store.open()
        try:
            session = await store.session(args.key)
            if session is None:
                print(f"turngate: no session {args.key!r}", file=sys.stderr)
                return EXIT_REFUSED
            turns = await store.session_turns(args.key, args.limit)
            transcript = await store.transcript(args.key, args.limit * 2)
        finally:
            await store.close()
        print(f"session {session.key}  epoch {session.epoch}  lease {session.lease_run_id or '-'}")
        print(f"turns: {session.turns_total} ({session.turns_open} open)")
        for turn in turns:
            extra = turn.error_code.value if turn.error_code else ""
            lane = turn.lane + (f" ({turn.delivery})" if turn.delivery else "")
            print(f"  #{turn.seq:<6} {turn.turn_id:<34} {turn.state.value:<9} {lane:<22} {extra}")
        print("transcript:")
        for entry in transcript:
            print(f"  [{entry.role}] {entry.text}")
        return 0

    return asyncio.run(go())


def _cmd_sessions_export(args: argparse.Namespace) -> int:
    async def go() -> int:
        store = _open_store(args)
        await store.open()
        try:
            entries = await store.transcript(args.key, 1_000_000)
        finally:
            await store.close()
        lines = [json.dumps(_as_dict(entry)) for entry in entries]
        text = "".join(line + "\n" for line in lines)
        if args.output:
            args.output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0

    return asyncio.run(go())


def _as_dict(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


if __name__ == "__main__":
    sys.exit(main())
