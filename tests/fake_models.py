"""One scriptable fake model for every test: each call follows a :class:`Call` script.

A call does, in this order: swallow cancellation for a while (``ignore_cancel_s``), or forever
(``wedged``); hang until cancelled (``hang``); raise (``raises``); wait (``latency_s``); stream
its reply in ``chunks`` deltas, ``interval_s`` apart, stopping at the model's gate after
``gate_after`` of them until the test opens it; ask for its tool calls; finish (``stop``, or
``tool_calls`` after a tool call, with the call's usage if scripted). The reply is the echo
provider's (``echo: <the new user messages>``) unless the call says otherwise.

Every wait is an ``asyncio.sleep`` on the running loop, so on the simulator's virtual-time
loop a call takes exactly its scripted time and costs nothing. The gate is thread-safe: a
test thread may open it while the model runs in a gateway's thread.

    model = ScriptedModel([Call(hang=True)], then=Call(latency_s=0.5))
    # call 1 hangs until cancelled; every later call echoes after 0.5 s
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from turngate.providers.base import (
    Finish,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from turngate.providers.echo import ECHO_PREFIX
from turngate.sim.world import ignore_cancellation_for

WEDGED_NAP_S = 3600.0
"""How long a wedged call sleeps between the cancellations it swallows."""

Reply = str | Callable[[ProviderRequest], str]
"""A fixed reply, or one made from the request."""


def echo(request: ProviderRequest) -> str:
    """The echo provider's reply: ``echo: <the new user messages>``."""
    return ECHO_PREFIX + "\n".join(request.new_user_messages())


def echo_last(request: ProviderRequest) -> str:
    """``echo: <the last message>``."""
    return ECHO_PREFIX + request.messages[-1].content


def heartbeat_ok_or_echo(request: ProviderRequest) -> str:
    """``HEARTBEAT_OK`` to a heartbeat prompt, :func:`echo_last` to anything else."""
    last = request.messages[-1].content
    return "HEARTBEAT_OK" if last.startswith("Heartbeat") else ECHO_PREFIX + last


@dataclass(frozen=True, slots=True)
class Call:
    """What one model call does (see the module docstring for the order)."""

    reply: Reply = echo
    latency_s: float | None = None
    """Before the first delta. None: no wait at all; 0.0: one pass through the loop."""
    chunks: int = 3
    """The reply is split into this many deltas (fewer when it is shorter)."""
    interval_s: float | None = 0.0
    """Between deltas. None: no wait at all (they come at once, and a session's owner takes
    them joined); 0.0: one pass through the loop, as deltas read off a socket come."""
    hang: bool = False
    """Wait until cancelled; the cancellation ends the call."""
    ignore_cancel_s: float = 0.0
    """First swallow every cancellation for this long, then go on with the call."""
    wedged: bool = False
    """Swallow every cancellation forever: the call never ends."""
    raises: BaseException | None = None
    """Raise this instead of replying."""
    gate_after: int | None = None
    """Stop at the model's gate after this many deltas, until the test opens it."""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    """Yielded after the reply's deltas: the model asks for tools."""
    usage: Callable[[ProviderRequest, str], tuple[int, int]] | None = None
    """``(prompt, completion)`` tokens that the call's Finish reports, from the request and
    the reply."""


class ScriptedModel:
    """A provider whose n-th call follows ``script[n - 1]``, and every call past the script
    follows ``then``. Records every request; thread-safe for the gateway tests."""

    def __init__(
        self, script: Sequence[Call] = (), *, then: Call | None = None, name: str = "scripted"
    ) -> None:
        self.name = name
        self.script = tuple(script)
        self.then = then or Call()
        self.requests: list[ProviderRequest] = []
        self._lock = threading.Lock()
        self._gate_open = False
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def calls(self) -> int:
        """How many calls started."""
        with self._lock:
            return len(self.requests)

    def open(self) -> None:
        """Let every call waiting at the gate go on, and all later ones pass (thread-safe)."""
        with self._lock:
            self._gate_open = True
            waiting, self._waiting = self._waiting, []
        for loop, gate in waiting:
            loop.call_soon_threadsafe(gate.set)

    def close(self) -> None:
        """Hold the calls that start from now on at the gate again."""
        with self._lock:
            self._gate_open = False

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Follow this call's script (see the module docstring)."""
        gate = asyncio.Event()
        with self._lock:
            self.requests.append(request)
            number = len(self.requests)
            call = self.script[number - 1] if number <= len(self.script) else self.then
            if self._gate_open or call.gate_after is None:
                gate.set()
            else:
                self._waiting.append((asyncio.get_running_loop(), gate))
        if call.wedged:
            while True:  # a run whose cleanup never happens: it swallows every cancellation
                try:
                    await asyncio.sleep(WEDGED_NAP_S)
                except asyncio.CancelledError:
                    continue
        if call.ignore_cancel_s > 0:
            await ignore_cancellation_for(call.ignore_cancel_s)  # swallows cancellation
        if call.hang:
            await asyncio.Event().wait()
        if call.raises is not None:
            raise call.raises
        reply = call.reply if isinstance(call.reply, str) else call.reply(request)
        if call.latency_s is not None:
            await asyncio.sleep(call.latency_s)
        deltas = split(reply, call.chunks)
        for index, delta in enumerate(deltas):
            if index == call.gate_after:
                await gate.wait()
            if index > 0 and call.interval_s is not None:
                await asyncio.sleep(call.interval_s)
            yield TextDelta(delta)
        if call.gate_after is not None and call.gate_after >= len(deltas):
            await gate.wait()
        for tool_call in call.tool_calls:
            yield tool_call
        usage = None if call.usage is None else Usage(*call.usage(request, reply))
        yield Finish("tool_calls" if call.tool_calls else "stop", usage)


def split(reply: str, chunks: int) -> list[str]:
    """``reply`` in at most ``chunks`` deltas of equal size, as the echo provider streams it."""
    size = max(1, -(-len(reply) // max(1, chunks)))
    return [reply[start : start + size] for start in range(0, len(reply), size)]
