"""What every figure shares: colours, the figure factory, atomic PNG writing, labels, and the grouped
method × layer layout of the box plots and cost bars. Names and orders come from
:mod:`attreval.analysis.conventions` (re-exported here for the figures and their callers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from attreval.analysis.conventions import (  # noqa: F401 (re-exported: plots.method_display, plots.SETTING_ORDER, …)
    FAMILIES,
    LAYER_ORDER,
    PAPER_KERNEL_REF,
    SETTING_ORDER,
    method_display,
    method_family,
    method_order,
    ordered,
    position,
    setting_display,
)
from attreval.runs.store import atomic_write

LAYER_COLOURS = {"input": "#4c72b0", "middle": "#dd8452", "final": "#55a868"}
OTHER_COLOURS = ("#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")
#: Colours of the smoothed methods' curves, by their rank in a figure (registry order), then the others.
CURVE_COLOURS = ("#4c72b0", "#c44e52", *OTHER_COLOURS)
#: AggAtt colormap (PAPER.md §3.6): red (negative) – white – green (positive), shown on [−1, 1].
RDWHGN = LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"])
TARGET_EDGE = "blue"


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


def layer_colour(layer: str, layers: Sequence[str]) -> str:
    others = [x for x in layers if x not in LAYER_COLOURS]
    return LAYER_COLOURS.get(layer) or OTHER_COLOURS[others.index(layer) % len(OTHER_COLOURS)]


def curve_colours(methods) -> dict[str, str]:
    """A colour per method of a curve figure, by its rank in registry order."""
    return {m: CURVE_COLOURS[i % len(CURVE_COLOURS)] for i, m in enumerate(method_order(methods))}


def evaluation_label(method: str, layer: str, kernel_ref: int = 0) -> str:
    """``"IntGrad · input"``, ``"S-IntGrad K=129 · input"``."""
    name = method_display(method)
    return f"S-{name} K={kernel_ref} · {layer}" if kernel_ref else f"{name} · {layer}"


def infer_n(results: pd.DataFrame) -> int:
    """Grid size from the highest evaluated cell (corner n²−1 is always evaluated when n > 1)."""
    return max(1, math.isqrt(int(results["cell"].max()) + 1)) if len(results) else 1


def layer_offset(index: int, layers: Sequence[str]) -> tuple[float, float]:
    """(offset from the method's tick, width) of the ``index``-th layer's box or bar in a method group."""
    width = 0.8 / len(layers)
    return (index - (len(layers) - 1) / 2) * width, width


def layer_legend(fig: Figure, layers: Sequence[str]) -> None:
    """The layer colour legend under a grouped figure."""
    handles = [Patch(facecolor=layer_colour(x, layers), label=x) for x in layers]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(layers), title="layer", fontsize=8)


def score_panel(ax, title: str, n: int | None, *, ylabel: str = "", xlabel: str = "", legend: str = "best") -> None:
    """Finish a median-localization panel once its lines are drawn: the uniform level 1/n² (when ``n``),
    y in [−0.05, 1.05], a small title, the axis labels that are given, and a legend at ``legend``."""
    if n:
        ax.axhline(1 / (n * n), color="grey", linestyle="--", linewidth=0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    ax.legend(fontsize=7, loc=legend)
