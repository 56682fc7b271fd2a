"""Localization box plots (PAPER.md §1.5, Fig. 9 layout)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from attreval.plots.style import (
    FAMILIES,
    LAYER_ORDER,
    SETTING_ORDER,
    infer_n,
    layer_colour,
    layer_legend,
    layer_offset,
    method_display,
    method_family,
    method_order,
    new_figure,
    ordered,
    setting_display,
)


def localization_boxplots(results: pd.DataFrame, model: str, *, n: int | None = None, kernel_size: int = 0) -> Figure:
    """Rows = method families, columns = settings, per method one box per layer.

    Whiskers at 1.5 IQR, no fliers; dashed lines at 1 (perfect) and 1/n² (uniform); ``*`` marks a box that
    collapses to a single value; y from −0.1 to 1.1.
    """
    rows = results[(results["model"] == model) & (results["kernel_size"] == kernel_size)]
    if rows.empty:
        raise ValueError(f"expected results for model '{model}', got none")
    n = infer_n(rows) if n is None else n
    families = ordered(sorted({method_family(m) for m in rows["method"].unique()}), FAMILIES)
    settings = ordered(rows["setting"].unique(), SETTING_ORDER)
    layers = ordered(rows["layer"].unique(), LAYER_ORDER)
    groups = {key: g["score"].to_numpy() for key, g in rows.groupby(["setting", "method", "layer"])}
    widest = max(sum(method_family(m) == f for m in rows["method"].unique()) for f in families)
    fig = new_figure(1.6 + len(settings) * (0.9 + 0.75 * widest), 0.6 + 2.6 * len(families))
    axes = fig.subplots(len(families), len(settings), squeeze=False, sharey=True)
    for i, family in enumerate(families):
        methods = method_order(m for m in rows["method"].unique() if method_family(m) == family)
        for j, setting in enumerate(settings):
            ax = axes[i, j]
            for k, method in enumerate(methods):
                for li, layer in enumerate(layers):
                    scores = groups.get((setting, method, layer))
                    if scores is None or not len(scores):
                        continue
                    offset, width = layer_offset(li, layers)
                    pos = k + offset
                    box = ax.boxplot(
                        [scores],
                        positions=[pos],
                        widths=width * 0.9,
                        showfliers=False,
                        patch_artist=True,
                        medianprops={"color": "black"},
                        manage_ticks=False,
                    )
                    box["boxes"][0].set_facecolor(layer_colour(layer, layers))
                    if np.ptp(scores) == 0:
                        ax.text(pos, min(float(scores[0]) + 0.03, 1.04), "*", ha="center", va="bottom", fontsize=12)
            for level in (1.0, 1.0 / (n * n)):
                ax.axhline(level, color="grey", linestyle="--", linewidth=0.8, zorder=0)
            ax.set_xticks(range(len(methods)), [method_display(m) for m in methods], rotation=20, fontsize=8)
            ax.set_xlim(-0.6, max(len(methods), widest) - 0.4)
            ax.set_ylim(-0.1, 1.1)
            if not any((setting, m, layer) in groups for m in methods for layer in layers):
                ax.text(0.5, 0.5, "not evaluated", transform=ax.transAxes, ha="center", color="grey")
            if i == 0:
                ax.set_title(setting_display(setting))
            if j == 0:
                ax.set_ylabel(f"{family}\nlocalization score")
    layer_legend(fig, layers)
    fig.suptitle(f"{model}: localization score (n={n}; dashed: 1 and 1/n²; * = all scores equal)")
    return fig
