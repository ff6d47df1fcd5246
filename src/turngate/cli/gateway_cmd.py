"""``turngate gateway``: run the gateway server.

Everything is checked before it says it listens: the configuration (file, environment,
flags, each provider's API key variable), the state directory (taken with a lock, so a second
gateway on it is told who holds it), the port (a port in use names the process holding it),
then the database, recovery and the lanes. Each failure is one line and its exit code.
"""

from __future__ import annotations

import argparse
import errno
import gc
import os

from turngate.cli.common import (
    CliError,
    ExitCode,
    flag,
    float_at_least,
    int_at_least,
    state_options,
)
from turngate.config import DEFAULT_PORT, GatewayConfig, load_config_with_sources
from turngate.logs import configure_logging
from turngate.port_owner import port_owner
from turngate.tools.mcp_env import configured_secrets

DESCRIPTION = """\
Run the gateway: chat clients talk to it over HTTP and WebSocket, and it runs each session's
turns one at a time against the configured model providers.

Settings come from (later wins): defaults, the TOML file, TURNGATE_* environment variables,
these flags. It prints "turngate listening on URL" once everything has been checked and it
takes requests; any start-up problem is one line on stderr and an exit code instead.
"""

EPILOG = """\
examples:
  turngate gateway
  turngate gateway --port 18790 --state-dir ~/.turngate-test
  TURNGATE_TOKEN=... turngate gateway --host 0.0.0.0
"""

OPENCLAW_PORT = 18789
"""OpenClaw's own gateway listens here by default, as turngate does."""


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gateway`` to ``commands``."""
    parser = commands.add_parser(
        "gateway",
        parents=[state_options()],
        help="run the gateway server",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    add = parser.add_argument_group("gateway").add_argument
    add(
        "--host", metavar="ADDR", help="address to listen on (env TURNGATE_HOST; default 127.0.0.1)"
    )
    add(
        "--port",
        metavar="N",
        type=int_at_least(0),
        help=f"port to listen on, 0 for any free one (env TURNGATE_PORT; default {DEFAULT_PORT})",
    )
    add(
        "--token",
        metavar="TOKEN",
        default=argparse.SUPPRESS,
        help="the token clients must present, 16+ characters (env TURNGATE_TOKEN, better than"
        " the flag; default none: loopback only)",
    )
    add(
        "--provider",
        metavar="ID",
        help="the default agent's provider (env TURNGATE_PROVIDER; default echo)",
    )
    add(
        "--model",
        metavar="NAME",
        help="the default agent's model (env TURNGATE_MODEL; default echo)",
    )
    add(
        "--echo-latency-ms",
        metavar="MS",
        type=float_at_least(0),
        help="the echo provider's reply latency (env TURNGATE_ECHO_LATENCY_MS; default 0)",
    )
    add(
        "--queue-mode",
        metavar="MODE",
        help="default queue mode: followup, collect, steer, interrupt, ..."
        " (env TURNGATE_QUEUE_MODE; default followup)",
    )
    add(
        "--stall-timeout-s",
        metavar="S",
        type=float_at_least(0.001),
        help="abort a run with no progress for this long (env TURNGATE_STALL_TIMEOUT_S;"
        " default 60)",
    )
    add(
        "--run-timeout-s",
        metavar="S",
        type=float_at_least(0.001),
        help="abort a run older than this (env TURNGATE_RUN_TIMEOUT_S; default 600)",
    )
    add(
        "--control-ui-dir",
        metavar="DIR",
        help="serve OpenClaw's Control UI from this folder at / (the dist/control-ui folder of"
        " an installed openclaw package; env TURNGATE_CONTROL_UI_DIR; default none)",
    )
    add(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="log level (env TURNGATE_LOG_LEVEL; default info)",
    )
    parser.set_defaults(func=run_gateway)


def run_gateway(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or Ctrl-C; start-up failures raise a one-line error."""
    from turngate.gateway.app import create_app
    from turngate.gateway.server import GatewayServer, listening_socket, uvicorn_config
    from turngate.store.statedir import StateDirLock

    config, layers = load_config_with_sources(
        args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "state_dir": flag(args, "state_dir"),
            "provider": args.provider,
            "echo_latency_ms": args.echo_latency_ms,
            "queue_mode": args.queue_mode,
            "stall_timeout_s": args.stall_timeout_s,
            "run_timeout_s": args.run_timeout_s,
            "log_level": args.log_level,
            "model": args.model,
            "token": flag(args, "token"),
            "control_ui_dir": args.control_ui_dir,
        },
    )
    configure_logging(
        config.log_level,
        config.log_format,
        secrets=config_secrets(config),
        file=config.log_file,
        file_bytes_max=config.log_file_bytes_max,
        file_backups=config.log_file_backups,
    )
    # The state directory first: a second gateway on it is told who holds it, even when the
    # two also ask for the same port.
    lock = StateDirLock(config.state_path)
    lock.acquire()
    try:
        sock = listening_socket(config.host, config.port)
    except OSError as exc:
        lock.release()
        raise CliError(bind_error(config.host, config.port, exc), ExitCode.LISTEN) from None
    host, port = sock.getsockname()[:2]
    address = f"http://{host}:{port}"
    lock.record(address)

    def ready() -> None:
        settle_heap()
        print(f"turngate listening on {address} (state in {config.state_path})", flush=True)

    app = create_app(config, lock=lock)
    app.state.config_file = layers.file  # for the start-up lines
    loop = "uvloop" if _has_uvloop() else "asyncio"
    GatewayServer(uvicorn_config(app, config, loop=loop), on_ready=ready).run(sockets=[sock])
    return ExitCode.OK


YOUNG_COLLECTION_EVERY = 20_000
"""Allocations between two collections of the youngest generation (CPython's default is 700):
a turn allocates a few thousand short-lived objects, nearly all freed by reference counting,
so the default collects several times a turn for almost nothing."""


def settle_heap() -> None:
    """Once started: freeze what start-up built (modules, configuration, the app), so that no
    collection walks it again, and collect the youngest generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, older, oldest)


def config_secrets(config: GatewayConfig) -> list[str]:
    """The credentials this configuration uses: what the logs must never show."""
    secrets = [config.token] if config.token else []
    for provider in config.all_providers:
        if provider.api_key_env and os.environ.get(provider.api_key_env):
            secrets.append(os.environ[provider.api_key_env])
    for agent in config.agents:
        for server in agent.mcp:
            secrets += configured_secrets(server, os.environ)
    return secrets


def bind_error(host: str, port: int, exc: OSError) -> str:
    """The one line for a failed bind: for a port in use, who holds it, if that can be found."""
    if exc.errno != errno.EADDRINUSE:
        return f"cannot listen on {host}:{port}: {exc.strerror}; choose another --host or --port"
    owner = port_owner(port)
    holder = (
        f"held by {owner.describe()}"
        if owner is not None
        else "the process holding it could not be identified (another user's, or not on this"
        " system's /proc)"
    )
    openclaw = (
        f"; {OPENCLAW_PORT} is also OpenClaw's default gateway port, so that may be OpenClaw"
        if port == OPENCLAW_PORT
        else ""
    )
    return (
        f"port {port} on {host} is already in use, {holder}{openclaw}; stop it or choose"
        " another --port"
    )


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
