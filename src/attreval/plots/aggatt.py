"""AggAtt figures (PAPER.md §3.6–3.7): panels are pasted into one RGB mosaic on a single Axes (one Axes per
panel costs ~100× more to lay out and draw with 10+ methods × 6 bins), labelled and outlined in data
coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from attreval.analysis.aggatt import AggAtt, normalise
from attreval.plots.style import RDWHGN, TARGET_EDGE

if TYPE_CHECKING:
    from attreval.analysis.aggatt_run import Examples

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


def image_grid(
    panels: Sequence[Sequence[Panel]],
    row_labels: Sequence[str],
    column_titles: Sequence[str],
    title: str = "",
    colorbar: str = "",
    group_rows: int = 1,
) -> Figure:
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
                mosaic[y : y + height, x : x + width] = np.round(np.clip(panel.rgb, 0, 1) * 255).astype(np.uint8)
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
                ax.add_patch(Rectangle((x + cc * cw - 0.5, y + cr * ch - 0.5), cw, ch, fill=False, edgecolor=TARGET_EDGE, linewidth=1.2))
            if panel.caption:
                ax.text(
                    x + 1,
                    y + 1,
                    panel.caption,
                    ha="left",
                    va="top",
                    fontsize=6,
                    bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "linewidth": 0},
                )
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
        panels.append(
            [
                Panel(None, note="empty bin") if b.empty else Panel(_rgb(shown[j], RDWHGN, -1, 1), cell=(a.cell, a.n))
                for j, b in enumerate(a.bins)
            ]
        )
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
        for j, _b in enumerate(a.bins):
            image, shown = ex.images[j], ex.maps[j]
            if image is None or shown is None:
                images.append(Panel(None, note="empty bin"))
                maps.append(Panel(None))
                continue
            name = ex.classes[j] if j < len(ex.classes) and ex.classes[j] else ""
            caption = f"grid {ex.grids[j]}" + (f", {name}" if name else "") + f", L={ex.scores[j]:.2f}"
            images.append(Panel(_grey(image), caption, cell=(a.cell, a.n)))
            maps.append(Panel(_rgb(normalise(shown), RDWHGN, -1, 1), cell=(a.cell, a.n)))
        panels += [images, maps]
        labels += [f"{label}\nimage", f"{label}\nmap"]
    titles = [f"{b.label}" for b in rows[0][1].bins]
    return image_grid(panels, labels, titles, title, colorbar="map / its own scale", group_rows=2)
