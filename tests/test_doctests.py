"""The examples in the docstrings run (``make test`` runs this file): every module of the package with a ``>>>``
line, its doctests executed in the module's namespace. Examples that need files are marked ``# doctest: +SKIP``."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def modules_with_examples() -> list[str]:
    names = []
    for path in sorted((SRC / "attreval").rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = list(path.relative_to(SRC).with_suffix("").parts)
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_examples_are_found():
    assert len(modules_with_examples()) >= 15


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, f"{name} has '>>> ' lines but no doctest was found"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing examples in {name} (their output is above)"
