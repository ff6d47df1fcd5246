"""Clients that reach the gateway through its edges: HTTP, WebSocket and the OpenAI API.

In a share of seeds a client sends some or all of its messages through the gateway's
Starlette app (``sim/asgi.py``) instead of calling the engine: ``POST /chat.send`` waiting
for the outcome, or not waiting and then polling ``GET /turns/{runId}``; ``chat.send`` on a
WebSocket, with its ``chat`` events; ``POST /v1/chat/completions``, plain or streamed. Each
surface's answer becomes an :class:`Answer`, which the checker compares with the outcome
the store recorded (I1: the client holds the true outcome, never a canned one), and a
WebSocket client counts the terminal ``chat`` events of each run id on each connection (I1:
exactly one).

Like a real client, one that is told "pending" (the gateway shutting down, storage full,
no outcome in time), loses its connection or stops waiting, asks again later with the same
idempotency key; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode
from turngate.runtime.engine_api import OUTCOME_WAIT_MARGIN_S
from turngate.sim.asgi import ClientLeft, ConnectionLost, HttpAnswer, Socket, Wire

if TYPE_CHECKING:
    from turngate.sim.workload import ClientRecord, ClientTurn, Gateway
    from turngate.sim.world import SimParams

CLIENT_MARGIN_S = 1.0
RETRIES_MAX = 400
POLL_S = (0.05, 1.5)
"""A polling client asks ``GET /turns/{runId}`` again after a pause drawn from this range."""
RESEND_SHARE = 0.2
"""Share of WebSocket sends a client repeats on the same connection (a retry of a request
whose answer it did not see in time): the run's terminal event must still come once."""
MODEL = "turngate/sim"

PENDING_CODES = frozenset(
    {ErrorCode.SHUTDOWN, ErrorCode.STORAGE_UNAVAILABLE, ErrorCode.STORE_ERROR}
)
"""Codes of answers that mean "not decided yet": the turn, if it was accepted, goes on."""
STATES = {
    "ok": TurnState.REPLIED,
    "failed": TurnState.FAILED,
    "aborted": TurnState.ABORTED,
    "rejected": TurnState.REJECTED,
    "expired": TurnState.EXPIRED,
}
"""Terminal wire statuses (``frames.WIRE_STATUS``, read back)."""


class Surface(enum.StrEnum):
    """How a client sends a message."""

    ENGINE = "engine"
    """The runtime directly (``Engine.submit``): no gateway edge."""
    HTTP = "http"
    """``POST /chat.send`` with ``"wait": true``."""
    HTTP_POLL = "http-poll"
    """``POST /chat.send`` with ``"wait": false``, then ``GET /turns/{runId}``."""
    WS = "ws"
    """``chat.send`` on the client's WebSocket, then its ``chat`` events."""
    OPENAI = "openai"
    """``POST /v1/chat/completions``."""
    OPENAI_STREAM = "openai-stream"
    """``POST /v1/chat/completions`` with ``"stream": true``."""


EDGES: tuple[Surface, ...] = tuple(s for s in Surface if s is not Surface.ENGINE)


@dataclass(frozen=True, slots=True)
class Answer:
    """A turn's outcome as a client read it off the wire; ``None`` where a surface does not
    say (an OpenAI error names no state; a completion, no run id)."""

    surface: Surface
    state: TurnState | None
    run_id: str | None = None
    reply: str | None = None
    code: str | None = None
    message: str | None = None

    def agrees(self, outcome: Outcome | None) -> bool:
        """Whether ``outcome`` (the store's) is what this answer says."""
        if outcome is None:
            return False
        said: list[tuple[object, object]] = [
            (self.state, outcome.state),
            (self.run_id, outcome.run_id),
            (self.code, outcome.code.value if outcome.code else None),
            (self.message, outcome.message),
        ]
        if any(mine is not None and mine != theirs for mine, theirs in said):
            return False
        return self.reply == outcome.reply or (self.state is None and self.code is not None)


class SimClientError(RuntimeError):
    """The gateway refused a request a simulated client built: a bug of the simulation (or
    of the gateway's validation); the run fails as a crash, with this message."""


class _Pending(Exception):
    """An answer that decides nothing yet: ask again (``acked``: the turn is stored)."""

    def __init__(self, acked: bool, why: str) -> None:
        super().__init__(why)
        self.acked = acked


class EdgeClient:
    """One simulated client's use of the gateway's edges (see the module docstring)."""

    def __init__(
        self,
        rng: random.Random,
        params: SimParams,
        gateway: Gateway,
        name: str,
        record: ClientRecord,
    ) -> None:
        self.rng = rng
        self.params = params
        self.gateway = gateway
        self.name = name
        self.record = record
        self._link: _Link | None = None
        self._linking = asyncio.Lock()

    async def exchange(self, turn: ClientTurn) -> None:
        """Send ``turn`` through its surface until the client holds its outcome."""
        loop = asyncio.get_running_loop()
        for _ in range(RETRIES_MAX):
            wire = self.gateway.wire
            if wire is None or not wire.alive:
                await self.gateway.wait_up()
                continue
            patience = (
                self.params.turn_timeout_s
                + self.params.abort_grace_s
                + OUTCOME_WAIT_MARGIN_S
                + CLIENT_MARGIN_S
            )
            leave = (
                self.rng.uniform(0.0, self.params.latency_max_s + 1.0)
                if self.rng.random() < self.params.p_disconnect
                else None
            )
            leave_at = loop.time() + (patience if leave is None else min(leave, patience))
            try:
                answer = await self._attempt(wire, turn, leave_at)
            except _Pending as pending:
                if pending.acked:
                    self.record.acked.setdefault(turn.turn_id, turn)
                await asyncio.sleep(self.rng.uniform(*POLL_S))
                continue
            except ConnectionLost:
                await asyncio.sleep(self.rng.uniform(*POLL_S))
                continue
            except ClientLeft:
                if leave is None and not self.gateway.excuses(loop.time(), CLIENT_MARGIN_S):
                    self.record.missed_deadlines.append((turn.turn_id, loop.time()))
                    return
                await asyncio.sleep(self.rng.uniform(0.0, 2.0))  # back later, same key
                continue
            self.record.acked.setdefault(turn.turn_id, turn)
            self.record.outcomes[turn.turn_id] = answer
            return
        self.record.gave_up.append(turn.turn_id)

    async def abort(self, session_key: str) -> None:
        """``POST /chat.abort`` for the session (what it finds running or queued)."""
        wire = self.gateway.wire
        if wire is None:
            return
        leave_at = asyncio.get_running_loop().time() + self.params.abort_grace_s + 5.0
        # An abort is best effort: the turn ends either way.
        with contextlib.suppress(ConnectionLost, ClientLeft):
            await wire.request(
                "POST", "/chat.abort", {"sessionKey": session_key}, leave_at=leave_at
            )

    def close(self) -> None:
        """The client is done: its WebSocket, if any, goes away."""
        if self._link is not None:
            self._link.close()

    async def _attempt(self, wire: Wire, turn: ClientTurn, leave_at: float) -> Answer:
        surface = Surface(turn.surface)
        if surface is Surface.HTTP:
            return await self._http(wire, turn, leave_at, wait=True)
        if surface is Surface.HTTP_POLL:
            return await self._http(wire, turn, leave_at, wait=False)
        if surface is Surface.WS:
            return await self._ws(wire, turn, leave_at)
        return await self._openai(wire, turn, leave_at, stream=surface is Surface.OPENAI_STREAM)

    # -- HTTP ---------------------------------------------------------------------------

    async def _http(self, wire: Wire, turn: ClientTurn, leave_at: float, *, wait: bool) -> Answer:
        body = {
            "sessionKey": turn.session_key,
            "message": turn.message,
            "idempotencyKey": turn.turn_id,
            "queueMode": turn.mode.value,
            "timeoutMs": round(self.params.turn_timeout_s * 1000),
            "wait": wait,
        }
        answer = await wire.request("POST", "/chat.send", body, leave_at=leave_at)
        found = _chat_answer(answer, Surface.HTTP if wait else Surface.HTTP_POLL)
        if found is not None or wait:
            return _decided(found, answer)
        self.record.acked.setdefault(turn.turn_id, turn)
        while True:  # bounded by leave_at: every request below has it as its deadline
            await asyncio.sleep(self.rng.uniform(*POLL_S))
            polled = await wire.request("GET", f"/turns/{turn.turn_id}", leave_at=leave_at)
            found = _chat_answer(polled, Surface.HTTP_POLL)
            if found is not None:
                return found

    # -- WebSocket ----------------------------------------------------------------------

    async def _ws(self, wire: Wire, turn: ClientTurn, leave_at: float) -> Answer:
        link = await self._ensure_link(wire, leave_at)
        params = {
            "sessionKey": turn.session_key,
            "message": turn.message,
            "idempotencyKey": turn.turn_id,
            "queueMode": turn.mode.value,
            "timeoutMs": round(self.params.turn_timeout_s * 1000),
        }
        terminal = link.watch(turn.turn_id)
        try:
            ack = await link.call("chat.send", params, leave_at)
            if not ack.get("ok"):
                error = ack.get("error") or {}
                # The protocol's error shape: OpenClaw's code, turngate's in details.
                if (error.get("details") or {}).get("code") not in PENDING_CODES:
                    raise SimClientError(f"chat.send refused a simulated client: {error}")
                raise _Pending(False, f"chat.send refused: {error}")
            self.record.acked.setdefault(turn.turn_id, turn)
            if self.rng.random() < RESEND_SHARE:
                await link.call("chat.send", params, leave_at)  # only an ack may come back
            payload = await link.wait_terminal(terminal, leave_at)
        except ClientLeft:
            # A client that stops waiting drops its connection (the gateway's ledger has
            # this run on it): it asks again on a new one.
            link.close()
            raise
        finally:
            link.unwatch(turn.turn_id, terminal)
        answer = _chat_event_answer(payload)
        if answer is None:
            link.close()  # its ledger already relayed this run: ask on a fresh connection
            raise _Pending(True, f"chat event says pending: {payload.get('errorMessage')}")
        return answer

    async def _ensure_link(self, wire: Wire, leave_at: float) -> _Link:
        async with self._linking:
            link = self._link
            if link is None or not link.usable(wire):
                if link is not None:
                    link.close()
                self._link = None
                link = await _Link.open(wire, self.name, self.record, leave_at)
                self._link = link
            return link

    # -- OpenAI -------------------------------------------------------------------------

    async def _openai(
        self, wire: Wire, turn: ClientTurn, leave_at: float, *, stream: bool
    ) -> Answer:
        surface = Surface.OPENAI_STREAM if stream else Surface.OPENAI
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": turn.message}],
            "stream": stream,
        }
        headers = {"x-turngate-session": turn.session_key, "idempotency-key": turn.turn_id}
        answer = await wire.request(
            "POST", "/v1/chat/completions", body, headers=headers, leave_at=leave_at
        )
        if stream and answer.status == 200:
            return self._sse_answer(answer, surface)
        data = answer.json()
        if answer.status == 200:
            reply = data["choices"][0]["message"]["content"]
            return Answer(surface, TurnState.REPLIED, reply=reply)
        return self._openai_error(data["error"], answer, surface)

    def _sse_answer(self, answer: HttpAnswer, surface: Surface) -> Answer:
        text: list[str] = []
        for block in answer.body.decode().split("\n\n"):
            if not block.startswith("data: ") or block == "data: [DONE]":
                continue
            event = json.loads(block.removeprefix("data: "))
            if "error" in event:
                return self._openai_error(event["error"], answer, surface)
            for choice in event.get("choices", []):
                text.append(choice["delta"].get("content", ""))
                if choice.get("finish_reason") == "stop":
                    return Answer(surface, TurnState.REPLIED, reply="".join(text))
        raise ConnectionLost("the stream ended without a finish or an error")

    def _openai_error(self, error: dict[str, Any], answer: HttpAnswer, surface: Surface) -> Answer:
        code = str(error.get("code"))
        accepted = answer.headers.get("x-should-retry") == "false"
        if code in PENDING_CODES:
            raise _Pending(accepted, f"{code}: {error.get('message')}")
        # The OpenAI shape cannot tell "ended expired" from "no outcome in time" (both are
        # turn_expired); while storage excuses a late end, the client asks again.
        now = asyncio.get_running_loop().time()
        if code == ErrorCode.TURN_EXPIRED and self.gateway.excuses(now, OUTCOME_WAIT_MARGIN_S):
            raise _Pending(True, "turn_expired while storage was failing")
        return Answer(surface, None, code=code)


class _Link:
    """One WebSocket to the gateway, shared by a client's concurrent sends: it reads every
    frame, answers requests by id, and hands each run's terminal ``chat`` event to its
    waiter, counting them per run id (more than one is recorded for the checker)."""

    def __init__(self, wire: Wire, socket: Socket, name: str, record: ClientRecord) -> None:
        self.ids = itertools.count(1)
        self.wire = wire
        self.socket = socket
        self.name = name
        self.record = record
        self._calls: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runs: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._terminals: dict[str, int] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, wire: Wire, name: str, record: ClientRecord, until: float) -> _Link:
        """Connect and shake hands (``connect.challenge``, ``connect``, ``hello-ok``)."""
        socket = await wire.connect("/ws", give_up_at=until)
        try:
            challenge = await socket.next_frame(until)
            if challenge.get("event") != "connect.challenge":
                raise ConnectionLost(f"expected connect.challenge, got {challenge}")
            socket.send(
                {
                    "type": "req",
                    "id": "connect",
                    "method": "connect",
                    "params": {"minProtocol": 4, "maxProtocol": 4, "client": {"id": name}},
                }
            )
            hello = await socket.next_frame(until)
            if not hello.get("ok"):
                raise ConnectionLost(f"connect refused: {hello}")
        except BaseException:
            socket.leave()
            raise
        link = cls(wire, socket, name, record)
        link._reader = asyncio.get_running_loop().create_task(link._read())
        return link

    def usable(self, wire: Wire) -> bool:
        return self.wire is wire and self.socket.open and wire.alive

    def close(self) -> None:
        self.socket.leave()
        if self._reader is not None:
            self._reader.cancel()
        self._fail_all()

    def watch(self, run_id: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._runs.setdefault(run_id, []).append(future)
        return future

    def unwatch(self, run_id: str, future: asyncio.Future[dict[str, Any]]) -> None:
        waiters = self._runs.get(run_id, [])
        if future in waiters:
            waiters.remove(future)

    async def call(self, method: str, params: dict[str, Any], until: float) -> dict[str, Any]:
        """Send one request; its response frame."""
        request_id = f"{self.name}-{next(self.ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[request_id] = future
        try:
            self.socket.send({"type": "req", "id": request_id, "method": method, "params": params})
            return await _until(future, until)
        finally:
            self._calls.pop(request_id, None)

    async def wait_terminal(
        self, future: asyncio.Future[dict[str, Any]], until: float
    ) -> dict[str, Any]:
        return await _until(future, until)

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.socket.next_frame(None)
                if frame.get("type") == "res":
                    call = self._calls.get(str(frame.get("id")))
                    if call is not None and not call.done():
                        call.set_result(frame)
                elif frame.get("type") == "event" and frame.get("event") == "chat":
                    self._chat(frame.get("payload") or {})
        except ConnectionLost:
            pass
        finally:
            self._fail_all()

    def _chat(self, payload: dict[str, Any]) -> None:
        if payload.get("state") not in ("final", "aborted", "error"):
            return
        run_id = str(payload.get("runId"))
        seen = self._terminals.get(run_id, 0) + 1
        self._terminals[run_id] = seen
        if seen > 1:
            loop = asyncio.get_running_loop()
            self.record.extra_answers.append(
                (run_id, loop.time(), f"{seen} terminal chat events on one WebSocket")
            )
        for waiter in self._runs.pop(run_id, []):
            if not waiter.done():
                waiter.set_result(payload)

    def _fail_all(self) -> None:
        lost = ConnectionLost("the WebSocket closed")
        for future in [*self._calls.values(), *itertools.chain(*self._runs.values())]:
            if not future.done():
                future.set_exception(lost)
                future.exception()  # its waiter may have left already: nobody else will


async def _until(future: asyncio.Future[dict[str, Any]], until: float) -> dict[str, Any]:
    try:
        async with asyncio.timeout_at(until):
            return await asyncio.shield(future)
    except TimeoutError:
        raise ClientLeft from None


# -- reading answers ----------------------------------------------------------------------


def _chat_answer(answer: HttpAnswer, surface: Surface) -> Answer | None:
    """A ``/chat.send`` or ``/turns`` body's outcome; None while the turn has none; raises
    :class:`_Pending` for a refusal that decides nothing."""
    try:
        data = answer.json()
    except ValueError:
        raise ConnectionLost(f"an answer that is not JSON ({answer.status})") from None
    state = STATES.get(str(data.get("status")))
    if state is None:
        if "runId" in data:
            return None
        error = data.get("error") or {}
        refusal = f"{answer.status} {error.get('code')}: {error.get('message')}"
        if error.get("code") in PENDING_CODES:
            raise _Pending(False, refusal)
        raise SimClientError(f"{surface} refused a simulated client's request: {refusal}")
    error = data.get("error") or {}
    return Answer(
        surface,
        state,
        run_id=data.get("mergedInto") or data["runId"],
        reply=data.get("reply"),
        code=error.get("code"),
        message=error.get("message", ""),
    )


def _decided(found: Answer | None, answer: HttpAnswer) -> Answer:
    if found is None:
        raise _Pending(True, f"{answer.status}: the turn has no outcome yet")
    return found


def _chat_event_answer(payload: dict[str, Any]) -> Answer | None:
    """A terminal ``chat`` event's outcome; None for a "pending" one."""
    run_id = payload.get("mergedInto") or payload.get("runId")
    state = payload.get("state")
    if state == "final":
        content = payload["message"]["content"]
        reply = "".join(part.get("text", "") for part in content)
        return Answer(Surface.WS, TurnState.REPLIED, run_id=run_id, reply=reply)
    if state == "aborted":
        # stopReason is the outcome's code, or "aborted" when it has none.
        reason = payload.get("stopReason")
        return Answer(
            Surface.WS,
            TurnState.ABORTED,
            run_id=run_id,
            code=None if reason == "aborted" else reason,
            message=payload.get("errorMessage", ""),
        )
    detail = payload.get("errorDetail") or {}
    if detail.get("status") == "pending":
        return None
    return Answer(
        Surface.WS,
        TurnState(detail["status"]),
        run_id=run_id,
        code=detail.get("code"),
        message=payload.get("errorMessage", ""),
    )
