"""Smoothing figures: median localization against the Gaussian kernel (PAPER.md §6.1, Fig. 5) and the
SmoothGrad noise sweep next to the smoothed methods (§6.3, Figs. 26–27)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from attreval.plots.style import (
    LAYER_ORDER,
    PAPER_KERNEL_REF,
    SETTING_ORDER,
    curve_colours,
    method_display,
    method_order,
    new_figure,
    ordered,
    position,
    score_panel,
    setting_display,
)


def _kernel_axis(ax, refs: Sequence[int]) -> dict[int, int]:
    ax.set_xticks(range(len(refs)), ["Orig" if r == 0 else str(r) for r in refs], fontsize=8)
    return {r: i for i, r in enumerate(refs)}


def smoothing_curves_figure(curves: pd.DataFrame, title: str = "", *, n: int | None = None) -> Figure:
    """Panels: rows = layers, columns = settings; median (line) and IQR (band) per smoothed method against
    the paper's kernel size at 448 px, with final-layer Grad-CAM (dashed) and SmoothGrad (dotted)."""
    curve = curves[curves["role"] == "curve"]
    if curve.empty:
        raise ValueError("expected smoothing curves (rows with role 'curve'), got none")
    settings = ordered(curve["setting"].unique(), SETTING_ORDER)
    layers = ordered(curve["layer"].unique(), LAYER_ORDER)
    refs = sorted(curve["kernel_ref"].unique())
    fig = new_figure(0.8 + 3.6 * len(settings), 0.6 + 2.8 * len(layers))
    axes = fig.subplots(len(layers), len(settings), squeeze=False, sharey=True)
    colours = curve_colours(curve["method"].unique())
    for i, layer in enumerate(layers):
        for j, setting in enumerate(settings):
            ax = axes[i, j]
            x = _kernel_axis(ax, refs)
            panel = curves[(curves["setting"] == setting)]
            for method, line in curve[(curve["setting"] == setting) & (curve["layer"] == layer)].groupby("method", sort=False):
                xs = [x[r] for r in line["kernel_ref"]]
                ax.plot(xs, line["median"], marker="o", color=colours[method], label=f"S-{method_display(method)}")
                ax.fill_between(xs, line["q25"], line["q75"], color=colours[method], alpha=0.15)
            for _, ref in panel[panel["role"] == "reference"].iterrows():
                ax.axhline(
                    ref["median"], color="black", linestyle="--", linewidth=1, label=f"{method_display(ref['method'])} ({ref['layer']})"
                )
            for _, sg in panel[(panel["role"] == "smoothgrad") & (panel["layer"] == layer)].iterrows():
                ax.axhline(sg["median"], color="purple", linestyle=":", linewidth=1.2, label=method_display(sg["method"]))
            score_panel(
                ax,
                f"{setting_display(setting)} · {layer}",
                n,
                ylabel="median localization" if j == 0 else "",
                xlabel="kernel size (at 448 px)" if i == len(layers) - 1 else "",
                legend="lower right",
            )
    if title:
        fig.suptitle(title)
    return fig


def smoothgrad_sweep_figure(sweep: pd.DataFrame, title: str = "", *, n: int | None = None) -> Figure:
    """Rows = base methods, columns = (setting, layer): median localization of SmoothGrad against its noise
    level (★ = the best level, the one the paper reports), with the S-method at K = 129 (dashed) and the
    unsmoothed base (dotted). Only panels with two or more noise levels are drawn (all when none has).
    ``sweep`` is :func:`attreval.analysis.smoothgrad_sweep.smoothgrad_sweep`."""
    sg = sweep[sweep["role"] == "smoothgrad"]
    if sg.empty:
        raise ValueError("expected SmoothGrad sweep rows (role 'smoothgrad'), got none")
    bases = method_order(sg["base"].unique())
    levels = sg.groupby(["setting", "layer"])["noise_level"].nunique()
    swept = levels[levels > 1].index  # a lone level (e.g. `smoothgrad` at hidden layers) is no sweep: not drawn
    panels = sorted(swept if len(swept) else levels.index, key=lambda p: (position(p[0], SETTING_ORDER), position(p[1], LAYER_ORDER)))
    fig = new_figure(0.8 + 3.2 * len(panels), 0.7 + 2.6 * len(bases))
    axes = fig.subplots(len(bases), len(panels), squeeze=False, sharey=True)
    colours = curve_colours(bases)
    for i, base in enumerate(bases):
        colour = colours[base]
        name = method_display(base)
        for j, (setting, layer) in enumerate(panels):
            ax = axes[i, j]
            here = sweep[(sweep["setting"] == setting) & (sweep["layer"] == layer) & (sweep["base"] == base)]
            line = here[here["role"] == "smoothgrad"].sort_values("noise_level")
            if line.empty:
                ax.text(0.5, 0.5, "not evaluated", transform=ax.transAxes, ha="center", color="grey")
            else:
                xs = 100 * line["noise_level"].to_numpy()
                ax.plot(xs, line["median"], marker="o", color=colour, label=f"SmoothGrad({name})")
                best = line[line["best"]]
                ax.plot(
                    100 * best["noise_level"],
                    best["median"],
                    marker="*",
                    markersize=14,
                    color="gold",
                    markeredgecolor="black",
                    linestyle="none",
                    label="best noise level",
                )
                for _, b in best.iterrows():
                    ax.annotate(
                        f"{b['median']:.2f}",
                        (100 * b["noise_level"], b["median"]),
                        textcoords="offset points",
                        xytext=(0, 8),
                        ha="center",
                        fontsize=7,
                    )
            for role, style, label in (("smoothed", "--", f"S-{name} K={PAPER_KERNEL_REF}"), ("unsmoothed", ":", name)):
                for _, ref in here[here["role"] == role].iterrows():
                    ax.axhline(ref["median"], color=colour, linestyle=style, linewidth=1.2, label=label)
            ax.set_xlim(left=0)
            score_panel(
                ax,
                f"{setting_display(setting)} · {layer}",
                n,
                ylabel=f"{name}\nmedian localization" if j == 0 else "",
                xlabel="SmoothGrad noise level σ (% of input range)" if i == len(bases) - 1 else "",
            )
    if title:
        fig.suptitle(title)
    return fig
