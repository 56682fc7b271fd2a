"""AggAtt: aggregate attribution maps over percentile bins of the localization score (PAPER.md §3).

For one grid position (the top-left cell by default), every map is smoothed (optional, at its native
resolution, §6.1), bilinearly upsampled to the grid image and clipped to its positive part exactly as the
metric does (§1.5). The maps are sorted by localization score, best first, ties broken by the positive
mass inside the target cell (§3.3), and cut into the bins 0–2, 2–5, 5–50, 50–95, 95–98, 98–100 % of
that order. Each bin's aggregate is the mean of its maps; one colour scale per method covers its bins.

**Bin rounding rule** (the paper's code asserts N·Δ is an integer; we never fail): the boundary at the
fraction ``e`` of N sorted maps is ``floor(N·e + 1/2)``, i.e. N·e rounded half up, computed with exact
fractions. Boundaries never decrease, the first is 0 and the last N, so bins tile the order without gaps
or overlaps. When N·e is an integer (N = 2,000 in the paper) this is the paper's rule exactly. Small N
can make a bin **empty**: its mean map is all-NaN, its example ``None``, and it is left out of the
colour scale; nothing raises.

Memory: maps are read and upsampled in chunks of ``chunk_size``, so N = 2,000 maps of 448² are fine.
The AggAtt of a stored unit of a run (through the run reader) is :mod:`attreval.analysis.aggatt_run`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor

from attreval.metric import cell_masses, score_from_parts, upsample
from attreval.smoothing import smooth_maps

#: The paper's percentile edges (PAPER.md §3.4), as exact fractions.
BIN_EDGES: tuple[Fraction, ...] = tuple(Fraction(p, 100) for p in (0, 2, 5, 50, 95, 98, 100))
#: The percentile of the stacked bin maps that maps to full colour (PAPER.md §3.6), in per mille.
SCALE_PER_MILLE = 995


@dataclass(frozen=True)
class Bin:
    """Positions ``start … end-1`` of the sorted order (best first) that fall into ``lower … upper``."""

    lower: Fraction
    upper: Fraction
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def empty(self) -> bool:
        return self.end <= self.start

    @property
    def label(self) -> str:
        """``"0–2%"``."""
        return f"{_percent(self.lower)}–{_percent(self.upper)}%"

    @property
    def median(self) -> int | None:
        """The bin's median position ``(start + end) // 2`` (PAPER.md §3.7), ``None`` when empty."""
        return None if self.empty else (self.start + self.end) // 2


def _percent(fraction: Fraction) -> str:
    value = fraction * 100
    return str(int(value)) if value.denominator == 1 else f"{float(value):g}"


def bin_bounds(count: int, edges: Sequence[Fraction | float] = BIN_EDGES) -> tuple[Bin, ...]:
    """Bins of ``count`` sorted maps between consecutive ``edges`` (fractions of ``count``).

    Boundary ``k`` is ``floor(count · edges[k] + 1/2)`` in exact arithmetic (round half up); see the module
    docstring. Floats are read by their decimal text (``0.02`` is 2/100, not the nearest binary double).

    >>> [b.size for b in bin_bounds(2000)]
    [40, 60, 900, 900, 60, 40]
    >>> [b.size for b in bin_bounds(96)]
    [2, 3, 43, 43, 3, 2]
    >>> [b.size for b in bin_bounds(10)]
    [0, 1, 4, 5, 0, 0]
    """
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 0:
        raise ValueError(f"expected a non-negative integer count, got {count!r}")
    fractions = [e if isinstance(e, Fraction) else Fraction(str(e)) for e in edges]
    if len(fractions) < 2 or fractions[0] != 0 or fractions[-1] != 1 or any(b < a for a, b in zip(fractions, fractions[1:], strict=False)):
        raise ValueError(f"expected non-decreasing edges from 0 to 1, got {[float(e) for e in fractions]}")
    bounds = [math.floor(count * e + Fraction(1, 2)) for e in fractions]
    return tuple(Bin(lo, hi, a, b) for lo, hi, a, b in zip(fractions, fractions[1:], bounds, bounds[1:], strict=False))


def sort_order(scores: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Sample indices by descending score, ties by descending inside mass, then by index (stable).

    >>> sort_order(np.array([1.0, 0.5, 1.0]), np.array([2.0, 9.0, 3.0])).tolist()
    [2, 0, 1]
    """
    scores, inside = np.asarray(scores, dtype=np.float64), np.asarray(inside, dtype=np.float64)
    if scores.shape != inside.shape or scores.ndim != 1:
        raise ValueError(f"expected 1-D scores and inside of equal length, got {scores.shape} and {inside.shape}")
    return np.lexsort((-inside, -scores))  # last key is primary; lexsort is stable


def colour_scale(bin_maps: np.ndarray) -> float:
    """The common colour scale of a method's bin maps (PAPER.md §3.6).

    All finite values of the stacked maps, as absolute values (= the values for positive maps), sorted;
    the value at index ``len · 995 // 1000`` (the code's ``sorted[int(len · 0.995)]``, in integer
    arithmetic). Returns 1.0 when that value is 0 or there are no values, so all-zero or all-empty bins
    display as zero instead of dividing by zero.

    >>> colour_scale(np.arange(1000.0).reshape(2, 10, 50))
    995.0
    """
    values = np.abs(np.asarray(bin_maps, dtype=np.float64))
    values = np.sort(values[np.isfinite(values)])
    if values.size == 0:
        return 1.0
    scale = float(values[min(values.size * SCALE_PER_MILLE // 1000, values.size - 1)])
    return scale if scale > 0 else 1.0


def normalise(maps: np.ndarray, scale: float | None = None) -> np.ndarray:
    """``maps / scale`` clipped to [−1, 1]; ``scale`` defaults to :func:`colour_scale` of ``maps`` itself
    (how each AggAtt example is normalised, §3.7). NaN stays NaN."""
    scale = colour_scale(maps) if scale is None else scale
    return np.clip(np.asarray(maps, dtype=np.float32) / np.float32(scale), -1.0, 1.0)


def example_positions(bin_: Bin, count: int = 1) -> list[int]:
    """Up to ``count`` positions of a bin: the median, then alternately +1, −1, +2, −2, … (§3.7).

    >>> example_positions(Bin(Fraction(0), Fraction(1), 0, 10), 4)
    [5, 6, 4, 7]
    """
    if bin_.empty:
        return []
    median = (bin_.start + bin_.end) // 2  # Bin.median of a non-empty bin
    out, step = [median], 1
    while len(out) < min(count, bin_.size):
        for pos in (median + step, median - step):
            if bin_.start <= pos < bin_.end and len(out) < count:
                out.append(pos)
        step += 1
    return out


@dataclass(frozen=True, eq=False)
class AggAtt:
    """The AggAtt of one method (and layer/setting) for one grid position.

    Attributes:
        bins: the bins, in percentile order (best first).
        maps: ``(len(bins), H, W)`` float32 mean maps at the grid image resolution (positive part unless
            ``signed``); all-NaN for an empty bin.
        scale: the method's colour scale (:func:`colour_scale` of ``maps``).
        order: ``(N,)`` sample indices, best first.
        scores, inside: ``(N,)`` float32 localization scores and inside masses, in sample order.
        examples: per bin, the sample index at the bin's median position, ``None`` when empty.
        n, cell: grid size and the target cell.
        signed: whether ``maps`` are means of the signed maps (PAPER.md Fig. 7 variant).
    """

    bins: tuple[Bin, ...]
    maps: np.ndarray
    scale: float
    order: np.ndarray
    scores: np.ndarray
    inside: np.ndarray
    examples: tuple[int | None, ...]
    n: int
    cell: int
    signed: bool = False

    def normalised(self) -> np.ndarray:
        """``maps`` divided by the common scale, clipped to [−1, 1] (what the figure shows)."""
        return normalise(self.maps, self.scale)

    def samples(self, bin_index: int) -> np.ndarray:
        """Sample indices in bin ``bin_index``, best first."""
        b = self.bins[bin_index]
        return self.order[b.start : b.end]


def prepare_maps(maps: Tensor | np.ndarray, size: tuple[int, int] | None, kernel_size: int = 0, signed: bool = False) -> Tensor:
    """``(N, h, w)`` maps → ``(N, H, W)`` float32: smoothed at native resolution (``kernel_size`` > 0),
    bilinearly upsampled to ``size``, then clipped to the positive part unless ``signed`` (§1.5, §6.1)."""
    x = maps.float() if isinstance(maps, Tensor) else torch.from_numpy(np.array(maps, dtype=np.float32))  # a copy: memmaps are read-only
    if x.dim() != 3:
        raise ValueError(f"expected maps of shape (N, h, w), got {tuple(x.shape)}")
    x = x[:, None]
    if kernel_size:
        x = smooth_maps(x, int(kernel_size))
    x = upsample(x, size)[:, 0]
    return x if signed else x.clamp(min=0)


def localization_of(
    maps: Tensor | np.ndarray, n: int, cell: int, size: tuple[int, int] | None = None, kernel_size: int = 0, chunk_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and inside masses ``(N,)`` float32 of ``(N, h, w)`` maps for ``cell``, as the metric computes them."""
    scores, inside = [], []
    for start in range(0, len(maps), chunk_size):
        masses = cell_masses(prepare_maps(maps[start : start + chunk_size], size, kernel_size)[:, None], n)[:, 0]
        inside.append(masses[:, cell])
        scores.append(score_from_parts(masses[:, cell], masses.sum(dim=1)))
    if not scores:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return torch.cat(scores).numpy(), torch.cat(inside).numpy()


def aggatt(
    maps: Tensor | np.ndarray,
    n: int,
    cell: int = 0,
    size: tuple[int, int] | None = None,
    *,
    kernel_size: int = 0,
    scores: np.ndarray | None = None,
    inside: np.ndarray | None = None,
    signed: bool = False,
    edges: Sequence[Fraction | float] = BIN_EDGES,
    chunk_size: int = 256,
) -> AggAtt:
    """AggAtt of ``(N, h, w)`` maps of one target cell (PAPER.md §3).

    Args:
        maps: the unsmoothed, signed maps at native resolution (a float16 memmap is fine; read in chunks).
        n: grid size; cell: the target cell (row-major); size: grid image size to upsample to
            (``None`` = the maps' own size).
        kernel_size: Gaussian smoothing in map pixels (0 = none), applied before upsampling.
        scores, inside: the stored per-map localization scores and inside masses (``(N,)``) to sort by;
            computed from ``maps`` when omitted.
        signed: average the signed maps instead of their positive parts (the sort is unchanged).
        edges: bin edges as fractions of N (default the paper's).

    Returns:
        An :class:`AggAtt`.
    """
    if not 0 <= cell < n * n:
        raise ValueError(f"expected a cell in [0, {n * n - 1}], got {cell}")
    count = len(maps)
    if (scores is None) != (inside is None):
        raise ValueError("expected both scores and inside, or neither")
    if scores is None:
        scores, inside = localization_of(maps, n, cell, size, kernel_size, chunk_size)
    scores, inside = np.asarray(scores, np.float32), np.asarray(inside, np.float32)
    if scores.shape != (count,) or inside.shape != (count,):
        raise ValueError(f"expected {count} scores and inside masses (one per map), got shapes {scores.shape} and {inside.shape}")
    order = sort_order(scores, inside)
    bins = bin_bounds(count, edges)
    position_bin = np.repeat(np.arange(len(bins)), [b.size for b in bins])
    sample_bin = np.empty(count, dtype=np.int64)
    sample_bin[order] = position_bin
    height, width = size if size is not None else tuple(np.shape(maps)[-2:])
    sums = torch.zeros(len(bins), height * width)
    for start in range(0, count, chunk_size):
        chunk = prepare_maps(maps[start : start + chunk_size], size, kernel_size, signed).flatten(1)
        member = torch.nn.functional.one_hot(torch.from_numpy(sample_bin[start : start + chunk_size]), len(bins))
        sums += member.float().T @ chunk  # (bins, chunk) @ (chunk, H·W): per-bin sums in one BLAS call
    sizes = torch.tensor([b.size for b in bins], dtype=torch.float32)
    means = (sums.view(len(bins), height, width) / sizes.clamp(min=1)[:, None, None]).numpy()
    means[[b.empty for b in bins]] = np.nan
    examples = tuple(None if b.empty else int(order[b.median]) for b in bins)
    return AggAtt(bins, means, colour_scale(means), order, scores, inside, examples, n, cell, signed)
