"""The run config's schema: one frozen dataclass per TOML table; each field's ``doc`` metadata says what the key
means (the one source of ``docs/config.md``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attreval.settings import SETTINGS

if TYPE_CHECKING:
    from attreval.methods.base import Method

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

    kind: str = documented(
        "fashion_mnist",
        "`fashion_mnist` (the embedded test set when `root` is empty), `cifar10` (a folder of "
        "CIFAR-10 python batches), `imagefolder` (one sub-folder per class, sorted names = class indices) or "
        "`flat` (a folder of images plus `labels_file`).",
    )
    root: str = documented(
        "", "The data folder; relative to the config file's folder. Empty: the embedded Fashion-MNIST test set (`fashion_mnist` only)."
    )
    split: str = documented("test", "`test` or `train` (`fashion_mnist`, `cifar10`).")
    labels_file: str = documented(
        "",
        "`flat` only: a text file of `<filename> <label>` lines, or one `<label>` per image in "
        "sorted filename order; relative to the config file's folder.",
    )
    resize: int = documented(256, "Image folders: resize the shorter side to this many pixels first (0 = keep the size).")
    crop: int = documented(
        224,
        "Image folders: then centre-crop to `crop`×`crop` pixels, the cell size (0 = no crop: every "
        "image must then already have one size).",
    )
    channels: int = documented(
        3,
        "Image folders: 3 = RGB, 1 = grey (PIL's `L`, ITU-R 601 luma). Must match the model's input "
        "channels. `fashion_mnist` (1) and `cifar10` (3) have their own.",
    )
    normalize: bool = documented(
        True,
        "Image folders: subtract `mean` and divide by `std` per channel after scaling pixels to "
        "[0, 1]; false = feed the [0, 1] pixels as they are.",
    )
    mean: tuple[float, ...] = documented(
        (),
        "Image folders: per-channel mean (one value per channel, or one for all); empty = "
        "ImageNet's (0.485, 0.456, 0.406), which needs `channels = 3`.",
    )
    std: tuple[float, ...] = documented(
        (), "Image folders: per-channel standard deviation, as `mean`; empty = ImageNet's (0.229, 0.224, 0.225)."
    )
    limit: int = documented(0, "Use only the first `limit` images (0 = all): selecting images costs a forward pass per image per model.")


@dataclass(frozen=True)
class ModelConfig:
    """A model to evaluate: one ``[[models]]`` table each, at least one."""

    name: str = documented(
        doc="A built-in name (`fashion_vgg`, `fashion_resnet`, `cifar_vgg11`), any torchvision "
        "classification CNN name (`vgg11`, `resnet18`, …) or `timm:NAME`."
    )
    weights: str = documented(
        "",
        "A local state-dict file; relative to the config file's folder. Required for torchvision/timm "
        "names; built-ins default to their shipped weights. Nothing is downloaded.",
    )
    num_classes: int = documented(0, "Outputs of a torchvision/timm model (0 = 1000); must match the weights.")
    label: str = documented("", "The model's name in results and the report (default `name`); tells two models of one architecture apart.")
    architecture: str = documented(
        "",
        'Your own model: `"package.module:function"` or `"file.py:function"` (relative to '
        "the config file's folder) returning an `nn.Module` (split automatically) or an "
        "`attreval.StagedModel`; `name` is then only a label. It runs your code.",
    )

    @property
    def key(self) -> str:
        """The name used in results tables and file names: ``label`` if given, else :func:`model_key` of ``name``."""
        return model_key(self.label, self.name)


def model_key(label: str, name: str) -> str:
    """A model's key: ``label``, else ``name`` with ``:`` as ``-`` (``timm:resnet18`` → ``timm-resnet18``: the key
    names files of the run, and a colon is no file-name character everywhere, nor in a report's links)."""
    return label or name.replace(":", "-")


@dataclass(frozen=True)
class GridConfig:
    """Grid data (PAPER.md §1.1): ``gridpg`` grids of distinct classes, ``disconnected`` grids with repeated
    corners for DiFull/DiPart, from the images that pass the ``images`` rule."""

    n: int = documented(2, "Cells per side of a grid (n×n cells of distinct classes; needs n² classes, n²−1 for the DiFull/DiPart grids).")
    gridpg: int = documented(500, "Number of GridPG grids (all n² cells are evaluated: n²·gridpg maps per unit).")
    disconnected: int = documented(
        1000, 'Number of DiFull/DiPart grids (the corner heads are evaluated: 2·disconnected maps per unit with `heads = "corners"`).'
    )
    confidence: float = documented(
        0.99,
        "Softmax threshold in [0, 1] of the `images` rules `correct-and-confident` and "
        "`confident`: the probability of the image's own label must be at least this.",
    )
    images: str = documented(
        "correct-and-confident",
        "Which images may enter a grid: `correct-and-confident` (the paper's: "
        "the model's top class is the label and its softmax ≥ `confidence`), `confident` (softmax of the "
        "label ≥ `confidence`, right or wrong), `any` (every image; for untrained or randomised models).",
    )
    selection: str = documented(
        "per_model",
        "Whose rule: `per_model` (each model gets grids of the images it passes, as the "
        "paper does) or `intersection` (one grid set of the images every model passes).",
    )


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate, and how much at once."""

    settings: tuple[str, ...] = documented(ALL, "Settings to evaluate: `gridpg`, `difull`, `dipart` (PAPER.md §1.2–1.4).")
    layers: tuple[str, ...] = documented(
        ("input", "middle", "final"),
        "Layers to attribute at: `input`, `middle`, `final` or a stage name of the model (ML-Att, PAPER.md §2).",
    )
    methods: tuple[str, ...] = documented(
        ("all",),
        'Registered method names and `[variants.NAME]` names; `["all"]` = every '
        "registered method, then every variant (`attreval list methods`).",
    )
    heads: str = documented("corners", "DiFull/DiPart heads attributed: `corners` (top-left and bottom-right, PAPER.md §1.3) or `all`.")
    smooth_methods: tuple[str, ...] = documented(
        ("int_grad", "input_x_grad"),
        "Methods whose maps are also scored after Gaussian smoothing with every `kernel_sizes` entry (S-IntGrad, S-IxG, §6.1).",
    )
    kernel_sizes: tuple[int, ...] = documented(
        PAPER_KERNELS, "Gaussian kernel sizes at `reference_side` px, scaled to each map's side (odd, ≥ 1)."
    )
    reference_side: int = documented(448, "The map side (px) at which `kernel_sizes` hold (the paper's 448-px grids).")
    batch_size: int = documented(8, "Grids per batch: memory grows with it, results do not change.")
    chunk_size: int = documented(
        64,
        "Most inputs per forward pass inside a method (IG steps, occlusion windows, RISE masks, "
        "CAM channels); halved automatically after an out-of-memory error.",
    )
    store_maps: bool = documented(True, "Keep every unit's maps in `maps/UNIT.npy` (float16); needed for AggAtt and the report's examples.")


@dataclass(frozen=True)
class VariantConfig:
    """A named, configured method (``[variants.NAME]``): a registered method, or your own from a file or module.

    ``method`` is a registry name (a built-in or an installed plugin); ``options`` replace fields of its preset,
    on top of the config's ``[methods.METHOD]`` overrides. Or ``callable`` names your own method, an
    ``attreval.Method`` (instance or class) or a function ``fn(forward, inputs, targets, **options) -> maps``;
    ``options`` then set its fields or keyword arguments. ``layers`` / ``settings`` (empty = all of
    ``[evaluation]``) restrict where it is evaluated: the paper's SmoothGrad sweep runs at the input layer only
    (PAPER.md §6.3).
    """

    method: str = documented("", "The registered method this variant configures (e.g. `smoothgrad`); or give `callable`.")
    options: dict[str, Any] = documented(
        doc="Every other key of the table: an option of that method (as in `[methods.METHOD]`, on top of which it applies), "
        "or of the `callable`'s method class or function.",
        factory=dict,
    )
    layers: tuple[str, ...] = documented((), "Evaluate only at these `[evaluation] layers` (empty = all).")
    settings: tuple[str, ...] = documented((), "Evaluate only in these `[evaluation] settings` (empty = all).")
    callable: str = documented(
        "",
        'Your own method instead of `method`: `"file.py:object"` (relative to the config file\'s folder) or '
        '`"package.module:object"`, an `attreval.Method` instance or subclass, or a function '
        "`fn(forward, inputs, targets, **options) -> maps` (docs/methods.md). It runs your code.",
    )

    def applies(self, setting: str, layer: str) -> bool:
        return (not self.settings or setting in self.settings) and (not self.layers or layer in self.layers)


VARIANT_KEYS = ("method", "callable", "layers", "settings")


@dataclass(frozen=True)
class RunConfig:
    """A whole run config: top-level keys, then one dataclass per table."""

    seed: int = documented(0, "Seed of the grid sampling and every stochastic method (stored in `meta.json`).")
    device: str = documented("cpu", "`cpu`, `cuda`, `cuda:N`, `mps` or `auto` (CUDA when available); `--device` overrides it.")
    data: DataConfig = documented(doc="The `[data]` table.", factory=DataConfig)
    models: tuple[ModelConfig, ...] = documented((), "The `[[models]]` tables (at least one).")
    grids: GridConfig = documented(doc="The `[grids]` table.", factory=GridConfig)
    evaluation: EvaluationConfig = documented(doc="The `[evaluation]` table.", factory=EvaluationConfig)
    methods: dict[str, dict[str, Any]] = documented(
        doc="`[methods.METHOD]` tables: options replacing fields of a registered "
        "method's preset (e.g. `[methods.rise] num_masks = 250`); unknown options "
        "fail with the valid list.",
        factory=dict,
    )
    variants: dict[str, VariantConfig] = documented(
        doc="`[variants.NAME]` tables: named, configured instances of a registered method, evaluated as methods called NAME.", factory=dict
    )

    def method_names(self) -> list[str]:
        """Evaluated method names: ``"all"`` = every built-in method, then every variant (installed plugins run
        only where named, so installing a package never changes what a config computes)."""
        from attreval.methods import METHODS

        return METHODS.names() + list(self.variants) if self.evaluation.methods == ("all",) else list(self.evaluation.methods)

    def method_options(self, name: str) -> tuple[str, dict[str, Any]]:
        """``(registry name, options)`` of an evaluated method name (a registry name or a variant; ``""`` for a
        variant with a ``callable``)."""
        variant = self.variants.get(name)
        if variant is None:
            return name, dict(self.methods.get(name, {}))
        if variant.callable:
            return "", dict(variant.options)
        return variant.method, {**self.methods.get(variant.method, {}), **variant.options}

    def method(self, name: str, in_memory: Mapping[str, Any] | None = None) -> Method:
        """The method object evaluated as ``name``: a registered or plugin method with its options, or a variant's
        ``callable`` (loaded from its file or module; ``in_memory`` holds the objects that
        :func:`attreval.evaluate` was handed, whose ``callable`` is a ``memory:`` record)."""
        from attreval.methods.sources import MEMORY, as_method, load_spec, resolve

        variant = self.variants.get(name)
        if variant is not None and variant.callable:
            if variant.callable.startswith(MEMORY) and in_memory is not None and name in in_memory:
                return as_method(in_memory[name], name=name, **variant.options)
            return as_method(load_spec(variant.callable), name=name, **variant.options)
        registry, options = self.method_options(name)
        return resolve(registry, **options)

    def applies(self, name: str, setting: str, layer: str) -> bool:
        """Whether method ``name`` is evaluated in ``setting`` at ``layer`` (variants may be restricted)."""
        return name not in self.variants or self.variants[name].applies(setting, layer)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
