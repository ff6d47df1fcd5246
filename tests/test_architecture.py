"""Arrows point inward: the core imports nothing of the runtime, store, providers or gateway."""

from __future__ import annotations

import ast
from pathlib import Path

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
                    "re",
                    "typing",
                }, f"{path.name} imports {name}"


def test_inner_layers_never_import_the_gateway_or_cli() -> None:
    for layer in LAYERS_BELOW_GATEWAY:
        for path in (PACKAGE / layer).glob("*.py"):
            for name in imports_of(path):
                assert not name.startswith(("turngate.gateway", "turngate.cli")), (
                    f"{layer}/{path.name} imports {name}"
                )


def test_only_the_runtime_clock_reads_the_loop_time() -> None:
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.parent.name in {"runtime", "core", "store", "gateway"} and path.name != "clock.py":
            assert "loop.time()" not in text, path
            assert "time.monotonic" not in text, path
