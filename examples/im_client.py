"""A terminal client for ``examples/im_server.py``: you, as a person chatting with the bot.

Usage::

    python examples/im_client.py --url ws://127.0.0.1:8765 --name alice
    python examples/im_client.py --url ws://127.0.0.1:8765 --name bob --group lobby

Type a line and press Enter to send it. What others say is printed as ``NAME: text``, the
bot's replies as ``bot: text``. Ctrl-D (end of input) or Ctrl-C quits.

It needs only the standard library and ``websockets``. Without ``--group`` you talk to the bot
in your own direct chat (its id is your name); with it, in the group ``ROOM`` with whoever
else joined it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

OPEN_TIMEOUT_S = 10.0


def say(line: str) -> None:
    print(line, flush=True)


def read_lines(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None]) -> None:
    """Feed stdin's lines to ``lines`` (None at its end); runs in a daemon thread, because a
    blocking read cannot be cancelled and must not keep the program alive."""
    try:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)
    except RuntimeError:
        pass  # the loop is closed: the program is quitting


async def show(ws: ClientConnection) -> None:
    """Print what the server sends until it closes the connection."""
    async for raw in ws:
        try:
            frame = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(frame, dict):
            continue
        op = frame.get("op")
        if op == "welcome":
            say(f"connected to chat {frame.get('chat')}; type a message and press Enter")
            for line in frame.get("history") or []:
                say(f"  {line.get('from')}: {line.get('text')}")
        elif op == "message":
            say(f"{frame.get('from')}: {frame.get('text')}")
        elif op == "typing":
            say("(bot is typing...)")
        elif op in ("notice", "error"):
            say(f"! {frame.get('text') or frame.get('reason')}")


async def type_lines(ws: ClientConnection, lines: asyncio.Queue[str | None]) -> None:
    """Send each line typed (blank ones skipped) until the input ends."""
    while (line := await lines.get()) is not None:
        if line.strip():
            await ws.send(json.dumps({"text": line}))


async def main(url: str, name: str, group: str | None) -> int:
    query = {"name": name} | ({"group": group} if group else {})
    address = f"{url.rstrip('/')}/user?{urlencode(query)}"
    try:
        ws = await connect(address, open_timeout=OPEN_TIMEOUT_S)
    except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
        say(f"cannot connect to {url}: {exc}")
        return 1
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=read_lines, args=(loop, lines), daemon=True).start()
    async with ws:
        showing = loop.create_task(show(ws))
        typing = loop.create_task(type_lines(ws, lines))
        done, pending = await asyncio.wait({showing, typing}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            error = task.exception()
            if error is not None and not isinstance(error, ConnectionClosed):
                raise error
    if showing in done:
        # protocol.close_reason: Connection.close_reason is newer than websockets 13.
        say(f"disconnected by the server ({ws.protocol.close_reason or 'no reason given'})")
        return 1
    return 0


def cli() -> None:
    parser = argparse.ArgumentParser(description="Chat with a bot on examples/im_server.py.")
    parser.add_argument("--url", default="ws://127.0.0.1:8765", help="the IM server")
    parser.add_argument("--name", required=True, help="who you are (1-32 letters, digits, _-)")
    parser.add_argument("--group", help="talk in this group instead of your direct chat")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(main(args.url, args.name, args.group)))


if __name__ == "__main__":
    cli()
