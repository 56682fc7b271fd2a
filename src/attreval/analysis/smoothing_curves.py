"""Median localization versus smoothing kernel (PAPER.md §6.1, the Figure 5 analogue).

For every setting and layer where a method was also scored smoothed (rows with ``kernel_size > 0``:
S-IntGrad / S-IxG in the paper's runs), the median score at each ``kernel_ref`` (the paper's kernel at 448
px; 0 = the unsmoothed method, the "Orig" point), with the references the paper draws: final-layer
Grad-CAM in the same setting (:func:`~attreval.analysis.conventions.reference_evaluation`) and, where
present, SmoothGrad at the same layer (§6.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from attreval.analysis.conventions import reference_evaluation, smoothed_methods, smoothgrad_methods

COLUMNS = ["setting", "layer", "method", "role", "kernel_ref", "kernel_size", "median", "q25", "q75", "count"]


def _stats(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    grouped = rows.groupby(keys, sort=False)["score"]
    stats = grouped.agg(median="median", q25=lambda s: s.quantile(0.25), q75=lambda s: s.quantile(0.75), count="size")
    return stats.reset_index()


def smoothing_curves(
    results: pd.DataFrame,
    model: str,
    *,
    methods: Sequence[str] | None = None,
    reference: tuple[str, str] | None = None,
    smoothgrad: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Median scores for the smoothing figure of one model.

    ``methods`` default to those the run smoothed, ``reference`` to the paper's (method, layer) and
    ``smoothgrad`` to the registered SmoothGrad names.

    Returns:
        One row per point with columns ``setting, layer, method, role, kernel_ref, kernel_size, median,
        q25, q75, count``. ``role`` is ``"curve"`` (a smoothed method at one kernel_ref, including
        kernel_ref 0 = unsmoothed), ``"reference"`` (``reference`` method at its layer, unsmoothed; its
        ``layer`` is the reference layer) or ``"smoothgrad"`` (unsmoothed SmoothGrad at the curve's layer).
        Only (setting, layer) pairs with at least one smoothed row appear; empty when none has.
    """
    rows = results[results["model"] == model]
    methods = smoothed_methods(rows) if methods is None else methods
    reference = reference_evaluation() if reference is None else reference
    smoothgrad = smoothgrad_methods() if smoothgrad is None else smoothgrad
    smoothed = rows[rows["method"].isin(methods) & (rows["kernel_size"] > 0)]
    if smoothed.empty:
        return pd.DataFrame(columns=COLUMNS)
    panels = smoothed[["setting", "layer"]].drop_duplicates()
    keep = rows.merge(panels, on=["setting", "layer"])
    curve = keep[keep["method"].isin(methods)]
    curves = _stats(curve, ["setting", "layer", "method", "kernel_ref"])
    curves = curves.merge(curve.groupby(["setting", "layer", "method", "kernel_ref"])["kernel_size"].first().reset_index())
    curves["role"] = "curve"
    parts = [curves]
    ref_rows = rows[
        (rows["method"] == reference[0])
        & (rows["layer"] == reference[1])
        & (rows["kernel_size"] == 0)
        & rows["setting"].isin(panels["setting"])
    ]
    if not ref_rows.empty:
        ref = _stats(ref_rows, ["setting", "layer", "method"])
        ref["role"], ref["kernel_ref"], ref["kernel_size"] = "reference", 0, 0
        parts.append(ref)
    sg_rows = keep[keep["method"].isin(smoothgrad) & (keep["kernel_size"] == 0)]
    if not sg_rows.empty:
        sg = _stats(sg_rows, ["setting", "layer", "method"])
        sg["role"], sg["kernel_ref"], sg["kernel_size"] = "smoothgrad", 0, 0
        parts.append(sg)
    out = pd.concat(parts, ignore_index=True)[COLUMNS]
    out["count"] = out["count"].astype(int)
    out["kernel_ref"] = out["kernel_ref"].astype(int)
    out["kernel_size"] = out["kernel_size"].astype(int)
    return out.sort_values(["setting", "layer", "role", "method", "kernel_ref"], kind="stable", ignore_index=True)
