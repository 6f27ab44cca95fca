"""`bench/` measures the shipped code with shipped helpers: it never imports from `tests/`."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
    return names


def test_bench_does_not_import_from_tests() -> None:
    files = sorted(BENCH.glob("*.py"))
    assert files, f"no benchmark modules under {BENCH}"
    offending = {
        f"{path.name}: {name}"
        for path in files
        for name in _imported_modules(path)
        if name == "tests" or name.startswith("tests.")
    }
    assert not offending, sorted(offending)
