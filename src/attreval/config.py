"""Run configuration: a TOML file parsed into frozen dataclasses, strictly.

Every unknown key, wrong type or unknown name fails with one line naming what was expected, what was
found and, for names, the closest valid one. The embedded default lives in ``configs/default.toml``.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from attreval.registry import did_you_mean, unknown_name_error

PAPER_KERNELS = (9, 17, 33, 65, 129, 257)
ALL = ("gridpg", "difull", "dipart")


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled images come from.

    kind: ``fashion_mnist`` (embedded test set when ``root`` is empty), ``cifar10`` (python batches
    folder), ``imagefolder`` (class sub-folders) or ``flat`` (a folder of images + ``labels_file``).
    """

    kind: str = "fashion_mnist"
    root: str = ""
    split: str = "test"
    labels_file: str = ""
    resize: int = 256
    crop: int = 224
    limit: int = 0  # use only the first `limit` images (0 = all): confidence filtering costs a forward per image


@dataclass(frozen=True)
class ModelConfig:
    """A model: a built-in name (``fashion_vgg``, ``fashion_resnet``, ``cifar_vgg11``), any torchvision
    classification model name or ``timm:NAME``, with ``weights`` a local state-dict file (built-ins default to
    the shipped one); or ``architecture``, a factory of the user's (then ``name`` is only a label)."""

    name: str
    weights: str = ""
    num_classes: int = 0
    label: str = ""
    architecture: str = ""  # "package.module:function" or "file.py:function" returning an nn.Module or StagedModel

    @property
    def key(self) -> str:
        """The name used in results tables (``label`` if given)."""
        return self.label or self.name


@dataclass(frozen=True)
class GridConfig:
    """Grid data (PAPER.md §1.1): ``gridpg`` grids of distinct classes, ``disconnected`` grids with repeated
    corners for DiFull/DiPart, from images classified correctly with softmax ≥ ``confidence``."""

    n: int = 2
    gridpg: int = 500
    disconnected: int = 1000
    confidence: float = 0.99
    selection: str = "per_model"  # or "intersection" (one grid set confident for every model)


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate. ``methods = ["all"]`` means every registered method."""

    settings: tuple[str, ...] = ALL
    layers: tuple[str, ...] = ("input", "middle", "final")
    methods: tuple[str, ...] = ("all",)
    heads: str = "corners"  # DiFull/DiPart heads: "corners" (PAPER.md §1.3) or "all"
    smooth_methods: tuple[str, ...] = ("int_grad", "input_x_grad")
    kernel_sizes: tuple[int, ...] = PAPER_KERNELS
    reference_side: int = 448
    batch_size: int = 8
    chunk_size: int = 64
    store_maps: bool = True


@dataclass(frozen=True)
class VariantConfig:
    """A named, configured instance of a registered method (``[variants.NAME]``).

    ``method`` is the registry name; ``options`` replace fields of its preset, on top of the config's
    ``[methods.METHOD]`` overrides. ``layers`` / ``settings`` (empty = all of ``[evaluation]``) restrict
    where it is evaluated: the paper's SmoothGrad sweep runs at the input layer only (PAPER.md §6.3).
    """

    method: str
    options: dict[str, Any] = field(default_factory=dict)
    layers: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()

    def applies(self, setting: str, layer: str) -> bool:
        return (not self.settings or setting in self.settings) and (not self.layers or layer in self.layers)


VARIANT_KEYS = ("method", "layers", "settings")


@dataclass(frozen=True)
class RunConfig:
    seed: int = 0
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    models: tuple[ModelConfig, ...] = ()
    grids: GridConfig = field(default_factory=GridConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method option overrides
    variants: dict[str, VariantConfig] = field(default_factory=dict)  # named method instances

    def method_names(self) -> list[str]:
        """Evaluated method names: ``"all"`` = every registered method, then every variant."""
        from attreval.methods import METHODS

        return METHODS.names() + list(self.variants) if self.evaluation.methods == ("all",) else list(self.evaluation.methods)

    def method_options(self, name: str) -> tuple[str, dict[str, Any]]:
        """``(registry name, options)`` of an evaluated method name (a registry name or a variant)."""
        variant = self.variants.get(name)
        if variant is None:
            return name, dict(self.methods.get(name, {}))
        return variant.method, {**self.methods.get(variant.method, {}), **variant.options}

    def applies(self, name: str, setting: str, layer: str) -> bool:
        """Whether method ``name`` is evaluated in ``setting`` at ``layer`` (variants may be restricted)."""
        return name not in self.variants or self.variants[name].applies(setting, layer)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _typed(section: str, key: str, value: Any, kind: Any) -> Any:
    """Check one value against a field type; tuples accept TOML arrays."""
    kind = str(kind)
    where = f"[{section}] {key}" if section else key
    if kind.startswith("tuple"):
        if not isinstance(value, list):
            raise ValueError(f"expected a list for {where}, got {type(value).__name__} {value!r}")
        inner = int if "int" in kind else str
        if not all(isinstance(v, inner) and not isinstance(v, bool) for v in value):
            raise ValueError(f"expected a list of {inner.__name__} for {where}, got {value!r}")
        return tuple(value)
    expected = {"int": int, "float": (int, float), "str": str, "bool": bool}[kind]
    if not isinstance(value, expected) or (kind in ("int", "float") and isinstance(value, bool)):
        raise ValueError(f"expected {kind} for {where}, got {type(value).__name__} {value!r}")
    return float(value) if kind == "float" else value


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


def parse_config(raw: dict[str, Any]) -> RunConfig:
    """A validated :class:`RunConfig` from a TOML-like dict."""
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
        variants=_variants(raw.get("variants", {})),
    )
    validate(config)
    return config


def _method_options(raw: Any) -> dict[str, dict[str, Any]]:
    from attreval.methods import METHODS

    if not isinstance(raw, dict):
        raise ValueError(f"expected a table for [methods], got {type(raw).__name__}")
    for name, options in raw.items():
        if name not in METHODS:
            raise unknown_name_error("method in [methods]", name, METHODS.names())
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


def _variants(raw: Any) -> dict[str, VariantConfig]:
    """``[variants.NAME]`` tables: ``method`` (required), optional ``layers`` / ``settings``, method options."""
    from attreval.methods import METHODS

    if not isinstance(raw, dict):
        raise ValueError(f"expected a table for [variants], got {type(raw).__name__}")
    variants = {}
    for name, table in raw.items():
        where = f"[variants.{name}]"
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"expected a snake_case variant name (it names result rows and files), got '{name}'")
        if name in METHODS or name == "all":
            raise ValueError(f"expected a variant name that is not a registered method, got '{name}' in {where}; rename it (e.g. '{name}_1')")
        if not isinstance(table, dict):
            raise ValueError(f"expected a table {where}, got {type(table).__name__}")
        if "method" not in table:
            raise ValueError(f"expected a method = \"…\" key in {where}, got none; expected one of: {', '.join(METHODS.names())}")
        method = _typed(where[1:-1], "method", table["method"], "str")
        if method not in METHODS:
            raise unknown_name_error(f"method in {where}", method, METHODS.names())
        options = {k: v for k, v in table.items() if k not in VARIANT_KEYS}
        _check_method(method, options, where)
        restrict = {k: _typed(where[1:-1], k, table[k], "tuple[str, ...]") for k in ("layers", "settings") if k in table}
        variants[name] = VariantConfig(method, options, **restrict)
    return variants


def validate(config: RunConfig) -> None:
    """Cross-field checks: names, sizes, choices."""
    from attreval.methods import METHODS
    from attreval.settings import SETTINGS

    g, e = config.grids, config.evaluation
    for name, value in (("n", g.n), ("gridpg", g.gridpg), ("disconnected", g.disconnected)):
        if value < (1 if name == "n" else 0):
            raise ValueError(f"expected a positive [grids] {name}, got {value}")
    if g.n < 2:  # one cell: every score is 1 and DiFull's corners coincide (the paper uses 2×2 and 3×3)
        raise ValueError(f"expected [grids] n ≥ 2 for an evaluation run (n×n grids of distinct classes), got {g.n}")
    _names_check(config)
    for name, value in (("batch_size", e.batch_size), ("chunk_size", e.chunk_size), ("reference_side", e.reference_side)):
        if value < 1:
            raise ValueError(f"expected a positive [evaluation] {name}, got {value}")
    if config.data.limit < 0:
        raise ValueError(f"expected a non-negative [data] limit, got {config.data.limit}")
    if not 0 <= g.confidence <= 1:
        raise ValueError(f"expected [grids] confidence in [0, 1], got {g.confidence}")
    _choice("[grids] selection", g.selection, ["per_model", "intersection"])
    _choice("[evaluation] heads", e.heads, ["corners", "all"])
    _choice("[data] kind", config.data.kind, ["fashion_mnist", "cifar10", "imagefolder", "flat"])
    for s in e.settings:
        if s not in SETTINGS:
            raise unknown_name_error("setting", s, SETTINGS.names())
    known = METHODS.names() + list(config.variants)
    for m in config.method_names() + list(e.smooth_methods):
        if m not in known:
            raise unknown_name_error("method", m, known + ["all"])
    for name, variant in config.variants.items():
        for s in variant.settings:
            if s not in e.settings:
                raise unknown_name_error(f"setting in [variants.{name}] settings (not in [evaluation] settings)", s, list(e.settings))
        for layer in variant.layers:
            if layer not in e.layers:
                raise unknown_name_error(f"layer in [variants.{name}] layers (not in [evaluation] layers)", layer, list(e.layers))
    if any(k < 1 for k in e.kernel_sizes):
        raise ValueError(f"expected positive [evaluation] kernel_sizes, got {list(e.kernel_sizes)}")
    keys = [m.key for m in config.models]
    if len(set(keys)) != len(keys):
        raise ValueError(f"expected distinct model names (use label = … to tell them apart), got {keys}")


# A name that becomes part of a file name (RUN/parts/MODEL__SETTING__LAYER__METHOD.parquet): no separator,
# no leading dot (hidden files, ".."), and no "__", which separates the four names of a unit's file.
_PATH_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _path_name(where: str, name: str) -> None:
    if not _PATH_NAME.fullmatch(name) or name.startswith(".") or "__" in name:
        raise ValueError(f"expected {where} of letters, digits, '_', '.' or '-' (no leading '.', no '__'; "
                         f"it names files of the run), got {name!r}")


def _names_check(config: RunConfig) -> None:
    """Names that become path components are safe; lists are non-empty and hold no name twice; the grid count
    of every selected setting is positive."""
    e, g = config.evaluation, config.grids
    for where, values in (("[evaluation] settings", e.settings), ("[evaluation] layers", e.layers),
                          ("[evaluation] methods", e.methods)):
        if not values:
            raise ValueError(f"expected at least one name in {where}, got []")
    for where, values in (("[evaluation] settings", e.settings), ("[evaluation] layers", e.layers),
                          ("[evaluation] methods", e.methods), ("[evaluation] smooth_methods", e.smooth_methods),
                          ("[evaluation] kernel_sizes", e.kernel_sizes)):
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(f"expected each of {where} once, got {', '.join(map(repr, twice))} more than once "
                             "(it would duplicate result rows)")
    for m in config.models:
        _path_name("a model label" if m.label else "a model name", m.key)
    for layer in e.layers:
        _path_name("a layer name", layer)
    for method in e.methods:
        _path_name("a method name", method)
    if "gridpg" in e.settings and g.gridpg < 1:
        raise ValueError(f"expected a positive [grids] gridpg with the gridpg setting selected, got {g.gridpg} "
                         "(drop gridpg from [evaluation] settings to skip it)")
    if {"difull", "dipart"} & set(e.settings) and g.disconnected < 1:
        raise ValueError(f"expected a positive [grids] disconnected with the difull/dipart settings selected, got "
                         f"{g.disconnected} (drop them from [evaluation] settings to skip them)")


def _choice(where: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise unknown_name_error(f"value for {where}", value, choices)


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
        source = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"expected valid TOML in {source}, got a syntax error: {err}") from None
    return parse_config(raw)
