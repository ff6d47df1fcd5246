"""The example IM server and terminal client (``examples/``), run as a user would run them,
with the ``websocket`` channel connected as the bot: a person's line reaches the inbox, and
the bot's reply reaches the person's terminal."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.channels.fake_im import WAIT_MAX_S, Signal
from tests.secrets import EXAMPLE_IM_TOKEN
from turngate.channels.base import InboundMessage
from turngate.channels.websocket_im import WebSocketChannel, WebSocketSettings
from turngate.core.connection import BackoffPolicy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = EXAMPLE_IM_TOKEN


@dataclass(frozen=True)
class Admitted:
    accepted: bool


@dataclass
class Inbox:
    signal: Signal
    messages: list[InboundMessage] = field(default_factory=list)

    async def accept(self, message: InboundMessage) -> Admitted:
        self.messages.append(message)
        self.signal.bump()
        return Admitted(True)


@dataclass
class Process:
    """A child process whose output lines are read, each once, with a deadline."""

    proc: asyncio.subprocess.Process
    seen: list[str] = field(default_factory=list)

    async def line_matching(self, pattern: str) -> re.Match[str]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(WAIT_MAX_S):
                while True:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        raise AssertionError(f"exited before {pattern!r}; printed {self.seen}")
                    line = raw.decode().rstrip("\n")
                    self.seen.append(line)
                    if found := re.search(pattern, line):
                        return found
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} in time; printed {self.seen}") from None


@asynccontextmanager
async def example(*args: str) -> AsyncIterator[Process]:
    """Run ``examples/<args>``; on the way out, end it (stdin closed, then terminated)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-u",
        *args,
        cwd=EXAMPLES.parent,
        env={**os.environ, "IM_TOKEN": TOKEN},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield Process(proc)
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(WAIT_MAX_S):
            await proc.communicate()


@pytest.mark.asyncio
async def test_a_person_on_the_example_server_reaches_the_channel_and_sees_its_reply() -> None:
    signal = Signal()
    inbox = Inbox(signal)
    async with example("examples/im_server.py", "--port", "0") as server:
        port = (await server.line_matching(r"listening on ws://127\.0\.0\.1:(\d+)")).group(1)
        url = f"ws://127.0.0.1:{port}"
        async with example("examples/im_client.py", "--url", url, "--name", "alice") as person:
            await person.line_matching("connected to chat alice")
            # Typed before the bot is connected: the server keeps it until the bot acks it.
            assert person.proc.stdin is not None
            person.proc.stdin.write(b"hello bot\n")
            await person.proc.stdin.drain()
            await person.line_matching("the bot is offline")
            channel = WebSocketChannel(
                "im",
                f"{url}/bot",
                TOKEN,
                settings=WebSocketSettings(backoff=BackoffPolicy(base_s=0.05, cap_s=0.5)),
            )
            running = asyncio.get_running_loop().create_task(channel.run(inbox))
            try:
                await signal.until(lambda: bool(inbox.messages), "the person's message")
                await channel.sender.send("alice", "hi alice, this is the bot", "reply:t1#0")
                await person.line_matching(r"^bot: hi alice, this is the bot$")
            finally:
                channel.stop()
                async with asyncio.timeout(WAIT_MAX_S):
                    await running
            person.proc.stdin.close()  # Ctrl-D: the client quits by itself
            async with asyncio.timeout(WAIT_MAX_S):
                assert await person.proc.wait() == 0
        await server.line_matching("bot -> alice: hi alice, this is the bot")
    [message] = inbox.messages
    assert (message.conversation, message.peer, message.text, message.group) == (
        "alice",
        "alice",
        "hello bot",
        False,
    )
    assert message.message_id.endswith("-1")
    assert TOKEN not in "\n".join(server.seen + person.seen)
