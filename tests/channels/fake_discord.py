"""A fake Discord on 127.0.0.1, gateway and REST API in one Starlette app, for the Discord
channel's tests.

It runs under uvicorn in the test's own event loop (so that its state and :class:`Signal` are
shared with the test), on a socket bound before the server starts: a client may connect at once.

Gateway, at ``/gateway`` and at ``/resume`` (READY's ``resume_gateway_url``), each also with a
trailing slash and with any query. Like Discord: HELLO on connect; HEARTBEAT_ACK for every
heartbeat; IDENTIFY starts a session whose dispatches are numbered from 1 (READY) and kept;
RESUME replays those after its ``seq``, then RESUMED. Wrong token: close 4004; a disallowed
intent: 4014; a second IDENTIFY or RESUME: 4005; anything but a heartbeat before either: 4003;
not a JSON object: 4002; an unknown op: 4001; a RESUME ``seq`` past the session's: 4007. A
RESUME of an unknown session, or of one that ended (the client closed with 1000 or 1001, or
:meth:`FakeDiscord.invalidate` said so), gets op 9 ``false`` on a socket left open. Guild
messages come only with the GUILD_MESSAGES intent (DMs with DIRECT_MESSAGES), and without
MESSAGE_CONTENT their text is blank unless they mention the bot.

REST, under ``/api/v10``: ``GET users/@me`` and ``gateway/bot``, ``POST
channels/{id}/messages`` (2,000 characters at most; ``enforce_nonce`` answers a nonce seen on
the channel with the message it made; a per-channel bucket whose headers every JSON answer
carries) and ``POST channels/{id}/typing``; a wrong ``Authorization: Bot <token>`` gets 401;
5xx answers come from the front proxy, as HTML.

Scriptable: ``hello_gate``, ``ack_heartbeats`` (also per connection), ``disallowed_intents``,
``resumable``, ``enforce_intents``, ``echo_sent``, ``handshake_failures``;
:meth:`FakeDiscord.reconnect`, ``invalidate``, ``request_heartbeat``, ``close`` and ``drop``
act on the newest open connection; :meth:`FakeDiscord.message` and ``dispatch`` send events;
``rate_limit_next``, ``send_failures``, ``missing_channels``, ``forbidden_channels`` shape
REST answers. Records: ``connections`` (:class:`Connection`), ``sessions``, ``attempts``,
``sent``, ``early_requests``, ``rate_limits``, ``typing``; ``signal`` is notified at every
change.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.channels.fake_telegram import Signal
from tests.secrets import DISCORD_BOT_TOKEN
from turngate.gateway.server import listening_socket

TOKEN = DISCORD_BOT_TOKEN
"""The bot token the fake accepts (its first part is the bot id in base64, as Discord's are)."""
BOT_ID = "1100000000000000001"
BOT_USERNAME = "turngate-test-bot"
HEARTBEAT_INTERVAL_MS_DEFAULT = 41_250
MESSAGE_CHARS_MAX = 2000
NONCE_CHARS_MAX = 25
BUCKET_SIZE_DEFAULT = 10_000
BUCKET_WINDOW_S_DEFAULT = 5.0
BUCKET_HASH = "f4ke0b0c4e7c1d2a"
"""The messages route's ``X-RateLimit-Bucket``: one hash for every channel, as Discord's (the
channel id, the route's major parameter, tells the limits apart)."""
EARLY_TOLERANCE_S = 0.001
"""A request this close to the end of a limit is not early (timer and clock granularity)."""
OUTBOX_FRAMES_MAX = 10_000
SERVER_STOP_S = 10.0
CLOSE_WAIT_S = 5.0
_NOT_JSON = object()
"""A request body that is not JSON."""
DISCORD_EPOCH_MS = 1_420_070_400_000
SNOWFLAKE_BASE_MS = 1_767_225_600_000 - DISCORD_EPOCH_MS
"""Ids the fake makes are snowflakes of 2026-01-01 plus one millisecond each."""


class Op(enum.IntEnum):
    DISPATCH = 0
    HEARTBEAT = 1
    IDENTIFY = 2
    PRESENCE_UPDATE = 3
    VOICE_STATE_UPDATE = 4
    RESUME = 6
    RECONNECT = 7
    REQUEST_GUILD_MEMBERS = 8
    INVALID_SESSION = 9
    HELLO = 10
    HEARTBEAT_ACK = 11
    REQUEST_SOUNDBOARD_SOUNDS = 31


CLIENT_OPS = frozenset({1, 2, 3, 4, 6, 8, 31})


class Intent(enum.IntFlag):
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_PRESENCES = 1 << 8
    GUILD_MESSAGES = 1 << 9
    DIRECT_MESSAGES = 1 << 12
    MESSAGE_CONTENT = 1 << 15


INTENTS_MAX = (1 << 26) - 1

CLOSE_REASONS = {
    4000: "Unknown error.",
    4001: "Unknown opcode.",
    4002: "Decode error.",
    4003: "Not authenticated.",
    4004: "Authentication failed.",
    4005: "Already authenticated.",
    4007: "Invalid seq.",
    4013: "Invalid intent(s).",
    4014: "Disallowed intent(s).",
}


@dataclass(frozen=True)
class Received:
    """A frame on a connection: its parsed JSON (the text itself when it is not JSON)."""

    payload: Any
    at: float
    """The event loop's time."""


@dataclass(frozen=True)
class Heartbeat:
    connection: int
    """The index of the connection it came on."""
    seq: Any
    """Its ``d``: the last sequence number the client saw, or None."""
    at: float


@dataclass(frozen=True)
class _Send:
    frame: dict[str, Any]


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


@dataclass(eq=False)
class Connection:
    """One gateway connection, as the fake saw it."""

    index: int
    """From 1, in the order they opened."""
    path: str
    query: str
    client: tuple[str, int] | None
    opened_at: float
    frames: list[Received] = field(default_factory=list)
    sent: list[Received] = field(default_factory=list)
    """The frames the fake sent on it, HELLO first."""
    identifies: list[Any] = field(default_factory=list)
    resumes: list[Any] = field(default_factory=list)
    heartbeats: list[Heartbeat] = field(default_factory=list)
    heartbeat_requests: list[float] = field(default_factory=list)
    hello_at: float | None = None
    session: Session | None = None
    """The session it carries (None: before IDENTIFY/RESUME, or after op 9)."""
    ack_heartbeats: bool | None = None
    """None: as the fake's ``ack_heartbeats``."""
    client_close_code: int | None = None
    """The code of the client's close frame (1006: the TCP connection ended without one);
    None while open or when the fake closed it."""
    server_close_code: int | None = None
    dropped: bool = False
    closing: bool = False
    closed_at: float | None = None
    _outbox: asyncio.Queue[_Send | _Close] = field(
        default_factory=lambda: asyncio.Queue(OUTBOX_FRAMES_MAX), repr=False
    )
    _stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def endpoint(self) -> str:
        """``/gateway`` or ``/resume``, whichever it dialled."""
        return self.path.rstrip("/") or "/"

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def ops(self) -> list[Any]:
        """The op of every frame received, in order (None for one that had none)."""
        return [f.payload.get("op") if isinstance(f.payload, dict) else None for f in self.frames]


@dataclass(eq=False)
class Session:
    session_id: str
    intents: int
    history: list[dict[str, Any]] = field(default_factory=list)
    """Every dispatch, in order (``s`` = index + 1)."""
    resumable: bool = True
    connection: Connection | None = None

    @property
    def seq(self) -> int:
        return len(self.history)


@dataclass(frozen=True)
class Attempt:
    """A ``POST channels/{id}/messages`` the fake received, and the status it answered."""

    channel_id: str
    content: Any
    nonce: str | None
    at: float
    status: int
    body: Any


@dataclass(frozen=True)
class Sent:
    """A message the fake made."""

    channel_id: str
    content: str
    nonce: str | None
    at: float
    message_id: str
    reference: str | None = None
    """The ``message_reference.message_id`` it replies to."""
    allowed_mentions: Any = None


@dataclass(frozen=True)
class RateLimit:
    """A 429 the fake answered (scripted or from a spent bucket)."""

    channel_id: str
    retry_after_s: float
    global_: bool
    at: float
    ends_at: float


@dataclass(frozen=True)
class Failure:
    """A scripted answer: 5xx as the front proxy's HTML page, else Discord's JSON error."""

    status: int
    code: int = 0
    message: str = "Internal Server Error"


@dataclass(frozen=True)
class Typing:
    channel_id: str
    at: float


@dataclass
class _Bucket:
    window_start: float
    used: int = 0


def bot_user() -> dict[str, Any]:
    return {
        "id": BOT_ID,
        "username": BOT_USERNAME,
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": True,
    }


def _frame(op: Op, d: Any, s: int | None = None, t: str | None = None) -> dict[str, Any]:
    return {"op": int(op), "d": d, "s": s, "t": t}


def _timestamp(snowflake: str) -> str:
    ms = (int(snowflake) >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


class FakeDiscord:
    """The fake's state and script (see the module docstring); run it with :func:`fake_discord`."""

    def __init__(
        self,
        *,
        token: str = TOKEN,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
        bucket_size: int = BUCKET_SIZE_DEFAULT,
        bucket_window_s: float = BUCKET_WINDOW_S_DEFAULT,
    ) -> None:
        self.token = token
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
        self.bucket_size = bucket_size
        self.bucket_window_s = bucket_window_s
        self.missing_channels: set[str] = set()
        self.forbidden_channels: set[str] = set()
        self.send_failures: list[Failure] = []
        self.attempts: list[Attempt] = []
        self.sent: list[Sent] = []
        self.early_requests: list[Attempt] = []
        """Requests on a channel (or, after a global 429, on any) before a 429's time ran out."""
        self.rate_limits: list[RateLimit] = []
        self.typing: list[Typing] = []
        self.signal = Signal()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._ids = itertools.count(1)
        self._scripted: dict[str, list[tuple[float, bool]]] = {}
        self._limit_ends: dict[str, float] = {}
        self._global_end = -math.inf
        self._buckets: dict[str, _Bucket] = {}
        self._made: dict[str, dict[str, Any]] = {}
        self._nonces: dict[tuple[str, str], dict[str, Any]] = {}
        self._channel_guilds: dict[str, str] = {}

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/resume"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

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
            self._channel_guilds[channel_id] = guild_id
        earlier = self._bot_message_in(channel_id) if reply_to_bot else None
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
        data = self._message_object(channel_id, guild_id, author, text, mentions)
        if guild_id is not None:
            joined = _timestamp(str(SNOWFLAKE_BASE_MS << 22))
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

    # What tests do: the gateway's controls, on the newest open connection by default.

    def reconnect(self, connection: Connection | None = None) -> None:
        self._send(self._target(connection), _frame(Op.RECONNECT, None))

    def invalidate(self, resumable: bool, connection: Connection | None = None) -> None:
        """Op 9 with ``d = resumable``; the connection carries its session no longer (and
        with ``resumable`` False, the session cannot be resumed)."""
        conn = self._target(connection)
        if conn.session is not None and not resumable:
            conn.session.resumable = False
        self._send(conn, _frame(Op.INVALID_SESSION, resumable))
        conn.session = None

    def request_heartbeat(self, connection: Connection | None = None) -> None:
        conn = self._target(connection)
        conn.heartbeat_requests.append(asyncio.get_running_loop().time())
        self._send(conn, _frame(Op.HEARTBEAT, None))

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
        conn._stop.set()
        server = self._server
        for protocol in list(server.server_state.connections if server else ()):
            if getattr(protocol, "client", None) == conn.client:
                transport = getattr(protocol, "transport", None)
                if isinstance(transport, asyncio.Transport):
                    transport.abort()
        self.signal.notify()

    # What tests do: REST.

    def rate_limit_next(
        self, channel_id: str, retry_after_s: float, *, global_: bool = False
    ) -> None:
        """Answer the next message POST on ``channel_id`` with 429 for ``retry_after_s``."""
        self._scripted.setdefault(channel_id, []).append((retry_after_s, global_))

    def close_all(self, code: int = 1001) -> None:
        for conn in self.connections:
            if conn.open:
                self._close(conn, code, "The fake is stopping.")

    def app(self) -> Starlette:
        api = "/api/v10"
        every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(
            routes=[
                *(WebSocketRoute(p, self._gateway) for p in ("/gateway", "/gateway/")),
                *(WebSocketRoute(p, self._gateway) for p in ("/resume", "/resume/")),
                Route(f"{api}/users/@me", self._me, methods=["GET"]),
                Route(f"{api}/gateway/bot", self._gateway_bot, methods=["GET"]),
                Route(f"{api}/channels/{{channel_id}}/messages", self._create, methods=["POST"]),
                Route(f"{api}/channels/{{channel_id}}/typing", self._typing, methods=["POST"]),
                Route(f"{api}/{{rest:path}}", self._not_found, methods=every),
            ]
        )

    # The gateway.

    async def _gateway(self, ws: WebSocket) -> None:
        if self.handshake_failures:
            status = self.handshake_failures.pop(0)
            self.refused_handshakes += 1
            self.signal.notify()
            await ws.send_denial_response(_failure(Failure(status, message="Bad Gateway")))
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
            conn._stop.set()
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
            await _first_set(gate, conn._stop)
        hello = _frame(Op.HELLO, {"heartbeat_interval": self.heartbeat_interval_ms})
        if not conn.closing and not await self._transmit(conn, ws, hello):
            return
        while True:
            item = await conn._outbox.get()
            if isinstance(item, _Close):
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
                self._send(conn, _frame(Op.HEARTBEAT_ACK, None))
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
                "resume_gateway_url": self.resume_url,
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
            self._send(conn, _frame(Op.INVALID_SESSION, False))
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
        frame = _frame(Op.DISPATCH, data, session.seq + 1, event_type)
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
            conn._outbox.put_nowait(_Send(frame))

    def _close(self, conn: Connection, code: int, reason: str | None = None) -> None:
        if conn.closing:
            return
        if code in (4007, 4009) and conn.session is not None:
            conn.session.resumable = False  # as Discord: invalid seq, session timed out
        conn.closing = True
        conn._stop.set()
        conn._outbox.put_nowait(
            _Close(code, CLOSE_REASONS.get(code, "") if reason is None else reason)
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

    def _snowflake(self) -> str:
        return str((SNOWFLAKE_BASE_MS + next(self._ids)) << 22)

    def _bot_message_in(self, channel_id: str) -> dict[str, Any]:
        """The bot's latest message in the channel (one made up if it sent none); the
        channel's guild is the last one a test message in it named."""
        for sent in reversed(self.sent):
            if sent.channel_id == channel_id:
                return self._made[sent.message_id]
        return self._made_message(channel_id, "an earlier reply", None, None)

    # REST.

    async def _me(self, request: Request) -> Response:
        return _unauthorized() if not self._authorized(request) else JSONResponse(bot_user())

    async def _gateway_bot(self, request: Request) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return JSONResponse({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _not_found(self, request: Request) -> Response:
        return JSONResponse({"message": "404: Not Found", "code": 0}, status_code=404)

    async def _typing(self, request: Request) -> Response:
        channel_id = request.path_params["channel_id"]
        self.typing.append(Typing(channel_id, asyncio.get_running_loop().time()))
        self.signal.notify()
        if not self._authorized(request):
            return _unauthorized()
        if channel_id in self.missing_channels:
            return _error(404, 10003, "Unknown Channel")
        if channel_id in self.forbidden_channels:
            return _error(403, 50013, "Missing Permissions")
        return Response(status_code=204)

    async def _create(self, request: Request) -> Response:
        channel_id = request.path_params["channel_id"]
        now = asyncio.get_running_loop().time()
        try:
            body: Any = json.loads(await request.body())
        except (ValueError, RecursionError):
            body = _NOT_JSON
        fields = body if isinstance(body, dict) else {}
        nonce = fields.get("nonce")
        early = now + EARLY_TOLERANCE_S < self._limit_end(channel_id)
        response = self._answer(request, channel_id, body, now, early)
        attempt = Attempt(
            channel_id,
            fields.get("content"),
            str(nonce) if isinstance(nonce, str | int) else None,
            now,
            response.status_code,
            body,
        )
        self.attempts.append(attempt)
        if early:
            self.early_requests.append(attempt)
        self.signal.notify()
        return response

    def _answer(
        self, request: Request, channel_id: str, body: Any, now: float, early: bool
    ) -> Response:
        if not self._authorized(request):
            return _unauthorized()
        if early:
            end = self._limit_end(channel_id)
            return self._too_many(channel_id, end - now, self._global_end > now, now, False)
        scripted = self._scripted.get(channel_id)
        if scripted:
            retry_after_s, global_ = scripted.pop(0)
            return self._too_many(channel_id, retry_after_s, global_, now, True)
        if self.send_failures:
            return _failure(self.send_failures.pop(0))
        allowed, remaining, reset_after_s = self._take(channel_id, now)
        if not allowed:
            return self._too_many(channel_id, reset_after_s, False, now, True)
        headers = self._headers(remaining, reset_after_s)
        problem = self._refusal(channel_id, body)
        if problem is not None:
            problem.headers.update(headers)
            return problem
        nonce = body.get("nonce")
        key = (channel_id, str(nonce))
        if nonce is not None and body.get("enforce_nonce") and key in self._nonces:
            return JSONResponse(self._nonces[key], headers=headers)  # Discord's dedupe
        reference = body.get("message_reference")
        ref_id = reference.get("message_id") if isinstance(reference, dict) else None
        made = self._made_message(channel_id, body["content"], nonce, reference)
        if nonce is not None:
            self._nonces[key] = made
        sent = Sent(
            channel_id,
            body["content"],
            None if nonce is None else str(nonce),
            now,
            made["id"],
            str(ref_id) if ref_id is not None else None,
            body.get("allowed_mentions"),
        )
        self.sent.append(sent)
        if self.echo_sent and self.sessions:
            self._dispatch_message(self.sessions[-1], made)
        return JSONResponse(made, headers=headers)

    def _refusal(self, channel_id: str, body: Any) -> Response | None:
        """Discord's 4xx for this message body, if any."""
        if not isinstance(body, dict):
            return _error(400, 50109, "The request body contains invalid JSON.")
        if channel_id in self.missing_channels:
            return _error(404, 10003, "Unknown Channel")
        if channel_id in self.forbidden_channels:
            return _error(403, 50013, "Missing Permissions")
        content, nonce = body.get("content"), body.get("nonce")
        if content is not None and not isinstance(content, str):
            return _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
        if not content or not content.strip():
            return _error(400, 50006, "Cannot send an empty message")
        if len(content) > MESSAGE_CHARS_MAX:
            message = f"Must be {MESSAGE_CHARS_MAX} or fewer in length."
            return _form_error("content", "BASE_TYPE_MAX_LENGTH", message)
        if "message_reference" in body and not isinstance(body["message_reference"], dict):
            return _form_error("message_reference", "MODEL_TYPE_CONVERT", "Must be an object.")
        if nonce is not None and (
            not isinstance(nonce, str | int) or len(str(nonce)) > NONCE_CHARS_MAX
        ):
            return _form_error("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        return None

    def _made_message(
        self, channel_id: str, content: str, nonce: Any, reference: Any
    ) -> dict[str, Any]:
        """A message by the bot, remembered by id."""
        guild_id = self._channel_guilds.get(channel_id)
        made = self._message_object(channel_id, guild_id, bot_user(), content, [])
        if nonce is not None:
            made["nonce"] = nonce
        if reference:
            made.update(type=19, message_reference=reference)
        self._made[made["id"]] = made
        return made

    def _message_object(
        self,
        channel_id: str,
        guild_id: str | None,
        author: dict[str, Any],
        content: str,
        mentions: list[Any],
    ) -> dict[str, Any]:
        """A new message (``guild_id`` None: in a DM)."""
        message_id = self._snowflake()
        message: dict[str, Any] = {
            "id": message_id,
            "type": 0,
            "channel_id": channel_id,
            "author": author,
            "content": content,
            "timestamp": _timestamp(message_id),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "flags": 0,
        }
        if guild_id is not None:
            message["guild_id"] = guild_id
        return message

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bot {self.token}"

    def _limit_end(self, channel_id: str) -> float:
        return max(self._limit_ends.get(channel_id, -math.inf), self._global_end)

    def _take(self, channel_id: str, now: float) -> tuple[bool, int, float]:
        """Take a slot in the channel's bucket: whether there was one, how many are left, and
        in how many seconds the bucket refills."""
        bucket = self._buckets.get(channel_id)
        if bucket is None or now >= bucket.window_start + self.bucket_window_s:
            bucket = self._buckets[channel_id] = _Bucket(now)
        allowed = bucket.used < self.bucket_size
        if allowed:
            bucket.used += 1
        reset_after_s = bucket.window_start + self.bucket_window_s - now
        return allowed, self.bucket_size - bucket.used, reset_after_s

    def _headers(self, remaining: int, reset_after_s: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.bucket_size),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after_s:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after_s:.3f}",
            "X-RateLimit-Bucket": BUCKET_HASH,
        }

    def _too_many(
        self, channel_id: str, retry_after_s: float, global_: bool, now: float, record: bool
    ) -> Response:
        if record:
            end = now + retry_after_s
            self.rate_limits.append(RateLimit(channel_id, retry_after_s, global_, now, end))
            if global_:
                self._global_end = max(self._global_end, end)
            else:
                self._limit_ends[channel_id] = max(self._limit_ends.get(channel_id, end), end)
        headers = self._headers(0, retry_after_s)
        headers["Retry-After"] = str(math.ceil(retry_after_s))
        headers["X-RateLimit-Scope"] = "global" if global_ else "user"
        if global_:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": round(retry_after_s, 3),
            "global": global_,
        }
        return JSONResponse(body, status_code=429, headers=headers)


class _RefusedHandshakeQuiet(logging.Filter):
    """Drops uvicorn's ERROR line for a WebSocket handshake refused with an HTTP answer
    (``handshake_failures``): uvicorn logs it for every such refusal, though it is one the
    ASGI spec provides for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "ASGI callable returned without completing handshake."


async def _first_set(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def _form_error(name: str, code: str, message: str) -> JSONResponse:
    errors = {name: {"_errors": [{"code": code, "message": message}]}}
    answer = {"code": 50035, "errors": errors, "message": "Invalid Form Body"}
    return JSONResponse(answer, status_code=400)


def _unauthorized() -> JSONResponse:
    return JSONResponse({"message": "401: Unauthorized", "code": 0}, status_code=401)


def _failure(failure: Failure) -> Response:
    if failure.status >= 500:  # the front proxy's page, not a Discord answer
        page = f"<html><body><h1>{failure.status} {failure.message}</h1></body></html>"
        return Response(page, status_code=failure.status, media_type="text/html")
    return _error(failure.status, failure.code, failure.message)


@asynccontextmanager
async def fake_discord(
    *,
    token: str = TOKEN,
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
    bucket_size: int = BUCKET_SIZE_DEFAULT,
    bucket_window_s: float = BUCKET_WINDOW_S_DEFAULT,
) -> AsyncIterator[FakeDiscord]:
    """Serve a :class:`FakeDiscord` on an ephemeral loopback port in this loop; on exit close
    every gateway connection (1001) and stop the server, within :data:`SERVER_STOP_S`."""
    fake = FakeDiscord(
        token=token,
        heartbeat_interval_ms=heartbeat_interval_ms,
        bucket_size=bucket_size,
        bucket_window_s=bucket_window_s,
    )
    sock = listening_socket("127.0.0.1", 0)
    fake.port = sock.getsockname()[1]
    config = uvicorn.Config(
        fake.app(),
        # No logging configuration of uvicorn's own: it would be global to the test session
        # (uvicorn's loggers would stop propagating), and other tests read those lines.
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="websockets-sansio",
        ws_ping_interval=None,  # Discord's liveness is its heartbeats, not WebSocket pings
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    quiet = _RefusedHandshakeQuiet()
    logging.getLogger("uvicorn.error").addFilter(quiet)
    fake._server = server
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield fake
    finally:
        fake.close_all()
        with suppress(TimeoutError):
            await fake.signal.wait_until(
                lambda: all(not c.open for c in fake.connections), CLOSE_WAIT_S
            )
        server.should_exit = True
        try:
            async with asyncio.timeout(SERVER_STOP_S):
                await task
        finally:
            sock.close()
            logging.getLogger("uvicorn.error").removeFilter(quiet)
