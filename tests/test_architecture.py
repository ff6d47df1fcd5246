"""Arrows point inward: the core imports nothing of the runtime, store, providers or gateway;
and time comes from the injected clock, never from the event loop directly."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import turngate

PACKAGE = Path(turngate.__file__).parent
CORE_MAY_IMPORT = ("turngate.core", "turngate.errors", "turngate.types")
LAYERS_BELOW_GATEWAY = ("core", "runtime", "store", "providers")


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_core_imports_only_the_standard_library_and_itself() -> None:
    for path in (PACKAGE / "core").glob("*.py"):
        for name in imports_of(path):
            if name.startswith("turngate"):
                assert name.startswith(CORE_MAY_IMPORT), f"{path.name} imports {name}"
            else:
                assert name.split(".")[0] in {
                    "__future__",
                    "collections",
                    "dataclasses",
                    "enum",
                    "json",  # a pure codec: tool-call arguments are JSON text
                    "re",
                    "typing",
                }, f"{path.name} imports {name}"


def test_inner_layers_never_import_the_edges_or_cli() -> None:
    for layer in LAYERS_BELOW_GATEWAY:
        for path in (PACKAGE / layer).glob("*.py"):
            for name in imports_of(path):
                assert not name.startswith(
                    ("turngate.gateway", "turngate.channels", "turngate.cli")
                ), f"{layer}/{path.name} imports {name}"


def test_the_channels_are_an_edge_that_never_imports_the_gateway() -> None:
    # The gateway's app assembles the channels with everything else; never the reverse.
    for path in (PACKAGE / "channels").glob("*.py"):
        for name in imports_of(path):
            assert not name.startswith(("turngate.gateway", "turngate.cli")), (
                f"channels/{path.name} imports {name}"
            )


LOOP_GETTERS = frozenset({"get_running_loop", "get_event_loop"})
MONOTONIC_READS = frozenset({"monotonic", "monotonic_ns"})
LOOP_TIME_READERS = {
    "runtime/clock.py": "LoopClock: the one Clock over the loop's time, injected everywhere else",
    "sim/": "the simulator is the world around the runtime: it drives the virtual-time loop"
    " and schedules its clients and faults on it",
}
"""Where reading the event loop's (or the monotonic) time is allowed, and why."""


def is_loop_getter(node: ast.AST) -> bool:
    """``asyncio.get_running_loop()``, ``get_event_loop()`` and the like."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in LOOP_GETTERS


def loop_names(tree: ast.AST) -> set[str]:
    """Names bound anywhere in the module to the result of a loop getter."""
    return {
        target.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
        if is_loop_getter(node.value)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }


def is_loop(node: ast.AST, bound: set[str]) -> bool:
    """An expression that is an event loop: a getter's result, a name bound to one, or
    anything called ``loop`` (``loop``, ``self.loop``, ``self._loop``)."""
    if is_loop_getter(node):
        return True
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    if not isinstance(name, str):
        return False
    return name in bound or name == "loop" or name.endswith("_loop")


def is_clock_read(node: ast.AST, bound: set[str]) -> bool:
    """``<loop>.time`` (called or not), ``time.monotonic``, ``from time import monotonic``."""
    if isinstance(node, ast.Attribute):
        if node.attr == "time":
            return is_loop(node.value, bound)
        return node.attr in MONOTONIC_READS and getattr(node.value, "id", None) == "time"
    if isinstance(node, ast.ImportFrom) and node.module == "time":
        return any(alias.name in MONOTONIC_READS for alias in node.names)
    return False


def clock_reads(source: str) -> list[str]:
    """Every read of the loop's time and of the monotonic time, as ``line: expression``."""
    tree = ast.parse(source)
    bound = loop_names(tree)
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute | ast.ImportFrom) and is_clock_read(node, bound)
    ]


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("asyncio.get_running_loop().time()", True),
        ("get_event_loop().time()", True),
        ("loop.time()", True),
        ("deadline = self._loop.time() + 5", True),
        ("ev = asyncio.get_running_loop()\nnow = ev.time", True),
        ("time.monotonic()", True),
        ("from time import monotonic_ns", True),
        ("self.clock.now()", False),
        ("asyncio.get_running_loop().create_future()", False),
        ("stamp = time.time()", False),  # wall stamps: not the loop's time
    ],
)
def test_the_clock_rule_sees_every_way_of_reading_the_loop_time(source: str, caught: bool) -> None:
    assert bool(clock_reads(source)) is caught, clock_reads(source)


def test_only_the_runtime_clock_reads_the_loop_time() -> None:
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name.startswith(tuple(LOOP_TIME_READERS)):
            continue
        reads = clock_reads(path.read_text(encoding="utf-8"))
        if reads:
            found[name] = reads
    assert found == {}, "read time from the injected Clock (turngate.core.clock) instead"


def test_every_module_allowed_to_read_the_loop_time_exists() -> None:
    for allowed in LOOP_TIME_READERS:
        assert (PACKAGE / allowed).exists(), allowed
