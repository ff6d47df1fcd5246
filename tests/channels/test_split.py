"""A reply longer than a platform's limit goes out as several messages, cut where a reader
would cut, in order, with nothing lost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turngate.channels.split import split_message, utf16_length


def test_a_reply_within_the_limit_is_one_message() -> None:
    assert split_message("hello there", 4096) == ["hello there"]


def test_a_reply_of_only_whitespace_is_no_message() -> None:
    assert split_message(" \n\t ", 10) == []


def test_a_long_reply_is_cut_between_paragraphs_first() -> None:
    text = "First paragraph. Two sentences.\n\nSecond one.\n\nThird."
    assert split_message(text, 46) == [
        "First paragraph. Two sentences.\n\nSecond one.\n\n",
        "Third.",
    ]
    assert split_message(text, 45) == [
        "First paragraph. Two sentences.\n\n",
        "Second one.\n\nThird.",
    ]


def test_a_paragraph_too_long_is_cut_between_sentences() -> None:
    text = "One sentence here. Another one there! A third? Yes."
    assert split_message(text, 30) == [
        "One sentence here. ",
        "Another one there! A third? ",
        "Yes.",
    ]


def test_a_sentence_too_long_is_cut_between_words_and_a_word_too_long_anywhere() -> None:
    assert split_message("alpha beta gamma delta", 12) == ["alpha beta ", "gamma delta"]
    assert split_message("abcdefghij", 4) == ["abcd", "efgh", "ij"]


def test_ten_thousand_characters_go_out_as_three_telegram_messages_in_order() -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 60 for i in range(32)]
    text = "\n\n".join(paragraphs)
    assert 9_500 <= len(text) <= 10_500
    parts = split_message(text, 4096, utf16_length)
    assert len(parts) == 3
    assert "".join(parts) == text
    assert all(utf16_length(part) <= 4096 for part in parts)
    assert all(part.rstrip().endswith("word") for part in parts)  # whole paragraphs


def test_a_chinese_reply_is_cut_after_a_full_stop() -> None:
    assert split_message("你好。今天天气很好。", 6) == ["你好。", "今天天气很好", "。"]


def test_an_emoji_counts_two_for_telegram() -> None:
    text = "😀" * 3000
    parts = split_message(text, 4096, utf16_length)
    assert [len(part) for part in parts] == [2048, 952]


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_message("x", 0)


@given(st.text(min_size=1, max_size=400), st.integers(min_value=1, max_value=60))
def test_no_part_is_over_the_limit_or_blank_and_nothing_but_blanks_is_lost(
    text: str, limit: int
) -> None:
    parts = split_message(text, limit)
    assert all(0 < len(part) <= limit and part.strip() for part in parts)
    joined = "".join(parts)
    assert "".join(joined.split()) == "".join(text.split())
