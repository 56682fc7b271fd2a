"""Cross-field checks of a parsed run config: names, sizes, choices, the data keys of a user's own images."""

from __future__ import annotations

import re

from attreval.config.schema import DATA_KINDS, FOLDER_KINDS, RunConfig
from attreval.registry import unknown_name_error
from attreval.settings import GRID_KINDS, SETTINGS


def validate(config: RunConfig) -> None:
    """Cross-field checks: names, sizes, choices."""
    from attreval.methods import method_names
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
    _choice("[data] kind", config.data.kind, list(DATA_KINDS))
    for s in e.settings:
        if s not in SETTINGS:
            raise unknown_name_error("setting", s, SETTINGS.names())
    known = method_names() + list(config.variants)
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
        raise ValueError(
            f"expected {where} of letters, digits, '_', '.' or '-' (no leading '.', no '__'; it names files of the run), got {name!r}"
        )


def _names_check(config: RunConfig) -> None:
    """Names that become path components are safe; lists are non-empty and hold no name twice; the grid count
    of every selected setting is positive."""
    e, g = config.evaluation, config.grids
    for where, values in (("[evaluation] settings", e.settings), ("[evaluation] layers", e.layers), ("[evaluation] methods", e.methods)):
        if not values:
            raise ValueError(f"expected at least one name in {where}, got []")
    listed: tuple[tuple[str, tuple], ...] = (
        ("[evaluation] settings", e.settings),
        ("[evaluation] layers", e.layers),
        ("[evaluation] methods", e.methods),
        ("[evaluation] smooth_methods", e.smooth_methods),
        ("[evaluation] kernel_sizes", e.kernel_sizes),
    )
    for where, values in listed:
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise ValueError(
                f"expected each of {where} once, got {', '.join(map(repr, twice))} more than once (it would duplicate result rows)"
            )
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
            raise ValueError(
                f"expected a positive [grids] {kind} with the {names} settings selected, got "
                f"{getattr(g, kind)} (drop {'/'.join(users)} from [evaluation] settings to skip)"
            )


def validate_inputs(config: RunConfig) -> None:
    """Checks of the keys that describe a user's own data: the image rule and the folder preprocessing."""
    from attreval.data.grids import IMAGE_RULES

    d = config.data
    _choice("[grids] images", config.grids.images, list(IMAGE_RULES))
    for name in ("resize", "crop"):
        if getattr(d, name) < 0:
            raise ValueError(f"expected a non-negative [data] {name} (0 = none), got {getattr(d, name)}")
    if d.channels not in (1, 3):
        raise ValueError(f"expected [data] channels 1 (grey) or 3 (RGB), got {d.channels}")
    custom = (
        [k for k in ("mean", "std") if getattr(d, k)] + (["channels"] if d.channels != 3 else []) + ([] if d.normalize else ["normalize"])
    )
    if custom and d.kind not in FOLDER_KINDS:
        raise ValueError(
            f"expected [data] {custom[0]} only with kind imagefolder or flat ({d.kind} has its own preprocessing), got kind '{d.kind}'"
        )
    if not d.normalize and (d.mean or d.std):
        raise ValueError("expected no [data] mean/std with normalize = false, got both")
    if d.normalize and bool(d.mean) != bool(d.std):
        raise ValueError(f"expected [data] mean and std together, got only {'mean' if d.mean else 'std'}")
    if d.normalize and d.channels == 1 and not d.mean:
        raise ValueError(
            "expected [data] mean and std for channels = 1 (the ImageNet defaults are per RGB channel), "
            "got none; give them (e.g. mean = [0.5], std = [0.25]) or set normalize = false"
        )
    for name in ("mean", "std"):
        values = getattr(d, name)
        if values and len(values) not in (1, d.channels):
            raise ValueError(f"expected 1 or {d.channels} values (channels = {d.channels}) for [data] {name}, got {len(values)}")
    if any(v <= 0 for v in d.std):
        raise ValueError(f"expected positive [data] std, got {list(d.std)}")


def _choice(where: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise unknown_name_error(f"value for {where}", value, choices)
