"""Cost of smoothing vs SmoothGrad (PAPER.md §7), from a run's ``costs.parquet``.

S-IntGrad / S-IxG cost their base method's passes plus one Gaussian convolution per map (no network
pass); SmoothGrad costs ``num_samples`` (15) times the base method's passes. The convolution is timed
here on the map size of the unit (:func:`time_smoothing`); the passes come from the run's pass counts.
"""

from __future__ import annotations

import time

import pandas as pd
import torch

from attreval.analysis.conventions import PAPER_KERNEL_REF
from attreval.smoothing import smooth_maps

COLUMNS = ["model", "setting", "layer", "base", "kind", "label", "noise_level", "passes_per_grid", "seconds_per_grid"]


def time_smoothing(shape: tuple[int, ...], kernel_size: int, repeats: int = 3) -> float:
    """Seconds per grid of :func:`~attreval.smoothing.smooth_maps` on maps of ``shape`` ``(G, T, h, w)``
    with a ``kernel_size`` Gaussian (the fastest of ``repeats`` runs on CPU zeros, divided by G)."""
    maps = torch.zeros(shape, dtype=torch.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        smooth_maps(maps, kernel_size)
        best = min(best, time.perf_counter() - start)
    return best / max(shape[0], 1)


def passes(costs: pd.DataFrame) -> pd.Series:
    """Network passes per grid: forward rows + backward rows (a backward costs about one forward)."""
    return costs["forward_passes"] + costs["backward_passes"]


def smoothing_vs_smoothgrad(
    costs: pd.DataFrame, points: pd.DataFrame, smoothing_seconds: dict[tuple, float] | None = None, *, kernel_ref: int = PAPER_KERNEL_REF
) -> pd.DataFrame:
    """Per (model, setting, layer, base) where SmoothGrad ran: the base, S-base and each SmoothGrad level.

    Args:
        costs: ``costs.parquet`` (one row per unit).
        points: :func:`attreval.analysis.smoothgrad_sweep.smoothgrad_points` (method, base, noise_level).
        smoothing_seconds: seconds per grid of the Gaussian convolution, keyed ``(model, setting, layer,
            base)``; missing keys count 0 (one convolution is negligible next to a network pass).

    Returns:
        Columns ``model, setting, layer, base, kind, label, noise_level, passes_per_grid,
        seconds_per_grid``; ``kind`` is ``"base"``, ``"smoothed"`` (base passes, base seconds + the
        convolution) or ``"smoothgrad"``.
    """
    smoothing_seconds = smoothing_seconds or {}
    table = costs.assign(passes_per_grid=passes(costs))
    sg = table.merge(points, on="method")
    rows = []
    for (model, setting, layer, base), group in sg.groupby(["model", "setting", "layer", "base"], sort=False):
        own = table[(table["model"] == model) & (table["setting"] == setting) & (table["layer"] == layer) & (table["method"] == base)]
        if len(own):
            b = own.iloc[0]
            extra = smoothing_seconds.get((model, setting, layer, base), 0.0)
            rows.append((model, setting, layer, base, "base", base, float("nan"), b["passes_per_grid"], b["seconds_per_grid"]))
            rows.append(
                (
                    model,
                    setting,
                    layer,
                    base,
                    "smoothed",
                    f"S-{base} K={kernel_ref}",
                    float("nan"),
                    b["passes_per_grid"],
                    b["seconds_per_grid"] + extra,
                )
            )
        for _, r in group.sort_values("noise_level").iterrows():
            rows.append(
                (model, setting, layer, base, "smoothgrad", r["method"], r["noise_level"], r["passes_per_grid"], r["seconds_per_grid"])
            )
    return pd.DataFrame(rows, columns=COLUMNS)
