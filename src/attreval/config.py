"""Run configuration: a TOML file parsed into frozen dataclasses, strictly.

Every unknown key, wrong type or unknown name fails with one line naming what was expected, what was
found and, for names, the closest valid one. The embedded default lives in ``configs/default.toml``.
Relative paths in a config file (``[data] root``, ``labels_file``, ``[[models]] weights``, an architecture's
``file.py``) resolve against
the folder of that file. The meaning of every key is the ``doc`` metadata of its dataclass field, the one
source of the generated reference ``docs/config.md`` (:func:`config_reference`, ``attreval list config``).
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from attreval.registry import did_you_mean, unknown_name_error
from attreval.settings import GRID_KINDS, SETTINGS

PAPER_KERNELS = (9, 17, 33, 65, 129, 257)
ALL = tuple(SETTINGS.names())  # every registered setting, in registration order
DATA_KINDS = ("fashion_mnist", "cifar10", "imagefolder", "flat")
FOLDER_KINDS = ("imagefolder", "flat")


def documented(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = None) -> Any:
    """A dataclass field whose meaning is ``metadata["doc"]`` (read by :func:`config_reference`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled images come from and how image files are turned into tensors."""

    kind: str = documented("fashion_mnist", "`fashion_mnist` (the embedded test set when `root` is empty), `cifar10` (a folder of "
                    "CIFAR-10 python batches), `imagefolder` (one sub-folder per class, sorted names = class indices) or "
                    "`flat` (a folder of images plus `labels_file`).")
    root: str = documented("", "The data folder; relative to the config file's folder. Empty: the embedded Fashion-MNIST test set "
                    "(`fashion_mnist` only).")
    split: str = documented("test", "`test` or `train` (`fashion_mnist`, `cifar10`).")
    labels_file: str = documented("", "`flat` only: a text file of `<filename> <label>` lines, or one `<label>` per image in "
                           "sorted filename order; relative to the config file's folder.")
    resize: int = documented(256, "Image folders: resize the shorter side to this many pixels first (0 = keep the size).")
    crop: int = documented(224, "Image folders: then centre-crop to `crop`×`crop` pixels, the cell size (0 = no crop: every "
                    "image must then already have one size).")
    channels: int = documented(3, "Image folders: 3 = RGB, 1 = grey (PIL's `L`, ITU-R 601 luma). Must match the model's input "
                        "channels. `fashion_mnist` (1) and `cifar10` (3) have their own.")
    normalize: bool = documented(True, "Image folders: subtract `mean` and divide by `std` per channel after scaling pixels to "
                          "[0, 1]; false = feed the [0, 1] pixels as they are.")
    mean: tuple[float, ...] = documented((), "Image folders: per-channel mean (one value per channel, or one for all); empty = "
                                  "ImageNet's (0.485, 0.456, 0.406), which needs `channels = 3`.")
    std: tuple[float, ...] = documented((), "Image folders: per-channel standard deviation, as `mean`; empty = ImageNet's "
                                 "(0.229, 0.224, 0.225).")
    limit: int = documented(0, "Use only the first `limit` images (0 = all): selecting images costs a forward pass per image "
                     "per model.")


@dataclass(frozen=True)
class ModelConfig:
    """A model to evaluate: one ``[[models]]`` table each, at least one."""

    name: str = documented(doc="A built-in name (`fashion_vgg`, `fashion_resnet`, `cifar_vgg11`), any torchvision "
                        "classification CNN name (`vgg11`, `resnet18`, …) or `timm:NAME`.")
    weights: str = documented("", "A local state-dict file; relative to the config file's folder. Required for torchvision/timm "
                       "names; built-ins default to their shipped weights. Nothing is downloaded.")
    num_classes: int = documented(0, "Outputs of a torchvision/timm model (0 = 1000); must match the weights.")
    label: str = documented("", "The model's name in results and the report (default `name`); tells two models of one "
                     "architecture apart.")
    architecture: str = documented("", "Your own model: `\"package.module:function\"` or `\"file.py:function\"` (relative to "
                            "the config file's folder) returning an `nn.Module` (split automatically) or an "
                            "`attreval.StagedModel`; `name` is then only a label. It runs your code.")

    @property
    def key(self) -> str:
        """The name used in results tables (``label`` if given)."""
        return self.label or self.name


@dataclass(frozen=True)
class GridConfig:
    """Grid data (PAPER.md §1.1): ``gridpg`` grids of distinct classes, ``disconnected`` grids with repeated
    corners for DiFull/DiPart, from the images that pass the ``images`` rule."""

    n: int = documented(2, "Cells per side of a grid (n×n cells of distinct classes; needs n² classes, n²−1 for the "
                 "DiFull/DiPart grids).")
    gridpg: int = documented(500, "Number of GridPG grids (all n² cells are evaluated: n²·gridpg maps per unit).")
    disconnected: int = documented(1000, "Number of DiFull/DiPart grids (the corner heads are evaluated: 2·disconnected maps "
                            "per unit with `heads = \"corners\"`).")
    confidence: float = documented(0.99, "Softmax threshold in [0, 1] of the `images` rules `correct-and-confident` and "
                            "`confident`: the probability of the image's own label must be at least this.")
    images: str = documented("correct-and-confident", "Which images may enter a grid: `correct-and-confident` (the paper's: "
                      "the model's top class is the label and its softmax ≥ `confidence`), `confident` (softmax of the "
                      "label ≥ `confidence`, right or wrong), `any` (every image; for untrained or randomised models).")
    selection: str = documented("per_model", "Whose rule: `per_model` (each model gets grids of the images it passes, as the "
                         "paper does) or `intersection` (one grid set of the images every model passes).")


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate, and how much at once."""

    settings: tuple[str, ...] = documented(ALL, "Settings to evaluate: `gridpg`, `difull`, `dipart` (PAPER.md §1.2–1.4).")
    layers: tuple[str, ...] = documented(("input", "middle", "final"), "Layers to attribute at: `input`, `middle`, `final` or "
                                  "a stage name of the model (ML-Att, PAPER.md §2).")
    methods: tuple[str, ...] = documented(("all",), "Registered method names and `[variants.NAME]` names; `[\"all\"]` = every "
                                   "registered method, then every variant (`attreval list methods`).")
    heads: str = documented("corners", "DiFull/DiPart heads attributed: `corners` (top-left and bottom-right, PAPER.md §1.3) or "
                     "`all`.")
    smooth_methods: tuple[str, ...] = documented(("int_grad", "input_x_grad"), "Methods whose maps are also scored after "
                                          "Gaussian smoothing with every `kernel_sizes` entry (S-IntGrad, S-IxG, §6.1).")
    kernel_sizes: tuple[int, ...] = documented(PAPER_KERNELS, "Gaussian kernel sizes at `reference_side` px, scaled to each "
                                        "map's side (odd, ≥ 1).")
    reference_side: int = documented(448, "The map side (px) at which `kernel_sizes` hold (the paper's 448-px grids).")
    batch_size: int = documented(8, "Grids per batch: memory grows with it, results do not change.")
    chunk_size: int = documented(64, "Most inputs per forward pass inside a method (IG steps, occlusion windows, RISE masks, "
                          "CAM channels); halved automatically after an out-of-memory error.")
    store_maps: bool = documented(True, "Keep every unit's maps in `maps/UNIT.npy` (float16); needed for AggAtt and the "
                           "report's examples.")


@dataclass(frozen=True)
class VariantConfig:
    """A named, configured instance of a registered method (``[variants.NAME]``).

    ``method`` is the registry name; ``options`` replace fields of its preset, on top of the config's
    ``[methods.METHOD]`` overrides. ``layers`` / ``settings`` (empty = all of ``[evaluation]``) restrict
    where it is evaluated: the paper's SmoothGrad sweep runs at the input layer only (PAPER.md §6.3).
    """

    method: str = documented(doc="The registered method this variant configures (e.g. `smoothgrad`).")
    options: dict[str, Any] = documented(doc="Every other key of the table: an option of that method (as in "
                                  "`[methods.METHOD]`, on top of which it applies).", factory=dict)
    layers: tuple[str, ...] = documented((), "Evaluate only at these `[evaluation] layers` (empty = all).")
    settings: tuple[str, ...] = documented((), "Evaluate only in these `[evaluation] settings` (empty = all).")

    def applies(self, setting: str, layer: str) -> bool:
        return (not self.settings or setting in self.settings) and (not self.layers or layer in self.layers)


VARIANT_KEYS = ("method", "layers", "settings")


@dataclass(frozen=True)
class RunConfig:
    """A whole run config: top-level keys, then one dataclass per table."""

    seed: int = documented(0, "Seed of the grid sampling and every stochastic method (stored in `meta.json`).")
    device: str = documented("cpu", "`cpu`, `cuda`, `cuda:N`, `mps` or `auto` (CUDA when available); `--device` overrides it.")
    data: DataConfig = documented(doc="The `[data]` table.", factory=DataConfig)
    models: tuple[ModelConfig, ...] = documented((), "The `[[models]]` tables (at least one).")
    grids: GridConfig = documented(doc="The `[grids]` table.", factory=GridConfig)
    evaluation: EvaluationConfig = documented(doc="The `[evaluation]` table.", factory=EvaluationConfig)
    methods: dict[str, dict[str, Any]] = documented(doc="`[methods.METHOD]` tables: options replacing fields of a registered "
                                             "method's preset (e.g. `[methods.rise] num_masks = 250`); unknown options "
                                             "fail with the valid list.", factory=dict)
    variants: dict[str, VariantConfig] = documented(doc="`[variants.NAME]` tables: named, configured instances of a registered "
                                             "method, evaluated as methods called NAME.", factory=dict)

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
        inner = int if "int" in kind else (int, float) if "float" in kind else str
        if not all(isinstance(v, inner) and not isinstance(v, bool) for v in value):
            name = "float" if "float" in kind else inner.__name__
            raise ValueError(f"expected a list of {name} for {where}, got {value!r}")
        return tuple(float(v) for v in value) if "float" in kind else tuple(value)
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
        variants=_variants(raw.get("variants", {})),
    )
    validate(config)
    _validate_inputs(config)
    return resolve_paths(config, base) if base is not None else config


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
    for kind in GRID_KINDS:
        users = [s for s in e.settings if s in SETTINGS and SETTINGS.get(s).grids == kind]
        if users and getattr(g, kind) < 1:
            names = "/".join(s for s in SETTINGS.names() if SETTINGS.get(s).grids == kind)
            raise ValueError(f"expected a positive [grids] {kind} with the {names} settings selected, got "
                             f"{getattr(g, kind)} (drop {'/'.join(users)} from [evaluation] settings to skip)")


def _validate_inputs(config: RunConfig) -> None:
    """Checks of the keys that describe a user's own data: the image rule and the folder preprocessing."""
    from attreval.data.grids import IMAGE_RULES

    d = config.data
    _choice("[grids] images", config.grids.images, list(IMAGE_RULES))
    for name in ("resize", "crop"):
        if getattr(d, name) < 0:
            raise ValueError(f"expected a non-negative [data] {name} (0 = none), got {getattr(d, name)}")
    if d.channels not in (1, 3):
        raise ValueError(f"expected [data] channels 1 (grey) or 3 (RGB), got {d.channels}")
    custom = [k for k in ("mean", "std") if getattr(d, k)] + (["channels"] if d.channels != 3 else []) + ([] if d.normalize else ["normalize"])
    if custom and d.kind not in FOLDER_KINDS:
        raise ValueError(f"expected [data] {custom[0]} only with kind imagefolder or flat ({d.kind} has its own "
                         f"preprocessing), got kind '{d.kind}'")
    if not d.normalize and (d.mean or d.std):
        raise ValueError("expected no [data] mean/std with normalize = false, got both")
    if d.normalize and bool(d.mean) != bool(d.std):
        raise ValueError(f"expected [data] mean and std together, got only {'mean' if d.mean else 'std'}")
    if d.normalize and d.channels == 1 and not d.mean:
        raise ValueError("expected [data] mean and std for channels = 1 (the ImageNet defaults are per RGB channel), "
                         "got none; give them (e.g. mean = [0.5], std = [0.25]) or set normalize = false")
    for name in ("mean", "std"):
        values = getattr(d, name)
        if values and len(values) not in (1, d.channels):
            raise ValueError(f"expected 1 or {d.channels} values (channels = {d.channels}) for [data] {name}, got {len(values)}")
    if any(v <= 0 for v in d.std):
        raise ValueError(f"expected positive [data] std, got {list(d.std)}")


def resolve_paths(config: RunConfig, base: str | os.PathLike) -> RunConfig:
    """``config`` with ``[data] root``, ``labels_file``, every ``[[models]] weights`` and architecture file made absolute against
    ``base`` (``~`` expanded; empty paths stay empty), so that a config file works from any working directory."""
    base = Path(base)

    def absolute(path: str) -> str:
        return os.path.abspath(base / Path(path).expanduser()) if path else path

    data = dataclasses.replace(config.data, root=absolute(config.data.root), labels_file=absolute(config.data.labels_file))
    def factory(spec: str) -> str:  # "file.py:function" names a file; "package.module:function" does not
        where, _, function = spec.rpartition(":")
        return f"{absolute(where)}:{function}" if where.endswith(".py") else spec

    models = tuple(dataclasses.replace(m, weights=absolute(m.weights), architecture=factory(m.architecture)) for m in config.models)
    return dataclasses.replace(config, data=data, models=models)


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
        **top, data=build(DataConfig, stored.get("data")), models=tuple(build(ModelConfig, m) for m in stored.get("models") or ()),
        grids=build(GridConfig, stored.get("grids")), evaluation=build(EvaluationConfig, stored.get("evaluation")),
        methods=dict(stored.get("methods") or {}), variants=variants,
    )


# --------------------------------------------------------------------------------------------------
# The config reference (docs/config.md), generated from the dataclasses above

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
        "<!-- Generated from the dataclasses of src/attreval/config.py by `attreval list config > docs/config.md`; "
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
