"""The test functions in the repository's test files, by pytest node id, read with ``ast``
(no collection, no imports): what a catalogue of tests may name.

    >>> merkle = "tests/unit/audit/test_merkle.py"
    >>> f"{merkle}::TestRfc6962Examples::test_root_of_the_seven_leaf_tree" in repository_tests()
    True
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def repository_tests() -> set[str]:
    """Every test function's node id (without parameters) in the repository's test files."""
    found: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("test"):
                    found.add(f"{rel}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                found.update(
                    f"{rel}::{node.name}::{m.name}"
                    for m in node.body
                    if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef)
                    and m.name.startswith("test")
                )
    return found
