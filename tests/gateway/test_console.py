"""The console's API against a real gateway on 127.0.0.1: what it shows of sessions, running
turns, turns, transcripts, lanes and the gateway, and the Abort, Unstick and Run-now calls.

Signing in, the same-origin rule and the page are in ``test_console_signin.py``; the live
parts (the event feed, the chat pane's stream) in ``test_console_live.py``. Every wait is for
an engine event or an answer, under a deadline.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from tests.gateway.console_client import KEY, send, session_path, session_row, signed_in
from tests.secrets import GATEWAY_TOKEN as TOKEN
from tests.support import (
    TOOL_EXCHANGE,
    EventWaiter,
    GatedEchoProvider,
    running_gateway,
    store_exchange,
)
from turngate import __version__
from turngate.config_agents import AgentConfig, CronJobConfig
from turngate.providers.base import Finish, ProviderEvent, ProviderRequest, TextDelta
from turngate.runtime.events import EventBus


class DeafModel:
    """Its first call makes no progress and ignores cancellation until the test lets it go
    (the stuck run Unstick is for); every later call echoes. Thread-safe."""

    name = "deaf"

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        self._released = False
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def release(self) -> None:
        """Let the first call end (from the test's thread)."""
        with self._lock:
            self._released = True
            waiting, self._waiting = self._waiting, []
        for loop, event in waiting:
            loop.call_soon_threadsafe(event.set)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        released = asyncio.Event()
        with self._lock:
            self.calls += 1
            first = self.calls == 1
            if self._released or not first:
                released.set()
            else:
                self._waiting.append((asyncio.get_running_loop(), released))
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue  # deaf: told to stop, it goes on waiting
        yield TextDelta("echo: " + request.messages[-1].content)
        yield Finish("stop", None)


# -- sessions --------------------------------------------------------------------------------


def test_the_sessions_list_shows_a_session_once_a_message_was_answered(tmp_path: Path) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url, signed_in(url) as http:
        reply = send(url, "hello")
        row = session_row(http, KEY)
        listing = http.get("/console/api/sessions").json()
    assert reply["reply"] == "echo: hello"
    assert listing["total"] == 1
    assert row["lastActivityAt"] >= row["createdAt"]
    del row["createdAt"], row["lastActivityAt"]
    assert row == {
        "key": KEY,
        "agentId": "main",
        "stored": True,
        "state": "idle",
        "queued": 0,
        "run": None,
        "stalled": False,
        "slow": False,
        "waitingForStorage": False,
        "epoch": 1,
        "turnsTotal": 1,
        "turnsOpen": 0,
    }


def test_a_running_turn_shows_its_run_lease_step_and_the_turn_queued_behind_it(
    tmp_path: Path,
) -> None:
    model = GatedEchoProvider()
    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    with (
        running_gateway(tmp_path, provider=model, events=bus, token=TOKEN) as url,
        signed_in(url) as http,
    ):
        try:
            first = send(url, "one", wait=False)["runId"]
            waiter.wait_for("started")
            second = send(url, "two", wait=False)["runId"]
            row = session_row(http, KEY)
            page = http.get(session_path(KEY)).json()
        finally:
            model.open()
        waiter.wait_for("ended", 2)
        after = session_row(http, KEY)
    assert (row["state"], row["queued"], row["stalled"], row["slow"]) == (
        "running",
        1,
        False,
        False,
    )
    run = row["run"]
    assert run["runId"] == first
    assert [turn["runId"] for turn in run["turns"]] == [first]
    assert (run["epoch"], run["leaseState"], run["step"], run["tools"]) == (1, "held", 1, [])
    assert (run["stalled"], run["slow"]) == (False, False)
    assert run["ageS"] >= 0
    assert run["sinceProgressS"] >= 0
    assert (run["stallTimeoutS"], run["runTimeoutS"]) == (60.0, 600.0)
    assert page["session"] == row | {"run": page["session"]["run"]}
    turns = {turn["runId"]: turn for turn in page["turns"]}
    assert turns[first]["state"] == "running"
    assert turns[first]["startedAt"] is not None
    assert turns[first]["endedAt"] is None
    assert turns[second]["state"] in ("accepted", "queued")
    assert turns[second]["startedAt"] is None
    assert (after["state"], after["queued"], after["run"]) == ("idle", 0, None)


def test_a_session_page_shows_its_turns_and_its_transcript_with_tool_calls(
    tmp_path: Path,
) -> None:
    key = "agent:main:weather"
    asyncio.run(store_exchange(tmp_path, key, TOOL_EXCHANGE, at=1_790_000_000.0))
    with running_gateway(tmp_path, token=TOKEN) as url, signed_in(url) as http:
        page = http.get(session_path(key)).json()
        new = http.get(session_path("agent:main:brand-new")).json()
        bad = http.get(session_path("not-a-key"))
        limited = http.get(session_path(key) + "?entries=2").json()
        too_many = http.get(session_path(key) + "?entries=0")
    assert [entry["kind"] for entry in page["transcript"]] == [
        "user",
        "assistant",
        "tool_calls",
        "tool_result",
        "tool_result",
        "assistant",
    ]
    calls = page["transcript"][2]["toolCalls"]
    assert calls == [
        {"id": "c1", "name": "weather", "arguments": '{"city": "Lisbon"}'},
        {"id": "c2", "name": "forecast", "arguments": "{not json"},
    ]
    results = page["transcript"][3:5]
    assert [(r["callId"], r["toolName"], r["isError"]) for r in results] == [
        ("c1", "weather", False),
        ("c2", "forecast", True),
    ]
    assert results[0]["text"] == "sunny, 24°C"
    [turn] = page["turns"]
    assert turn | {"seq": 0} == {
        "runId": "tools-1",
        "servedBy": "tools-1",
        "seq": 0,
        "state": "replied",
        "status": "ok",
        "lane": "direct",
        "queueMode": "followup",
        "attempts": 0,
        "epoch": 1,
        "acceptedAt": 1_790_000_000.0,
        "startedAt": 1_790_000_000.0,
        "endedAt": 1_790_000_000.0,
        "waitS": 0.0,
        "runS": 0.0,
        "timeoutS": 60.0,
        "message": "weather in Lisbon?",
        "reply": "Sunny, 24°C.",
        "delivery": None,
        "usage": None,
        "error": None,
    }
    assert page["session"]["state"] == "idle"
    assert page["agent"] == {"id": "main", "queueMode": "followup", "model": "echo/echo"}
    assert (new["session"]["stored"], new["turns"], new["transcript"]) == (False, [], [])
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_session_key")
    assert [entry["kind"] for entry in limited["transcript"]] == ["tool_result", "assistant"]
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (422, "invalid_field")


# -- the buttons -----------------------------------------------------------------------------


def test_abort_through_the_console_ends_the_running_turn_with_user_abort(
    tmp_path: Path,
) -> None:
    model = GatedEchoProvider()
    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    with (
        running_gateway(tmp_path, provider=model, events=bus, token=TOKEN) as url,
        signed_in(url) as http,
    ):
        idle = http.post(session_path(KEY, "/abort")).json()
        run_id = send(url, "long story", wait=False)["runId"]
        waiter.wait_for("started")
        aborted = http.post(session_path(KEY, "/abort"))
        [ended] = waiter.wait_for("ended")
        page = http.get(session_path(KEY)).json()
    assert idle == {"ok": True, "sessionKey": KEY, "aborted": False, "runIds": []}
    assert aborted.json() == {"ok": True, "sessionKey": KEY, "aborted": True, "runIds": [run_id]}
    assert (ended.turn_id, ended.state, ended.code) == (run_id, "aborted", "user_abort")
    [turn] = page["turns"]
    assert (turn["state"], turn["error"]["code"]) == ("aborted", "user_abort")
    assert page["session"]["state"] == "idle"


def test_a_run_past_its_timeout_that_ignores_cancel_shows_stalled_and_slow_until_unstuck(
    tmp_path: Path,
) -> None:
    model = DeafModel()
    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    with (
        running_gateway(
            tmp_path,
            provider=model,
            events=bus,
            token=TOKEN,
            run_timeout_s=0.3,
            abort_grace_s=60.0,
        ) as url,
        signed_in(url) as http,
    ):
        try:
            run_id = send(url, "stuck", wait=False)["runId"]
            [cancel] = waiter.wait_for("cancel_requested")
            stuck = session_row(http, KEY)
            unstuck = http.post(session_path(KEY, "/unstick"))
            [ended] = waiter.wait_for("ended")
            next_reply = send(url, "are you there?")
        finally:
            model.release()
    assert cancel.code == "run_timeout"
    assert (stuck["state"], stuck["stalled"], stuck["slow"]) == ("running", True, True)
    assert stuck["run"]["leaseState"] == "revoking"
    assert (stuck["run"]["stalled"], stuck["run"]["slow"]) == (True, True)
    assert unstuck.json() == {"ok": True, "sessionKey": KEY, "unstuck": True, "runIds": [run_id]}
    assert (ended.turn_id, ended.state) == (run_id, "aborted")
    assert next_reply["reply"] == "echo: are you there?"


def test_run_now_fires_a_cron_job_and_the_lanes_show_its_last_fire(tmp_path: Path) -> None:
    # Once a year: no scheduled fire comes during the test, only the one it asks for.
    job = CronJobConfig(id="digest", schedule="0 9 1 1 *", message="the digest")
    agents = (AgentConfig(id="main", cron=(job,)),)
    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    with (
        running_gateway(tmp_path, events=bus, token=TOKEN, agents=agents) as url,
        signed_in(url) as http,
    ):
        before = http.get("/console/api/lanes").json()
        fired = http.post("/console/api/cron/digest/run")
        [ended] = waiter.wait_for("ended")
        after = http.get("/console/api/lanes").json()
        unknown = http.post("/console/api/cron/nightly/run")
    assert before["heartbeats"] == []
    [job_before] = before["cron"]
    assert job_before["lastFireAt"] is None
    assert job_before["nextFireAt"] > before["at"]
    assert (job_before["schedule"], job_before["sessionKey"]) == (
        "0 9 1 1 *",
        "agent:main:cron:digest",
    )
    assert fired.status_code == 202
    assert fired.json()["sessionKey"] == "agent:main:cron:digest"
    assert (ended.turn_id, ended.state, ended.lane) == (fired.json()["runId"], "replied", "cron")
    assert after["cron"][0]["lastFireAt"] is not None
    assert after["cron"][0]["nextFireAt"] == job_before["nextFireAt"]
    assert after["cronFired"] == 1
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert "digest" in unknown.json()["error"]["message"]


# -- the gateway -----------------------------------------------------------------------------


def test_the_gateway_panel_shows_version_store_limits_and_turn_figures(tmp_path: Path) -> None:
    with running_gateway(tmp_path, token=TOKEN) as url, signed_in(url) as http:
        send(url, "count me")
        gateway = http.get("/console/api/gateway").json()
        connections = http.get("/console/api/connections").json()
    assert (gateway["version"], gateway["status"], gateway["auth"]) == (
        __version__,
        "live",
        "token",
    )
    assert gateway["uptimeS"] >= 0
    assert gateway["configFile"] is None
    store = gateway["store"]
    assert (store["kind"], store["durability"], store["writable"]) == ("sqlite", "normal", True)
    assert store["path"] == str(tmp_path / "turngate.db")
    assert gateway["sessions"] == 1
    assert gateway["limits"]["stallTimeoutS"] == 60.0
    assert gateway["agents"] == {
        "open": True,
        "agents": [
            {"id": "main", "model": "echo/echo", "queueMode": "followup", "tools": 0, "maxSteps": 1}
        ],
    }
    metrics = gateway["metrics"]
    assert metrics["turnsAccepted"] == 1
    assert metrics["turnsEnded"] == {
        "aborted": 0,
        "expired": 0,
        "failed": 0,
        "rejected": 0,
        "replied": 1,
    }
    assert metrics["turnRunMeanS"] is not None
    assert connections == {"at": connections["at"], "channels": [], "toolServers": []}
