"""Many messages to one session at once, through HTTP, in each queue mode.

Each scenario holds the first run at a gate (a fake model that answers only when the test
opens it) until every message of the burst has been accepted: "they all arrive while the first
turn runs" is then a fact, not a timing bet. Nothing here waits on a sleep; the test waits on
the engine's own events.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support import EventWaiter, GatedEchoProvider, running_gateway
from turngate.providers.echo import ECHO_PREFIX
from turngate.runtime.events import EventBus

BURST = 20
CALL_TIMEOUT_S = 15.0
EVENT_TIMEOUT_S = 10.0


class Gateway:
    """What a burst test needs: where the gateway is, its model's gate, and its events."""

    def __init__(self, url: str, provider: GatedEchoProvider, events: EventWaiter) -> None:
        self.url = url
        self.provider = provider
        self.events = events

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(base_url=self.url, timeout=CALL_TIMEOUT_S)


@contextmanager
def gated_gateway(state_dir: Path, **overrides: Any) -> Iterator[Gateway]:
    """A gateway whose model waits at a gate, with its events recorded."""
    provider = GatedEchoProvider()
    events = EventBus()
    waiter = EventWaiter()
    events.subscribe(waiter.record)
    with running_gateway(state_dir, provider=provider, events=events, **overrides) as url:
        try:
            yield Gateway(url, provider, waiter)
        finally:
            provider.open()  # never leave a run waiting at the gate when the gateway stops


def burst_messages(session_key: str) -> list[str]:
    """Messages none of which is a substring of another (so a merged reply can be checked)."""
    return [f"<message {i:02d} of {BURST} to {session_key}>" for i in range(1, BURST + 1)]


async def send_burst(
    gateway: Gateway, client: httpx2.AsyncClient, session_key: str, messages: list[str], mode: str
) -> list[httpx2.Response]:
    """Send every message at once; open the gate once all of them were queued."""
    async with asyncio.TaskGroup() as sends:
        posts = [
            sends.create_task(
                client.post(
                    "/chat.send", json={"sessionKey": session_key, "message": m, "queueMode": mode}
                )
            )
            for m in messages
        ]
        await gateway.events.until("queued", len(messages))
        gateway.provider.open()
    return [post.result() for post in posts]


async def send(
    client: httpx2.AsyncClient, session_key: str, message: str, **fields: Any
) -> httpx2.Response:
    """``POST /chat.send``."""
    return await client.post(
        "/chat.send", json={"sessionKey": session_key, "message": message, **fields}
    )


async def turn_records(client: httpx2.AsyncClient, run_ids: list[str]) -> list[dict[str, Any]]:
    """``GET /turns/{runId}`` for each id."""
    records = []
    for run_id in run_ids:
        response = await client.get(f"/turns/{run_id}")
        assert response.status_code == 200, response.text
        records.append(response.json())
    return records


@pytest.mark.asyncio
async def test_steer_burst_to_an_agent_without_tools_runs_each_message_as_a_follow_up(
    tmp_path: Path,
) -> None:
    key = "agent:test:burst-steer"
    messages = burst_messages(key)
    with gated_gateway(tmp_path) as gateway:
        async with gateway.client() as client:
            responses = await send_burst(gateway, client, key, messages, "steer")
    bodies = [r.json() for r in responses]
    assert [r.status_code for r in responses] == [200] * BURST
    # A steered message joins a run before its next model step; a run that only talks has
    # none, so every message runs after it as its own turn, with its own reply.
    for message, body in zip(messages, bodies, strict=True):
        assert body["status"] == "ok"
        assert body["reply"] == ECHO_PREFIX + message
        assert "mergedInto" not in body


@pytest.mark.asyncio
async def test_followup_burst_gives_each_message_its_own_reply_in_acceptance_order(
    tmp_path: Path,
) -> None:
    # Of the five queue modes only followup gives every message its own turn; the others
    # each have their own test here (steer, collect, interrupt, reject).
    key = "agent:test:burst-followup"
    messages = burst_messages(key)
    with gated_gateway(tmp_path) as gateway:
        async with gateway.client() as client:
            responses = await send_burst(gateway, client, key, messages, "followup")
            bodies = [r.json() for r in responses]
            records = await turn_records(client, [b["runId"] for b in bodies])

    assert [r.status_code for r in responses] == [200] * BURST
    for message, body in zip(messages, bodies, strict=True):
        assert body["status"] == "ok"
        assert body["reply"] == ECHO_PREFIX + message
        assert "mergedInto" not in body
    assert len({b["runId"] for b in bodies}) == BURST
    by_acceptance = sorted(records, key=lambda r: r["seq"])
    epochs = [r["epoch"] for r in by_acceptance]
    assert all(a < b for a, b in itertools.pairwise(epochs)), f"starts out of order: {epochs}"


@pytest.mark.asyncio
async def test_collect_burst_merges_waiting_messages_into_one_next_turn(tmp_path: Path) -> None:
    key = "agent:test:burst-collect"
    messages = burst_messages(key)
    with gated_gateway(tmp_path) as gateway:
        async with gateway.client() as client:
            responses = await send_burst(gateway, client, key, messages, "collect")
    bodies = [r.json() for r in responses]

    assert [r.status_code for r in responses] == [200] * BURST
    by_run_id = {b["runId"]: b for b in bodies}
    for message, body in zip(messages, bodies, strict=True):
        assert body["status"] == "ok"
        assert message in body["reply"]
        if "mergedInto" in body:
            absorber = by_run_id[body["mergedInto"]]
            assert absorber["runId"] != body["runId"]
            assert "mergedInto" not in absorber
            assert absorber["reply"] == body["reply"]
    runs = {b.get("mergedInto", b["runId"]) for b in bodies}
    # The first message runs alone; the 19 that arrived while it ran share the next turn.
    assert len(runs) == 2
    assert sum("mergedInto" in b for b in bodies) == BURST - 2


@pytest.mark.asyncio
async def test_interrupt_burst_answers_only_the_last_message_and_tells_the_others(
    tmp_path: Path,
) -> None:
    key = "agent:test:burst-interrupt"
    messages = burst_messages(key)
    with gated_gateway(tmp_path) as gateway:
        async with gateway.client() as client:
            responses = await send_burst(gateway, client, key, messages, "interrupt")
            bodies = [r.json() for r in responses]
            records = await turn_records(client, [b["runId"] for b in bodies])

    assert len(bodies) == BURST
    replied = [b for b in bodies if b["status"] == "ok"]
    assert len(replied) == 1, [b["status"] for b in bodies]
    last_accepted = max(records, key=lambda r: r["seq"])
    assert replied[0]["runId"] == last_accepted["runId"]
    winner = bodies.index(replied[0])
    assert replied[0]["reply"] == ECHO_PREFIX + messages[winner]  # aborted runs wrote nothing
    for response, body in zip(responses, bodies, strict=True):
        if body is replied[0]:
            assert response.status_code == 200
            continue
        assert response.status_code == 409
        assert body["status"] == "aborted"
        assert body["error"]["code"] == "superseded"
        assert key in body["error"]["message"]


@pytest.mark.asyncio
async def test_reject_mode_refuses_with_busy_while_a_turn_runs(tmp_path: Path) -> None:
    key = "agent:test:burst-reject"
    with gated_gateway(tmp_path) as gateway:
        async with gateway.client() as client, asyncio.TaskGroup() as sends:
            first = sends.create_task(send(client, key, "first"))
            await gateway.events.until("started", 1)
            refused = await send(client, key, "second", queueMode="reject")
            gateway.provider.open()
    answered = first.result()

    assert refused.status_code == 429
    assert refused.json()["status"] == "rejected"
    assert refused.json()["error"]["code"] == "busy"
    assert key in refused.json()["error"]["message"]
    assert answered.status_code == 200
    assert answered.json()["reply"] == ECHO_PREFIX + "first"


@pytest.mark.asyncio
async def test_reject_mode_message_runs_when_its_session_is_idle(tmp_path: Path) -> None:
    key = "agent:test:reject-idle"
    with gated_gateway(tmp_path) as gateway:
        gateway.provider.open()
        async with gateway.client() as client:
            response = await send(client, key, "alone", queueMode="reject")

    assert response.status_code == 200
    assert response.json()["reply"] == ECHO_PREFIX + "alone"


@pytest.mark.asyncio
async def test_message_past_a_full_queue_is_refused_and_the_queued_ones_still_reply(
    tmp_path: Path,
) -> None:
    key = "agent:test:burst-bounded"
    queue_turns_max = 5
    messages = [f"queued {i}" for i in range(1 + queue_turns_max)]
    with gated_gateway(tmp_path, queue_turns_max=queue_turns_max) as gateway:
        async with gateway.client() as client:
            async with asyncio.TaskGroup() as sends:
                posts = [sends.create_task(send(client, key, m)) for m in messages]
                await gateway.events.until("started", 1)
                await gateway.events.until("queued", len(messages))
                overflow = await send(client, key, "one too many")
                gateway.provider.open()
            answered = [post.result() for post in posts]
            after_drain = await send(client, key, "after the queue drained")

    assert overflow.status_code == 429
    assert overflow.json()["status"] == "rejected"
    assert overflow.json()["error"]["code"] == "queue_full"
    assert key in overflow.json()["error"]["message"]
    assert [r.status_code for r in answered] == [200] * len(messages)
    assert [r.json()["reply"] for r in answered] == [ECHO_PREFIX + m for m in messages]
    assert after_drain.status_code == 200
    assert after_drain.json()["reply"] == ECHO_PREFIX + "after the queue drained"


@pytest.mark.asyncio
async def test_queued_message_past_its_deadline_ends_expired_and_the_running_one_replies(
    tmp_path: Path,
) -> None:
    key = "agent:test:burst-expired"
    with gated_gateway(tmp_path) as gateway:
        async with gateway.client() as client:
            async with asyncio.TaskGroup() as sends:
                first = sends.create_task(send(client, key, "first"))
                await gateway.events.until("started", 1)
                expired = await send(client, key, "impatient", timeoutMs=200)
                gateway.provider.open()
            answered = first.result()
            after = await send(client, key, "later")

    assert expired.status_code == 504
    assert expired.json()["status"] == "expired"
    assert expired.json()["error"]["code"] == "turn_expired"
    assert key in expired.json()["error"]["message"]
    assert answered.status_code == 200
    assert answered.json()["reply"] == ECHO_PREFIX + "first"
    assert after.json()["reply"] == ECHO_PREFIX + "later"
