"""Lanes on a real gateway (seed 003): a heartbeat shares a session with users while one run
wedges and is recovered. Never two runs at once, every message answered or ended with a
reason, and the operator sees it all in /health and /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2

from tests.fake_models import Call, ScriptedModel, heartbeat_ok_or_echo
from tests.support import EventWaiter, running_gateway
from turngate.cli import main
from turngate.config_agents import AgentConfig, CronJobConfig, HeartbeatConfig
from turngate.providers.base import ProviderEvent, ProviderRequest
from turngate.runtime.events import EventBus
from turngate.sim.checkers import Checker

CALL_TIMEOUT_S = 20.0
WEDGED_MESSAGE = "ann-1"
"""The client message whose run wedges: a user's turn, whatever the heartbeats' timing (a
wedge picked by call number was sometimes a heartbeat's, and the test then missed the
stalled user turn it checks for)."""
WEDGED_FOR_S = 3.0
ABORT_GRACE_S = 2.0
MODEL_LATENCY_S = 0.01


class WedgeOnce:
    """Echoes after 10 ms and says HEARTBEAT_OK to heartbeats; the run of
    :data:`WEDGED_MESSAGE` wedges: it makes no progress and ignores cancellation for a while,
    like the stuck runs of the field reports."""

    name = "model"

    def __init__(self) -> None:
        working = Call(reply=heartbeat_ok_or_echo, latency_s=MODEL_LATENCY_S, chunks=1)
        wedged = Call(
            reply=heartbeat_ok_or_echo,
            latency_s=MODEL_LATENCY_S,
            chunks=1,
            ignore_cancel_s=WEDGED_FOR_S,
        )
        self._working = ScriptedModel(then=working, name="model")
        self._wedged = ScriptedModel([wedged], then=working, name="model")

    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        if WEDGED_MESSAGE in request.new_user_messages():
            return self._wedged.stream(request)
        return self._working.stream(request)


def model() -> WedgeOnce:
    return WedgeOnce()


def agents() -> tuple[AgentConfig, ...]:
    return (
        AgentConfig(
            id="main",
            heartbeat=HeartbeatConfig(every=0.25, isolated=False),
            cron=(CronJobConfig(id="digest", schedule="0 9 * * *", message="daily digest"),),
        ),
        AgentConfig(id="ops", system_prompt="You watch the servers."),
    )


def test_heartbeats_users_and_a_recovered_wedged_run_share_a_session_safely(
    tmp_path: Path,
) -> None:
    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    store_path = tmp_path / "turngate.db"
    checker = Checker(ABORT_GRACE_S, lambda key: (None, 0), 0.0)
    bus.subscribe(checker.on_event)
    with running_gateway(
        tmp_path,
        provider=model(),
        events=bus,
        agents=agents(),
        stall_timeout_s=0.5,
        abort_grace_s=ABORT_GRACE_S,
    ) as url:

        async def client(name: str) -> list[dict[str, object]]:
            async with httpx2.AsyncClient(base_url=url, timeout=CALL_TIMEOUT_S) as http:
                bodies = []
                for index in range(6):
                    response = await http.post(
                        "/chat.send",
                        json={"sessionKey": "agent:main:main", "message": f"{name}-{index}"},
                    )
                    bodies.append(response.json())
                return bodies

        async def scenario() -> list[list[dict[str, object]]]:
            clients = [asyncio.ensure_future(client(name)) for name in ("ann", "bob", "cy")]
            await waiter.until("cancel_requested")
            async with httpx2.AsyncClient(base_url=url, timeout=CALL_TIMEOUT_S) as http:
                health = (await http.get("/health")).json()
            stalled = health["stalled"]
            assert [s["sessionKey"] for s in stalled] == ["agent:main:main"]
            assert stalled[0]["state"] == "revoking"
            return await asyncio.gather(*clients)

        results = asyncio.run(scenario())
        waiter.wait_for("fenced")
        with httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http:
            health = http.get("/health").json()
            metrics = http.get("/metrics").text
    assert store_path.exists()
    bodies = [body for result in results for body in result]
    assert len(bodies) == 18
    for body in bodies:
        if body["status"] == "ok":
            assert str(body["reply"]).startswith("echo: ")
        else:
            assert body["status"] == "aborted"
            assert body["error"]["code"] == "stalled"  # type: ignore[index]
    assert checker.violations == []
    assert waiter.of("stale_write_refused") == []
    heartbeat_starts = [e for e in waiter.of("started") if e.lane == "heartbeat"]
    assert heartbeat_starts
    assert {e.session_key for e in waiter.of("started")} == {"agent:main:main"}
    [lane] = health["lanes"]["heartbeat"]
    assert lane["sessionKey"] == "agent:main:main"
    assert lane["fired"] >= 1
    assert lane["everyS"] == 0.25
    assert 'turngate_turns_ended_total{code="",lane="heartbeat",status="replied"}' in metrics
    assert 'turngate_turns_ended_total{code="stalled",lane="direct",status="aborted"}' in metrics
    assert "turngate_runs_fenced_total 1.0" in metrics
    assert "turngate_heartbeats_skipped_total" in metrics


def test_an_unknown_agent_is_refused_naming_the_agents_there_are(tmp_path: Path) -> None:
    with running_gateway(tmp_path, agents=agents()) as url:
        response = httpx2.post(
            f"{url}/chat.send",
            json={"sessionKey": "agent:sales:main", "message": "hi"},
            timeout=CALL_TIMEOUT_S,
        )
        ops = httpx2.post(
            f"{url}/chat.send",
            json={"sessionKey": "agent:ops:main", "message": "disk?"},
            timeout=CALL_TIMEOUT_S,
        )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_agent"
    assert error["message"] == "sessionKey: unknown agent 'sales'; this gateway serves main, ops"
    assert ops.json()["reply"] == "echo: disk?"


def test_cron_jobs_are_listed_and_run_by_hand_from_the_command_line(
    tmp_path: Path, capsys: object
) -> None:
    with running_gateway(tmp_path, agents=agents()) as url:
        assert main(["cron", "list", "--url", url]) == 0
        assert main(["cron", "run", "digest", "--url", url]) == 0
        assert main(["cron", "run", "nightly", "--url", url]) == 6
        with httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http:
            jobs = http.get("/cron").json()["jobs"]
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "digest" in out
    assert "0 9 * * *" in out
    assert "fired digest: runId cron.digest.manual." in out
    assert [job["id"] for job in jobs] == ["digest"]
    assert jobs[0]["sessionKey"] == "agent:main:cron:digest"
    assert jobs[0]["nextFireAt"] is not None


def test_unstick_forces_a_wedged_session_free_and_is_audited(tmp_path: Path) -> None:
    wedged = ScriptedModel(
        then=Call(reply="too late", chunks=1, ignore_cancel_s=WEDGED_FOR_S), name="wedged"
    )

    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    with (
        running_gateway(tmp_path, provider=wedged, events=bus, stall_timeout_s=60.0) as url,
        httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http,
    ):
        accepted = http.post(
            "/chat.send",
            json={"sessionKey": "agent:main:main", "message": "hi", "wait": False},
        ).json()
        waiter.wait_for("started")
        assert main(["sessions", "unstick", "agent:main:main", "--url", url]) == 0
        turn = http.get(f"/turns/{accepted['runId']}").json()
        again = http.post("/sessions/unstick", json={"sessionKey": "agent:main:main"}).json()
    assert turn["status"] == "aborted"
    assert turn["error"]["code"] == "user_abort"
    assert "fenced" in turn["error"]["message"]
    [audit] = waiter.of("unstuck")
    assert accepted["runId"] in audit.detail
    assert again == {"ok": True, "sessionKey": "agent:main:main", "unstuck": False, "runIds": []}


def test_a_heartbeat_reply_goes_to_the_sessions_last_client_while_it_is_connected(
    tmp_path: Path,
) -> None:
    import json

    import websockets

    chatty = ScriptedModel(
        then=Call(reply=lambda request: f"news about: {request.messages[-1].content}", chunks=1),
        name="chatty",
    )

    bus = EventBus()
    waiter = EventWaiter()
    bus.subscribe(waiter.record)
    heartbeat_agent = (
        AgentConfig(
            id="main",
            heartbeat=HeartbeatConfig(every=0.3, isolated=False, prompt="Heartbeat: anything new?"),
        ),
    )

    async def client(url: str) -> list[dict[str, object]]:
        frames: list[dict[str, object]] = []
        async with websockets.connect(url.replace("http://", "ws://") + "/ws") as ws:
            await ws.recv()
            await ws.send(
                json.dumps(
                    {
                        "type": "req",
                        "id": "c",
                        "method": "connect",
                        "params": {"minProtocol": 4, "maxProtocol": 4},
                    }
                )
            )
            await ws.recv()
            await ws.send(
                json.dumps(
                    {
                        "type": "req",
                        "id": "s",
                        "method": "chat.send",
                        "params": {
                            "sessionKey": "agent:main:main",
                            "message": "hello",
                            "idempotencyKey": "u1",
                        },
                    }
                )
            )
            async with asyncio.timeout(CALL_TIMEOUT_S):
                while not any(
                    f.get("event") == "chat" and str(f["payload"]["runId"]).startswith("heartbeat.")  # type: ignore[index]
                    for f in frames
                ):
                    frames.append(json.loads(await ws.recv()))
        return frames

    with running_gateway(tmp_path, provider=chatty, events=bus, agents=heartbeat_agent) as url:
        frames = asyncio.run(client(url))
        ended_before = len(waiter.of("ended"))
        while len(waiter.of("ended")) < ended_before + 2:  # two more heartbeats, client gone
            waiter.wait_for("ended", len(waiter.of("ended")) + 1)
        with httpx2.Client(base_url=url, timeout=CALL_TIMEOUT_S) as http:
            beats = [
                http.get(f"/turns/{e.turn_id}").json()
                for e in waiter.of("ended")
                if str(e.turn_id).startswith("heartbeat.")
            ]
    [heard] = [f for f in frames if str(f["payload"]["runId"]).startswith("heartbeat.")]  # type: ignore[index]
    assert heard["payload"]["state"] == "final"  # type: ignore[index]
    assert "news about: Heartbeat" in json.dumps(heard)
    assert [b["status"] for b in beats] == ["ok"] * len(beats)
    assert len(beats) >= 2
    stored = tmp_path / "turngate.db"
    import sqlite3

    with sqlite3.connect(stored) as db:
        deliveries = dict(
            db.execute("SELECT turn_id, delivery FROM turns WHERE lane = 'heartbeat'")
        )
    assert "delivered" in deliveries.values()
    assert list(deliveries.values())[-1] == "stored"  # after the client left: kept, not sent
