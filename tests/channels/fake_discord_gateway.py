"""The gateway half of the fake Discord (``fake_discord.py``): its WebSocket connections.

:class:`FakeGateway` serves ``/gateway`` and ``/resume`` (READY's ``resume_gateway_url``), each
also with a trailing slash and with any query. Like Discord: HELLO on connect; HEARTBEAT_ACK for
every heartbeat; IDENTIFY starts a session whose dispatches are numbered from 1 (READY) and
kept; RESUME replays those after its ``seq``, then RESUMED. Wrong token: close 4004; a
disallowed intent: 4014; a second IDENTIFY or RESUME: 4005; anything but a heartbeat before
either: 4003; not a JSON object: 4002; an unknown op: 4001; a RESUME ``seq`` past the
session's: 4007. A RESUME of an unknown session, or of one that ended (the client closed with
1000 or 1001, or :meth:`FakeGateway.invalidate` said so), gets op 9 ``false`` on a socket left
open. Guild messages come only with the GUILD_MESSAGES intent (DMs with DIRECT_MESSAGES), and
without MESSAGE_CONTENT their text is blank unless they mention the bot. The REST half
(:class:`FakeRest`) makes the message objects (one sequence of ids) and answers refused
handshakes.

Scriptable: ``hello_gate``, ``ack_heartbeats`` (also per connection), ``disallowed_intents``,
``resumable``, ``enforce_intents``, ``echo_sent``, ``handshake_failures``; ``reconnect``,
``invalidate``, ``request_heartbeat``, ``close`` and ``drop`` act on the newest open
connection; ``message`` and ``dispatch`` send events. Records: ``connections``, ``sessions``,
``messages``, ``withheld``, ``errors``; ``signal`` is notified at every change.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import uvicorn
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.channels.fake_discord_connection import (
    CLIENT_OPS,
    CLOSE_REASONS,
    INTENTS_MAX,
    Connection,
    Heartbeat,
    Intent,
    Op,
    QueuedClose,
    QueuedFrame,
    Received,
    Session,
    frame_of,
)
from tests.channels.fake_discord_rest import (
    BOT_ID,
    SNOWFLAKE_BASE_MS,
    Failure,
    FakeRest,
    bot_user,
    failure_response,
    timestamp,
)
from tests.channels.fake_telegram import Signal

HEARTBEAT_INTERVAL_MS_DEFAULT = 41_250


class FakeGateway:
    """The fake's gateway, its state and script (see the module docstring)."""

    def __init__(
        self,
        *,
        token: str,
        signal: Signal,
        rest: FakeRest,
        resume_url: Callable[[], str],
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
    ) -> None:
        """``rest`` makes the message objects; ``resume_url`` is what READY names."""
        self.token = token
        self.signal = signal
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.hello_gate: asyncio.Event | None = None
        """While this is an event not set, new connections get no HELLO (nor anything else)."""
        self.ack_heartbeats = True
        self.disallowed_intents = 0
        self.resumable = True
        """False: every RESUME gets op 9 ``false``."""
        self.enforce_intents = True
        self.echo_sent = False
        """True: messages the bot makes come back as MESSAGE_CREATE, as on Discord."""
        self.handshake_failures: list[int] = []
        """HTTP statuses that the next WebSocket handshakes are refused with."""
        self.refused_handshakes = 0
        self.errors: list[Exception] = []
        """Exceptions the fake raised handling a frame (a bug of the fake's; none expected)."""
        self.connections: list[Connection] = []
        self.sessions: list[Session] = []
        self.messages: list[dict[str, Any]] = []
        """Every message :meth:`message` made, in full (as a client with every intent sees it)."""
        self.withheld: list[dict[str, Any]] = []
        """Messages the session's intents kept from it."""
        self.server: uvicorn.Server | None = None
        """The server it runs in (:meth:`drop` aborts a connection's TCP transport there)."""
        self._rest = rest
        self._resume_url = resume_url

    @property
    def current(self) -> Connection | None:
        """The newest connection still open."""
        return next((c for c in reversed(self.connections) if c.open), None)

    @property
    def session(self) -> Session | None:
        """The newest session: where :meth:`message` and :meth:`dispatch` go."""
        return self.sessions[-1] if self.sessions else None

    @property
    def heartbeats(self) -> list[Heartbeat]:
        return [h for c in self.connections for h in c.heartbeats]

    def routes(self) -> list[WebSocketRoute]:
        """The gateway's routes, for the fake's app."""
        return [
            *(WebSocketRoute(p, self._gateway) for p in ("/gateway", "/gateway/")),
            *(WebSocketRoute(p, self._gateway) for p in ("/resume", "/resume/")),
        ]

    # What tests do: events.

    def message(
        self,
        channel_id: str,
        author_id: str,
        content: str,
        *,
        guild_id: str | None = None,
        mention_bot: bool = False,
        reply_to_bot: bool = False,
        author_bot: bool = False,
        username: str = "ada",
    ) -> str:
        """Dispatch MESSAGE_CREATE in the newest session (kept for a RESUME when no connection
        carries it); returns the message id. Raises RuntimeError before the first IDENTIFY."""
        session = self._newest_session()
        if guild_id is not None:
            self._rest.channel_guilds[channel_id] = guild_id
        earlier = self._rest.bot_message_in(channel_id) if reply_to_bot else None
        author: dict[str, Any] = {
            "id": author_id,
            "username": username,
            "discriminator": "0",
            "global_name": username.capitalize(),
            "avatar": None,
        }
        if author_bot:
            author["bot"] = True
        text = f"<@{BOT_ID}> {content}" if mention_bot else content
        mentions = [bot_user()] if mention_bot else []
        data = self._rest.message_object(channel_id, guild_id, author, text, mentions)
        if guild_id is not None:
            joined = timestamp(str(SNOWFLAKE_BASE_MS << 22))
            data["member"] = {"roles": [], "joined_at": joined, "nick": None, "deaf": False}
        if earlier is not None:
            reference = {"type": 0, "message_id": earlier["id"], "channel_id": channel_id}
            if guild_id is not None:
                reference["guild_id"] = guild_id
            data.update(type=19, message_reference=reference, referenced_message=earlier)
        self.messages.append(data)
        self._dispatch_message(session, data)
        return str(data["id"])

    def dispatch(self, event_type: str, data: Any) -> int:
        """Dispatch any event in the newest session; returns its sequence number."""
        return self._dispatch(self._newest_session(), event_type, data)

    def echo(self, made: dict[str, Any]) -> None:
        """A message the bot made: back as MESSAGE_CREATE in the newest session, if
        ``echo_sent``."""
        if self.echo_sent and self.sessions:
            self._dispatch_message(self.sessions[-1], made)

    # What tests do: the gateway's controls, on the newest open connection by default.

    def reconnect(self, connection: Connection | None = None) -> None:
        self._send(self._target(connection), frame_of(Op.RECONNECT, None))

    def invalidate(self, resumable: bool, connection: Connection | None = None) -> None:
        """Op 9 with ``d = resumable``; the connection carries its session no longer (and
        with ``resumable`` False, the session cannot be resumed)."""
        conn = self._target(connection)
        if conn.session is not None and not resumable:
            conn.session.resumable = False
        self._send(conn, frame_of(Op.INVALID_SESSION, resumable))
        conn.session = None

    def request_heartbeat(self, connection: Connection | None = None) -> None:
        conn = self._target(connection)
        conn.heartbeat_requests.append(asyncio.get_running_loop().time())
        self._send(conn, frame_of(Op.HEARTBEAT, None))

    def close(
        self, code: int, reason: str | None = None, connection: Connection | None = None
    ) -> None:
        """Close the connection with ``code`` (and Discord's reason for it, by default),
        after the frames already queued on it."""
        self._close(self._target(connection), code, reason)

    def drop(self, connection: Connection | None = None) -> None:
        """End the TCP connection at once, without a close frame."""
        conn = self._target(connection)
        conn.closing = conn.dropped = True
        conn.stop.set()
        server = self.server
        for protocol in list(server.server_state.connections if server else ()):
            if getattr(protocol, "client", None) == conn.client:
                transport = getattr(protocol, "transport", None)
                if isinstance(transport, asyncio.Transport):
                    transport.abort()
        self.signal.notify()

    def close_all(self, code: int = 1001) -> None:
        for conn in self.connections:
            if conn.open:
                self._close(conn, code, "The fake is stopping.")

    # Serving connections.

    async def _gateway(self, ws: WebSocket) -> None:
        if self.handshake_failures:
            status = self.handshake_failures.pop(0)
            self.refused_handshakes += 1
            self.signal.notify()
            await ws.send_denial_response(failure_response(Failure(status, message="Bad Gateway")))
            return
        await ws.accept()
        loop = asyncio.get_running_loop()
        client = ws.scope.get("client")
        conn = Connection(
            index=len(self.connections) + 1,
            path=ws.scope["path"],
            query=ws.scope["query_string"].decode("latin-1"),
            client=(client[0], client[1]) if client else None,
            opened_at=loop.time(),
        )
        self.connections.append(conn)
        self.signal.notify()
        try:
            async with asyncio.TaskGroup() as tg:
                writer = tg.create_task(self._write(conn, ws))
                await self._read(conn, ws)
                writer.cancel()
        finally:
            conn.closing = True
            conn.stop.set()
            conn.closed_at = loop.time()
            self.signal.notify()

    async def _read(self, conn: Connection, ws: WebSocket) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code", 1005))
                if "reason" not in message:
                    # uvicorn's event for a TCP connection lost without a close frame (it says
                    # 1005 there): record it as RFC 6455's 1006, abnormal closure.
                    code = 1006
                if conn.server_close_code is None and not conn.dropped:
                    conn.client_close_code = code
                    if code in (1000, 1001) and conn.session is not None:
                        conn.session.resumable = False  # as Discord: these end the session
                return
            now = asyncio.get_running_loop().time()
            text = message.get("text")
            try:
                if isinstance(text, str):
                    self._on_text(conn, text, now)
                else:
                    conn.frames.append(Received(message.get("bytes"), now))
                    self._close(conn, 4002)
            except Exception as exc:  # the fake's own bug: kept, and the client sees 4000
                self.errors.append(exc)
                self._close(conn, 4000)
            self.signal.notify()

    async def _write(self, conn: Connection, ws: WebSocket) -> None:
        gate = self.hello_gate
        if gate is not None and not gate.is_set():
            await _first_set(gate, conn.stop)
        hello = frame_of(Op.HELLO, {"heartbeat_interval": self.heartbeat_interval_ms})
        if not conn.closing and not await self._transmit(conn, ws, hello):
            return
        while True:
            item = await conn.outbox.get()
            if isinstance(item, QueuedClose):
                conn.server_close_code = item.code
                with suppress(Exception):
                    await ws.close(item.code, item.reason)
                self.signal.notify()
                return
            # Closed before HELLO went out: nothing but the close frame goes out.
            if conn.dropped or conn.hello_at is None:
                continue
            if not await self._transmit(conn, ws, item.frame):
                return

    async def _transmit(self, conn: Connection, ws: WebSocket, frame: dict[str, Any]) -> bool:
        """Send ``frame`` and record it; False if the client is gone (the reader sees it too)."""
        try:
            await ws.send_text(json.dumps(frame))
        except Exception:
            return False
        now = asyncio.get_running_loop().time()
        if frame["op"] == Op.HELLO:
            conn.hello_at = now
        conn.sent.append(Received(frame, now))
        self.signal.notify()
        return True

    def _on_text(self, conn: Connection, text: str, now: float) -> None:
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            conn.frames.append(Received(text, now))
            self._close(conn, 4002)
            return
        conn.frames.append(Received(payload, now))
        if conn.closing:
            return
        op = payload.get("op") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or type(op) is not int:
            self._close(conn, 4002)
        elif op not in CLIENT_OPS:
            self._close(conn, 4001)
        elif op == Op.HEARTBEAT:
            conn.heartbeats.append(Heartbeat(conn.index, payload.get("d"), now))
            ack = self.ack_heartbeats if conn.ack_heartbeats is None else conn.ack_heartbeats
            if ack:
                self._send(conn, frame_of(Op.HEARTBEAT_ACK, None))
        elif op in (Op.IDENTIFY, Op.RESUME):
            if conn.session is not None:
                self._close(conn, 4005)
            elif op == Op.IDENTIFY:
                self._identify(conn, payload.get("d"))
            else:
                self._resume(conn, payload.get("d"))
        elif conn.session is None:
            self._close(conn, 4003)
        # Presence, voice state, member requests: recorded, not answered.

    def _identify(self, conn: Connection, d: Any) -> None:
        conn.identifies.append(d)
        if not isinstance(d, dict):
            self._close(conn, 4002)
            return
        intents = d.get("intents")
        if d.get("token") != self.token:
            self._close(conn, 4004)
        elif type(intents) is not int or not 0 <= intents <= INTENTS_MAX:
            self._close(conn, 4013)
        elif intents & self.disallowed_intents:
            self._close(conn, 4014)
        else:
            session = Session(f"sess-{len(self.sessions) + 1}", intents, connection=conn)
            self.sessions.append(session)
            conn.session = session
            ready = {
                "v": 10,
                "session_id": session.session_id,
                "resume_gateway_url": self._resume_url(),
                "user": bot_user(),
                "guilds": [],
                "application": {"id": BOT_ID, "flags": 0},
            }
            self._dispatch(session, "READY", ready)

    def _resume(self, conn: Connection, d: Any) -> None:
        conn.resumes.append(d)
        if not isinstance(d, dict):
            self._close(conn, 4002)
            return
        if d.get("token") != self.token:
            self._close(conn, 4004)
            return
        session_id, seq = d.get("session_id"), d.get("seq")
        session = next((s for s in self.sessions if s.session_id == session_id), None)
        if session is None or not session.resumable or not self.resumable:
            self._send(conn, frame_of(Op.INVALID_SESSION, False))
            return
        seq = 0 if seq is None else seq
        if type(seq) is not int or not 0 <= seq <= session.seq:
            self._close(conn, 4007)
            return
        previous = session.connection
        if previous is not None and previous.session is session:
            previous.session = None  # superseded: it carries the session no longer
        conn.session, session.connection = session, conn
        for frame in session.history[seq:]:
            self._send(conn, frame)
        self._dispatch(session, "RESUMED", {})

    def _dispatch(self, session: Session, event_type: str, data: Any) -> int:
        frame = frame_of(Op.DISPATCH, data, session.seq + 1, event_type)
        session.history.append(frame)
        conn = session.connection
        if conn is not None and conn.session is session:
            self._send(conn, frame)
        self.signal.notify()
        return session.seq

    def _dispatch_message(self, session: Session, data: dict[str, Any]) -> None:
        in_guild = "guild_id" in data
        needs = Intent.GUILD_MESSAGES if in_guild else Intent.DIRECT_MESSAGES
        if self.enforce_intents and not session.intents & needs:
            self.withheld.append(data)
            self.signal.notify()
            return
        mentioned = any(m.get("id") == BOT_ID for m in data.get("mentions", []))
        from_bot = data["author"]["id"] == BOT_ID
        blank = in_guild and not (mentioned or from_bot)
        if self.enforce_intents and blank and not session.intents & Intent.MESSAGE_CONTENT:
            data = {**data, "content": "", "embeds": [], "attachments": []}
        self._dispatch(session, "MESSAGE_CREATE", data)

    def _send(self, conn: Connection, frame: dict[str, Any]) -> None:
        if not conn.closing:
            conn.outbox.put_nowait(QueuedFrame(frame))

    def _close(self, conn: Connection, code: int, reason: str | None = None) -> None:
        if conn.closing:
            return
        if code in (4007, 4009) and conn.session is not None:
            conn.session.resumable = False  # as Discord: invalid seq, session timed out
        conn.closing = True
        conn.stop.set()
        conn.outbox.put_nowait(
            QueuedClose(code, CLOSE_REASONS.get(code, "") if reason is None else reason)
        )
        self.signal.notify()

    def _target(self, connection: Connection | None) -> Connection:
        conn = connection or self.current
        if conn is None or not conn.open:
            raise RuntimeError("no open gateway connection")
        return conn

    def _newest_session(self) -> Session:
        if not self.sessions:
            raise RuntimeError("no session yet: wait for the client's READY first")
        return self.sessions[-1]


async def _first_set(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
