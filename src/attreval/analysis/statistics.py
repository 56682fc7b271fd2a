"""Which differences are real: bootstrap intervals of every unit's median and paired tests between methods.

The maps of one grid are dependent (one image set, one forward), so the unit of resampling is the **grid**:
a cluster bootstrap draws G grids with replacement and takes the median of all their maps. The interval is
the percentile interval of ``resamples`` such medians (seeded per unit, so it does not depend on the order
of units). Two methods of one (model, setting, layer, smoothing) group scored the same maps, so they are
compared **paired**: the Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, its defaults) on the per-map
differences, Holm-corrected over the pairs of the group. The tier table groups methods that cannot be told
apart from the best one at level ``alpha``.

Tables (one row each):

* :func:`unit_statistics` → ``statistics.parquet``: ``model, setting, layer, method, kernel_size,
  kernel_ref, grids, n, median, ci_low, ci_high, resamples``;
* :func:`paired_comparisons` → ``comparisons.parquet``: ``model, setting, layer, kernel_size, kernel_ref,
  method_a, method_b, n, median_a, median_b, median_difference, p_value, p_holm``;
* :func:`tiers` and :func:`sample_size` derive from those two.
"""

from __future__ import annotations

import math
import zlib
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from attreval.analysis.conventions import method_order

RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05
#: The half-width of a 95 % interval that :func:`sample_size` plans for.
TARGET_HALF_WIDTH = 0.02
UNIT = ["model", "setting", "layer", "method", "kernel_size", "kernel_ref"]
#: One group of paired comparisons. Smoothing levels are told apart by ``kernel_ref`` (the paper's K): on small
#: maps several K scale to the same ``kernel_size``.
GROUP = ["model", "setting", "layer", "kernel_size", "kernel_ref"]


def grid_scores(rows: pd.DataFrame) -> np.ndarray:
    """The scores of one unit as ``(G, T)``: one row per grid, one column per evaluated cell (float64)."""
    table = rows.pivot_table(index="grid", columns="cell", values="score", aggfunc="first", sort=True)
    return table.to_numpy(dtype=np.float64)


def bootstrap_medians(scores: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``resamples`` cluster-bootstrap samples of ``scores (G, T)``: each draws G grids with
    replacement and takes the median of their G·T maps (NaN cells, e.g. a variant restricted to some cells,
    are ignored). ``(resamples,)`` float64; one vectorised draw ``(resamples, G)``."""
    g = scores.shape[0]
    picks = rng.integers(0, g, size=(resamples, g))
    sample = scores[picks].reshape(resamples, -1)  # (R, G·T)
    return np.nanmedian(sample, axis=1) if np.isnan(sample).any() else np.median(sample, axis=1)


def median_interval(
    scores: np.ndarray, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE, rng: np.random.Generator
) -> tuple[float, float, float]:
    """``(median, low, high)``: the median of every map of ``scores (G, T)`` and its percentile bootstrap interval."""
    if not 0 < confidence < 1:
        raise ValueError(f"expected a confidence in (0, 1), got {confidence}")
    medians = bootstrap_medians(scores, resamples, rng)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return float(np.nanmedian(scores)), float(low), float(high)


def unit_rng(seed: int, key: tuple) -> np.random.Generator:
    """The generator of one unit's bootstrap: seeded by the run's seed and the unit's names (stable across
    processes and Python versions, unlike ``hash``), so that each interval is reproducible on its own."""
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, key)).encode())])


def unit_statistics(results: pd.DataFrame, *, seed: int = 0, resamples: int = RESAMPLES, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Median and bootstrap interval of every unit and smoothing level of a results table (see module doc)."""
    rows = []
    for key, unit in results.groupby(UNIT, sort=False):
        scores = grid_scores(unit)
        median, low, high = median_interval(scores, resamples=resamples, confidence=confidence, rng=unit_rng(seed, key))
        n = int(np.isfinite(scores).sum())
        rows.append({**dict(zip(UNIT, key)), "grids": scores.shape[0], "n": n, "median": median, "ci_low": low, "ci_high": high})
    table = pd.DataFrame(rows, columns=[*UNIT, "grids", "n", "median", "ci_low", "ci_high"])
    table["resamples"] = resamples
    return table


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values`` (NaN entries stay NaN and do not count as tests).

    >>> holm(np.array([0.01, 0.04, 0.03, np.nan])).round(3).tolist()
    [0.03, 0.06, 0.06, nan]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(np.isfinite(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of ``scipy.stats.wilcoxon(a, b)`` (its defaults); NaN when every difference is 0
    (two methods that agree on every map are not different)."""
    d = a - b
    if not np.any(d != 0):
        return math.nan
    return float(stats.wilcoxon(a, b).pvalue)


def paired_comparisons(results: pd.DataFrame) -> pd.DataFrame:
    """Every pair of methods of every (model, setting, layer, smoothing) group, on the maps both scored."""
    rows: list[dict[str, Any]] = []
    for key, group in results.groupby(GROUP, sort=False):
        table = group.pivot_table(index=["grid", "cell"], columns="method", values="score", aggfunc="first")
        methods = method_order(pd.unique(group["method"]))
        first = len(rows)
        for a, b in combinations(methods, 2):
            both = table[[a, b]].dropna()
            x, y = both[a].to_numpy(np.float64), both[b].to_numpy(np.float64)
            if len(x) == 0:
                continue
            rows.append(
                {
                    **dict(zip(GROUP, key)),
                    "method_a": a,
                    "method_b": b,
                    "n": len(x),
                    "median_a": float(np.median(x)),
                    "median_b": float(np.median(y)),
                    "median_difference": float(np.median(x - y)),
                    "p_value": wilcoxon_p(x, y),
                }
            )
        adjusted = holm(np.array([r["p_value"] for r in rows[first:]]))
        for row, p in zip(rows[first:], adjusted):
            row["p_holm"] = float(p)
    columns = [*GROUP, "method_a", "method_b", "n", "median_a", "median_b", "median_difference", "p_value", "p_holm"]
    return pd.DataFrame(rows, columns=columns)


def run_statistics(results: pd.DataFrame, *, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(statistics, comparisons)`` of a results table, as a run stores them."""
    return unit_statistics(results, seed=seed), paired_comparisons(results)


def differs(comparisons: pd.DataFrame, a: str, b: str, alpha: float = ALPHA) -> bool:
    """Whether methods ``a`` and ``b`` of one group differ at level ``alpha`` (Holm-corrected)."""
    pair = comparisons[
        ((comparisons["method_a"] == a) & (comparisons["method_b"] == b))
        | ((comparisons["method_a"] == b) & (comparisons["method_b"] == a))
    ]
    return bool(len(pair)) and bool((pair["p_holm"] < alpha).any())


def tiers(statistics: pd.DataFrame, comparisons: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Tier of every method per group: tier 1 holds the method with the highest median and every method not
    distinguishable from it at ``alpha``; tier 2 the same among the rest, and so on. Columns: the group's,
    ``method, median, ci_low, ci_high, tier``; sorted by group, tier, then median (descending)."""
    out = []
    for key, group in statistics.groupby(GROUP, sort=False):
        pairs = comparisons
        for column, value in zip(GROUP, key):
            pairs = pairs[pairs[column] == value]
        left = group.sort_values("median", ascending=False, kind="stable")
        tier = 1
        while len(left):
            best = left["method"].iloc[0]
            same = left["method"].map(lambda m: m == best or not differs(pairs, best, m, alpha))
            out.append(left[same].assign(tier=tier))
            left, tier = left[~same], tier + 1
    if not out:
        return pd.DataFrame(columns=[*GROUP, "method", "median", "ci_low", "ci_high", "tier"])
    table = pd.concat(out, ignore_index=True)
    return table[[*GROUP, "method", "median", "ci_low", "ci_high", "tier"]]


def sample_size(statistics: pd.DataFrame, target: float = TARGET_HALF_WIDTH) -> pd.DataFrame:
    """Per (model, setting), unsmoothed: the grids evaluated, the median and largest interval half-width over
    the units, and how many grids would bring each under ``target`` (the half-width of a median's interval
    shrinks as 1/√grids: ``⌈grids · (half-width / target)²⌉``, an extrapolation from the measured spread)."""
    rows = statistics[statistics["kernel_ref"] == 0]
    out = []
    for (model, setting), group in rows.groupby(["model", "setting"], sort=False):
        half = (group["ci_high"] - group["ci_low"]) / 2
        grids = int(group["grids"].max())

        def needed(width: float) -> int:
            return max(1, math.ceil(grids * (width / target) ** 2)) if width > 0 else 1

        out.append(
            {
                "model": model,
                "setting": setting,
                "grids": grids,
                "median_half_width": float(half.median()),
                "max_half_width": float(half.max()),
                "grids_for_median_unit": needed(float(half.median())),
                "grids_for_every_unit": needed(float(half.max())),
            }
        )
    return pd.DataFrame(out)
