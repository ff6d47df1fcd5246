"""``turngate sim --seeds``: progress while the seeds run, on stderr; stdout keeps the summary."""

from __future__ import annotations

import io
import re

import pytest

from turngate.sim.command import PROGRESS_REDRAW_S, Progress, SeedSummary, main, progress_line


def summaries(count: int, *, failed: int = 0) -> list[SeedSummary]:
    """``count`` seed summaries, the first ``failed`` of them failures."""
    return [
        SeedSummary(i, "calm", "invariant" if i < failed else None, "", 1, 1, False)
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("done", "total", "failed", "elapsed_s", "line"),
    [
        (1200, 2000, 0, 30.0, "seeds 1200/2000 (60%), 40 seeds/s, 0 failed, ETA 20s"),
        (100, 10_000, 2, 10.0, "seeds 100/10000 (1%), 10 seeds/s, 2 failed, ETA 16m30s"),
        (3, 100_000, 0, 2.0, "seeds 3/100000 (0%), 1.5 seeds/s, 0 failed, ETA 18h31m"),
        (0, 50, 0, 0.0, "seeds 0/50 (0%), 0.0 seeds/s, 0 failed, ETA ?"),
        (50, 50, 1, 5.0, "seeds 50/50 (100%), 10 seeds/s, 1 failed, ETA 0s"),
    ],
)
def test_progress_line_shows_seeds_done_rate_failures_and_eta(
    done: int, total: int, failed: int, elapsed_s: float, line: str
) -> None:
    assert progress_line(done, total, failed, elapsed_s) == line


def test_off_a_terminal_progress_is_a_plain_line_each_tenth_of_the_seeds() -> None:
    out = io.StringIO()
    progress = Progress(100, out, began=0.0, tty=False)
    for i in range(20):  # five seeds at a time, a second apart
        progress.advance(summaries(5, failed=1 if i == 3 else 0), float(i + 1))
    progress.clear()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "seeds 10/100 (10%), 5.0 seeds/s, 0 failed, ETA 18s"
    assert lines[1] == "seeds 20/100 (20%), 5.0 seeds/s, 1 failed, ETA 16s"
    assert lines[-1] == "seeds 100/100 (100%), 5.0 seeds/s, 1 failed, ETA 0s"
    assert "\r" not in out.getvalue()


def test_off_a_terminal_a_slow_run_still_says_something_every_thirty_seconds() -> None:
    out = io.StringIO()
    progress = Progress(1000, out, began=0.0, tty=False)
    progress.advance(summaries(1), 10.0)
    progress.advance(summaries(1), 31.0)
    progress.advance(summaries(1), 40.0)
    assert out.getvalue().splitlines() == ["seeds 2/1000 (0%), 0.1 seeds/s, 0 failed, ETA 4h17m"]


def test_on_a_terminal_progress_is_one_line_rewritten_in_place_then_cleared() -> None:
    out = io.StringIO()
    progress = Progress(20, out, began=0.0, tty=True)
    progress.advance(summaries(1), PROGRESS_REDRAW_S / 2)  # too soon to redraw
    progress.advance(summaries(9), 1.0)
    progress.advance(summaries(10), 2.0)
    progress.clear()
    text = out.getvalue()
    assert "\n" not in text
    assert text.split("\r")[1:] == [
        "seeds 10/20 (50%), 10 seeds/s, 0 failed, ETA 1s",
        "seeds 20/20 (100%), 10 seeds/s, 0 failed, ETA 0s",
        " " * len("seeds 20/20 (100%), 10 seeds/s, 0 failed, ETA 0s"),
        "",
    ]


def test_many_seeds_show_progress_on_stderr_and_leave_the_summary_alone(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--seeds", "40..44"]) == 0
    captured = capsys.readouterr()
    progress = captured.err.splitlines()
    assert [line.split(",")[0] for line in progress] == [
        f"seeds {n}/5 ({20 * n}%)" for n in range(1, 6)
    ]
    shape = r"seeds \d/5 \(\d+%\), [\d.]+ seeds/s, 0 failed, ETA (\d+s|\d+m\d\ds|\?)"
    assert all(re.fullmatch(shape, line) for line in progress), progress
    assert captured.out.startswith("5 seeds (")
    assert captured.out.rstrip().endswith("sim: 5 passed, 0 failed")
