"""The test tree's own layout: a folder's conftest.py is imported as the module `conftest` unless its folder is a
package, and would then hide tests/conftest.py from every `from conftest import ...` run after it."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_nested_conftest_lives_in_a_package():
    loose = [str(c.relative_to(TESTS)) for c in TESTS.rglob("conftest.py")
             if c.parent != TESTS and not (c.parent / "__init__.py").exists()]
    assert not loose, f"add an __init__.py beside {loose} and import its helpers as `from .conftest import ...`"
