"""TOML → :class:`~attreval.config.schema.RunConfig`, strictly (unknown keys, wrong types and unknown names fail
in one line), relative paths resolved against the config file's folder; and the lenient reading of a run's
``config.json``."""

from __future__ import annotations

import dataclasses
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from attreval.config.checks import validate, validate_inputs
from attreval.config.schema import (
    VARIANT_KEYS,
    DataConfig,
    EvaluationConfig,
    GridConfig,
    ModelConfig,
    RunConfig,
    VariantConfig,
)
from attreval.registry import did_you_mean, unknown_name_error


def _typed(section: str, key: str, value: Any, kind: Any) -> Any:
    """Check one value against a field type; tuples accept TOML arrays."""
    kind = str(kind)
    where = f"[{section}] {key}" if section else key
    if kind.startswith("tuple"):
        if not isinstance(value, list):
            raise ValueError(f"expected a list for {where}, got {type(value).__name__} {value!r}")
        inner: type | tuple[type, ...] = int if "int" in kind else (int, float) if "float" in kind else str
        if not all(isinstance(v, inner) and not isinstance(v, bool) for v in value):
            name = "float" if "float" in kind else "int" if "int" in kind else "str"
            raise ValueError(f"expected a list of {name} for {where}, got {value!r}")
        return tuple(float(v) for v in value) if "float" in kind else tuple(value)
    kinds: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool}
    expected = kinds[kind]
    if not isinstance(value, expected) or (kind in ("int", "float") and isinstance(value, bool)):
        raise ValueError(f"expected {kind} for {where}, got {type(value).__name__} {value!r}")
    return float(value) if kind == "float" and isinstance(value, (int, float)) else value


def _section(cls: type, section: str, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ValueError(f"expected a table for [{section}], got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ValueError(f"unknown key '{key}' in [{section}]{did_you_mean(key, list(fields))}; expected one of: {', '.join(fields)}")
        values[key] = _typed(section, key, value, fields[key].type)
    try:
        return cls(**values)
    except TypeError as err:
        raise ValueError(f"incomplete [{section}]: {err}") from None


def parse_config(raw: dict[str, Any], base: str | os.PathLike | None = None) -> RunConfig:
    """A validated :class:`RunConfig` from a TOML-like dict; with ``base`` (the config file's folder), relative
    paths are made absolute against it (:func:`resolve_paths`)."""
    top = {f.name for f in dataclasses.fields(RunConfig)}
    for key in raw:
        if key not in top:
            raise ValueError(f"unknown key '{key}'{did_you_mean(key, sorted(top))}; expected one of: {', '.join(sorted(top))}")
    models = raw.get("models", [])
    if not isinstance(models, list) or not models:
        raise ValueError("expected at least one [[models]] table with a name, got none")
    config = RunConfig(
        seed=_typed("", "seed", raw.get("seed", 0), "int"),
        device=_typed("", "device", raw.get("device", "cpu"), "str"),
        data=_section(DataConfig, "data", raw.get("data", {})),
        models=tuple(_section(ModelConfig, "models", m) for m in models),
        grids=_section(GridConfig, "grids", raw.get("grids", {})),
        evaluation=_section(EvaluationConfig, "evaluation", raw.get("evaluation", {})),
        methods=_method_options(raw.get("methods", {})),
        variants=_variants(raw.get("variants", {}), None if base is None else Path(base)),
    )
    validate(config)
    validate_inputs(config)
    return resolve_paths(config, base) if base is not None else config


def _method_options(raw: Any) -> dict[str, dict[str, Any]]:
    from attreval.methods import is_method_name, method_names

    if not isinstance(raw, dict):
        raise ValueError(f"expected a table for [methods], got {type(raw).__name__}")
    for name, options in raw.items():
        if not is_method_name(name):
            raise unknown_name_error("method in [methods]", name, method_names())
        if not isinstance(options, dict):
            raise ValueError(f"expected a table [methods.{name}], got {type(options).__name__}")
        _check_method(name, options, f"[methods.{name}]")
    return dict(raw)


def _check_method(name: str, options: dict[str, Any], where: str) -> None:
    """Build the method once so that unknown options (and a wrapper's unknown base) fail now, one line."""
    from attreval.methods import resolve_method

    try:
        method = resolve_method(name, **options)
        if hasattr(method, "base_method"):  # SmoothGrad: its base name and base_options
            method.base_method()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def _variants(raw: Any, base: Path | None = None) -> dict[str, VariantConfig]:
    """``[variants.NAME]`` tables: ``method`` (a registered name) or ``callable`` (your own), optional ``layers`` /
    ``settings``, options. A ``callable`` file is resolved against ``base`` and imported now, so that a missing
    file, an import error or an unknown option fails before any work."""
    from attreval.methods import is_method_name, method_names

    if not isinstance(raw, dict):
        raise ValueError(f"expected a table for [variants], got {type(raw).__name__}")
    variants = {}
    for name, table in raw.items():
        where = f"[variants.{name}]"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"expected a snake_case variant name (it names result rows and files), got '{name}'")
        if is_method_name(name) or name == "all":
            raise ValueError(
                f"expected a variant name that is not a registered method, got '{name}' in {where}; rename it (e.g. '{name}_1')"
            )
        if not isinstance(table, dict):
            raise ValueError(f"expected a table {where}, got {type(table).__name__}")
        options = {k: v for k, v in table.items() if k not in VARIANT_KEYS}
        restrict = {k: _typed(where[1:-1], k, table[k], "tuple[str, ...]") for k in ("layers", "settings") if k in table}
        if "callable" in table:
            variants[name] = _callable_variant(name, table, options, restrict, base)
            continue
        if "method" not in table:
            raise ValueError(
                f'expected a method = "…" or callable = "file.py:object" key in {where}, got none; methods: {", ".join(method_names())}'
            )
        method = _typed(where[1:-1], "method", table["method"], "str")
        if not is_method_name(method):
            raise unknown_name_error(f"method in {where}", method, method_names())
        _check_method(method, options, where)
        variants[name] = VariantConfig(method, options, **restrict)
    return variants


def _callable_variant(
    name: str, table: dict[str, Any], options: dict[str, Any], restrict: dict[str, Any], base: Path | None
) -> VariantConfig:
    from attreval.methods.sources import MEMORY, as_method, load_spec

    where = f"[variants.{name}]"
    if "method" in table:
        raise ValueError(f"expected either method or callable in {where}, got both")
    spec = _typed(where[1:-1], "callable", table["callable"], "str")
    if spec.startswith(MEMORY):
        raise ValueError(
            f'expected callable = "file.py:object" or "package.module:object" in {where}, got {spec!r} (memory: is set by attreval.evaluate)'
        )
    spec = _resolved_spec(spec, base) if base is not None else spec
    try:
        as_method(load_spec(spec), name=name, **options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
    return VariantConfig("", options, **restrict, callable=spec)


def _resolved_spec(spec: str, base: Path) -> str:
    """``"file.py:object"`` with the file made absolute against ``base`` (``~`` expanded); a module spec as it is."""
    where, _, obj = spec.rpartition(":")
    return f"{os.path.abspath(base / Path(where).expanduser())}:{obj}" if where.endswith(".py") else spec


def resolve_paths(config: RunConfig, base: str | os.PathLike) -> RunConfig:
    """``config`` with ``[data] root``, ``labels_file``, every ``[[models]] weights`` and architecture file made absolute against
    ``base`` (``~`` expanded; empty paths stay empty), so that a config file works from any working directory."""
    base = Path(base)

    def absolute(path: str) -> str:
        return os.path.abspath(base / Path(path).expanduser()) if path else path

    data = dataclasses.replace(config.data, root=absolute(config.data.root), labels_file=absolute(config.data.labels_file))

    def factory(spec: str) -> str:  # "file.py:function" names a file; "package.module:function" does not
        return _resolved_spec(spec, base) if spec else spec

    models = tuple(dataclasses.replace(m, weights=absolute(m.weights), architecture=factory(m.architecture)) for m in config.models)
    variants = {name: dataclasses.replace(v, callable=factory(v.callable)) for name, v in config.variants.items()}
    return dataclasses.replace(config, data=data, models=models, variants=variants)


def load_config(path: str | Path | None = None) -> RunConfig:
    """Parse a TOML file; ``None`` gives the embedded default (``attreval/configs/default.toml``)."""
    if path is None:
        text = resources.files("attreval.configs").joinpath("default.toml").read_text()
        source = "the embedded default config"
    else:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise ValueError(f"expected a config file, found nothing at {path}") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
            raise ValueError(f"expected a readable TOML config file at {path}, got {type(err).__name__}") from None
        source = os.path.abspath(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"expected valid TOML in {source}, got a syntax error: {err}") from None
    return parse_config(raw, None if path is None else Path(path).absolute().parent)


def config_from_json(stored: dict[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a run's ``config.json`` (:meth:`RunConfig.to_dict` output).

    Not re-validated (the run validated it when it started), and lenient: missing sections and keys take
    their defaults, keys this version does not know are ignored, so older or partial files still read."""

    def build(cls: type, raw: Any) -> Any:
        raw = raw if isinstance(raw, dict) else {}
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in raw:
                value = raw[f.name]
                values[f.name] = tuple(value) if str(f.type).startswith("tuple") and isinstance(value, list) else value
        return cls(**values)

    variants = {name: build(VariantConfig, v) for name, v in (stored.get("variants") or {}).items()}
    top = {k: stored[k] for k in ("seed", "device") if k in stored}
    return RunConfig(
        **top,
        data=build(DataConfig, stored.get("data")),
        models=tuple(build(ModelConfig, m) for m in stored.get("models") or ()),
        grids=build(GridConfig, stored.get("grids")),
        evaluation=build(EvaluationConfig, stored.get("evaluation")),
        methods=dict(stored.get("methods") or {}),
        variants=variants,
    )
