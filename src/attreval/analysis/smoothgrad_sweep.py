"""SmoothGrad noise sweep against S-IntGrad / S-IxG (PAPER.md §6.3, supplement Figs. 26–27).

The paper applies SmoothGrad (15 samples) to IntGrad and IxG at the input, sweeps the noise level from 1 %
to 30 % and reports the best level, next to S-IntGrad / S-IxG with K = 129. Here every evaluated method
that resolves to :class:`~attreval.methods.smoothgrad.SmoothGrad` (the registry's ``smoothgrad`` with its
``[methods.smoothgrad]`` options, and every ``[variants.NAME]`` with ``method = "smoothgrad"``) is one point
of the sweep, identified by its base method and noise level, resolved by the run config's own
:meth:`~attreval.config.RunConfig.method_options` (the same merge of ``[methods.METHOD]`` and variant options
the run used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from attreval.analysis.conventions import PAPER_KERNEL_REF, smoothgrad_methods

if TYPE_CHECKING:
    from attreval.config import RunConfig

#: The paper's kernel for the SmoothGrad comparison (K = 129 at 448 px, §6.1).
KERNEL_REF = PAPER_KERNEL_REF
COLUMNS = ["setting", "layer", "base", "role", "method", "noise_level", "median", "count", "best"]


def smoothgrad_points(config: RunConfig | dict[str, Any]) -> pd.DataFrame:
    """The SmoothGrad instances of a run config (a :class:`~attreval.config.RunConfig`, or ``config.json``
    as a dict): the registry's SmoothGrad presets and every variant that is one, resolved by
    ``config.method_options``.

    Returns:
        One row per method name with columns ``method, base, noise_level, num_samples``; ``base`` is the
        base method's registry name (a method object is shown by its class name).
    """
    from attreval.config import config_from_json
    from attreval.methods import METHODS, resolve_method
    from attreval.methods.smoothgrad import SmoothGrad

    config = config_from_json(config) if isinstance(config, dict) else config
    rows = []
    for name in [*smoothgrad_methods(), *config.variants]:
        method, options = config.method_options(name)
        if method not in METHODS:
            continue
        instance = resolve_method(method, **options)
        if isinstance(instance, SmoothGrad):
            base = instance.base if isinstance(instance.base, str) else type(instance.base).__name__
            rows.append(
                {"method": name, "base": base, "noise_level": float(instance.noise_level), "num_samples": int(instance.num_samples)}
            )
    return pd.DataFrame(rows, columns=["method", "base", "noise_level", "num_samples"])


def _medians(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return rows.groupby(keys, sort=False)["score"].agg(median="median", count="size").reset_index()


def smoothgrad_sweep(
    results: pd.DataFrame, config: RunConfig | dict[str, Any], model: str, *, kernel_ref: int = KERNEL_REF
) -> pd.DataFrame:
    """Median localization of each SmoothGrad noise level, with the S-method and the unsmoothed base.

    Only (setting, layer) pairs where some SmoothGrad instance was evaluated appear.

    Returns:
        Columns ``setting, layer, base, role, method, noise_level, median, count, best``. ``role`` is
        ``"smoothgrad"`` (one row per noise level; ``best`` marks the highest median of its
        (setting, layer, base), the level the paper reports), ``"smoothed"`` (the base at ``kernel_ref``,
        S-IntGrad / S-IxG; absent when that base was not smoothed) or ``"unsmoothed"`` (the base itself).
        ``noise_level`` is NaN outside the sweep rows. Empty when the run has no SmoothGrad rows.
    """
    points = smoothgrad_points(config)
    rows = results[(results["model"] == model)]
    plain = rows[rows["kernel_size"] == 0]
    sweep = plain.merge(points, on="method")
    if sweep.empty:
        return pd.DataFrame(columns=COLUMNS)
    parts = []
    stats = _medians(sweep, ["setting", "layer", "base", "method", "noise_level"])
    stats["role"] = "smoothgrad"
    stats = stats.sort_values(["setting", "layer", "base", "noise_level"], kind="stable", ignore_index=True)
    stats["best"] = False  # idxmax takes the first maximum: ties go to the lowest noise level
    stats.loc[stats.groupby(["setting", "layer", "base"], sort=False)["median"].idxmax(), "best"] = True
    parts.append(stats)
    panels = sweep[["setting", "layer", "base"]].drop_duplicates()
    for role, subset in (("smoothed", rows[rows["kernel_ref"] == kernel_ref]), ("unsmoothed", plain)):
        ref = subset.merge(panels.rename(columns={"base": "method"}), on=["setting", "layer", "method"])
        if ref.empty:
            continue
        ref = _medians(ref, ["setting", "layer", "method"])
        ref["base"], ref["role"], ref["noise_level"], ref["best"] = ref["method"], role, float("nan"), False
        parts.append(ref)
    out = pd.concat(parts, ignore_index=True)[COLUMNS]
    out["count"] = out["count"].astype(int)
    out["best"] = out["best"].astype(bool)
    order = {"smoothgrad": 0, "smoothed": 1, "unsmoothed": 2}
    return out.sort_values(
        ["setting", "layer", "base", "role", "noise_level"],
        key=lambda c: c.map(order) if c.name == "role" else c,
        kind="stable",
        ignore_index=True,
    )


def sweep_table(sweep: pd.DataFrame) -> pd.DataFrame:
    """A display table: rows (setting, layer, base), columns = each noise level, the best level,
    S-method (K = 129) and the unsmoothed base; the best noise level's median is starred in ``best``."""
    if sweep.empty:
        return pd.DataFrame()
    sg = sweep[sweep["role"] == "smoothgrad"]
    table = sg.pivot_table(index=["setting", "layer", "base"], columns="noise_level", values="median", aggfunc="first")
    table.columns = [f"σ={100 * c:g}%" for c in table.columns]
    best = sg[sg["best"]].set_index(["setting", "layer", "base"])
    table["best σ"] = best["noise_level"].map(lambda v: f"{100 * v:g}%")
    for role, label in (("smoothed", f"S-method K={KERNEL_REF}"), ("unsmoothed", "unsmoothed")):
        ref = sweep[sweep["role"] == role].set_index(["setting", "layer", "base"])["median"]
        table[label] = ref
    return table
