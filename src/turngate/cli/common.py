"""What every ``turngate`` command shares: exit codes, the shared options, and the client
that talks to a running gateway.

Exit codes, one per class of outcome, the same for every command (``turngate --help`` and the
README list them):

====  ===================================================================================
0     done
1     a check found problems (``probe``: a call failed; ``sim``: see its own codes)
2-5   ``send``: the turn ended failed (2), aborted (3), rejected (4), expired (5)
6     the gateway refused the request (a 4xx: bad input, wrong or missing token)
7     the gateway could not be reached, did not answer in time, or answered something that
      is not turngate's API
8     the configuration is invalid (file, environment, flags, a missing API key variable)
9     the state directory cannot be used (held by another gateway, not writable)
10    the address cannot be listened on (port in use)
11    storage is unavailable (the database cannot be opened or written)
64    the command line is wrong (unknown option, bad value)
====  ===================================================================================

``doctor`` exits with the number of problems it found (0 when all is well).

Shared options (``--url``, ``--token``, ``--state-dir``, ``--config``, ``--json``) are
accepted before or after the subcommand: each parser level declares them with
``default=SUPPRESS``, so whichever level the user wrote wins, and :func:`resolve` fills in
the environment and the defaults afterwards.
"""

from __future__ import annotations

import argparse
import enum
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from turngate.argtypes import float_at_least as float_at_least
from turngate.argtypes import int_at_least as int_at_least
from turngate.config import DEFAULT_PORT
from turngate.errors import ErrorCode, TurngateError

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"
CALL_TIMEOUT_S = 30.0


class ExitCode(enum.IntEnum):
    """The process exit codes (see the module docstring)."""

    OK = 0
    PROBLEMS = 1
    TURN_FAILED = 2
    TURN_ABORTED = 3
    TURN_REJECTED = 4
    TURN_EXPIRED = 5
    REFUSED = 6
    UNREACHABLE = 7
    CONFIG = 8
    STATE_DIR = 9
    LISTEN = 10
    STORAGE = 11
    USAGE = 64


class CliError(TurngateError):
    """An error a command reports as one line and an exit code."""

    def __init__(self, message: str, exit_code: ExitCode, *, code: ErrorCode | None = None):
        super().__init__(message, code=code)
        self.exit_code = exit_code


EXIT_BY_ERROR_CODE: dict[ErrorCode, ExitCode] = {
    ErrorCode.STATE_DIR_IN_USE: ExitCode.STATE_DIR,
    ErrorCode.STATE_DIR_UNUSABLE: ExitCode.STATE_DIR,
    ErrorCode.STORAGE_UNAVAILABLE: ExitCode.STORAGE,
    ErrorCode.STORE_ERROR: ExitCode.STORAGE,
}
"""Exit codes of turngate errors that reach the command line (anything else a user can
cause there is a configuration error, :attr:`ExitCode.CONFIG`)."""


def exit_code_of(error: TurngateError) -> ExitCode:
    """The exit code a command ends with for ``error``."""
    if isinstance(error, CliError):
        return error.exit_code
    return EXIT_BY_ERROR_CODE.get(error.code, ExitCode.CONFIG)


class UsageError(CliError):
    """The command line itself is wrong: one line, exit code 64."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ExitCode.USAGE)


class CliParser(argparse.ArgumentParser):
    """argparse's parser, except that a usage error is one line and exit code 64 (argparse
    would print the whole usage and exit 2, which ``send`` uses for a failed turn)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` (``main`` prints it) instead of exiting."""
        raise UsageError(f"{self.prog}: {message} (see '{self.prog} --help')")


def print_help_of(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """A command function for a group given no subcommand: print its help, exit 0."""

    def show(args: argparse.Namespace) -> int:
        del args
        parser.print_help()
        return ExitCode.OK

    return show


# -- option values ---------------------------------------------------------------------------


def wall_of(value: float | str | None) -> float | None:
    """Seconds since the epoch from what the HTTP API gives: seconds, or an ISO 8601 time."""
    if value is None or isinstance(value, int | float):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def iso_time(wall: float | None) -> str | None:
    """``wall`` as ISO 8601 UTC with milliseconds (``2025-01-31T09:00:00.000Z``), as the APIs
    write times; None stays None."""
    if wall is None:
        return None
    stamp = datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def utc_time(wall: float | None) -> str:
    """``wall`` for a table: ``2025-01-31 09:00:00`` (UTC), or ``-``."""
    if wall is None:
        return "-"
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def time_ago(wall: float | None, now: float) -> str:
    """``wall`` for people: ``3 min ago (2025-01-31 09:00 UTC)``, or ``-``."""
    if wall is None:
        return "-"
    seconds = max(0.0, now - wall)
    if seconds < 60:
        relative = "just now"
    elif seconds < 3600:
        relative = f"{seconds // 60:.0f} min ago"
    elif seconds < 86_400:
        relative = f"{seconds // 3600:.0f} h ago"
    else:
        relative = f"{seconds // 86_400:.0f} days ago"
    utc = datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{relative} ({utc})"


# -- shared options -------------------------------------------------------------------------


SHARED_DEFAULTS: dict[str, tuple[str | None, Any]] = {
    "url": ("TURNGATE_URL", DEFAULT_URL),
    "token": ("TURNGATE_TOKEN", None),
    "state_dir": ("TURNGATE_STATE_DIR", None),
    "config": ("TURNGATE_CONFIG", None),
    "json": (None, False),
}
"""Each shared option: its environment variable and its default."""


def client_options() -> argparse.ArgumentParser:
    """``--url`` and ``--token``: for commands that talk to a running gateway."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("gateway")
    group.add_argument(
        "--url",
        metavar="URL",
        type=http_url,
        default=argparse.SUPPRESS,
        help=f"the running gateway (env TURNGATE_URL; default {DEFAULT_URL})",
    )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=argparse.SUPPRESS,
        help="the gateway token (env TURNGATE_TOKEN, better than the flag; default none)",
    )
    return parent


def state_options() -> argparse.ArgumentParser:
    """``--state-dir`` and ``--config``: for commands that read the configuration or the
    state directory."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("configuration")
    group.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML config file (env TURNGATE_CONFIG; default STATE_DIR/turngate.toml if present)",
    )
    group.add_argument(
        "--state-dir",
        metavar="DIR",
        type=Path,
        default=argparse.SUPPRESS,
        help="state directory (env TURNGATE_STATE_DIR; default ~/.turngate)",
    )
    return parent


def json_option() -> argparse.ArgumentParser:
    """``--json``: machine-readable output."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON instead of text (default: text)",
    )
    return parent


def http_url(text: str) -> str:
    """An argparse ``type=``: an ``http://`` or ``https://`` URL."""
    if not text.startswith(("http://", "https://")) or len(text) <= len("https://"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http:// or https:// URL (e.g. {DEFAULT_URL})"
        )
    return text


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the shared options nobody wrote from the environment, then their defaults.

    Which ones the user did write is kept (see :func:`flag`), so that a value read from the
    environment is never reported as coming from a flag.
    """
    args.flags_given = frozenset(name for name in SHARED_DEFAULTS if hasattr(args, name))
    for name, (env_var, default) in SHARED_DEFAULTS.items():
        if hasattr(args, name):
            continue
        value: Any = os.environ.get(env_var) if env_var else None
        if value is not None and name in ("state_dir", "config"):
            value = Path(value)
        if value and name == "url":
            try:
                value = http_url(value)
            except argparse.ArgumentTypeError as exc:
                raise CliError(f"TURNGATE_URL: {exc}", ExitCode.CONFIG) from None
        setattr(args, name, default if value in (None, "") else value)
    return args


def flag(args: argparse.Namespace, name: str) -> Any:
    """The shared option ``name`` if it was given on the command line, else None: what to
    pass to :func:`turngate.config.load_config` as a flag (it reads the environment itself)."""
    return getattr(args, name) if name in getattr(args, "flags_given", ()) else None


# -- talking to a running gateway -----------------------------------------------------------


class GatewayClient:
    """One running gateway, with its token: JSON in, JSON out, every failure a
    :class:`CliError` with the right exit code."""

    def __init__(self, url: str, token: str | None, timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def headers(self) -> dict[str, str]:
        """The request headers (the bearer token, when there is one)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; its JSON body (refusals raise :class:`CliError`)."""
        import httpx2

        try:
            with httpx2.Client(base_url=self.url, timeout=self.timeout_s) as client:
                response = client.request(method, path, json=body, headers=self.headers())
        except httpx2.HTTPError as exc:
            raise self.unreachable(exc) from None
        return self.read(response)

    def unreachable(self, exc: Exception) -> CliError:
        """The error for a request that got no answer (``exc``: an ``httpx2.HTTPError``)."""
        import httpx2

        if isinstance(exc, httpx2.TimeoutException):
            return CliError(
                f"{self.url} did not answer within {self.timeout_s:g}s", ExitCode.UNREACHABLE
            )
        return CliError(
            f"cannot reach the gateway at {self.url} ({_reason(exc)}); is it running?"
            " (start it with 'turngate gateway', or give --url)",
            ExitCode.UNREACHABLE,
        )

    def read(self, response: Any) -> Any:
        """The JSON body of ``response`` (an ``httpx2.Response``), checked to be turngate's."""
        try:
            payload = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise CliError(
                f"{self.url} answered HTTP {response.status_code} with {kind}, not turngate's"
                " JSON; is --url a turngate gateway?",
                ExitCode.UNREACHABLE,
            ) from None
        if not isinstance(payload, dict):
            raise CliError(
                f"{self.url} answered JSON that is not turngate's; is --url a turngate gateway?",
                ExitCode.UNREACHABLE,
            )
        if response.status_code < 400 or ("runId" in payload and "status" in payload):
            # A turn that ended badly is an answer (send maps its status), not a refusal.
            return payload
        error = payload.get("error")
        if not isinstance(error, dict):
            raise CliError(
                f"{self.url} answered HTTP {response.status_code} without turngate's error"
                " body; is --url a turngate gateway?",
                ExitCode.UNREACHABLE,
            )
        message = str(error.get("message", "refused"))
        code = str(error.get("code", response.status_code))
        if response.status_code == 401:
            message += " (give the gateway token: --token or TURNGATE_TOKEN)"
        by_status = ExitCode.UNREACHABLE if response.status_code >= 500 else ExitCode.REFUSED
        known = {c.value: c for c in ErrorCode}.get(code)
        exit_code = by_status if known is None else EXIT_BY_ERROR_CODE.get(known, by_status)
        raise CliError(f"the gateway refused: {message} [{code}]", exit_code)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
