"""Durable inbound and what a channel's conversation is owed, on the real runtime: a platform
message is a turn of its conversation's session once ``accept`` returns, a redelivery is the
same turn, strangers are refused, and each run's reply (or a notice of failure) is queued in
the outbox with the turn's end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fake_models import Call, ScriptedModel
from tests.harness import EngineHarness
from turngate.channels.base import InboundMessage
from turngate.channels.inbound import ChannelInbox
from turngate.channels.routes import ChannelRoutes
from turngate.config_channels import ChannelConfig
from turngate.errors import ProviderError
from turngate.runtime.engine import Engine
from turngate.store.base import DeliveryOrder

TG = ChannelConfig(id="tg", type="telegram", token_env="TG_TOKEN", allow=("42", "43"))


def harness(tmp_path: Path, model: ScriptedModel, channel: ChannelConfig = TG) -> EngineHarness:
    return EngineHarness(tmp_path, model, outbound=ChannelRoutes([channel]))


def message(mid: str, text: str = "hi", peer: str = "42", **kw: object) -> InboundMessage:
    return InboundMessage(mid, kw.pop("conversation", peer), peer, text, **kw)  # type: ignore[arg-type]


async def settled(engine: Engine) -> None:
    """Until no turn is queued or running (checked at every event; 60 s of virtual time)."""
    done = asyncio.Event()

    def check(event: object = None) -> None:
        if engine.snapshot().settled:
            done.set()

    engine.events.subscribe(check)
    check()
    async with asyncio.timeout(60.0):
        await done.wait()


async def owed(engine: Engine, session_key: str) -> list[DeliveryOrder]:
    return [d.order for d in await engine.store.outbox.of_session(session_key, 100)]


def test_a_message_is_a_turn_of_its_peers_session_and_its_reply_is_owed_to_the_chat(
    tmp_path: Path,
) -> None:
    told: list[tuple[str, str]] = []

    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(TG, engine, message_chars_max=1000)
        admitted = await inbox.accept(message("42:7", "hello"))
        assert (admitted.accepted, admitted.turn_id, admitted.session_key) == (
            True,
            "tg:42:7",
            "agent:main:tg:direct:42",
        )
        await settled(engine)
        assert await owed(engine, "agent:main:tg:direct:42") == [
            DeliveryOrder(
                "reply:tg:42:7", "agent:main:tg:direct:42", "tg:42:7", "tg", "42", "echo: hello"
            )
        ]

    harness(tmp_path, ScriptedModel([], then=Call())).run(scenario)
    assert told == []


def test_a_message_delivered_twice_is_one_turn_and_one_reply(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(TG, engine, message_chars_max=1000)
        first = await inbox.accept(message("42:7"))
        again = await inbox.accept(message("42:7"))
        assert first.turn_id == again.turn_id
        await settled(engine)
        assert len(await engine.store.session_turns("agent:main:tg:direct:42", 10)) == 1
        assert len(await owed(engine, "agent:main:tg:direct:42")) == 1

    harness(tmp_path, ScriptedModel([], then=Call())).run(scenario)


def test_a_stranger_is_refused_once_an_hour_and_their_message_is_no_turn(tmp_path: Path) -> None:
    told: list[tuple[str, str]] = []
    channel = ChannelConfig(id="tg", type="telegram", token_env="T", allow=("42",), refusal="no")

    async def notify(conversation: str, text: str) -> None:
        told.append((conversation, text))

    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(channel, engine, message_chars_max=1000, notify=notify)
        for i in range(3):
            admitted = await inbox.accept(message(f"99:{i}", peer="99"))
            assert not admitted.accepted
        assert await engine.store.count_sessions() == 0

    harness(tmp_path, ScriptedModel([], then=Call()), channel).run(scenario)
    assert told == [("99", "no")]


def test_everyone_may_talk_to_a_bot_whose_allowlist_is_a_star(tmp_path: Path) -> None:
    channel = ChannelConfig(id="tg", type="telegram", token_env="T", allow=("*",))

    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(channel, engine, message_chars_max=1000)
        assert (await inbox.accept(message("1:1", peer="1"))).accepted

    harness(tmp_path, ScriptedModel([], then=Call()), channel).run(scenario)


def test_a_group_shares_one_session_and_each_message_names_its_sender(tmp_path: Path) -> None:
    model = ScriptedModel([], then=Call())

    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(TG, engine, message_chars_max=1000)
        for mid, peer, name in (("1", "42", "Ann"), ("2", "43", None)):
            await inbox.accept(
                message(mid, "hi", peer, conversation="-100", group=True, peer_name=name)
            )
            await settled(engine)
        turns = await engine.store.session_turns("agent:main:tg:group:-100", 10)
        assert [t.message for t in turns] == ["Ann: hi", "43: hi"]

    harness(tmp_path, model).run(scenario)


def test_a_turn_that_fails_leaves_a_notice_in_the_outbox(tmp_path: Path) -> None:
    model = ScriptedModel([Call(raises=ProviderError("upstream 500"))], then=Call())

    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(TG, engine, message_chars_max=1000)
        await inbox.accept(message("42:1"))
        await settled(engine)
        [notice] = await owed(engine, "agent:main:tg:direct:42")
        assert notice.key == "notice:tg:42:1"
        assert notice.text.startswith("Sorry, I could not answer that")

    harness(tmp_path, model).run(scenario)


@pytest.mark.parametrize(("text", "why"), [("   ", "no text"), ("x" * 1001, "message too long")])
def test_an_empty_or_too_long_message_is_no_turn(tmp_path: Path, text: str, why: str) -> None:
    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(TG, engine, message_chars_max=1000)
        assert (await inbox.accept(message("42:1", text))).reason == why

    harness(tmp_path, ScriptedModel([], then=Call())).run(scenario)


def test_a_message_id_unfit_for_a_turn_id_gets_a_digest(tmp_path: Path) -> None:
    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(TG, engine, message_chars_max=1000)
        admitted = await inbox.accept(message("id with spaces/and#more"))
        assert admitted.turn_id is not None
        assert admitted.turn_id.startswith("tg:h")
        again = await inbox.accept(message("id with spaces/and#more"))
        assert again.turn_id == admitted.turn_id

    harness(tmp_path, ScriptedModel([], then=Call())).run(scenario)


def test_only_groups_on_group_allow_are_answered_named_by_chat_or_server(tmp_path: Path) -> None:
    told: list[tuple[str, str]] = []
    channel = ChannelConfig(
        id="dc",
        type="discord",
        token_env="T",
        allow=("*",),
        refusal="no",
        group_allow=("#bots", "server-1"),
    )

    async def notify(conversation: str, text: str) -> None:
        told.append((conversation, text))

    async def scenario(engine: Engine) -> None:
        inbox = ChannelInbox(channel, engine, message_chars_max=1000, notify=notify)
        by_chat = await inbox.accept(message("1", conversation="#bots", group=True))
        by_server = await inbox.accept(
            message("2", conversation="#general", group=True, space="server-1")
        )
        elsewhere = await inbox.accept(
            message("3", conversation="#random", group=True, space="server-2")
        )
        direct = await inbox.accept(message("4"))
        assert [a.accepted for a in (by_chat, by_server, elsewhere, direct)] == [
            True,
            True,
            False,
            True,
        ]
        assert elsewhere.reason == "group #random is not on group_allow"

    harness(tmp_path, ScriptedModel([], then=Call()), channel).run(scenario)
    assert told == []  # a group that did not ask is not told anything
