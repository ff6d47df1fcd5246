"""The readable trace of one schedule: one line per event, in the order they happened.

Format of a line::

    <virtual time, 6 decimals> [<process>.]L<life> <kind, padded> <session> [turn=…] [run=…]
        [epoch=…] [state=…] [code=…] [- detail]

``life`` counts a gateway process's lives: L1 until its first simulated crash, L2 after it,
...; in a seed with several processes, the process's name comes first (``p2.L1``).
Lines starting with ``#`` are the simulator's own markers (crash, restart, faults off).
The same seed produces the same trace, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from turngate.runtime.events import Event


@dataclass(slots=True)
class Trace:
    """Events and markers of one run, formatted only when asked for."""

    items: list[tuple[str, Event] | tuple[float, str]] = field(default_factory=list)

    def event(self, life: int, event: Event, process: str | None = None) -> None:
        """Record an event of gateway life ``life`` (of ``process``, when there are several)."""
        self.items.append((f"L{life}" if process is None else f"{process}.L{life}", event))

    def mark(self, at: float, text: str) -> None:
        """Record a simulator marker."""
        self.items.append((at, text))

    def lines(self) -> list[str]:
        """The trace as text lines."""
        out: list[str] = []
        for first, second in self.items:
            if isinstance(second, Event):
                out.append(f"{second.at:14.6f} {first} {second.line()}")
            else:
                out.append(f"{first:14.6f} # {second}")
        return out
