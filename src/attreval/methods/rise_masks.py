"""RISE's masks (PAPER.md §4.3): the seeded draws and their upsample-and-crop, built any slice at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F


def upsampling_rows(size: int, grid_size: int, shifts: Tensor) -> Tensor:
    """Crops of the mirrored-boundary linear upsampling matrix: ``(M, size, s)`` float32, row i of mask m
    weighs the s grid cells.

    The authors' masks use ``skimage.transform.resize(order=1, mode="reflect")``, i.e. ``scipy.ndimage.zoom``
    with ``grid_mode=True`` and scipy's ``"mirror"`` boundary (numpy's ``"reflect"``: ``c b | a b c | b a``,
    the edge cell not repeated). Upsampling an s-cell axis to ``L = (s+1)·⌈size/s⌉`` positions samples it at
    the pixel-centre coordinates ``(j + 0.5)·s/L − 0.5`` (as ``align_corners=False``), which lie in
    ``(−0.5, s − 0.5)``: about the first and last ``L/(2s)`` positions interpolate towards a cell outside the
    grid. Mirroring gives that cell the value of the grid's second (or second-to-last) cell;
    ``F.interpolate`` would clamp to the edge cell instead (numpy's ``"symmetric"``), a different mask in a
    band of half a cell on every border. So: pad the identity by one mirrored cell per side, interpolate
    linearly at those coordinates (float64), and keep rows ``shifts[m] + i`` (the crop of mask m). The
    result is linear in the grid, so a 2-D mask is ``rows_m @ grid_m @ cols_mᵀ``.
    """
    cell = math.ceil(size / grid_size)
    length = (grid_size + 1) * cell
    eye = torch.eye(grid_size, dtype=torch.float64)[None]  # (1, s, s): column k is grid cell k
    # one mirrored cell per side (cell −1 ← cell 1, cell s ← cell s−2); a 1-cell grid mirrors onto itself
    padded = F.pad(eye, (1, 1), mode="reflect" if grid_size > 1 else "replicate")[0]  # (s, s + 2)
    coords = (torch.arange(length, dtype=torch.float64) + 0.5) * (grid_size / length) - 0.5
    low = coords.floor()
    frac = coords - low
    low = low.long() + 1  # index into the padded axis: in [0, s], and low + 1 ≤ s + 1
    matrix = (padded[:, low] * (1 - frac) + padded[:, low + 1] * frac).T  # (L, s)
    return matrix.float()[shifts[:, None] + torch.arange(size)]


@dataclass(frozen=True)
class MaskDraws:
    """The random draws behind M RISE masks for a ``height × width`` map; :meth:`masks` builds any slice of them.

    PAPER.md §4.3: each mask is a binary ``s × s`` grid (cells kept with probability p1), upsampled
    linearly with mirrored borders to ``(s+1)·⌈h/s⌉ × (s+1)·⌈w/s⌉`` — the authors'
    ``skimage.transform.resize(order=1, mode="reflect")``, to float rounding (:func:`upsampling_rows`) — and
    cropped to ``h × w`` at a random shift in ``[0, ⌈h/s⌉) × [0, ⌈w/s⌉)``. All draws come from a CPU
    ``torch.Generator`` seeded with ``seed`` (grids, then row shifts, then column shifts), so masks are
    reproducible and the same on every device. The draws are small (``M·s²`` cells); the full-resolution
    masks (``M·h·w``: 766 MiB for 1,000 at 448²) are only ever built a chunk at a time.

    Attributes:
        height, width: the map's size.
        grids: ``(M, s, s)`` float32 in {0, 1}.
        shift_h, shift_w: ``(M,)`` long crop offsets.
    """

    height: int
    width: int
    grids: Tensor
    shift_h: Tensor
    shift_w: Tensor

    @classmethod
    def draw(cls, height: int, width: int, num_masks: int, grid_size: int, keep_prob: float, seed: int) -> MaskDraws:
        generator = torch.Generator().manual_seed(seed)
        grids = (torch.rand(num_masks, grid_size, grid_size, generator=generator) < keep_prob).float()
        shift_h = torch.randint(0, math.ceil(height / grid_size), (num_masks,), generator=generator)
        shift_w = torch.randint(0, math.ceil(width / grid_size), (num_masks,), generator=generator)
        return cls(height, width, grids, shift_h, shift_w)

    def __len__(self) -> int:
        return self.grids.shape[0]

    def masks(self, part: slice) -> Tensor:
        """Masks ``part``: ``(len(part), h, w)`` float32 on the CPU, one batched product ``rows_m @ grid_m @ cols_mᵀ``
        (without the ``(M, 525, 525)`` temporary at 448²); mask m is the same whatever slice it is built in."""
        s = self.grids.shape[-1]
        rows = upsampling_rows(self.height, s, self.shift_h[part])  # (m, h, s)
        cols = upsampling_rows(self.width, s, self.shift_w[part])  # (m, w, s)
        return rows @ self.grids[part] @ cols.transpose(1, 2)


def rise_masks(height: int, width: int, num_masks: int, grid_size: int, keep_prob: float, seed: int) -> Tensor:
    """All RISE masks for a ``height × width`` map at once: ``(M, h, w)`` float32 on the CPU (for tests and
    plots; :class:`RISE` builds them a chunk at a time, see :class:`MaskDraws`)."""
    draws = MaskDraws.draw(height, width, num_masks, grid_size, keep_prob, seed)
    return draws.masks(slice(0, num_masks))
