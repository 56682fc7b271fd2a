"""RISE builds its masks a chunk at a time (issue 24 §3): the same masks and maps as building all M at once
(the algorithm before the change, copied here as the reference), and no mask cache outlives the call."""

from __future__ import annotations

import gc
import math

import torch
from torch import Tensor, nn

import attreval
from attreval.methods.perturbation import MaskDraws, upsampling_rows
from attreval.models.staged import StagedModel


def masks_all_at_once(height: int, width: int, num_masks: int, grid_size: int, keep_prob: float, seed: int) -> Tensor:
    """The pre-chunking ``rise_masks``: every draw, then every mask in one batched product."""
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand(num_masks, grid_size, grid_size, generator=generator) < keep_prob).float()
    shift_h = torch.randint(0, math.ceil(height / grid_size), (num_masks,), generator=generator)
    shift_w = torch.randint(0, math.ceil(width / grid_size), (num_masks,), generator=generator)
    rows = upsampling_rows(height, grid_size, shift_h)
    cols = upsampling_rows(width, grid_size, shift_w)
    return rows @ grids @ cols.transpose(1, 2)


def model() -> StagedModel:
    torch.manual_seed(0)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    return StagedModel((("a", nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()),), head, head)


def maps_all_at_once(staged: StagedModel, images: Tensor, targets: Tensor, num_masks: int, seed: int) -> Tensor:
    """The pre-chunking RISE on GridPG at the input: every masked copy, then one weighted sum of all masks."""
    masks = masks_all_at_once(*images.shape[-2:], num_masks, 6, 0.1, seed)
    with torch.no_grad():
        probs = torch.stack(
            [staged.cell_head(staged.run(images[b] * masks[:, None])).softmax(-1)[:, targets[b]] for b in range(images.shape[0])]
        )
    return torch.einsum("bmt,mhw->bthw", probs, masks) / (num_masks * 0.1)


def test_masks_are_the_same_whatever_chunk_builds_them():
    ref = masks_all_at_once(30, 22, 50, 6, 0.1, 4)
    draws = MaskDraws.draw(30, 22, 50, 6, 0.1, 4)
    assert torch.equal(draws.masks(slice(0, 50)), ref)
    pieces = torch.cat([draws.masks(slice(start, min(start + 7, 50))) for start in range(0, 50, 7)])
    assert torch.equal(pieces, ref)


def test_chunked_maps_equal_the_all_at_once_algorithm_for_every_chunk_size():
    net = model()
    images = torch.randn(2, 3, 24, 24)
    targets = torch.tensor([[1, 3], [0, 0]])
    ref = maps_all_at_once(net, images, targets, 60, seed=2)
    results = [attreval.attribute(net, images, targets, "rise", num_masks=60, seed=2, chunk_size=size) for size in (2, 16, 500)]
    scale = float(ref.abs().max())
    for got in results:
        assert got.shape == ref.shape and scale > 0
        # the reduction over masks is summed per chunk (in float64) instead of in one float32 product
        assert float((got - ref).abs().max()) <= 1e-6 * scale
    assert float((results[0] - results[2]).abs().max()) <= 1e-7 * scale


def test_no_mask_tensor_survives_the_call():
    net = model()
    images = torch.randn(1, 3, 40, 40)
    attreval.attribute(net, images, torch.tensor([[1]]), "rise", num_masks=40, chunk_size=8)
    gc.collect()
    big = [t for t in gc.get_objects() if type(t) is Tensor and t.dim() == 3 and tuple(t.shape[-2:]) == (40, 40)]
    assert big == []


def test_the_weighted_sum_is_the_exact_sum_rounded_once_for_every_chunk_size():
    """Issue 24 §3 asked for maps bit-identical to the one float32 product used before chunking. That product's
    bits are its BLAS kernel's summation order over all M masks at once, which a sum over chunks cannot
    reproduce without holding all M masks (the memory the change removes). What the float64 sum per chunk
    gives instead is well defined: the exact weighted sum rounded once to float32, bit for bit, whatever
    the chunk size, and never further from the exact value than the old product."""
    from test_methods_perturbation import constant_task  # a model that ignores its input: fixed probabilities

    logits = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    masks = MaskDraws.draw(12, 10, 300, 6, 0.1, 0).masks(slice(0, 300))
    task = constant_task(logits)
    probs = logits.softmax(-1)[task.heads[None], task.classes]  # (B, T)
    exact = probs.double()[:, :, None, None] * masks.double().sum(0) / (300 * 0.1)
    for chunk in (1, 7, 64, 600):
        got = attreval.methods.perturbation.RISE(num_masks=300)(constant_task(logits, chunk_size=chunk))
        assert torch.equal(got, exact.float())
    weights = probs[:, None, :].expand(-1, 300, -1)  # (B, M, T) as the old code held them
    old = torch.einsum("bmt,mhw->bthw", weights, masks) / (300 * 0.1)
    assert float((exact.float().double() - exact).abs().max()) <= float((old.double() - exact).abs().max())
