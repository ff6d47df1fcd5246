"""Who holds a TCP port: the process listening on it, found through ``/proc`` (Linux).

The kernel lists listening sockets with their inode in ``/proc/net/tcp`` and ``tcp6``; a
process's open sockets are ``/proc/<pid>/fd/*`` links to ``socket:[<inode>]``. Other users'
processes cannot be read without privileges, and other systems have no ``/proc``: then the
owner is unknown, and the caller says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TCP_LISTEN = "0A"
"""The state column of a listening socket in ``/proc/net/tcp``."""
PROCESSES_MAX = 100_000
"""How many processes to look through at most (a bound on the scan)."""
COMMAND_CHARS_MAX = 120
SECRET_FLAGS = re.compile(r"(--(?:token|api-key|password)[= ])\S+")
"""Flags whose value is a credential: a command line is shown with their values blanked."""


@dataclass(frozen=True, slots=True)
class PortOwner:
    """The process listening on a port."""

    pid: int
    command: str

    def describe(self) -> str:
        """``pid 1234 (python -m http.server)``."""
        return f"pid {self.pid} ({self.command})" if self.command else f"pid {self.pid}"


def listening_inodes(port: int, proc: Path = PROC) -> set[str]:
    """The inodes of the sockets listening on ``port`` (any address, IPv4 or IPv6)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_LISTEN:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[9] != "0":
                inodes.add(fields[9])
    return inodes


def port_owner(port: int, proc: Path = PROC) -> PortOwner | None:
    """The process listening on ``port``, or None if it cannot be found."""
    inodes = listening_inodes(port, proc)
    if not inodes:
        return None
    links = {f"socket:[{inode}]" for inode in inodes}
    try:
        pids = [entry.name for entry in os.scandir(proc) if entry.name.isdigit()]
    except OSError:
        return None
    for pid in pids[:PROCESSES_MAX]:
        fd_dir = proc / pid / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # another user's process, or it just ended
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target in links:
                return PortOwner(int(pid), _command_line(proc / pid))
    return None


def _command_line(process: Path) -> str:
    try:
        raw = (process / "cmdline").read_bytes()
    except OSError:
        return ""
    command = " ".join(raw.decode(errors="replace").replace("\0", " ").split())
    command = SECRET_FLAGS.sub(r"\1***", command)
    if len(command) > COMMAND_CHARS_MAX:
        command = command[: COMMAND_CHARS_MAX - 3] + "..."
    return command
