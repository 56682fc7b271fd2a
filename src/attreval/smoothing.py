"""Gaussian smoothing of attribution maps (PAPER.md §6.1): S-IntGrad, S-IxG.

Smoothing acts on the **signed, channel-summed** map at the layer's **native resolution**, before
bilinear upsampling and before clipping to the positive part (the order inferred in §6.1). The kernel is
a Gaussian of size K with σ = K/4, applied as two 1-D convolutions (separable), 'same' output size.
Padding: the paper does not say (§6.1 [NOT RECOVERED]); we pad with **zeros**, so mass near the map
border leaks out and a map is never reflected into itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from attreval.validation import positive_int

PAPER_KERNEL_SIZES = (9, 17, 33, 65, 129, 257)


def gaussian_kernel1d(
    kernel_size: int,
    sigma: float | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """A normalised 1-D Gaussian of ``kernel_size`` taps centred on the middle tap: ``(K,)``, sums to 1.

    Args:
        kernel_size: K ≥ 0; 0 and 1 give ``[1.]`` (the identity).
        sigma: standard deviation in taps; default ``K / 4`` (PAPER.md §6.1).

    >>> gaussian_kernel1d(5, sigma=1.0).round(decimals=4)
    tensor([0.0545, 0.2442, 0.4026, 0.2442, 0.0545])
    >>> gaussian_kernel1d(1)
    tensor([1.])
    """
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 0:
        raise ValueError(f"expected a non-negative integer kernel_size, got {kernel_size!r}")
    if kernel_size <= 1:
        return torch.ones(1, dtype=dtype, device=device)
    sigma = kernel_size / 4 if sigma is None else sigma
    if not sigma > 0:
        raise ValueError(f"expected a positive sigma, got {sigma!r}")
    taps = torch.arange(kernel_size, dtype=torch.float64, device=device) - (kernel_size - 1) / 2
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def smooth_maps(maps: Tensor, kernel_size: int, sigma: float | None = None) -> Tensor:
    """Gaussian-smooth every map: ``(B, T, h, w) → (B, T, h, w)``, same dtype and device.

    A separable, zero-padded 'same' convolution (rows, then columns) with :func:`gaussian_kernel1d`.
    Signs are kept. Kernels larger than the map are fine (the padding is zeros). K = 0 or 1 returns the
    maps unchanged (a copy). An even K pads one more zero after than before (PyTorch's ``'same'``).

    Args:
        maps: ``(B, T, h, w)`` floating-point attribution maps at their native resolution.
        kernel_size: K; the paper sweeps 9 … 257 on 448² maps (see :func:`scaled_kernel_sizes`).
        sigma: default ``K / 4`` (PAPER.md §6.1).
    """
    if not isinstance(maps, Tensor) or maps.dim() != 4 or not maps.is_floating_point():
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"expected floating-point maps of shape (B, T, h, w), got {shape}")
    kernel = gaussian_kernel1d(kernel_size, sigma, dtype=maps.dtype, device=maps.device)
    if kernel.numel() == 1:
        return maps.clone()
    before, after = (kernel.numel() - 1) // 2, kernel.numel() // 2
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    flat = F.conv2d(F.pad(flat, (0, 0, before, after)), kernel.view(1, 1, -1, 1))  # along rows
    flat = F.conv2d(F.pad(flat, (before, after, 0, 0)), kernel.view(1, 1, 1, -1))  # along columns
    return flat.view(maps.shape)


def smoothing_matrix(side: int, kernel_size: int, sigma: float | None = None, *, dtype=torch.float32, device=None) -> Tensor:
    """``(side, side)`` matrix S with ``S @ v`` = :func:`smooth_maps`'s zero-padded 'same' 1-D smoothing of ``v``:
    row i holds the kernel's taps ``S[i, i + j - before] = kernel[j]`` (taps falling outside are the zero padding).
    """
    kernel = gaussian_kernel1d(kernel_size, sigma, dtype=torch.float64, device=device)
    before = (kernel.numel() - 1) // 2
    offset = torch.arange(side, device=device)[None, :] - torch.arange(side, device=device)[:, None] + before  # tap index
    valid = (offset >= 0) & (offset < kernel.numel())
    return torch.where(valid, kernel[offset.clamp(0, kernel.numel() - 1)], torch.zeros((), dtype=torch.float64, device=device)).to(dtype)


def smooth_sweep(maps: Tensor, kernel_sizes: Sequence[int]) -> Tensor:
    """Every kernel of a sweep at once: ``(B, T, h, w) → (V, B, T, h, w)``, variant v smoothed with
    ``kernel_sizes[v]`` (0 or 1: the maps themselves), equal to :func:`smooth_maps` per kernel up to float rounding.

    One batched product ``S_v @ map @ S_vᵀ`` with the banded matrices of :func:`smoothing_matrix`, instead
    of two convolutions and their padded copies per kernel: the run scores all six of the paper's kernels per batch.
    """
    if not isinstance(maps, Tensor) or maps.dim() != 4 or not maps.is_floating_point():
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"expected floating-point maps of shape (B, T, h, w), got {shape}")
    h, w = maps.shape[-2:]
    rows = _sweep_matrices(h, tuple(kernel_sizes), maps.dtype, maps.device)  # (V, h, h)
    cols = _sweep_matrices(w, tuple(kernel_sizes), maps.dtype, maps.device)  # (V, w, w)
    out = torch.einsum("vij,btjk,vlk->vbtil", rows, maps, cols)
    identity = torch.tensor([k <= 1 for k in kernel_sizes], device=maps.device)
    return torch.where(identity[:, None, None, None, None], maps[None], out)


@functools.lru_cache(maxsize=32)
def _sweep_matrices(side: int, kernel_sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """The stacked :func:`smoothing_matrix` of every kernel, cached (a run smooths every batch with the same sweep;
    a few KB each). Never modified by callers."""
    return torch.stack([smoothing_matrix(side, k, dtype=dtype, device=device) for k in kernel_sizes])


def scaled_kernel_sizes(map_side: int, reference_side: int = 448, sizes: Sequence[int] = PAPER_KERNEL_SIZES) -> list[int]:
    """The paper's kernel sweep, rescaled from ``reference_side``-pixel maps to ``map_side``-pixel maps.

    Rule: ``K' = the odd integer nearest to K · map_side / reference_side`` (``2·⌊v/2⌋ + 1``, so a value
    exactly at an even integer rounds up; at least 1), duplicates dropped, order kept. The paper's sweep
    K ∈ {9, 17, 33, 65, 129, 257} is for 448² input maps (§6.1); its qualitative sizes 129 (input),
    17 (56² middle), 9 (28² final) follow the same rule. K' = 1 is the identity.

    >>> scaled_kernel_sizes(448)
    [9, 17, 33, 65, 129, 257]
    >>> scaled_kernel_sizes(56)
    [1, 3, 5, 9, 17, 33]
    >>> scaled_kernel_sizes(28)
    [1, 3, 5, 9, 17]
    """
    positive_int("map_side", map_side)
    positive_int("reference_side", reference_side)
    return list(dict.fromkeys(scaled_kernel_size(size, map_side, reference_side) for size in sizes))


def scaled_kernel_size(size: int, map_side: int, reference_side: int = 448) -> int:
    """One kernel size of :func:`scaled_kernel_sizes`: the odd integer nearest to ``size · map_side / reference_side``.

    >>> scaled_kernel_size(129, 56)
    17
    """
    return 2 * math.floor(size * map_side / reference_side / 2) + 1
