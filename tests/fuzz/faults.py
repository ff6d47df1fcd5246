"""What the fuzz counts, and how it reports what it found.

Every request and frame sent is counted in :data:`TALLY`, and so is every fault. A fault is
raised as an instance of a :class:`Fault` subclass made for its *signature*: what failed
where, and the exception the gateway logged for it, if any (:class:`ServerErrors`), e.g.
``POST /chat.send: 500 internal: ValueError: Exceeds the limit (N digits) for integer string
conversion at turngate/gateway/frames.py:131``. Hypothesis tells bugs apart by exception
type, so each distinct fault of a test is shrunk to its own minimal example and reported on
its own, instead of the first one hiding the rest.
"""

from __future__ import annotations

import enum
import logging
import re
import threading
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

PREVIEW_CHARS = 240


class FaultKind(enum.StrEnum):
    """The kinds of fault the fuzz looks for."""

    SERVER_ERROR = "answer >= 500"
    DROPPED = "dropped socket"
    HANG = "hang"
    MALFORMED = "malformed answer"

    @property
    def plural(self) -> str:
        return {
            FaultKind.SERVER_ERROR: "answers >= 500",
            FaultKind.DROPPED: "dropped sockets",
            FaultKind.HANG: "hangs",
            FaultKind.MALFORMED: "malformed answers",
        }[self]


class Fault(AssertionError):
    """The gateway answered a fuzzed request or frame wrongly."""

    kind: FaultKind = FaultKind.MALFORMED
    signature: str = ""


@dataclass(slots=True)
class Seen:
    """One distinct fault: how often, and the shortest report of it."""

    count: int
    report: str


@dataclass(slots=True)
class Tally:
    """Requests and frames sent, and faults found, over the whole test session."""

    http_requests: int = 0
    ws_frames: int = 0
    faults: Counter[FaultKind] = field(default_factory=Counter)
    distinct: dict[tuple[FaultKind, str], Seen] = field(default_factory=dict)
    _classes: dict[tuple[FaultKind, str], type[Fault]] = field(default_factory=dict)

    def fault(self, kind: FaultKind, signature: str, report: str) -> Fault:
        """Count a fault; return the exception to raise for it."""
        self.faults[kind] += 1
        key = (kind, signature)
        seen = self.distinct.get(key)
        if seen is None:
            self.distinct[key] = Seen(1, report)
        else:
            seen.count += 1
            if len(report) < len(seen.report):
                seen.report = report
        cls = self._classes.get(key)
        if cls is None:
            name = re.sub(r"\W+", "_", f"{kind.name.title()}_{signature}").strip("_")[:100]
            attrs = {"kind": kind, "signature": signature, "__module__": __name__}
            cls = cast(type[Fault], type(name, (Fault,), attrs))
            self._classes[key] = cls
        return cls(f"{kind.value}: {signature}\n{report}")

    @property
    def used(self) -> bool:
        return bool(self.http_requests or self.ws_frames)

    def summary(self) -> str:
        """``fuzz: 10234 HTTP requests, 2311 WS frames: 0 answers >= 500, ...``."""
        counts = ", ".join(f"{self.faults[kind]} {kind.plural}" for kind in FaultKind)
        return f"fuzz: {self.http_requests} HTTP requests, {self.ws_frames} WS frames: {counts}"

    def distinct_lines(self) -> list[str]:
        """One line per distinct fault (its shortest report follows, indented)."""
        lines = []
        for (kind, signature), seen in sorted(self.distinct.items()):
            lines.append(f"  {kind.value} x{seen.count}: {signature}")
            lines.extend(f"      {line}" for line in seen.report.splitlines()[:8])
        return lines


def preview(data: str | bytes, limit: int = PREVIEW_CHARS) -> str:
    """``data`` as a Python literal, runs of one character shown as ``<'9' x 5000>``, cut
    after about ``limit`` characters."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    shown = _RUN.sub(lambda run: f"<{run.group(1)!r} x {len(run.group(0))}>", text)
    literal = repr(
        shown.encode("latin-1", "backslashreplace") if isinstance(data, bytes) else shown
    )
    return literal if len(literal) <= limit else f"{literal[:limit]} ... ({len(data)} in all)"


_RUN = re.compile(r"(.)\1{15,}", re.DOTALL)


SERVER_LOGGERS = ("turngate", "uvicorn")


class ServerErrors(logging.Handler):
    """Collects the exceptions the gateway logs: it runs in this process (in a thread), so
    a fault can name the exception behind it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self._guard = threading.Lock()
        self._seen: list[BaseException] = []

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """While a check runs, the gateway's log records come here and nowhere else.

        A fault's report shows the exception behind it; pytest's captured log would show
        every traceback of every shrinking step. (Taken off while the check runs only: pytest
        hands its capture to loggers that do not propagate when a test starts.)"""
        loggers = [logging.getLogger(name) for name in SERVER_LOGGERS]
        propagated = [logger.propagate for logger in loggers]
        for logger in loggers:
            logger.addHandler(self)
            logger.propagate = False
        try:
            yield
        finally:
            for logger, propagate in zip(loggers, propagated, strict=True):
                logger.removeHandler(self)
                logger.propagate = propagate

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            with self._guard:
                self._seen.append(record.exc_info[1])

    def take(self) -> list[BaseException]:
        """The exceptions logged since the last call."""
        with self._guard:
            seen, self._seen = self._seen, []
        return seen

    def cause(self) -> tuple[str, str]:
        """(signature, report) of the first exception logged since the last :meth:`take`:
        ``ValueError: Exceeds the limit (N digits) ... at turngate/gateway/frames.py:151``
        and its last lines of traceback; ("", "") if none was."""
        seen = self.take()
        if not seen:
            return "", ""
        leaf = seen[0]
        while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        frames = traceback.extract_tb(leaf.__traceback__)
        ours = [frame for frame in frames if "/turngate/" in frame.filename] or frames[-1:]
        where = ""
        if ours:
            path = ours[-1].filename
            where = f" at {path[path.rfind('/turngate/') + 1 :]}:{ours[-1].lineno}"
        message = (
            leaf.reason if isinstance(leaf, UnicodeEncodeError | UnicodeDecodeError) else str(leaf)
        )
        # Numbers and quoted values vary from one example of a fault to the next.
        message = re.sub(r"'[^']*'", "'…'", (message.splitlines() or [""])[0].split("; ")[0])
        message = re.sub(r"\d+", "N", message)[:100]
        lines = traceback.format_exception(leaf)
        return (
            f"{type(leaf).__name__}: {message}{where}",
            "server: " + "".join(lines[-6:]).rstrip().replace("\n", "\n  "),
        )


def error_problem(error: object) -> str | None:
    """What is wrong with an error object, if anything."""
    if not isinstance(error, dict):
        return "no error object"
    if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        return "error object without string code and message"
    return None


TALLY = Tally()
"""The one tally of a test session (read by ``tests/fuzz/conftest.py`` for the summary)."""
