"""A tiny WebSocket IM server, to try turngate's ``websocket`` channel offline.

Usage::

    python examples/im_server.py --port 8765 --token secret
    python examples/im_client.py --url ws://127.0.0.1:8765 --name alice   # another terminal

Options: ``--host`` (default 127.0.0.1), ``--port`` (default 8765; 0 picks a free port, and the
first line printed says which), ``--token`` (or the ``IM_TOKEN`` environment variable: what the
bot must present), ``--heartbeat-ms`` (what the hello asks the bot for, default 15000).

It needs only the standard library and ``websockets``, and keeps everything in memory: one bot
(turngate), any number of people, a short history per chat. Two kinds of client connect:

- **The bot** at ``ws://HOST:PORT/bot`` speaks the bot protocol of
  ``docs/websocket-im-channel.md`` (hello, identify with resume, ready, message/ack,
  heartbeat/heartbeat_ack, send/sent/send_failed, typing). Every message a person sends is
  kept until the bot acks it, and sent again on the bot's next connection until then. Sends
  are deduplicated by ``id``. A bot that connects again replaces the old connection.
- **A person** at ``ws://HOST:PORT/user?name=NAME`` (add ``&group=ROOM`` to talk in a group)
  sends ``{"text": "..."}`` and receives ``{"op": "welcome", "chat": C, "history": [...]}``,
  ``{"op": "message", "chat": C, "from": NAME_OR_BOT, "text": "..."}``,
  ``{"op": "typing", "chat": C}``, ``{"op": "notice", "text": "..."}`` (the bot is offline)
  and ``{"op": "error", "reason": "..."}``. A direct chat's id
  is the person's name; a group's is its room. In a group, a message that contains ``@bot`` is
  marked ``mentioned`` (turngate's default ``groups = "mention"`` answers only those).

Message ids carry a random prefix drawn at start, so a restarted server never reuses an id
that turngate already stored. The token is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
import json
import os
import re
import secrets
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

TEXT_CHARS_MAX = 4_000
HISTORY_MAX = 50
"""Lines kept per chat, shown to a person who connects."""
BACKLOG_MAX = 10_000
"""Messages kept for the bot until it acks them; past that, the oldest are dropped."""
SENT_IDS_MAX = 100_000
IDENTIFY_TIMEOUT_S = 10.0
NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def say(line: str) -> None:
    print(line, flush=True)


class IMServer:
    """The server's state, and a handler for each kind of client."""

    def __init__(self, token: str, heartbeat_ms: int) -> None:
        self.token = token
        self.heartbeat_ms = heartbeat_ms
        self.boot = secrets.token_hex(4)
        self.backlog: dict[int, dict[str, Any]] = {}
        """Messages the bot has not acked, by seq (in seq order)."""
        self.next_seq = 1
        self.acked = 0
        self.session: str | None = None
        self.sessions = 0
        self.bot: ServerConnection | None = None
        self.people: dict[str, set[ServerConnection]] = collections.defaultdict(set)
        self.history: dict[str, collections.deque[dict[str, str]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=HISTORY_MAX)
        )
        self.sent_ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.news = asyncio.Event()
        """Set (and replaced) whenever the backlog grows."""

    async def handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request is not None else "/")
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/bot":
                await self.handle_bot(ws)
            elif url.path == "/user":
                await self.handle_person(ws, query.get("name", ""), query.get("group"))
            else:
                await ws.close(1008, "connect to /bot or /user?name=NAME")
        except ConnectionClosed:
            pass

    # People.

    async def handle_person(self, ws: ServerConnection, name: str, group: str | None) -> None:
        if not NAME.match(name) or (group is not None and not NAME.match(group)):
            await ws.close(1008, "name and group: 1-32 letters, digits, _ or -")
            return
        chat = group or name
        self.people[chat].add(ws)
        say(f"{name} joined {'group ' if group else 'chat '}{chat}")
        try:
            welcome = {"op": "welcome", "chat": chat, "history": list(self.history[chat])}
            await ws.send(json.dumps(welcome))
            async for raw in ws:
                text = _text_of(raw)
                if text is None:
                    reason = f"send {{'text': '...'}}, 1 to {TEXT_CHARS_MAX} characters"
                    await ws.send(json.dumps({"op": "error", "reason": reason}))
                    continue
                say(f"{name} -> {chat}: {text}")
                await self.post(chat, name, text, exclude=ws)
                self.to_bot(chat, name, text, group=group is not None)
                if self.bot is None:
                    notice = "the bot is offline: it gets your message when it connects"
                    await ws.send(json.dumps({"op": "notice", "text": notice}))
        finally:
            self.people[chat].discard(ws)
            say(f"{name} left {chat}")

    async def post(
        self, chat: str, sender: str, text: str, exclude: ServerConnection | None = None
    ) -> None:
        """Show a line in ``chat``: its history, and everyone connected to it."""
        self.history[chat].append({"from": sender, "text": text})
        frame = json.dumps({"op": "message", "chat": chat, "from": sender, "text": text})
        for person in list(self.people[chat]):
            if person is not exclude:
                try:
                    await person.send(frame)
                except ConnectionClosed:
                    self.people[chat].discard(person)

    def to_bot(self, chat: str, sender: str, text: str, *, group: bool) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.backlog[seq] = {
            "op": "message",
            "seq": seq,
            "id": f"{self.boot}-{seq}",
            "chat": chat,
            "from": sender,
            "name": sender,
            "group": group,
            "mentioned": group and "@bot" in text.lower(),
            "text": text,
        }
        if len(self.backlog) > BACKLOG_MAX:
            dropped = next(iter(self.backlog))
            del self.backlog[dropped]
            say(f"warning: the bot is {BACKLOG_MAX} messages behind; message {dropped} dropped")
        self.news.set()
        self.news = asyncio.Event()

    # The bot.

    async def handle_bot(self, ws: ServerConnection) -> None:
        await ws.send(json.dumps({"op": "hello", "heartbeat_ms": self.heartbeat_ms}))
        try:
            async with asyncio.timeout(IDENTIFY_TIMEOUT_S):
                frame = _json(await ws.recv())
        except TimeoutError:
            await ws.close(1008, "identify expected")
            return
        if frame is None or frame.get("op") != "identify":
            await ws.close(1008, "identify expected")
            return
        token = frame.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token, self.token):
            say("a bot presented a wrong token: refused")
            invalid = {"op": "invalid", "fatal": True, "reason": "unknown token"}
            await ws.send(json.dumps(invalid))
            await ws.close(1008, "unknown token")
            return
        resume = frame.get("resume")
        resumed = isinstance(resume, dict) and resume.get("session") == self.session
        if resumed:
            assert isinstance(resume, dict)
            seq = resume.get("seq")
            if isinstance(seq, int):
                self.ack(seq)
        else:
            self.sessions += 1
            self.session = f"{self.boot}-s{self.sessions}"
        if self.bot is not None:
            await self.bot.close(4000, "replaced by a new connection")
        self.bot = ws
        await ws.send(json.dumps({"op": "ready", "session": self.session, "resumed": resumed}))
        say(f"bot {'resumed' if resumed else 'connected'}; {len(self.backlog)} message(s) waiting")
        pump = asyncio.get_running_loop().create_task(self.pump(ws))
        try:
            async for raw in ws:
                await self.on_bot_frame(ws, raw)
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if self.bot is ws:
                self.bot = None
                say("bot disconnected")

    async def pump(self, ws: ServerConnection) -> None:
        """Send the bot every message after what it acked, then each new one."""
        cursor = self.acked
        while True:
            news = self.news
            while cursor + 1 < self.next_seq:
                cursor += 1
                message = self.backlog.get(cursor)
                if message is not None:
                    await ws.send(json.dumps(message))
            await news.wait()

    def ack(self, seq: int) -> None:
        """The bot stored everything up to ``seq``."""
        for done in [s for s in self.backlog if s <= seq]:
            del self.backlog[done]
        self.acked = max(self.acked, min(seq, self.next_seq - 1))

    async def on_bot_frame(self, ws: ServerConnection, raw: str | bytes) -> None:
        frame = _json(raw)
        op = None if frame is None else frame.get("op")
        if frame is None:
            say("warning: the bot sent a frame that is not a JSON object")
        elif op == "heartbeat":
            await ws.send(json.dumps({"op": "heartbeat_ack"}))
        elif op == "ack" and isinstance(frame.get("seq"), int):
            self.ack(frame["seq"])
        elif op == "send":
            await ws.send(json.dumps(await self.on_send(frame)))
        elif op == "typing" and isinstance(frame.get("chat"), str):
            typing = json.dumps({"op": "typing", "chat": frame["chat"]})
            for person in list(self.people[frame["chat"]]):
                try:
                    await person.send(typing)
                except ConnectionClosed:
                    self.people[frame["chat"]].discard(person)
        else:
            say(f"warning: the bot sent an unknown frame (op {op!r})")

    async def on_send(self, frame: dict[str, Any]) -> dict[str, Any]:
        send_id, chat, text = frame.get("id"), frame.get("chat"), frame.get("text")
        if not (isinstance(send_id, str) and isinstance(chat, str) and isinstance(text, str)):
            return {"op": "send_failed", "id": send_id, "permanent": True, "reason": "bad send"}
        if len(text) > TEXT_CHARS_MAX:
            reason = f"text over {TEXT_CHARS_MAX} characters"
            return {"op": "send_failed", "id": send_id, "permanent": True, "reason": reason}
        if send_id not in self.sent_ids:  # a resend of a part already shown shows nothing new
            self.sent_ids[send_id] = None
            if len(self.sent_ids) > SENT_IDS_MAX:
                self.sent_ids.popitem(last=False)
            say(f"bot -> {chat}: {text}")
            await self.post(chat, "bot", text)
        return {"op": "sent", "id": send_id}


def _json(raw: str | bytes) -> dict[str, Any] | None:
    try:
        frame = json.loads(raw)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


def _text_of(raw: str | bytes) -> str | None:
    frame = _json(raw)
    text = None if frame is None else frame.get("text")
    if isinstance(text, str) and text.strip() and len(text) <= TEXT_CHARS_MAX:
        return text
    return None


async def main(host: str, port: int, token: str, heartbeat_ms: int) -> None:
    server = IMServer(token, heartbeat_ms)
    async with serve(server.handle, host, port) as listening:
        bound = next(iter(listening.sockets)).getsockname()[1]
        say(f"im_server listening on ws://{host}:{bound} (bot: /bot, people: /user?name=NAME)")
        await asyncio.Future()  # until interrupted


def cli() -> None:
    parser = argparse.ArgumentParser(description="A tiny WebSocket IM server for turngate.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--token", default=os.environ.get("IM_TOKEN"), help="or IM_TOKEN")
    parser.add_argument("--heartbeat-ms", type=int, default=15_000)
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or the IM_TOKEN environment variable) is required")
    if args.heartbeat_ms <= 0:
        parser.error("--heartbeat-ms must be > 0")
    try:
        asyncio.run(main(args.host, args.port, args.token, args.heartbeat_ms))
    except KeyboardInterrupt:
        return
    except OSError as exc:
        sys.exit(f"im_server: cannot listen on {args.host}:{args.port}: {exc}")


if __name__ == "__main__":
    cli()
