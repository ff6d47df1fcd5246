#!/usr/bin/env python3
"""Print a pip constraints file that pins every dependency of pyproject.toml to its lower bound.

    python3 scripts/lowest-constraints.py [pyproject.toml] > constraints.txt
    PIP_CONSTRAINT=constraints.txt pip install -e '.[dev]'

Covers the build requirements, the runtime dependencies and the `dev` extra: each must carry a
`>=` bound, and each becomes `name==bound` (its environment marker kept), so that pip installs
exactly the oldest versions pyproject allows, or fails when one of them does not exist. The
bound must therefore be a released version, written as the registry spells it. Setting
PIP_CONSTRAINT (rather than passing `-c`) makes the build requirements obey it too.
`make test-lowest` runs the test suite in such an environment.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(
    r"""^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)   # the distribution
        \s*(?:\[[^\]]*\])?                          # extras: not part of a constraint
        \s*(?P<specifiers>[^;]*?)                   # comma-separated specifiers
        \s*(?:;\s*(?P<marker>.+?))?\s*$             # environment marker
    """,
    re.VERBOSE,
)
LOWER_BOUND = re.compile(r"^>=\s*(?P<version>[^\s,]+)$")


def lowest(requirement: str) -> str:
    """`name==lower` (with the requirement's marker) for one requirement string."""
    match = REQUIREMENT.match(requirement)
    if match is None:
        raise SystemExit(f"lowest-constraints: cannot read requirement {requirement!r}")
    bounds = [
        bound.group("version")
        for spec in match["specifiers"].split(",")
        if (bound := LOWER_BOUND.match(spec.strip()))
    ]
    if len(bounds) != 1:
        raise SystemExit(f"lowest-constraints: {requirement!r} needs exactly one '>=' lower bound")
    line = f"{match['name']}=={bounds[0]}"
    return f"{line}; {match['marker']}" if match["marker"] else line


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    pyproject = tomllib.loads(path.read_text(encoding="utf-8"))
    requirements = [
        *pyproject["build-system"]["requires"],
        *pyproject["project"]["dependencies"],
        *pyproject["project"].get("optional-dependencies", {}).get("dev", []),
    ]
    print(f"# lowest allowed versions, from {path.name}; written by scripts/lowest-constraints.py")
    for requirement in requirements:
        print(lowest(requirement))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
