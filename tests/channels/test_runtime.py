"""A channel at work on the real runtime, on virtual time, with an in-memory platform: a
message becomes a turn, the bot shows it is typing while the run lasts, the reply goes out
through the outbox once, and what a previous life left owed goes out when the next starts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from tests.fake_models import Call, ScriptedModel
from tests.harness import EngineHarness
from turngate.channels.base import InboundMessage, Inbox
from turngate.channels.routes import ChannelRoutes
from turngate.channels.runtime import ChannelRuntime
from turngate.channels.supervisor import ConnectionSnapshot
from turngate.config_channels import ChannelConfig
from turngate.core.connection import ConnectionState
from turngate.core.keys import parse_session_key
from turngate.lanes.cron import CronJob, CronLane
from turngate.runtime.events import Event, EventKind
from turngate.sim.loop import run_virtual
from turngate.store.base import DeliveryState

CONFIG = ChannelConfig(id="im", type="websocket", url="ws://127.0.0.1:1/", allow=("*",))


@dataclass
class MemoryPlatform:
    """A channel whose platform is two lists: messages to hand in, messages sent out."""

    incoming: asyncio.Queue[InboundMessage] = field(default_factory=asyncio.Queue)
    sent: list[tuple[float, str, str]] = field(default_factory=list)
    typing_at: list[float] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    channel_id: str = "im"
    kind: str = "memory"
    limit: int = 1000
    closed: bool = False

    @property
    def sender(self) -> MemoryPlatform:
        return self

    def measure(self, text: str) -> int:
        return len(text)

    async def send(self, conversation: str, text: str, part_key: str) -> None:
        self.sent.append((asyncio.get_running_loop().time(), conversation, text))
        self.arrived.set()

    async def typing(self, conversation: str) -> None:
        self.typing_at.append(asyncio.get_running_loop().time())

    async def run(self, inbox: Inbox) -> None:
        while True:
            admitted = await inbox.accept(await self.incoming.get())
            assert admitted.accepted

    async def aclose(self) -> None:
        self.closed = True

    def connection(self) -> ConnectionSnapshot:
        return ConnectionSnapshot(
            "im", ConnectionState.READY, 1, 0.0, 0, 0, 0, None, None, fatal=False
        )


async def until_sent(platform: MemoryPlatform, count: int) -> None:
    async with asyncio.timeout(600.0):
        while len(platform.sent) < count:
            platform.arrived.clear()
            await platform.arrived.wait()


def test_a_message_is_answered_once_with_typing_shown_while_the_run_lasts(tmp_path: Path) -> None:
    platform = MemoryPlatform()
    harness = EngineHarness(
        tmp_path, ScriptedModel([], then=Call(latency_s=10.0)), outbound=ChannelRoutes([CONFIG])
    )

    async def main() -> None:
        async with harness.engine() as engine:
            runtime = ChannelRuntime(CONFIG, platform, engine, message_chars_max=1000)
            task = asyncio.get_running_loop().create_task(runtime.run())
            platform.incoming.put_nowait(InboundMessage("m1", "alice", "alice", "hello"))
            await until_sent(platform, 1)
            await asyncio.sleep(30.0)  # virtual: nothing more is sent, typing has stopped
            assert runtime.view().outbox.sent == 1
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run_virtual(main())
    assert platform.sent == [(10.0, "alice", "echo: hello")]
    assert platform.typing_at == [0.0, 4.0, 8.0]


def test_replies_a_previous_life_left_owed_go_out_when_the_next_starts(tmp_path: Path) -> None:
    platform = MemoryPlatform()
    harness = EngineHarness(
        tmp_path, ScriptedModel([], then=Call()), outbound=ChannelRoutes([CONFIG])
    )

    async def main() -> None:
        async with harness.engine() as engine:  # a life with no channel running: owed only
            ended = asyncio.Event()

            def on_event(event: Event) -> None:
                if event.kind is EventKind.ENDED:
                    ended.set()

            engine.events.subscribe(on_event)
            inbox = ChannelRuntime(CONFIG, platform, engine, message_chars_max=1000).inbox
            await inbox.accept(InboundMessage("m1", "bob", "bob", "are you there?"))
            async with asyncio.timeout(60.0):
                await ended.wait()
            assert (await engine.store.outbox.counts())[DeliveryState.PENDING] == 1
        async with harness.engine() as engine:
            runtime = ChannelRuntime(CONFIG, platform, engine, message_chars_max=1000)
            task = asyncio.get_running_loop().create_task(runtime.run())
            await until_sent(platform, 1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run_virtual(main())
    assert [text for _, _, text in platform.sent] == ["echo: are you there?"]


def test_a_cron_job_aimed_at_a_channel_session_is_answered_on_the_channel(tmp_path: Path) -> None:
    platform = MemoryPlatform()
    harness = EngineHarness(
        tmp_path, ScriptedModel([], then=Call()), outbound=ChannelRoutes([CONFIG])
    )
    job = CronJob(
        "digest",
        "main",
        "0 7 * * *",
        "digest please",
        parse_session_key("agent:main:im:direct:alice"),
    )

    async def main() -> None:
        async with harness.engine() as engine:
            runtime = ChannelRuntime(CONFIG, platform, engine, message_chars_max=1000)
            cron = CronLane(engine, [job])
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(runtime.run()), loop.create_task(cron.run())]
            ticket = await cron.run_now("digest")
            await until_sent(platform, 1)
            await asyncio.sleep(1.0)  # virtual: the lane's follower has seen the outcome
            [turn] = await engine.store.session_turns(ticket.session_key, 1)
            assert turn.delivery == "delivered"
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    run_virtual(main())
    assert [(c, t) for _, c, t in platform.sent] == [("alice", "echo: digest please")]
