"""Tests written for the mutation run (`make mutants`, docs/mutants.md).

The first is the mutation run's end-to-end oracle: a few simulator seeds drive the real runtime
over the core, the store and the lease owner, and every promise the checkers know must hold.
The rest each kill a mutant the unit tests let survive; docs/mutants.md lists which.
"""

from __future__ import annotations

import pytest

from turngate.core.keys import (
    AGENT_ID_LEN_MAX,
    SEGMENT_LEN_MAX,
    SEGMENTS_MAX,
    SESSION_KEY_LEN_MAX,
    parse_session_key,
)
from turngate.core.lease import Lease, LeaseTerms
from turngate.core.queue import SessionQueue
from turngate.core.turn import AbortReason, Turn, Usage
from turngate.errors import InvalidSessionKeyError
from turngate.sim.runner import run_seed

# A short slice of `make sim`: about 40 ms a seed, every profile drawn at least once.
ORACLE_SEEDS = range(40)


@pytest.mark.parametrize("seed", ORACLE_SEEDS)
def test_a_short_simulator_run_keeps_every_promise(seed: int) -> None:
    result = run_seed(seed)
    assert result.ok, (result.failure, result.violations[:5], result.error[-800:])


# --- session keys: every limit is inclusive, and a refusal shows the key it refused ---


def test_a_key_at_every_length_limit_is_accepted_and_one_past_it_is_refused() -> None:
    agent = "a" * AGENT_ID_LEN_MAX
    segment = "s" * SEGMENT_LEN_MAX
    assert parse_session_key(f"agent:{agent}:main").agent_id == agent
    assert parse_session_key(f"agent:main:{segment}").rest == (segment,)
    many = ":".join(["s"] * SEGMENTS_MAX)
    assert len(parse_session_key(f"agent:main:{many}").rest) == SEGMENTS_MAX
    longest = "agent:main:" + ":".join(["x" * 90] * 5) + ":"
    longest += "y" * (SESSION_KEY_LEN_MAX - len(longest))
    assert str(parse_session_key(longest)) == longest
    for text in (
        f"agent:{agent}a:main",
        f"agent:main:{segment}s",
        f"agent:main:{many}:s",
        longest + "y",
    ):
        with pytest.raises(InvalidSessionKeyError):
            parse_session_key(text)


def test_a_refusal_names_the_type_it_got_instead_of_a_string() -> None:
    with pytest.raises(InvalidSessionKeyError, match="expected a string, got int"):
        parse_session_key(5)


def test_a_refused_key_of_80_characters_is_shown_whole_and_a_longer_one_cut_at_77() -> None:
    whole = "agent:main:" + "x" * 68 + "!"
    assert len(whole) == 80
    with pytest.raises(InvalidSessionKeyError) as shown:
        parse_session_key(whole)
    assert f"sessionKey {whole!r}:" in str(shown.value)
    longer = whole[:-1] + "x!"
    with pytest.raises(InvalidSessionKeyError) as cut:
        parse_session_key(longer)
    assert f"sessionKey {longer[:77] + '...'!r}:" in str(cut.value)


# --- the queue, the lease, token counts ---


def _turn(turn_id: str) -> Turn:
    return Turn(turn_id, "agent:main:main", "hi", accepted_at=0.0, deadline=100.0)


def test_taking_one_queued_turn_out_leaves_the_others_counted() -> None:
    queue = SessionQueue(turns_max=3)
    for turn_id in ("a", "b", "c"):
        queue.append(_turn(turn_id), collect=False)
    assert queue.is_full
    taken = queue.take("b")
    assert taken is not None
    assert taken.turn_id == "b"
    assert len(queue) == 2
    assert not queue.is_full
    assert [turn.turn_id for turn in queue.turns()] == ["a", "c"]


TERMS = LeaseTerms(stall_timeout_s=10.0, run_timeout_s=10.0, abort_grace_s=1.0)


def test_a_lease_whose_stall_and_run_deadlines_meet_expires_as_a_run_timeout() -> None:
    lease = Lease.grant("run", 1, TERMS, now=0.0, hard_deadline=100.0)
    assert lease.expiry() == (10.0, AbortReason.RUN_TIMEOUT)


def test_a_lease_restarted_when_its_run_really_starts_counts_both_clocks_from_then() -> None:
    lease = Lease.grant("run", 1, TERMS, now=0.0, hard_deadline=100.0)
    lease.restart(4.0)
    assert lease.expiry() == (14.0, AbortReason.RUN_TIMEOUT)
    assert lease.deadline() == 14.0


@pytest.mark.parametrize("count", [-1, 1.0, True, None])
def test_a_token_count_that_is_not_an_int_of_zero_or_more_is_refused(count: object) -> None:
    with pytest.raises(ValueError, match=f"prompt_tokens: .* got {count!r}"):
        Usage(count, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"completion_tokens: .* got {count!r}"):
        Usage(0, count)  # type: ignore[arg-type]


def test_zero_tokens_is_a_valid_count() -> None:
    assert Usage(0, 0).total_tokens == 0
