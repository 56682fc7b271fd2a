"""Computational cost figures (PAPER.md §7): cost per unit, and smoothing against SmoothGrad."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from attreval.plots.style import (
    LAYER_ORDER,
    PAPER_KERNEL_REF,
    SETTING_ORDER,
    layer_colour,
    layer_legend,
    layer_offset,
    method_display,
    method_order,
    new_figure,
    ordered,
    setting_display,
)

COST_METRICS = (("seconds_per_grid", "seconds per grid"), ("passes_per_grid", "passes per grid (forward + backward)"))


def _plain_log(axis) -> None:
    """Log scale with plain tick labels (0.5, 2, 300), not 5×10⁻¹."""
    (axis.axes.set_xscale if axis.axis_name == "x" else axis.axes.set_yscale)("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def cost_figure(costs: pd.DataFrame, model: str) -> Figure:
    """Rows = seconds per grid and network passes per grid (forward + backward rows), columns = settings;
    one bar per method and layer (colour), log scale. Bars are the unit rows of ``costs.parquet`` as given."""
    rows = costs[costs["model"] == model]
    if rows.empty:
        raise ValueError(f"expected cost rows for model '{model}', got none")
    rows = rows.assign(passes_per_grid=rows["forward_passes"] + rows["backward_passes"])
    settings = ordered(rows["setting"].unique(), SETTING_ORDER)
    layers = ordered(rows["layer"].unique(), LAYER_ORDER)
    methods = method_order(rows["method"].unique())
    values = {(r.setting, r.method, r.layer): r for r in rows.itertuples(index=False)}
    fig = new_figure(1.2 + len(settings) * (0.6 + 0.32 * len(methods) * max(1, len(layers) / 2)), 6.4)
    axes = fig.subplots(len(COST_METRICS), len(settings), squeeze=False, sharey="row")
    for i, (metric, label) in enumerate(COST_METRICS):
        for j, setting in enumerate(settings):
            ax = axes[i, j]
            for li, layer in enumerate(layers):
                xs, heights = [], []
                offset, width = layer_offset(li, layers)
                for k, method in enumerate(methods):
                    row = values.get((setting, method, layer))
                    if row is not None and getattr(row, metric) > 0:
                        xs.append(k + offset)
                        heights.append(float(getattr(row, metric)))
                ax.bar(xs, heights, width=width * 0.95, color=layer_colour(layer, layers), label=layer)
            _plain_log(ax.yaxis)
            ax.set_xticks(range(len(methods)), [method_display(m) for m in methods], rotation=60, ha="right", fontsize=7)
            ax.set_xlim(-0.6, len(methods) - 0.4)
            ax.grid(axis="y", which="major", linewidth=0.4, alpha=0.5)
            if i == 0:
                ax.set_title(setting_display(setting), fontsize=9)
            if j == 0:
                ax.set_ylabel(label)
    layer_legend(fig, layers)
    fig.suptitle(f"{model}: cost per grid image (log scale)")
    return fig


def smoothing_cost_figure(summary: pd.DataFrame, model: str) -> Figure:
    """Smoothing vs SmoothGrad (§7): for each (setting, layer, base) the base method, the S-method (its
    passes + one Gaussian convolution) and every SmoothGrad level, in passes and seconds per grid (log).
    ``summary`` is :func:`attreval.analysis.cost_summary.smoothing_vs_smoothgrad`."""
    rows = summary[summary["model"] == model]
    if rows.empty:
        raise ValueError(f"expected smoothing-vs-SmoothGrad cost rows for model '{model}', got none")
    groups = list(rows.groupby(["setting", "layer", "base"], sort=False))
    kind_colour = {"base": "#8c8c8c", "smoothed": "#55a868", "smoothgrad": "#8172b3"}
    labels: list[str] = []
    colours: list[str] = []
    data: dict[str, list[float]] = {m: [] for m, _ in COST_METRICS}
    for (setting, layer, base), group in groups:
        for r in group.itertuples(index=False):
            name = method_display(base)
            text = {"base": name, "smoothed": f"S-{name} (K={PAPER_KERNEL_REF})"}.get(r.kind, f"SmoothGrad σ={100 * r.noise_level:g}%")
            labels.append(f"{setting_display(setting)} · {layer}: {text}")
            colours.append(kind_colour[r.kind])
            for metric, _ in COST_METRICS:
                data[metric].append(float(getattr(r, metric)))
    fig = new_figure(10, 1.2 + 0.22 * len(labels))
    axes = fig.subplots(1, len(COST_METRICS), sharey=True, squeeze=False)[0]
    ys = np.arange(len(labels))[::-1]
    for ax, (metric, label) in zip(axes, COST_METRICS, strict=False):
        values = np.asarray(data[metric])
        ax.barh(ys, np.where(values > 0, values, np.nan), color=colours)
        _plain_log(ax.xaxis)
        ax.set_xlabel(label)
        ax.grid(axis="x", linewidth=0.4, alpha=0.5)
    axes[0].set_yticks(ys, labels, fontsize=7)
    handles = [
        Patch(facecolor=c, label=k)
        for k, c in (
            ("base method", kind_colour["base"]),
            ("S-method: base + 1 Gaussian convolution", kind_colour["smoothed"]),
            ("SmoothGrad (num_samples noisy copies of the base)", kind_colour["smoothgrad"]),
        )
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(f"{model}: smoothing vs SmoothGrad, cost per grid image")
    return fig
