"""Discord's REST rate limits for one bot, as bookkeeping: no I/O, no sleeping, time passed in.

Discord limits each route per *bucket* and per *major parameter*: the ``X-RateLimit-Bucket``
header names a bucket (several routes may share one), and a channel id, guild id or webhook id
in the path splits it, so one bucket hash plus one channel id is one limit. Each answer says
how many requests are left in that limit (``X-RateLimit-Remaining``) and in how many seconds
it refills (``X-RateLimit-Reset-After``). Besides, the whole bot has a global limit, which only
shows as a 429 that says ``global``.

:class:`RateLimits` learns from every answer (:meth:`RateLimits.observe`) and from every 429
(:meth:`RateLimits.limited`), and says how long the next request on a route must wait
(:meth:`RateLimits.delay`), or takes a slot for it (:meth:`RateLimits.reserve`): requests that
reserve together count down the bucket's remaining slots, so that concurrent senders do not all
fire into a bucket that only has one left. What it has not seen it does not limit: an unknown
bucket never waits, and Discord's own 429 teaches it.

Times are monotonic seconds (``now``); the header ``X-RateLimit-Reset`` (a Unix time) is not
used, ``Reset-After`` says the same without trusting our wall clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from turngate.types import MonotonicS

BUCKETS_MAX = 10_000
"""Limits remembered at most (bucket and major parameter pairs); the least recently used go."""
ROUTES_MAX = 1_000
"""Route to bucket mappings remembered at most (our routes are a handful of templates)."""
BUCKET_HASH_CHARS_MAX = 64
"""A longer ``X-RateLimit-Bucket`` is not a bucket hash: ignored."""
RESET_AFTER_MAX_S = 3600.0
"""The longest wait a header or a 429 can impose; anything longer is taken as this long."""


@dataclass(frozen=True, slots=True)
class Wait:
    """How long a request must wait before it may go, and whose limit that is: the whole
    bot's (``is_global``) or its bucket's alone (other channels may go meanwhile)."""

    wait_s: float
    is_global: bool = False


NO_WAIT = Wait(0.0)


@dataclass(slots=True)
class _Limit:
    """One bucket for one major parameter."""

    limit: int | None = None
    """Requests per window, when an answer said so."""
    remaining: int | None = None
    """Requests left in the current window (None: unknown, so never waited for)."""
    reset_at: MonotonicS = 0.0
    """When the current window ends and ``remaining`` is ``limit`` again."""
    window_s: float = 0.0
    """The longest ``Reset-After`` seen: how long a fresh window lasts, as far as we know."""

    def wait_s(self, now: MonotonicS) -> float:
        if self.remaining == 0 and now < self.reset_at:
            return self.reset_at - now
        return 0.0

    def take(self, now: MonotonicS) -> None:
        """Use one slot of a window that is open (``wait_s`` is 0)."""
        if self.remaining is None:
            return
        if now >= self.reset_at:
            # The window we knew is over; the next one is guessed from the last, so that a
            # burst after a reset still counts down (the next answer corrects the guess).
            if self.limit is None:
                self.remaining = None
                return
            self.remaining = self.limit
            self.reset_at = now + self.window_s
        self.remaining = max(self.remaining - 1, 0)


@dataclass(frozen=True, slots=True)
class _Headers:
    """The rate limit headers of one answer that could be read."""

    bucket: str | None
    limit: int | None
    remaining: int | None
    reset_after_s: float | None


class RateLimits:
    """The REST rate limits of one bot (see the module docstring)."""

    def __init__(self, *, buckets_max: int = BUCKETS_MAX) -> None:
        if buckets_max < 1:
            raise ValueError(f"buckets_max: must be at least 1 ({buckets_max})")
        self._buckets_max = buckets_max
        self._routes: OrderedDict[str, str] = OrderedDict()
        self._limits: OrderedDict[tuple[str, str], _Limit] = OrderedDict()
        self._global_until: MonotonicS = 0.0

    def __len__(self) -> int:
        """How many limits are remembered."""
        return len(self._limits)

    def delay(self, route: str, major: str, now: MonotonicS) -> Wait:
        """How long a request on ``route`` (``"POST /channels/{channel_id}/messages"``) for
        the major parameter ``major`` (the channel id; ``""`` when the path has none) must
        wait; :data:`NO_WAIT` for a limit never seen."""
        global_s = self._global_until - now
        limit = self._limits.get(self._key(route, major))
        bucket_s = limit.wait_s(now) if limit is not None else 0.0
        if global_s > 0.0 and global_s >= bucket_s:
            return Wait(global_s, is_global=True)
        if bucket_s > 0.0:
            return Wait(bucket_s)
        return NO_WAIT

    def reserve(self, route: str, major: str, now: MonotonicS) -> Wait:
        """Like :meth:`delay`, and when the request may go now, take its slot: the bucket has
        one request less left until an answer says otherwise."""
        wait = self.delay(route, major, now)
        if wait.wait_s == 0.0:
            limit = self._limits.get(self._key(route, major))
            if limit is not None:
                limit.take(now)
                self._limits.move_to_end(self._key(route, major))
        return wait

    def observe(self, route: str, major: str, headers: Mapping[str, str], now: MonotonicS) -> None:
        """Learn from the headers of an answer to a request on ``route`` for ``major``.
        Headers that are missing or unreadable are ignored; this never raises."""
        seen = _read_headers(headers)
        if seen.bucket is not None:
            self._learn_route(route, seen.bucket)
        if seen.remaining is None or seen.reset_after_s is None:
            return
        limit = self._limit(route, major, now)
        reset_at = now + seen.reset_after_s
        if limit.remaining is not None and now < limit.reset_at:
            # Still the window we knew: answers to concurrent requests arrive in any order,
            # and slots we reserved since are not in an older answer's count; keep the
            # stricter of the two, which is at most one window too careful.
            limit.remaining = min(limit.remaining, seen.remaining)
            limit.reset_at = max(limit.reset_at, reset_at)
        else:
            limit.remaining = seen.remaining
            limit.reset_at = reset_at
        if seen.limit is not None:
            limit.limit = seen.limit
        limit.window_s = max(limit.window_s, seen.reset_after_s)

    def limited(
        self,
        route: str,
        major: str,
        retry_after_s: float,
        *,
        global_: bool,
        now: MonotonicS,
    ) -> None:
        """A 429 said to wait ``retry_after_s``: the whole bot (``global_``), or this
        bucket for this major parameter. A value that is not a number is ignored."""
        if not math.isfinite(retry_after_s):
            return
        until = now + min(max(retry_after_s, 0.0), RESET_AFTER_MAX_S)
        if global_:
            self._global_until = max(self._global_until, until)
            return
        limit = self._limit(route, major, now)
        limit.remaining = 0
        limit.reset_at = max(limit.reset_at, until)

    def _key(self, route: str, major: str) -> tuple[str, str]:
        # Until an answer names the route's bucket, the route stands for it.
        return (self._routes.get(route, route), major)

    def _learn_route(self, route: str, bucket: str) -> None:
        self._routes[route] = bucket
        self._routes.move_to_end(route)
        while len(self._routes) > ROUTES_MAX:
            self._routes.popitem(last=False)

    def _limit(self, route: str, major: str, now: MonotonicS) -> _Limit:
        """The limit of ``route`` and ``major``, made if new, as the most recently used."""
        key = self._key(route, major)
        limit = self._limits.get(key)
        if limit is None:
            if len(self._limits) >= self._buckets_max:
                self._forget(now)
            limit = self._limits[key] = _Limit()
        self._limits.move_to_end(key)
        return limit

    def _forget(self, now: MonotonicS) -> None:
        """Back under the maximum: first the limits whose window is over (they would not
        make anyone wait), then the least recently used. Goes down to nine tenths of the
        maximum, so that the sweep runs once per many new limits, not on every one."""
        target = self._buckets_max * 9 // 10
        for key in [k for k, v in self._limits.items() if v.reset_at <= now]:
            if len(self._limits) <= target:
                return
            del self._limits[key]
        while len(self._limits) > target:
            self._limits.popitem(last=False)


def _read_headers(headers: Mapping[str, str]) -> _Headers:
    lower = {str(k).lower(): v for k, v in headers.items()}
    bucket = lower.get("x-ratelimit-bucket")
    if not _is_bucket_hash(bucket):
        bucket = None
    limit = _count(lower.get("x-ratelimit-limit"))
    reset_after = _seconds(lower.get("x-ratelimit-reset-after"))
    return _Headers(
        bucket=bucket,
        limit=limit if limit else None,
        remaining=_count(lower.get("x-ratelimit-remaining")),
        reset_after_s=reset_after,
    )


def _is_bucket_hash(text: object) -> bool:
    """An opaque, short, printable ASCII token; anything else is garbage to ignore."""
    return (
        isinstance(text, str)
        and 0 < len(text) <= BUCKET_HASH_CHARS_MAX
        and text.isascii()
        and text.isprintable()
    )


def _count(text: object) -> int | None:
    """A header's non-negative integer, or None."""
    if not isinstance(text, str):
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _seconds(text: object) -> float | None:
    """A header's non-negative number of seconds (capped at :data:`RESET_AFTER_MAX_S`)."""
    if not isinstance(text, str):
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0.0:
        return None
    return min(value, RESET_AFTER_MAX_S)


__all__ = ["BUCKETS_MAX", "NO_WAIT", "RESET_AFTER_MAX_S", "RateLimits", "Wait"]
