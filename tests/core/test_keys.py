"""Session keys: the grammar is strict, and every refusal says what is wrong."""

from __future__ import annotations

import pytest

from turngate.core.keys import (
    SESSION_KEY_LEN_MAX,
    SessionKey,
    id_from_segment,
    id_segment,
    parse_session_key,
)
from turngate.errors import ErrorCode, InvalidSessionKeyError


@pytest.mark.parametrize(
    ("text", "agent", "rest"),
    [
        ("agent:main:main", "main", ("main",)),
        ("agent:main:telegram:direct:12345", "main", ("telegram", "direct", "12345")),
        ("agent:test:main", "test", ("main",)),
        ("agent:tenant-003:cron:daily.report", "tenant-003", ("cron", "daily.report")),
        ("agent:main:main:heartbeat", "main", ("main", "heartbeat")),
        ("agent:a_b:user@example.com", "a_b", ("user@example.com",)),
    ],
)
def test_valid_keys_parse_into_agent_and_rest(text: str, agent: str, rest: tuple[str, ...]) -> None:
    key = parse_session_key(text)
    assert key == SessionKey(agent, rest)
    assert str(key) == text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "must not be empty"),
        ("main", "agent:<agentId>:<rest>"),
        ("agent:main", "agent:<agentId>:<rest>"),
        ("session:main:main", "agent:<agentId>:<rest>"),
        ("agent::main", "agent id ''"),
        ("agent:Main:main", "agent id 'Main'"),
        ("agent:-x:main", "agent id '-x'"),
        ("agent:main:", "segment ''"),
        ("agent:main:a b", "segment 'a b'"),
        ("agent:main:../../etc/passwd", "segment '../../etc/passwd'"),
        ("agent:main:a/b", "segment 'a/b'"),
        ("agent:main:" + "x" * 129, "segment"),
        ("agent:main:" + ":x" * 17, "segments"),
        ("agent:main:" + "x" * SESSION_KEY_LEN_MAX, "over the limit"),
    ],
)
def test_invalid_keys_are_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(InvalidSessionKeyError) as caught:
        parse_session_key(text)
    assert caught.value.code is ErrorCode.INVALID_SESSION_KEY
    assert caught.value.message.startswith("sessionKey")
    assert says in caught.value.message


def test_a_key_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidSessionKeyError, match="expected a string"):
        parse_session_key(42)


@pytest.mark.parametrize(
    "platform_id",
    ["123456789", "-1001234567890", "user@example.org", "Ünïcode name", "a=b:c/d", "😀", "x" * 128],
)
def test_a_platform_id_travels_in_a_session_key_and_comes_back_whole(platform_id: str) -> None:
    segment = id_segment(platform_id)
    assert segment is not None
    assert str(parse_session_key(f"agent:main:tg:direct:{segment}")).endswith(segment)
    assert id_from_segment(segment) == platform_id


def test_a_platform_id_that_cannot_be_a_segment_is_refused() -> None:
    assert id_segment("") is None
    assert id_segment("é" * 100) is None  # 200 bytes, 600 characters once escaped
