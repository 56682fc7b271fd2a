"""Spearman rank correlation of per-instance localization scores (PAPER.md §6.2).

Two evaluations (a method at a layer, possibly smoothed) are compared on GridPG over the same
instances: rows are paired on ``(grid, cell)``, and only pairs where both scores exist are used
(pairwise-complete). Spearman's ρ is Pearson's correlation of the average ranks (ties share the mean of
the ranks they span), as in ``scipy.stats.spearmanr``; it is NaN with fewer than two pairs or when
either side is constant (no ranking to correlate).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from attreval.analysis.conventions import LAYER_ORDER, method_order, position, reference_evaluation, smoothed_methods
from attreval.settings import SETTINGS

#: Columns identifying one evaluation in a score table.
KEY = ("method", "layer", "kernel_ref")
#: The setting correlations are computed on (PAPER.md §6.2: GridPG, the one with a pooled output).
SETTING = next(name for name, cls in SETTINGS.items() if cls.pooled)


def rankdata(values: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties given the average of the ranks they span (float64).

    >>> rankdata(np.array([10.0, 20.0, 10.0, 30.0])).tolist()
    [1.5, 3.0, 1.5, 4.0]
    """
    x = np.asarray(values)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {x.shape}")
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]] if x.size else np.zeros(0, bool)
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    counts = np.diff(np.r_[starts, x.size])
    mean_rank = starts + (counts + 1) / 2.0  # ranks start+1 … start+count
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(np.clip(a @ b / denominator, -1.0, 1.0)) if denominator > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ of paired samples, ignoring pairs with a NaN on either side.

    >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0]))
    0.5
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"expected two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return float("nan")
    return _pearson(rankdata(x[keep]), rankdata(y[keep]))


def score_table(results: pd.DataFrame, model: str, setting: str = SETTING, kernel_refs: Iterable[int] | None = (0,)) -> pd.DataFrame:
    """Scores paired by instance: index ``(grid, cell)``, columns ``(method, layer, kernel_ref)``.

    Args:
        kernel_refs: which smoothing levels to keep (0 = unsmoothed); ``None`` keeps all.
    """
    rows = results[(results["model"] == model) & (results["setting"] == setting)]
    if kernel_refs is not None:
        rows = rows[rows["kernel_ref"].isin(list(kernel_refs))]
    if rows.empty:
        raise ValueError(f"expected {setting} results for model '{model}', got none")
    duplicated = rows.duplicated(["grid", "cell", *KEY])
    if duplicated.any():
        raise ValueError(f"expected one score per (grid, cell, method, layer, kernel_ref), got {int(duplicated.sum())} duplicates")
    table = rows.pivot(index=["grid", "cell"], columns=list(KEY), values="score")
    return table.astype(np.float64)


def correlation_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Spearman ρ between every pair of columns of a :func:`score_table` (pairwise-complete, symmetric)."""
    values = table.to_numpy(dtype=np.float64)
    complete = np.isfinite(values).all(axis=0)
    ranks = {int(j): rankdata(values[:, j]) for j in np.flatnonzero(complete)}
    k = values.shape[1]
    rho = np.full((k, k), np.nan)
    for i in range(k):
        for j in range(i, k):
            if i in ranks and j in ranks:
                rho[i, j] = _pearson(ranks[i], ranks[j])
            else:
                rho[i, j] = spearman(values[:, i], values[:, j])
            rho[j, i] = rho[i, j]
    return pd.DataFrame(rho, index=table.columns, columns=table.columns)


def method_layer_correlations(
    results: pd.DataFrame, model: str, setting: str = SETTING, kernel_refs: Iterable[int] | None = (0,)
) -> pd.DataFrame:
    """The Fig. 19 analogue: ρ between every (method, layer[, kernel_ref]) on ``setting`` for ``model``.

    Columns are ordered by layer (input, middle, final, then others), then by method in registry order.
    """
    table = score_table(results, model, setting, kernel_refs)
    methods = method_order(pd.unique(results["method"]))
    columns = sorted(table.columns, key=lambda c: (position(c[1], LAYER_ORDER), c[1], methods.index(c[0]), c[2]))
    return correlation_matrix(table[columns])


def reference_correlations(
    results: pd.DataFrame,
    model: str,
    *,
    reference: tuple[str, str] | None = None,
    methods: Sequence[str] | None = None,
    layer: str = "input",
    setting: str = SETTING,
) -> pd.DataFrame:
    """The Table 1/2 analogue: ρ between ``reference`` (method, layer, unsmoothed; default the paper's,
    final-layer Grad-CAM) and each of ``methods`` (default: those the run smoothed at ``layer``, S-IntGrad
    and S-IxG in the paper) at ``layer`` for every kernel_ref (0 = "Orig", unsmoothed).

    Returns:
        Long format: ``model, method, kernel_ref, rho, pairs`` (``pairs`` = instances paired).
        Empty when the reference or the methods are missing.
    """
    table = score_table(results, model, setting, kernel_refs=None)
    columns = ["model", "method", "kernel_ref", "rho", "pairs"]
    if methods is None:
        methods = smoothed_methods(results, model=model, setting=setting, layer=layer)
    ref_key = (*(reference_evaluation() if reference is None else reference), 0)
    if ref_key not in table.columns:
        return pd.DataFrame(columns=columns)
    ref = table[ref_key].to_numpy()
    out = []
    for method, lay, kernel_ref in sorted(c for c in table.columns if c[0] in methods and c[1] == layer):
        other = table[(method, lay, kernel_ref)].to_numpy()
        pairs = int((np.isfinite(ref) & np.isfinite(other)).sum())
        out.append((model, method, int(kernel_ref), spearman(ref, other), pairs))
    frame = pd.DataFrame(out, columns=columns)
    order = {m: i for i, m in enumerate(methods)}
    return frame.sort_values(["method", "kernel_ref"], key=lambda s: s.map(order) if s.name == "method" else s, ignore_index=True)


def reference_table(results: pd.DataFrame, models: Sequence[str] | None = None, **options) -> pd.DataFrame:
    """Tables 1 and 2 as one wide table: rows ``(method, model)``, columns kernel_ref (0 = Orig)."""
    models = list(pd.unique(results["model"])) if models is None else list(models)
    frames = []
    for model in models:
        if ((results["model"] == model) & (results["setting"] == options.get("setting", SETTING))).any():
            frames.append(reference_correlations(results, model, **options))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    long = pd.concat(frames, ignore_index=True)
    return long.pivot_table(index=["method", "model"], columns="kernel_ref", values="rho", sort=False, dropna=False)
