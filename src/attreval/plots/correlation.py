"""Correlation figures (PAPER.md §6.2): the method × layer heat map and the Tables 1–2 analogue."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attreval.analysis.conventions import reference_evaluation
from attreval.plots.style import evaluation_label, method_display, new_figure


def correlation_heatmap(matrix: pd.DataFrame, title: str = "") -> Figure:
    """Spearman ρ between (method, layer[, kernel_ref]) evaluations; lines separate layers."""
    labels = [evaluation_label(*key) if isinstance(key, tuple) else str(key) for key in matrix.columns]
    k = len(labels)
    size = 2.5 + 0.28 * k
    fig = new_figure(size + 1.2, size)
    ax = fig.subplots()
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(k), labels, fontsize=7)
    if k <= 16:
        for (a, b), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
            if np.isfinite(value):
                ax.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white" if abs(value) > 0.6 else "black")
    if isinstance(matrix.columns, pd.MultiIndex):
        layer = matrix.columns.get_level_values(1)
        for pos in np.flatnonzero(layer[1:] != layer[:-1]):
            ax.axhline(pos + 0.5, color="black", linewidth=0.8)
            ax.axvline(pos + 0.5, color="black", linewidth=0.8)
    fig.colorbar(image, ax=ax, shrink=0.7, label="Spearman ρ")
    if title:
        ax.set_title(title)
    return fig


def reference_correlation_figure(table: pd.DataFrame, title: str = "") -> Figure:
    """Tables 1/2 as a heat map: ρ(Grad-CAM final, S-method input) for each (method, model) row of
    :func:`attreval.analysis.correlation.reference_table` (rows) and kernel size (columns, Orig = not
    smoothed), every value written in its cell, as in the paper's tables."""
    if table.empty:
        raise ValueError("expected a non-empty correlation table, got none")
    values = table.to_numpy(dtype=float)
    rows = [f"S-{method_display(method)} · {model}" for method, model in table.index]
    columns = ["Orig" if int(c) == 0 else f"K={int(c)}" for c in table.columns]
    fig = new_figure(2.4 + 0.8 * len(columns), 1.4 + 0.45 * len(rows))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    for (r, c), value in np.ndenumerate(values):
        text = f"{value:.2f}" if np.isfinite(value) else "–"
        ax.text(c, r, text, ha="center", va="center", fontsize=8, color="white" if abs(value) > 0.6 else "black")
    ax.set_xlabel("Gaussian kernel of the input-layer method (size at 448 px)")
    fig.colorbar(image, ax=ax, shrink=0.8, label="Spearman ρ")
    if not title:
        method, layer = reference_evaluation()
        smoothed = " / ".join(f"S-{method_display(m)}" for m in pd.unique(table.index.get_level_values(0)))
        title = f"Spearman ρ: {method_display(method)} ({layer}) vs {smoothed} (input), GridPG"
    ax.set_title(title, fontsize=10)
    return fig
