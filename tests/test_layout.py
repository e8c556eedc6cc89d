"""The layout a newcomer reads: small modules, short functions, every package saying what
it holds, and tests that mirror the packages."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("streams", "serving", "online")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO_ROOT / package).rglob("*.py"))


def packages() -> Iterator[Path]:
    for package in PACKAGES:
        root = REPO_ROOT / package
        yield root
        yield from sorted(p.parent for p in root.rglob("*/__init__.py"))


def relative(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_no_module_is_over_400_lines() -> None:
    sizes = {relative(p): p.read_text().count("\n") for p in modules()}
    assert sizes, "no modules found: the test would prove nothing"
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_is_over_80_lines() -> None:
    long: dict[str, int] = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                lines = (node.end_lineno or node.lineno) - start + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{relative(path)}:{node.lineno} {node.name}"] = lines
    assert long == {}


def test_every_folder_of_code_is_a_package_that_says_what_it_holds() -> None:
    for package in PACKAGES:
        for folder in {p.parent for p in (REPO_ROOT / package).rglob("*.py")}:
            assert (folder / "__init__.py").exists(), f"{relative(folder)} has no __init__.py"
    for folder in packages():
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc, f"{relative(folder)}/__init__.py has no docstring"


def test_tests_mirror_the_sub_packages() -> None:
    missing = [
        relative(folder)
        for folder in packages()
        if not any((REPO_ROOT / "tests" / relative(folder)).glob("test_*.py"))
    ]
    assert missing == []
