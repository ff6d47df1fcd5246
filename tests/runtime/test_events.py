"""The event bus: each event reaches every subscriber, in subscription order, however the
subscribers come and go while it is being delivered."""

from __future__ import annotations

from collections.abc import Callable

from turngate.runtime.events import Event, EventBus, EventKind
from turngate.types import MonotonicS


def event(session_key: str) -> Event:
    return Event(EventKind.QUEUED, MonotonicS(0.0), session_key)


def test_a_subscriber_that_leaves_during_an_emit_makes_no_other_miss_the_event() -> None:
    bus = EventBus()
    heard: list[tuple[str, str]] = []
    unsubscribe_first: Callable[[], None] | None = None

    def first(e: Event) -> None:
        heard.append(("first", e.session_key))
        assert unsubscribe_first is not None
        unsubscribe_first()  # a connection closing because of what it was sent

    unsubscribe_first = bus.subscribe(first)
    bus.subscribe(lambda e: heard.append(("second", e.session_key)))
    bus.emit(event("a"))
    bus.emit(event("b"))
    assert heard == [("first", "a"), ("second", "a"), ("second", "b")]


def test_a_subscriber_added_during_an_emit_hears_from_the_next_event_on() -> None:
    bus = EventBus()
    heard: list[tuple[str, str]] = []

    def late(e: Event) -> None:
        heard.append(("late", e.session_key))

    def first(e: Event) -> None:
        heard.append(("first", e.session_key))
        if e.session_key == "a":
            bus.subscribe(late)

    bus.subscribe(first)
    bus.emit(event("a"))
    bus.emit(event("b"))
    assert heard == [("first", "a"), ("first", "b"), ("late", "b")]
