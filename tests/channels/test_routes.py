"""What the end of a channel session's turns owes its conversation: each run's reply once,
a notice for a turn that ended without one (unless the person caused that), nothing for a
session no channel serves."""

from __future__ import annotations

from turngate.channels.routes import ChannelRoutes, session_key_of
from turngate.config_channels import ChannelConfig
from turngate.core.turn import Outcome, TurnState
from turngate.errors import ErrorCode

TG = ChannelConfig(id="tg", type="telegram", token_env="T", allow=("*",))
QUIET = ChannelConfig(id="tg", type="telegram", token_env="T", failure_notice=False)
KEY = "agent:main:tg:direct:42"


def test_a_session_key_names_its_conversation_and_back() -> None:
    routes = ChannelRoutes([TG])
    key = session_key_of(TG, "-100 group/1", group=True)
    assert key == "agent:main:tg:group:-100=20group=2F1"
    target = routes.conversation(key)
    assert target is not None
    assert (target.conversation, target.group) == ("-100 group/1", True)


def test_sessions_no_channel_serves_are_owed_nothing() -> None:
    routes = ChannelRoutes([TG])
    reply = [Outcome("t", TurnState.REPLIED, "t", reply="x")]
    for key in ("agent:main:main", "agent:main:other:direct:42", "agent:ops:tg:direct:42"):
        assert not routes.serves(key)
        assert routes.orders(key, reply) == []


def test_turns_merged_into_one_run_are_answered_by_one_message() -> None:
    outcomes = [
        Outcome("t1", TurnState.REPLIED, "t1", reply="both"),
        Outcome("t2", TurnState.REPLIED, "t1", reply="both"),
    ]
    [order] = ChannelRoutes([TG]).orders(KEY, outcomes)
    assert (order.key, order.run_id, order.conversation, order.text) == (
        "reply:t1",
        "t1",
        "42",
        "both",
    )


def test_a_turn_ended_without_a_reply_is_noticed_unless_the_person_caused_it() -> None:
    outcomes = [
        Outcome("f", TurnState.FAILED, "f", code=ErrorCode.ALL_MODELS_FAILED, message="x"),
        Outcome("s", TurnState.ABORTED, "s", code=ErrorCode.SUPERSEDED, message="newer"),
        Outcome("u", TurnState.ABORTED, "u", code=ErrorCode.USER_ABORT, message="stop"),
        Outcome("q", TurnState.REJECTED, "q", code=ErrorCode.QUEUE_FULL, message="full"),
    ]
    orders = ChannelRoutes([TG]).orders(KEY, outcomes)
    assert [(o.key, o.text) for o in orders] == [
        ("notice:f", "Sorry, I could not answer that: the model failed (all_models_failed)."),
        ("notice:q", "Sorry, I could not take that message (queue_full); please try again."),
    ]
    assert ChannelRoutes([QUIET]).orders(KEY, outcomes) == []
