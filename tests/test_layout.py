"""The layout explains itself: every module opens with one line saying what it owns, and the README names each."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("model_store", "training", "service", "benchmarks", "clients/python/lstm_client")
MODULES = sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(path.relative_to(REPO)) for path in MODULES])
def test_every_module_opens_with_one_line_saying_what_it_owns(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text()), clean=False)
    assert docstring, "no module docstring"
    first, *rest = docstring.split("\n")
    assert first.strip() and first == first.strip(), f"the first line is {first!r}"
    assert not rest or not rest[0].strip(), "the opening line runs on into a second one: end it, then a blank line"


def test_the_readme_layout_names_every_service_module() -> None:
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    modules = {
        path.relative_to(REPO / "service").name
        for path in (REPO / "service").rglob("*.py")
        if path.name != "__init__.py"
    }
    missing = sorted(name for name in modules if f"`{name}`" not in layout)
    assert missing == [], "README's Layout section does not name these service modules"
