"""The state directory belongs to one gateway process at a time.

Two gateways on one SQLite file break each other: the second one's recovery takes over the
first one's open turns, and the first one's sessions then die on stale epochs. So a gateway
holds an exclusive lock (``flock``) on ``gateway.lock`` in its state directory for its whole
life; the file says who holds it (pid, address, since when). The kernel drops the lock when
the process ends, however it ends (``kill -9`` included), so a crash never leaves a stale one.

Read-only commands (``turngate sessions list/show/export``) take no lock: they open the
database read-only, beside a running gateway.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO

from turngate.errors import ErrorCode, StateDirError

LOCK_FILE = "gateway.lock"


class StateDirLock:
    """An exclusive hold on a state directory. :meth:`acquire`, then :meth:`release`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._file: IO[str] | None = None
        self._since = 0.0

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._file is not None

    def acquire(self, address: str | None = None) -> None:
        """Take the state directory, or raise :class:`StateDirError` saying why not: another
        gateway holds it (``state_dir_in_use``, naming its pid and address) or it cannot be
        created or written (``state_dir_unusable``)."""
        if self._file is not None:
            return
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            file = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise StateDirError(
                f"state dir {self.state_dir}: cannot use it ({exc.strerror}); give a writable"
                " directory with --state-dir or TURNGATE_STATE_DIR"
            ) from None
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = describe_holder(file.read())
            file.close()
            raise StateDirError(
                f"state dir {self.state_dir} is in use by another turngate gateway ({holder});"
                " stop that one, or give this one its own --state-dir",
                code=ErrorCode.STATE_DIR_IN_USE,
            ) from None
        except OSError as exc:
            file.close()
            raise StateDirError(
                f"state dir {self.state_dir}: cannot lock {LOCK_FILE} ({exc.strerror})"
            ) from None
        self._file = file
        self._since = time.time()
        self.record(address)

    def record(self, address: str | None) -> None:
        """Write who holds the lock (this process, serving at ``address``)."""
        file = self._file
        if file is None:
            return
        holder = {"pid": os.getpid(), "address": address, "since": self._since}
        try:
            file.seek(0)
            file.truncate()
            file.write(json.dumps(holder) + "\n")
            file.flush()
        except OSError:
            pass  # the lock holds either way; only the note for a second gateway is missing

    def release(self) -> None:
        """Give the state directory up (also done by the kernel when the process ends)."""
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.truncate(0)
            file.close()


def describe_holder(text: str) -> str:
    """``pid 4242, serving http://127.0.0.1:18789, since 2026-12-01 14:02:11 UTC`` from a
    lock file's contents (whatever is known of it)."""
    try:
        holder = json.loads(text)
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        return "holder unknown"
    parts = []
    if isinstance(holder.get("pid"), int):
        parts.append(f"pid {holder['pid']}")
    if isinstance(holder.get("address"), str):
        parts.append(f"serving {holder['address']}")
    if isinstance(holder.get("since"), int | float):
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder["since"]))
        parts.append(f"since {since}")
    return ", ".join(parts) or "holder unknown"
