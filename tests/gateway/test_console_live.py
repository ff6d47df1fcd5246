"""The console's live parts against a real gateway on 127.0.0.1: the feed of engine events
(``/console/api/events``) and the chat pane's stream (``/console/api/chat``).

A stream is read as a browser reads it: server-sent events, in order, over one response;
each read waits under the client's timeout, never on a sleep.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.fake_models import Call, ScriptedModel
from tests.gateway.console_client import KEY, send, session_path, signed_in
from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import SERVER_STOP_TIMEOUT_S, gateway_config, running_gateway, serve
from turngate.config_agents import AgentConfig
from turngate.gateway.app import create_app
from turngate.gateway.console import feed
from turngate.gateway.console.feed import ConsoleFeed, ConsoleFeeds, FeedEnd
from turngate.providers.base import ToolCallDelta
from turngate.runtime.events import Event, EventKind

FEED_GONE_S = 10.0
"""How long a closed feed may take to unsubscribe (it is at once: the server sees the close)."""

Streamed = list[tuple[str, Any]]


def payload(event: httpx2.ServerSentEvent) -> Any:
    """An event's JSON data."""
    return event.json()


def read_chat(http: httpx2.Client, message: str, **fields: Any) -> Streamed:
    """Send ``message`` through the chat pane; every event of its stream, in order."""
    body = {"sessionKey": KEY, "message": message, **fields}
    with http.sse("/console/api/chat", method="POST", json=body) as source:
        return [(event.event, payload(event)) for event in source]


def test_the_feed_says_hello_then_sends_each_step_of_a_turn_until_it_ends(
    tmp_path: Path,
) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url, signed_in(url) as http:
        send(url, "before")
        with http.sse("/console/api/events") as source:
            events = iter(source)
            hello = next(events)
            run_id = send(url, "hello", wait=False)["runId"]
            changes = []
            for event in events:
                assert event.event == "change", event
                change = payload(event)
                changes.append(change)
                if change["kind"] == "ended" and change["turnId"] == run_id:
                    break
    assert hello.event == "hello"
    assert payload(hello)["at"] > 0
    recent = [(c["kind"], c["state"]) for c in payload(hello)["recent"] if c["kind"] == "ended"]
    assert recent == [("ended", "replied")]  # the turn before the console connected
    kinds = [c["kind"] for c in changes if run_id in (c["turnId"], c["runId"])]
    assert kinds[0] == "accepted"
    assert kinds.index("lease_acquired") < kinds.index("started") < kinds.index("ended")
    assert "progress" not in [c["kind"] for c in payload(hello)["recent"]]
    ended = changes[-1]
    assert (ended["sessionKey"], ended["state"], ended["code"], ended["lane"]) == (
        KEY,
        "replied",
        None,
        "direct",
    )
    assert ended["at"] >= payload(hello)["at"]


def test_a_feed_unsubscribes_when_its_console_goes_away(tmp_path: Path) -> None:
    app = create_app(gateway_config(tmp_path, token=TOKEN))
    with serve(app) as url, signed_in(url) as http:
        with http.sse("/console/api/events") as source:
            events = iter(source)  # kept: the stream closes when its iterator is collected
            assert next(events).event == "hello"
            feeds: ConsoleFeeds = app.state.console_feeds
            assert len(feeds) == 1
        deadline = time.monotonic() + FEED_GONE_S
        while len(feeds) and time.monotonic() < deadline:
            http.get("/console/api/gateway")  # one round trip per look, no sleep
        assert len(feeds) == 0


def test_an_open_feed_ends_with_shutdown_when_the_gateway_stops(tmp_path: Path) -> None:
    served = serve(create_app(gateway_config(tmp_path, token=TOKEN)))
    url = served.__enter__()
    # The gateway stops in another thread while this one reads the feed.
    stopping = threading.Thread(target=served.__exit__, args=(None, None, None))
    try:
        with signed_in(url) as http, http.sse("/console/api/events") as source:
            events = iter(source)
            assert next(events).event == "hello"
            stopping.start()
            rest = [(event.event, payload(event)) for event in events if event.event != "change"]
    finally:
        if stopping.ident is None:
            served.__exit__(None, None, None)
        stopping.join(SERVER_STOP_TIMEOUT_S)
    assert not stopping.is_alive()
    assert rest == [("end", {"reason": "shutdown"})]


def test_a_quiet_feed_sends_keep_alive_comments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "SSE_KEEPALIVE_S", 0.05)
    with (
        running_gateway(tmp_path, token=TOKEN) as url,
        signed_in(url) as http,
        http.stream("GET", "/console/api/events") as answer,
    ):
        # The first line that is not the hello event (nothing else happens meanwhile).
        lines = answer.iter_lines()
        first = next(line for line in lines if line and not line.startswith(("retry", "event")))
        while first.startswith("data"):
            first = next(line for line in lines if line)
        assert answer.headers["content-type"].startswith("text/event-stream")
    assert first == ": keep-alive"


def test_a_console_that_falls_behind_is_dropped_and_never_waited_for() -> None:
    behind = ConsoleFeed(events_max=3)
    for n in range(5):
        behind.offer(Event(EventKind.ACCEPTED, float(n), KEY, turn_id=f"t{n}"))
    assert behind.ended is FeedEnd.OVERFLOW
    assert [event.turn_id for event in behind.take()] == ["t0", "t1", "t2"]
    behind.offer(Event(EventKind.ENDED, 9.0, KEY))
    assert behind.take() == []


def test_a_feed_keeps_one_progress_event_per_session_until_it_is_read() -> None:
    other = "agent:main:other"
    following = ConsoleFeed()
    for n in range(50):
        following.offer(Event(EventKind.PROGRESS, float(n), KEY))
        following.offer(Event(EventKind.PROGRESS, float(n), other))
    following.offer(Event(EventKind.ENDED, 50.0, KEY))
    taken = following.take()
    assert [(e.kind, e.session_key, e.at) for e in taken] == [
        (EventKind.PROGRESS, KEY, 0.0),
        (EventKind.PROGRESS, other, 0.0),
        (EventKind.ENDED, KEY, 50.0),
    ]
    following.offer(Event(EventKind.PROGRESS, 51.0, KEY))
    assert [e.at for e in following.take()] == [51.0]


def test_chat_streams_the_reply_as_it_comes_then_the_outcome(tmp_path: Path) -> None:
    model = ScriptedModel(then=Call(chunks=3))  # its deltas a loop pass apart, as a model's
    with running_gateway(tmp_path, provider=model, token=TOKEN) as url, signed_in(url) as http:
        streamed = read_chat(http, "hello there")
        page = http.get(session_path(KEY)).json()
    name, accepted = streamed[0]
    assert (name, accepted["sessionKey"]) == ("accepted", KEY)
    texts = [data["text"] for name, data in streamed if name == "text"]
    assert len(texts) > 1
    assert "".join(texts) == "echo: hello there"
    assert streamed[-1] == (
        "outcome",
        {
            "runId": accepted["runId"],
            "sessionKey": KEY,
            "status": "ok",
            "reply": "echo: hello there",
            "usage": None,
        },
    )
    assert [turn["runId"] for turn in page["turns"]] == [accepted["runId"]]
    assert page["turns"][0]["lane"] == "direct"


def test_chat_shows_each_tool_call_as_it_begins_and_returns(tmp_path: Path) -> None:
    lookup = ToolCallDelta(0, "call-1", "sessions_history", '{"session": "agent:main:notes"}')
    model = ScriptedModel(
        [Call(reply="", tool_calls=(lookup,))], then=Call(reply="Nothing in your notes.")
    )
    agents = (AgentConfig(id="main", tools=("sessions_history",)),)
    with (
        running_gateway(tmp_path, provider=model, token=TOKEN, agents=agents) as url,
        signed_in(url) as http,
    ):
        streamed = read_chat(http, "what is in my notes?")
        page = http.get(session_path(KEY)).json()
    tools = [data for name, data in streamed if name == "tool"]
    assert [(t["phase"], t["id"], t["name"]) for t in tools] == [
        ("start", "call-1", "sessions_history"),
        ("result", "call-1", "sessions_history"),
    ]
    assert tools[0]["arguments"] == '{"session": "agent:main:notes"}'
    assert tools[1]["isError"] is False
    assert tools[1]["durationS"] >= 0
    names = [name for name, _ in streamed]
    assert names.index("tool") < names.index("text")
    assert streamed[-1][1]["reply"] == "Nothing in your notes."
    kinds = [entry["kind"] for entry in page["transcript"]]
    assert kinds == ["user", "tool_calls", "tool_result", "assistant"]
    assert page["transcript"][1]["toolCalls"][0]["name"] == "sessions_history"


def test_chat_refuses_a_bad_message_before_any_event(tmp_path: Path) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url, signed_in(url) as http:
        empty = http.post("/console/api/chat", json={"sessionKey": KEY, "message": "  "})
        mode = http.post(
            "/console/api/chat", json={"sessionKey": KEY, "message": "hi", "queueMode": "later"}
        )
        agent = http.post("/console/api/chat", json={"sessionKey": "bad", "message": "hi"})
    assert (empty.status_code, empty.json()["error"]["code"]) == (422, "invalid_field")
    assert (mode.status_code, mode.json()["error"]["code"]) == (422, "invalid_queue_mode")
    assert (agent.status_code, agent.json()["error"]["code"]) == (422, "invalid_session_key")
