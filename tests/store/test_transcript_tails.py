"""The transcript tails a store keeps in memory answer a read exactly as the file would, or
not at all."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from turngate.core.transcript import TranscriptItem
from turngate.store.base import TranscriptEntry
from turngate.store.transcript_tails import TranscriptTails

KEY = "agent:main:main"


def entry(seq: int, key: str = KEY) -> TranscriptEntry:
    return TranscriptEntry(seq, key, TranscriptItem.assistant(f"#{seq}"), "run", 1, 0.0)


def test_a_session_never_read_is_not_answered_from_memory() -> None:
    assert TranscriptTails().read(KEY, 40) is None


def test_a_short_transcript_read_once_answers_any_longer_read() -> None:
    tails = TranscriptTails()
    tails.keep(KEY, [entry(1), entry(2)], 40)
    assert tails.read(KEY, 100) == [entry(1), entry(2)]
    assert tails.read(KEY, 1) == [entry(2)]


def test_a_tail_cut_by_its_limit_does_not_answer_a_longer_read() -> None:
    tails = TranscriptTails()
    tails.keep(KEY, [entry(n) for n in range(1, 41)], 40)
    assert tails.read(KEY, 41) is None
    tails.appended(KEY, [entry(41)])
    assert tails.read(KEY, 40) == [entry(n) for n in range(2, 42)]


def test_the_least_recently_used_sessions_are_forgotten_past_the_bound() -> None:
    tails = TranscriptTails(sessions_max=2)
    for name in "abc":
        tails.keep(f"agent:main:{name}", [entry(1, f"agent:main:{name}")], 40)
    assert len(tails) == 2
    assert tails.read("agent:main:a", 40) is None
    assert tails.read("agent:main:c", 40) == [entry(1, "agent:main:c")]


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(0, 5)),
            st.tuples(st.just("read"), st.integers(0, 12)),
            st.tuples(st.just("forget"), st.just(0)),
        ),
        max_size=60,
    )
)
def test_every_answer_is_the_files_last_entries(steps: list[tuple[str, int]]) -> None:
    file: list[TranscriptEntry] = []
    tails = TranscriptTails()
    for action, n in steps:
        if action == "append":
            added = [entry(len(file) + i + 1) for i in range(n)]
            file.extend(added)
            tails.appended(KEY, added)
        elif action == "forget":
            tails.forget(KEY)
        else:
            expected = file[-n:] if n else []
            answer = tails.read(KEY, n)
            if answer is None:
                tails.keep(KEY, expected, n)
            else:
                assert answer == expected
