"""Figures of a run, with matplotlib's object API only (no pyplot, no ``matplotlib.use``: nothing global
changes on import or call). Every function returns a :class:`~matplotlib.figure.Figure`; :func:`save`
writes it as PNG atomically. Display normalisation (colour scales, grey images) happens only here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LinearSegmentedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter

from attreval.analysis.aggatt import AggAtt, Examples, normalise
from attreval.methods import METHODS
from attreval.settings import SETTINGS
from attreval.store import atomic_write

FAMILIES = ("backprop", "activation", "perturbation")
SETTING_ORDER = ("gridpg", "difull", "dipart")
LAYER_ORDER = ("input", "middle", "final")
LAYER_COLOURS = {"input": "#4c72b0", "middle": "#dd8452", "final": "#55a868"}
OTHER_COLOURS = ("#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
#: AggAtt colormap (PAPER.md §3.6): red (negative) – white – green (positive), shown on [−1, 1].
RDWHGN = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])
TARGET_EDGE = "blue"
CURVE_COLOURS = {"int_grad": "#c44e52", "input_x_grad": "#4c72b0"}


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` (temporary file, then rename). zlib level 3: as small as the
    default level 6 on these figures, about a third faster to encode."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": 3}))
    return path


# --------------------------------------------------------------------------------------------------
# Names and orders


def method_display(method: str) -> str:
    return METHODS.get(method).display if method in METHODS else method


def method_family(method: str) -> str:
    return METHODS.get(method).family if method in METHODS else "other"


def setting_display(setting: str) -> str:
    return SETTINGS.get(setting).display if setting in SETTINGS else setting


def ordered(values, first: Sequence[str]) -> list[str]:
    """``values`` (unique) with the names in ``first`` leading, in that order, the rest in seen order."""
    values = list(dict.fromkeys(values))
    return [v for v in first if v in values] + [v for v in values if v not in first]


def method_order(methods) -> list[str]:
    return ordered(methods, METHODS.names())


def layer_colour(layer: str, layers: Sequence[str]) -> str:
    others = [x for x in layers if x not in LAYER_COLOURS]
    return LAYER_COLOURS.get(layer) or OTHER_COLOURS[others.index(layer) % len(OTHER_COLOURS)]


def evaluation_label(method: str, layer: str, kernel_ref: int = 0) -> str:
    """``"IntGrad · input"``, ``"S-IntGrad K=129 · input"``."""
    name = method_display(method)
    return f"S-{name} K={kernel_ref} · {layer}" if kernel_ref else f"{name} · {layer}"


def infer_n(results: pd.DataFrame) -> int:
    """Grid size from the highest evaluated cell (corner n²−1 is always evaluated when n > 1)."""
    return max(1, math.isqrt(int(results["cell"].max()) + 1)) if len(results) else 1


# --------------------------------------------------------------------------------------------------
# (1) Localization box plots (PAPER.md §1.5, Fig. 9 layout)


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
    width = 0.8 / len(layers)
    for i, family in enumerate(families):
        methods = method_order(m for m in rows["method"].unique() if method_family(m) == family)
        for j, setting in enumerate(settings):
            ax = axes[i, j]
            for k, method in enumerate(methods):
                for li, layer in enumerate(layers):
                    scores = groups.get((setting, method, layer))
                    if scores is None or not len(scores):
                        continue
                    pos = k + (li - (len(layers) - 1) / 2) * width
                    box = ax.boxplot([scores], positions=[pos], widths=width * 0.9, showfliers=False, patch_artist=True,
                                     medianprops={"color": "black"}, manage_ticks=False)
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
    handles = [Patch(facecolor=layer_colour(x, layers), label=x) for x in layers]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(layers), title="layer", fontsize=8)
    fig.suptitle(f"{model}: localization score (n={n}; dashed: 1 and 1/n²; * = all scores equal)")
    return fig


# --------------------------------------------------------------------------------------------------
# (2, 3) AggAtt: panels are pasted into one RGB mosaic on a single Axes (one Axes per panel costs ~100×
# more to lay out and draw with 10+ methods × 6 bins), labelled and outlined in data coordinates.

PANEL_INCHES = 1.35


@dataclass
class Panel:
    """One mosaic panel: an ``(H, W, 3)`` float RGB image (``None`` = blank), an optional caption drawn in
    its top-left corner, a centred note for blanks, and the target cell to outline."""

    rgb: np.ndarray | None
    caption: str = ""
    note: str = ""
    cell: tuple[int, int] | None = None  # (cell, n)


def _rgb(values: np.ndarray, cmap, vmin: float, vmax: float) -> np.ndarray:
    scaled = (np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin)
    return cmap(np.clip(np.nan_to_num(scaled, nan=0.5), 0, 1))[..., :3]


def _grey(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` normalised image → ``(H, W, 3)`` grey in [0, 1] (min–max over the image)."""
    grey = np.asarray(image, dtype=np.float32).mean(axis=0)
    low, high = float(grey.min()), float(grey.max())
    grey = (grey - low) / (high - low) if high > low else np.zeros_like(grey)
    return np.repeat(grey[..., None], 3, axis=2)


def image_grid(panels: Sequence[Sequence[Panel]], row_labels: Sequence[str], column_titles: Sequence[str],
               title: str = "", colorbar: str = "", group_rows: int = 1) -> Figure:
    """A rows × columns grid of equally sized panels as one image, with labels, captions and cell outlines.

    ``colorbar``: label of an RDWHGN colorbar on [−1, 1] (none when empty); ``group_rows``: a wider gap
    after every that many rows.
    """
    shapes = [p.rgb.shape[:2] for row in panels for p in row if p.rgb is not None]
    height, width = shapes[0] if shapes else (32, 32)
    rows, cols, pad = len(panels), len(panels[0]), max(2, height // 12)
    tops = [r * (height + pad) + (r // group_rows) * 3 * pad for r in range(rows)]
    mosaic = np.full((tops[-1] + height, cols * (width + pad) - pad, 3), 255, dtype=np.uint8)
    origins = [[(tops[r], c * (width + pad)) for c in range(cols)] for r in range(rows)]
    for r, row in enumerate(panels):
        for c, panel in enumerate(row):
            if panel.rgb is not None:
                y, x = origins[r][c]
                mosaic[y:y + height, x:x + width] = np.round(np.clip(panel.rgb, 0, 1) * 255).astype(np.uint8)
    left, right, top, bottom = 1.5, (1.3 if colorbar else 0.2), (0.9 if title else 0.6), 0.1
    inch = PANEL_INCHES / width  # inches per mosaic pixel
    fig_w, fig_h = left + right + mosaic.shape[1] * inch, top + bottom + mosaic.shape[0] * inch
    fig = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, 1 - (left + right) / fig_w, 1 - (top + bottom) / fig_h))
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r, row in enumerate(panels):
        y0 = origins[r][0][0]
        ax.text(-pad * 2, y0 + height / 2, row_labels[r], ha="right", va="center", fontsize=8)
        for c, panel in enumerate(row):
            y, x = origins[r][c]
            if panel.cell is not None and panel.rgb is not None:
                cell, n = panel.cell
                ch, cw = height / n, width / n
                cr, cc = divmod(cell, n)
                ax.add_patch(Rectangle((x + cc * cw - 0.5, y + cr * ch - 0.5), cw, ch, fill=False,
                                       edgecolor=TARGET_EDGE, linewidth=1.2))
            if panel.caption:
                ax.text(x + 1, y + 1, panel.caption, ha="left", va="top", fontsize=6,
                        bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0})
            if panel.note:
                ax.text(x + width / 2, y + height / 2, panel.note, ha="center", va="center", fontsize=8, color="grey")
    for c, text in enumerate(column_titles):
        ax.text(origins[0][c][1] + width / 2, -pad, text, ha="center", va="bottom", fontsize=8)
    if colorbar:
        cax = fig.add_axes((1 - 1.05 / fig_w, 0.25, 0.15 / fig_w, 0.5))
        fig.colorbar(ScalarMappable(Normalize(-1, 1), RDWHGN), cax=cax, label=colorbar)
    if title:
        fig.suptitle(title, y=1 - 0.15 / fig_h, va="top")
    return fig


def aggatt_figure(rows: Sequence[tuple[str, AggAtt]], title: str = "") -> Figure:
    """Rows = methods (label, AggAtt), columns = bins: the mean maps on each method's common scale (§3.6),
    RDWHGN colormap on [−1, 1], the target cell outlined in blue; empty bins say so."""
    if not rows:
        raise ValueError("expected at least one (label, AggAtt) row, got none")
    bins = rows[0][1].bins
    panels = []
    for _, a in rows:
        shown = a.normalised()
        panels.append([Panel(None, note="empty bin") if b.empty else Panel(_rgb(shown[j], RDWHGN, -1, 1), cell=(a.cell, a.n))
                       for j, b in enumerate(a.bins)])
    titles = [f"{b.label}\n(N={b.size})" for b in bins]
    return image_grid(panels, [label for label, _ in rows], titles, title, colorbar="mean map / method scale")


def aggatt_examples_figure(rows: Sequence[tuple[str, AggAtt, Examples]], title: str = "") -> Figure:
    """For each method two rows: the grid image (grey) and its map at each bin's median position (§3.7),
    each map on its own 99.5th-percentile scale; captions give the grid index, the target cell's class name
    (when the run has class names) and its score."""
    if not rows:
        raise ValueError("expected at least one (label, AggAtt, Examples) row, got none")
    panels, labels = [], []
    for label, a, ex in rows:
        images, maps = [], []
        for j, b in enumerate(a.bins):
            if ex.images[j] is None:
                images.append(Panel(None, note="empty bin"))
                maps.append(Panel(None))
                continue
            name = ex.classes[j] if j < len(ex.classes) and ex.classes[j] else ""
            caption = f"grid {ex.grids[j]}" + (f", {name}" if name else "") + f", L={ex.scores[j]:.2f}"
            images.append(Panel(_grey(ex.images[j]), caption, cell=(a.cell, a.n)))
            maps.append(Panel(_rgb(normalise(ex.maps[j]), RDWHGN, -1, 1), cell=(a.cell, a.n)))
        panels += [images, maps]
        labels += [f"{label}\nimage", f"{label}\nmap"]
    titles = [f"{b.label}" for b in rows[0][1].bins]
    return image_grid(panels, labels, titles, title, colorbar="map / its own scale", group_rows=2)


# --------------------------------------------------------------------------------------------------
# (4) Smoothing curves (PAPER.md §6.1, Fig. 5)


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
    colours = {m: CURVE_COLOURS.get(m, OTHER_COLOURS[i % len(OTHER_COLOURS)])
               for i, m in enumerate(method_order(curve["method"].unique()))}
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
                ax.axhline(ref["median"], color="black", linestyle="--", linewidth=1,
                           label=f"{method_display(ref['method'])} ({ref['layer']})")
            for _, sg in panel[(panel["role"] == "smoothgrad") & (panel["layer"] == layer)].iterrows():
                ax.axhline(sg["median"], color="purple", linestyle=":", linewidth=1.2, label=method_display(sg["method"]))
            if n:
                ax.axhline(1 / (n * n), color="grey", linestyle="--", linewidth=0.6)
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{setting_display(setting)} · {layer}", fontsize=9)
            if j == 0:
                ax.set_ylabel("median localization")
            if i == len(layers) - 1:
                ax.set_xlabel("kernel size (at 448 px)")
            ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------------
# (5, 6) Correlations (PAPER.md §6.2)


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
                ax.text(b, a, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(value) > 0.6 else "black")
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
    ax.set_title(title or "Spearman ρ: Grad-CAM (final) vs S-IntGrad / S-IxG (input), GridPG", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------------
# (7) SmoothGrad noise sweep (PAPER.md §6.3, Figs. 26–27)


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
    panels = sorted(swept if len(swept) else levels.index,
                    key=lambda p: (_position(p[0], SETTING_ORDER), _position(p[1], LAYER_ORDER)))
    fig = new_figure(0.8 + 3.2 * len(panels), 0.7 + 2.6 * len(bases))
    axes = fig.subplots(len(bases), len(panels), squeeze=False, sharey=True)
    for i, base in enumerate(bases):
        colour = CURVE_COLOURS.get(base, OTHER_COLOURS[i % len(OTHER_COLOURS)])
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
                ax.plot(100 * best["noise_level"], best["median"], marker="*", markersize=14, color="gold",
                        markeredgecolor="black", linestyle="none", label="best noise level")
                for _, b in best.iterrows():
                    ax.annotate(f"{b['median']:.2f}", (100 * b["noise_level"], b["median"]), textcoords="offset points",
                                xytext=(0, 8), ha="center", fontsize=7)
            for role, style, label in (("smoothed", "--", f"S-{name} K=129"), ("unsmoothed", ":", name)):
                for _, ref in here[here["role"] == role].iterrows():
                    ax.axhline(ref["median"], color=colour, linestyle=style, linewidth=1.2, label=label)
            if n:
                ax.axhline(1 / (n * n), color="grey", linestyle="--", linewidth=0.6)
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlim(left=0)
            ax.set_title(f"{setting_display(setting)} · {layer}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{name}\nmedian localization")
            if i == len(bases) - 1:
                ax.set_xlabel("SmoothGrad noise level σ (% of input range)")
            ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def _position(value: str, order: Sequence[str]) -> int:
    return order.index(value) if value in order else len(order)


# --------------------------------------------------------------------------------------------------
# (8) Computational cost (PAPER.md §7)

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
    width = 0.8 / len(layers)
    for i, (metric, label) in enumerate(COST_METRICS):
        for j, setting in enumerate(settings):
            ax = axes[i, j]
            for li, layer in enumerate(layers):
                xs, heights = [], []
                for k, method in enumerate(methods):
                    row = values.get((setting, method, layer))
                    if row is not None and getattr(row, metric) > 0:
                        xs.append(k + (li - (len(layers) - 1) / 2) * width)
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
    handles = [Patch(facecolor=layer_colour(x, layers), label=x) for x in layers]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(layers), title="layer", fontsize=8)
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
    labels, colours, data = [], [], {m: [] for m, _ in COST_METRICS}
    for (setting, layer, base), group in groups:
        for r in group.itertuples(index=False):
            name = method_display(base)
            text = {"base": name, "smoothed": f"S-{name} (K=129)"}.get(r.kind, f"SmoothGrad σ={100 * r.noise_level:g}%")
            labels.append(f"{setting_display(setting)} · {layer}: {text}")
            colours.append(kind_colour[r.kind])
            for metric, _ in COST_METRICS:
                data[metric].append(float(getattr(r, metric)))
    fig = new_figure(10, 1.2 + 0.22 * len(labels))
    axes = fig.subplots(1, len(COST_METRICS), sharey=True, squeeze=False)[0]
    ys = np.arange(len(labels))[::-1]
    for ax, (metric, label) in zip(axes, COST_METRICS):
        values = np.asarray(data[metric])
        ax.barh(ys, np.where(values > 0, values, np.nan), color=colours)
        _plain_log(ax.xaxis)
        ax.set_xlabel(label)
        ax.grid(axis="x", linewidth=0.4, alpha=0.5)
    axes[0].set_yticks(ys, labels, fontsize=7)
    handles = [Patch(facecolor=c, label=k) for k, c in
               (("base method", kind_colour["base"]), ("S-method: base + 1 Gaussian convolution", kind_colour["smoothed"]),
                ("SmoothGrad (num_samples noisy copies of the base)", kind_colour["smoothgrad"]))]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(f"{model}: smoothing vs SmoothGrad, cost per grid image")
    return fig
