"""The config reference (``docs/config.md``, ``attreval list config``), generated from the schema's field docs."""

from __future__ import annotations

import dataclasses
from typing import Any

from attreval.config.schema import (
    DataConfig,
    EvaluationConfig,
    GridConfig,
    ModelConfig,
    RunConfig,
    VariantConfig,
)

# --------------------------------------------------------------------------------------------------
# The sections of the reference, in order

TABLES = ("data", "models", "grids", "evaluation", "methods", "variants")
REFERENCE_SECTIONS: tuple[tuple[str, type | None, str], ...] = (
    ("Top level", None, "Keys before the first table, and the tables."),
    ("[data]", DataConfig, DataConfig.__doc__ or ""),
    ("[[models]]", ModelConfig, ModelConfig.__doc__ or ""),
    ("[grids]", GridConfig, GridConfig.__doc__ or ""),
    ("[evaluation]", EvaluationConfig, EvaluationConfig.__doc__ or ""),
    ("[methods.METHOD]", None, RunConfig.__dataclass_fields__["methods"].metadata["doc"]),
    ("[variants.NAME]", VariantConfig, RunConfig.__dataclass_fields__["variants"].metadata["doc"]),
)


def _type_name(kind: Any) -> str:
    kind = str(kind)
    if kind.startswith("dict"):
        return "any"
    for inner in ("int", "float", "str"):
        if kind == f"tuple[{inner}, ...]":
            return f"list of {inner}"
    return kind


def _toml(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "required"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(_toml(v).strip("`") for v in value) + "]`"
    return f"`{value}`"


def _field_rows(cls: type, names: list[str] | None = None) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        name = "*other keys*" if cls is VariantConfig and f.name == "options" else f"`{f.name}`"
        table = cls is RunConfig and f.name in TABLES
        shown = "—" if table or (cls is VariantConfig and f.name == "options") else _toml(default)
        rows.append(f"| {name} | {'table' if table else _type_name(f.type)} | {shown} | {f.metadata.get('doc', '')} |")
    return rows


def config_reference() -> str:
    """The Markdown reference of every config section and key (type, default, meaning), from the dataclass
    fields' ``doc`` metadata; ``docs/config.md`` is this text (a test keeps them equal)."""
    lines = [
        "# Config reference",
        "",
        "<!-- Generated from the dataclasses of src/attreval/config/schema.py by `attreval list config > docs/config.md`; "
        "edit the field docs there, not this file. -->",
        "",
        "A run config is a TOML file (`attreval run CONFIG.toml`); every key is optional unless marked required, "
        "and an unknown key, a wrong type or an unknown name fails before anything runs, in one line. Relative "
        "paths resolve against the folder of the config file. Without a file, `attreval run` uses the embedded "
        "default (`src/attreval/configs/default.toml`); `configs/` holds the paper's ImageNet, CIFAR-10 and "
        "Fashion-MNIST configs.",
    ]
    for title, cls, text in REFERENCE_SECTIONS:
        lines += ["", f"## {title}", "", " ".join(text.replace("``", "`").split())]
        if title == "Top level":
            lines += [""] + _field_rows(RunConfig)
        elif cls is not None:
            lines += [""] + _field_rows(cls)
    return "\n".join(lines) + "\n"


def reference_fields() -> list[tuple[str, dataclasses.Field]]:
    """Every documented key as ``(section, field)``: what :func:`config_reference` must cover."""
    out = [("", f) for f in dataclasses.fields(RunConfig)]
    for cls in (DataConfig, ModelConfig, GridConfig, EvaluationConfig, VariantConfig):
        out += [(cls.__name__, f) for f in dataclasses.fields(cls)]
    return out
