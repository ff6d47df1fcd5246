"""Discord's REST API for one bot: rate limits learnt from the answers, and every failure said
the way the outbox worker acts on it.

The bookkeeping (:class:`RateLimits`) is tested with plain numbers for ``now``. The client
(:class:`DiscordRest`) runs on virtual time against a ``MockTransport`` that plays Discord, so
each test asserts the exact virtual time at which a request reached Discord.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from tests.secrets import DISCORD_BOT_TOKEN
from turngate.channels.discord.ratelimit import NO_WAIT, RateLimits, Wait
from turngate.channels.discord.rest import (
    MESSAGE_CHARS_MAX,
    ROUTE_CREATE_MESSAGE,
    DiscordRest,
    DiscordSender,
    nonce_of,
)
from turngate.channels.split import split_message
from turngate.errors import ChannelError, ChannelRefusedError, DeliveryRefusedError
from turngate.runtime.clock import LoopClock
from turngate.sim.loop import run_virtual

TOKEN = DISCORD_BOT_TOKEN
API = "https://discord.test/api/v10"
MESSAGES = ROUTE_CREATE_MESSAGE
TYPING = "POST /channels/{channel_id}/typing"
BUCKET = "abcd1234"
A, B = "1100000000000000001", "1100000000000000002"
"""Two channels (major parameters) of the same bucket."""


def limit_headers(remaining: int, reset_after_s: float, bucket: str = BUCKET) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset-After": f"{reset_after_s:.3f}",
        "X-RateLimit-Bucket": bucket,
    }


# --- RateLimits: the bookkeeping ---------------------------------------------------------------


def test_a_limit_never_seen_never_waits() -> None:
    limits = RateLimits()
    assert limits.delay(MESSAGES, A, now=0.0) == NO_WAIT
    assert limits.reserve(MESSAGES, A, now=0.0) == NO_WAIT


def test_an_exhausted_bucket_waits_until_its_reset_for_that_channel_only() -> None:
    limits = RateLimits()
    limits.observe(MESSAGES, A, limit_headers(remaining=0, reset_after_s=2.5), now=10.0)
    assert limits.delay(MESSAGES, A, now=11.0) == Wait(1.5)
    assert limits.delay(MESSAGES, B, now=11.0) == NO_WAIT
    assert limits.delay(MESSAGES, A, now=12.5) == NO_WAIT


def test_routes_that_share_a_bucket_share_its_limit() -> None:
    limits = RateLimits()
    limits.observe(TYPING, A, limit_headers(remaining=1, reset_after_s=5.0), now=0.0)
    limits.observe(MESSAGES, A, limit_headers(remaining=0, reset_after_s=5.0), now=0.0)
    assert limits.delay(TYPING, A, now=1.0) == Wait(4.0)


def test_concurrent_requests_count_down_the_slots_left() -> None:
    limits = RateLimits()
    limits.observe(MESSAGES, A, limit_headers(remaining=2, reset_after_s=4.0), now=0.0)
    assert limits.reserve(MESSAGES, A, now=1.0) == NO_WAIT
    assert limits.reserve(MESSAGES, A, now=1.0) == NO_WAIT
    assert limits.reserve(MESSAGES, A, now=1.0) == Wait(3.0)
    # An answer to a request sent before those two still counts them.
    limits.observe(MESSAGES, A, limit_headers(remaining=1, reset_after_s=2.9), now=1.1)
    assert limits.reserve(MESSAGES, A, now=1.1) == Wait(2.9)


def test_after_a_reset_a_burst_still_counts_down_to_the_limit() -> None:
    limits = RateLimits()
    limits.observe(MESSAGES, A, limit_headers(remaining=0, reset_after_s=5.0), now=0.0)
    for _ in range(5):
        assert limits.reserve(MESSAGES, A, now=5.0) == NO_WAIT
    assert limits.reserve(MESSAGES, A, now=5.0) == Wait(5.0)


def test_a_429_blocks_its_bucket_and_an_older_answer_does_not_lift_it() -> None:
    limits = RateLimits()
    limits.observe(MESSAGES, A, limit_headers(remaining=0, reset_after_s=1.0), now=0.0)
    limits.limited(MESSAGES, A, 7.0, global_=False, now=0.0)
    limits.observe(MESSAGES, A, limit_headers(remaining=3, reset_after_s=1.0), now=0.5)
    assert limits.delay(MESSAGES, A, now=1.0) == Wait(6.0)
    assert limits.delay(MESSAGES, B, now=1.0) == NO_WAIT


def test_a_global_limit_makes_every_route_wait() -> None:
    limits = RateLimits()
    limits.limited(MESSAGES, A, 3.0, global_=True, now=0.0)
    assert limits.delay(TYPING, B, now=1.0) == Wait(2.0, is_global=True)
    assert limits.delay("GET /users/@me", "", now=3.0) == NO_WAIT


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-RateLimit-Remaining": "0"},  # no reset: not a limit we could wait for
        {"X-RateLimit-Remaining": "zero", "X-RateLimit-Reset-After": "1"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "soon"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "nan"},
        {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "-4"},
        {"X-RateLimit-Remaining": "-1", "X-RateLimit-Reset-After": "1"},
        {"X-RateLimit-Bucket": "x" * 500, "X-RateLimit-Limit": "many"},
    ],
)
def test_headers_that_cannot_be_read_are_ignored(headers: dict[str, str]) -> None:
    limits = RateLimits()
    limits.observe(MESSAGES, A, headers, now=0.0)
    assert limits.delay(MESSAGES, A, now=0.0) == NO_WAIT


def test_a_reset_after_of_days_waits_an_hour_at_most() -> None:
    limits = RateLimits()
    limits.observe(MESSAGES, A, limit_headers(remaining=0, reset_after_s=1e9), now=0.0)
    assert limits.delay(MESSAGES, A, now=0.0) == Wait(3600.0)


def test_the_limits_remembered_are_bounded() -> None:
    limits = RateLimits(buckets_max=100)
    for channel in range(1000):
        limits.observe(MESSAGES, str(channel), limit_headers(0, 1.0), now=float(channel))
    assert len(limits) <= 100
    # The most recent channel's limit is still known.
    assert limits.delay(MESSAGES, "999", now=999.5) == Wait(0.5)


# --- DiscordRest on virtual time, against a fake Discord ---------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content: bytes | None = None
    """A raw body instead of ``body``'s JSON."""


@dataclass
class Seen:
    at: float
    method: str
    path: str
    headers: httpx2.Headers
    body: Any


class FakeDiscord:
    """Plays Discord: answers each request with the next scripted :class:`Answer` for its
    path (or 200 ``{}``), and records when each request arrived."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.scripts: dict[str, list[Answer]] = {}
        self.raises: Exception | None = None

    def script(self, path: str, *answers: Answer) -> None:
        self.scripts.setdefault(path, []).extend(answers)

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        loop = asyncio.get_running_loop()
        path = request.url.path.removeprefix("/api/v10")
        body = json.loads(request.content) if request.content else None
        self.seen.append(Seen(loop.time(), request.method, path, request.headers, body))
        if self.raises is not None:
            raise self.raises
        queue = self.scripts.get(path)
        answer = queue.pop(0) if queue else Answer(body={})
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        content = answer.content
        if content is None:
            content = b"" if answer.status == 204 else json.dumps(answer.body).encode()
        return httpx2.Response(answer.status, headers=answer.headers, content=content)

    def arrivals(self, path: str) -> list[float]:
        return [s.at for s in self.seen if s.path == path]


Scenario = Callable[[DiscordRest, FakeDiscord], Awaitable[None]]


def run(scenario: Scenario, *, wait_max_s: float = 5.0) -> FakeDiscord:
    """Run ``scenario`` on virtual time (starting at 0) with a client of the fake Discord."""
    discord = FakeDiscord()

    async def main() -> None:
        rest = DiscordRest(
            API,
            TOKEN,
            LoopClock(),
            transport=httpx2.MockTransport(discord.handle),
            wait_max_s=wait_max_s,
        )
        try:
            await scenario(rest, discord)
        finally:
            await rest.aclose()

    run_virtual(main())
    return discord


def messages(channel: str) -> str:
    return f"/channels/{channel}/messages"


def rate_limited(retry_after_s: float, *, scope: str = "user") -> Answer:
    """Discord's 429: ``user`` (this bot's limit of the route), ``shared`` (the resource's
    limit, shared with others: the bucket's own count may still show slots left), ``global``."""
    headers = {
        "Retry-After": str(round(retry_after_s)),
        "X-RateLimit-Bucket": BUCKET,
        "X-RateLimit-Scope": scope,
    }
    if scope == "global":
        headers["X-RateLimit-Global"] = "true"
    elif scope == "shared":
        headers |= {"X-RateLimit-Remaining": "3", "X-RateLimit-Reset-After": "0.5"}
    else:
        headers |= {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": str(retry_after_s)}
    body = {
        "message": "You are being rate limited.",
        "retry_after": retry_after_s,
        "global": scope == "global",
    }
    return Answer(429, body, headers)


def test_every_request_carries_the_bot_token_and_a_discord_user_agent() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        await rest.trigger_typing(A)

    (seen,) = run(scenario).seen
    assert (seen.method, seen.path) == ("POST", f"/channels/{A}/typing")
    assert seen.headers["authorization"] == f"Bot {TOKEN}"
    assert seen.headers["user-agent"].startswith("DiscordBot (https://github.com/turngate/")


def test_a_message_goes_with_a_stable_nonce_and_pings_nobody() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        await DiscordSender(rest).send(A, "hi @everyone", "order-7#0")

    (seen,) = run(scenario).seen
    assert seen.path == messages(A)
    assert seen.body == {
        "content": "hi @everyone",
        "nonce": nonce_of("order-7#0"),
        "enforce_nonce": True,
        "allowed_mentions": {"parse": []},
    }


def test_a_part_always_gets_the_same_nonce_of_at_most_25_characters() -> None:
    nonce = nonce_of("conversation:turn-1#3")
    assert len(nonce) == 25
    assert nonce == nonce_of("conversation:turn-1#3")
    assert nonce != nonce_of("conversation:turn-1#4")


def test_the_sender_splits_replies_at_2000_characters() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        sender = DiscordSender(rest)
        assert sender.limit == MESSAGE_CHARS_MAX == 2000
        assert sender.measure("😀" * 3) == 3  # Discord counts characters, not UTF-16 units
        parts = split_message("word " * 1000, sender.limit, sender.measure)
        assert len(parts) == 3
        for index, part in enumerate(parts):
            await sender.send(A, part, f"order-7#{index}")

    sent = run(scenario).seen
    assert [len(s.body["content"]) <= 2000 for s in sent] == [True] * 3
    assert len({s.body["nonce"] for s in sent}) == 3


def test_a_429_fails_with_its_retry_after_for_that_conversation_only() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), rate_limited(2.5))
        with pytest.raises(ChannelError) as caught:
            await rest.create_message(A, "one", "n1")
        assert not isinstance(caught.value, DeliveryRefusedError)
        assert caught.value.retry_after_s == 2.5
        assert caught.value.conversation_only
        assert "rate limited" in caught.value.message

    run(scenario)


@pytest.mark.parametrize("scope", ["user", "shared"])
def test_after_a_429_the_same_channel_waits_and_another_channel_does_not(scope: str) -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), rate_limited(2.0, scope=scope))
        with pytest.raises(ChannelError):
            await rest.create_message(A, "one", "n1")
        await asyncio.gather(
            rest.create_message(A, "two", "n2"), rest.create_message(B, "three", "n3")
        )

    discord = run(scenario)
    assert discord.arrivals(messages(A)) == [0.0, 2.0]
    assert discord.arrivals(messages(B)) == [0.0]


def test_a_429_longer_than_the_wait_allowed_fails_the_next_request_at_once() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), rate_limited(60.0))
        with pytest.raises(ChannelError):
            await rest.create_message(A, "one", "n1")
        with pytest.raises(ChannelError) as caught:
            await rest.create_message(A, "two", "n2")
        assert caught.value.retry_after_s == 60.0
        assert caught.value.conversation_only

    assert run(scenario).arrivals(messages(A)) == [0.0]


def test_a_global_429_pauses_every_route_of_the_bot() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), rate_limited(30.0, scope="global"))
        with pytest.raises(ChannelError) as first:
            await rest.create_message(A, "one", "n1")
        assert first.value.retry_after_s == 30.0
        assert not first.value.conversation_only
        with pytest.raises(ChannelError) as other:
            await rest.trigger_typing(B)
        assert other.value.retry_after_s == 30.0
        assert not other.value.conversation_only

    assert len(run(scenario).seen) == 1


def test_a_short_global_429_makes_every_route_wait_it_out() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), rate_limited(1.5, scope="global"))
        with pytest.raises(ChannelError):
            await rest.create_message(A, "one", "n1")
        await rest.trigger_typing(B)

    assert run(scenario).arrivals(f"/channels/{B}/typing") == [1.5]


def test_a_429_that_is_not_discords_json_pauses_the_whole_bot() -> None:
    # Cloudflare, in front of Discord, limits the bot's address: an HTML page, Retry-After.
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        page = Answer(429, headers={"Retry-After": "20"}, content=b"<html>1015</html>")
        discord.script(messages(A), page)
        with pytest.raises(ChannelError) as caught:
            await rest.create_message(A, "one", "n1")
        assert caught.value.retry_after_s == 20.0
        assert not caught.value.conversation_only

    run(scenario)


def test_an_exhausted_bucket_makes_the_next_request_wait_until_its_reset() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), Answer(body={}, headers=limit_headers(0, 1.25)))
        await rest.create_message(A, "one", "n1")
        await rest.create_message(A, "two", "n2")

    assert run(scenario).arrivals(messages(A)) == [0.0, 1.25]


def test_an_exhausted_bucket_with_a_long_reset_fails_at_once_with_its_retry_after() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), Answer(body={}, headers=limit_headers(0, 30.0)))
        await rest.create_message(A, "one", "n1")
        with pytest.raises(ChannelError) as caught:
            await rest.create_message(A, "two", "n2")
        assert caught.value.retry_after_s == 30.0
        assert caught.value.conversation_only
        await rest.create_message(B, "three", "n3")

    discord = run(scenario)
    assert discord.arrivals(messages(A)) == [0.0]
    assert discord.arrivals(messages(B)) == [0.0]


def test_concurrent_sends_into_the_last_slot_are_spread_over_the_windows() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), Answer(body={}, headers=limit_headers(1, 2.0)))
        await rest.create_message(A, "one", "n1")
        await asyncio.gather(*(rest.create_message(A, str(i), f"n{i}") for i in range(2)))

    # The last slot of the window goes at once; the other send waits for the reset.
    assert run(scenario).arrivals(messages(A)) == [0.0, 0.0, 2.0]


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (403, 50007, "Cannot send messages to this user"),
        (403, 50001, "Missing Access"),
        (404, 10003, "Unknown Channel"),
        (400, 50006, "Cannot send an empty message"),
    ],
)
def test_a_refusal_fails_for_good_with_discords_message_and_code(
    status: int, code: int, message: str
) -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), Answer(status, {"message": message, "code": code}))
        with pytest.raises(DeliveryRefusedError) as caught:
            await rest.create_message(A, "hello", "n1")
        assert message in caught.value.message
        assert str(code) in caught.value.message

    run(scenario)


def test_a_refusal_text_is_short_and_never_holds_the_token() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        long_message = f"token {TOKEN} refused " + "x" * 2000
        discord.script(messages(A), Answer(400, {"message": long_message, "code": 50035}))
        with pytest.raises(DeliveryRefusedError) as caught:
            await rest.create_message(A, "hello", "n1")
        assert TOKEN not in caught.value.message
        assert len(caught.value.message) < 400

    run(scenario)


@pytest.mark.parametrize(
    "answer",
    [
        Answer(500, {"message": "Internal Server Error"}),
        Answer(502, content=b"<html>Bad Gateway</html>"),
        Answer(200, content=b"<html>not json</html>"),
        Answer(403, content=b"<html>Access denied</html>"),
        Answer(200, {}, delay_s=60.0),  # no answer within the deadline
    ],
    ids=["500", "502-html", "200-html", "403-html", "no-answer"],
)
def test_failures_that_may_pass_are_tried_again(answer: Answer) -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), answer)
        with pytest.raises(ChannelError) as caught:
            await rest.create_message(A, "hello", "n1")
        assert not isinstance(caught.value, DeliveryRefusedError)
        assert caught.value.retry_after_s is None

    run(scenario)


def test_a_send_without_an_answer_fails_after_15_seconds() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), Answer(200, {}, delay_s=60.0))
        with pytest.raises(ChannelError, match="no answer in 15s"):
            await rest.create_message(A, "hello", "n1")
        assert asyncio.get_running_loop().time() == 15.0

    run(scenario)


def test_a_network_error_is_tried_again_and_its_text_never_holds_the_token() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.raises = httpx2.ConnectError(f"cannot connect with Bot {TOKEN}")
        with pytest.raises(ChannelError) as caught:
            await rest.create_message(A, "hello", "n1")
        assert not isinstance(caught.value, DeliveryRefusedError)
        assert "ConnectError" in caught.value.message
        assert TOKEN not in caught.value.message

    run(scenario)


def test_a_refused_token_fails_a_send_to_be_tried_again() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(messages(A), Answer(401, {"message": "401: Unauthorized", "code": 0}))
        with pytest.raises(ChannelError, match="token was refused") as caught:
            await rest.create_message(A, "hello", "n1")
        assert not isinstance(caught.value, DeliveryRefusedError | ChannelRefusedError)
        assert TOKEN not in caught.value.message

    run(scenario)


def test_typing_answered_with_no_content_is_fine() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        discord.script(f"/channels/{A}/typing", Answer(204))
        discord.script("/gateway", Answer(200, content=b""))
        await rest.trigger_typing(A)
        assert await rest.request("GET", "/gateway", route="GET /gateway", major="") is None

    discord = run(scenario)
    assert [(s.method, s.path) for s in discord.seen] == [
        ("POST", f"/channels/{A}/typing"),
        ("GET", "/gateway"),
    ]


def test_a_conversation_that_is_not_a_channel_id_is_refused_without_a_request() -> None:
    async def scenario(rest: DiscordRest, discord: FakeDiscord) -> None:
        with pytest.raises(DeliveryRefusedError):
            await rest.create_message("../users/@me", "hello", "n1")

    assert run(scenario).seen == []


def test_a_token_with_whitespace_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="token") as caught:
        DiscordRest(API, "Bot abc def", LoopClock())
    assert "abc def" not in str(caught.value)
