"""Changed regions: :class:`Patch` (clean activations + one rectangle per window) and :func:`read`, the one
primitive every rule uses (see :mod:`attreval.cone`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Patch:
    """B examples × P windows of a ``(C, H, W)`` map, equal to ``base`` outside one rectangle per window.

    Attributes:
        base: ``(B, C, H, W)`` the clean activations (shared, never modified).
        values: ``(B, P, C, h, w)`` the patched values on each window's rectangle.
        top, left: ``(P,)`` long, the rectangle's first row and column (inside the map, unless ``overhangs``).
        overhangs: the rectangles may reach outside the map (only ever read, never propagated).
    """

    base: Tensor
    values: Tensor
    top: Tensor
    left: Tensor
    overhangs: bool = False

    @property
    def size(self) -> tuple[int, int]:
        return self.values.shape[-2], self.values.shape[-1]

    @property
    def windows(self) -> int:
        return self.values.shape[1]

    @property
    def full(self) -> bool:
        """Whether the rectangle is the whole map (then every window's offset is 0)."""
        return self.size == tuple(self.base.shape[-2:]) and not self.overhangs

    def dense(self) -> Tensor:
        """The patched tensors ``(B·P, C, H, W)``."""
        if self.full:
            return self.values.flatten(0, 1)
        zero = torch.zeros_like(self.top)
        return read(self, zero, zero, (self.base.shape[-2], self.base.shape[-1]), 0.0).flatten(0, 1)


@dataclass(frozen=True)
class Dense:
    """B examples × P windows materialised in full: ``values (B·P, …)`` (after a module without a rule)."""

    values: Tensor
    windows: int

    def dense(self) -> Tensor:
        return self.values


Value = Union[Patch, Dense]  # noqa: UP007 - a runtime alias, evaluated on Python 3.10


def read(patch: Patch, top: Tensor, left: Tensor, size: tuple[int, int], pad: float) -> Tensor:
    """The patched tensor on rectangle ``[top, top+sh) × [left, left+sw)`` of every window: ``(B, P, C, sh, sw)``.

    ``top, left (P,)`` may reach outside the map; those positions read ``pad`` (the next operator's padding
    value). Inside the map a position reads the window's patched value if it lies in the patch's rectangle,
    else the clean ``base``: two index gathers and two selects, no loop over windows.
    """
    base, values = patch.base, patch.values
    b, c, height, width = base.shape
    p, (h, w), (sh, sw) = patch.windows, patch.size, size
    rows = top[:, None] + torch.arange(sh, device=top.device)  # (P, sh)
    cols = left[:, None] + torch.arange(sw, device=top.device)  # (P, sw)
    if patch.full:
        # the patch is the whole map: pad it once and take each window's rectangle
        if bool((top == top[0]).all()) and bool((left == left[0]).all()):
            t, l_ = int(top[0]), int(left[0])
            margin = (max(-l_, 0), max(l_ + sw - width, 0), max(-t, 0), max(t + sh - height, 0))
            padded = F.pad(values.flatten(0, 1), margin, value=pad) if any(margin) else values.flatten(0, 1)
            y0, x0 = t + margin[2], l_ + margin[0]
            return padded[..., y0 : y0 + sh, x0 : x0 + sw].unflatten(0, (b, p))
    clean, inside = gather(base, rows, cols)
    r = rows - patch.top[:, None]
    q = cols - patch.left[:, None]
    in_patch = ((r >= 0) & (r < h))[:, :, None] & ((q >= 0) & (q < w))[:, None, :]  # (P, sh, sw)
    local = (r.clamp(0, h - 1)[:, :, None] * w + q.clamp(0, w - 1)[:, None, :]).reshape(1, p, 1, sh * sw)
    patched = values.flatten(3).gather(3, local.expand(b, p, c, sh * sw)).view(b, p, c, sh, sw)
    out = torch.where(in_patch[None, :, None], patched, clean)
    if inside is not None:
        out = torch.where(inside[None, :, None], out, torch.full((), pad, dtype=out.dtype, device=out.device))
    return out


def gather(base: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor | None]:
    """``base (B, C, H, W)`` at rows ``(P, sh)`` × cols ``(P, sw)`` of each window: ``(B, P, C, sh, sw)``
    (out-of-map positions clamped to the border), and the ``(P, sh, sw)`` in-map mask (``None``: all inside)."""
    b, c, height, width = base.shape
    p, sh, sw = rows.shape[0], rows.shape[1], cols.shape[1]
    flat = (rows.clamp(0, height - 1)[:, :, None] * width + cols.clamp(0, width - 1)[:, None, :]).reshape(-1)
    clean = base.flatten(2).index_select(2, flat).view(b, c, p, sh, sw).transpose(1, 2)
    in_rows = (rows >= 0) & (rows < height)
    in_cols = (cols >= 0) & (cols < width)
    inside = in_rows[:, :, None] & in_cols[:, None, :]
    return clean, (None if bool(inside.all()) else inside)


def occluded_patch(x: Tensor, boxes: Tensor) -> Patch:
    """``x (B, C, H, W)`` with window ``boxes[k] = (top, bottom, left, right)`` (half-open, inside the map) set to 0."""
    height, width = x.shape[-2:]
    boxes = boxes.to(device=x.device, dtype=torch.long)
    h = min(max(int((boxes[:, 1] - boxes[:, 0]).max()), 1), height)
    w = min(max(int((boxes[:, 3] - boxes[:, 2]).max()), 1), width)
    top = boxes[:, 0].clamp(0, height - h)
    left = boxes[:, 2].clamp(0, width - w)
    rows = top[:, None] + torch.arange(h, device=x.device)
    cols = left[:, None] + torch.arange(w, device=x.device)
    values = gather(x, rows, cols)[0]
    hit = ((rows >= boxes[:, :1]) & (rows < boxes[:, 1:2]))[:, :, None] & ((cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:]))[:, None, :]
    values = torch.where(hit[None, :, None], torch.zeros((), dtype=x.dtype, device=x.device), values)
    return Patch(x, values, top, left)


# --------------------------------------------------------------------------------------------------
# Rules. ``clean(a)`` returns the clean output and what ``patch`` needs later (the cache); ``patch(cache, v)``
# maps a Patch/Dense input to the output's.


class Rule:
    """How one module maps a changed region; the base rule runs the module in full (the fallback)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def clean(self, a: Tensor) -> tuple[Tensor, Any]:
        out = self.module(a)
        return out, out

    def patch(self, cache: Any, value: Value) -> Value:  # cache: what this rule's clean() returned
        return Dense(self.module(value.dense()), value.windows)

    def full_rules(self) -> list[Rule]:
        """The rules that ran their module in full (for tests and diagnostics)."""
        return [self] if type(self) is Rule else []
