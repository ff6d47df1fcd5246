"""Print the mutation score per area from mutmut's results (run by scripts/mutants.sh).

Reads the ``.meta`` files mutmut leaves under ``mutants/`` (in the working directory), and
writes every surviving mutant's name to ``survivors.txt`` beside them, for review.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

AREAS = {
    "turngate.core.": "core/",
    "turngate.store.": "store/",
    "turngate.runtime.owner.": "runtime/owner.py",
}
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}


def area_of(mutant: str) -> str:
    for prefix, area in AREAS.items():
        if mutant.startswith(prefix):
            return area
    return "other"


def main(seconds: str = "") -> int:
    by_area: dict[str, Counter[str]] = {area: Counter() for area in AREAS.values()}
    survivors: list[str] = []
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        for mutant, code in sorted(codes.items()):
            status = status_by_exit_code[code]
            by_area.setdefault(area_of(mutant), Counter())[status] += 1
            if status in ("survived", "no tests", "suspicious"):
                survivors.append(f"{mutant}\t{status}")
    print(f"{'area':<18} {'killed':>7} {'checked':>8} {'score':>7}  other")
    for area, counts in by_area.items():
        checked = sum(n for status, n in counts.items() if status not in ("not checked", "skipped"))
        killed = sum(counts[status] for status in DETECTED)
        score = f"{100 * killed / checked:.1f}%" if checked else "-"
        others = sorted((status, n) for status, n in counts.items() if status != "killed")
        rest = ", ".join(f"{status} {n}" for status, n in others)
        print(f"{area:<18} {killed:>7} {checked:>8} {score:>7}  {rest}")
    Path("survivors.txt").write_text("".join(line + "\n" for line in survivors))
    took = f"; the run took {seconds} s" if seconds else ""
    print(f"{len(survivors)} survivors listed in .cache/mutants/survivors.txt{took}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
