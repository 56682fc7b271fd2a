"""The registered methods as a Markdown table: the one source of the method tables in README.md and
docs/methods.md (between ``<!-- methods:begin -->`` and ``<!-- methods:end -->``; a test keeps them equal,
``attreval list methods --markdown`` prints the table, ``python -m attreval.methods.catalogue`` rewrites them).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from attreval.methods.base import METHODS, Method

BEGIN, END = "<!-- methods:begin -->", "<!-- methods:end -->"
#: Files holding a generated method table, relative to the repository root.
DOCUMENTS = ("README.md", "docs/methods.md")


def _preset(method: Method) -> str:
    """The preset's fields as ``name = value`` (the paper's configuration of the method)."""
    preset: Any = method  # a Method is a dataclass by convention, which the type system cannot see
    values = [f"{f.name} = {getattr(method, f.name)!r}" for f in dataclasses.fields(preset)]
    return ", ".join(values) if values else "—"


def method_table() -> str:
    """``| name | method | family | preset | class |``, one row per registered method, registry order."""
    rows = ["| name | method | family | preset (the paper's configuration) | class |", "|---|---|---|---|---|"]
    for name, method in METHODS.items():
        cls = type(method)
        requires = getattr(cls, "requires", ())
        extra = f" (needs `{'`, `'.join(requires)}`)" if requires else ""
        preset = _preset(method).replace("|", "\\|")
        rows.append(f"| `{name}` | {cls.display}{extra} | {cls.family} | {preset} | `{cls.__module__}.{cls.__qualname__}` |")
    return "\n".join(rows) + "\n"


def with_table(text: str, table: str) -> str:
    """``text`` with the block between :data:`BEGIN` and :data:`END` replaced by ``table``."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        raise ValueError(f"expected a {BEGIN} … {END} block, got none")
    return text[: start + len(BEGIN)] + "\n" + table + text[stop:]


def main(root: str | Path = ".") -> int:
    """Rewrite the method tables of :data:`DOCUMENTS` under ``root``."""
    table = method_table()
    for name in DOCUMENTS:
        path = Path(root) / name
        path.write_text(with_table(path.read_text(), table))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
