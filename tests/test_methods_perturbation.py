"""Occlusion and RISE (PAPER.md §4.3): the patch grid, closed forms on linear / constant models, DiFull."""

from __future__ import annotations

import pytest
import torch

import attreval
from attreval.methods.base import Task
from attreval.methods.perturbation import RISE, Occlusion, interval_masks, patch_intervals, rise_masks
from tiny_models import tiny_model


def linear_task(batch=2, channels=2, height=7, width=9, classes=3, layer="input", seed=0, chunk_size=16):
    """A linear model ``y_k = Σ W_k ⊙ a + b_k`` (one head) and its task for two target classes."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, channels, height, width, generator=g, dtype=torch.float64)
    bias = torch.randn(classes, generator=g, dtype=torch.float64)

    def forward(a):
        return (torch.einsum("nchw,kchw->nk", a, weight) + bias)[:, None, :]

    x = torch.randn(batch, channels, height, width, generator=g, dtype=torch.float64)
    targets = torch.randint(0, classes, (batch, 2), generator=g)
    task = Task(forward, x, torch.zeros(2, dtype=torch.long), targets, layer=layer, chunk_size=chunk_size)
    return task, weight


def constant_task(logits, batch=2, height=12, width=10, chunk_size=16):
    """A model that ignores its input and returns ``logits (H, K)`` for every example."""

    def forward(a):
        return logits.expand(a.shape[0], -1, -1) + 0 * a.sum()

    x = torch.randn(batch, 3, height, width)
    classes = torch.tensor([[0, 2], [1, 1]])[:batch]
    return Task(forward, x, torch.tensor([0, 1]), classes, chunk_size=chunk_size)


# --------------------------------------------------------------------------------------------------
# The patch grid


def test_patch_grid_paper_input_preset():
    intervals = patch_intervals(448, 16, 8)
    assert len(intervals) == 448 // 8 + 16 // 8 - 1 == 57
    assert intervals[0] == (0, 8)  # starts at -(K/s - 1)·s = -8: the border patch sticks out
    assert intervals[1] == (0, 16) and intervals[-1] == (440, 448)
    assert [start for start, _ in intervals[1:]] == list(range(0, 448, 8))


@pytest.mark.parametrize("size", [14, 28, 56])
def test_patch_grid_paper_hidden_preset(size):
    """K=5, s=2: centres 0, 2, …, W with half-width 2, i.e. the code's W//s + K//s - 1 positions."""
    intervals = patch_intervals(size, 5, 2)
    assert len(intervals) == size // 2 + 5 // 2 - 1
    centres = range(0, size + 1, 2)
    assert intervals == [(max(c - 2, 0), min(c + 3, size)) for c in centres]
    assert intervals[-1] == (size - 2, size)


@pytest.mark.parametrize("size", [1, 5, 7, 16, 28, 33])
@pytest.mark.parametrize("kernel,stride", [(16, 8), (5, 2), (3, 2), (6, 4), (9, 2), (7, 3), (4, 4), (1, 1), (2, 1)])
def test_patch_grid_covers_every_position_without_empty_patches(size, kernel, stride):
    masks = interval_masks(size, kernel, stride, torch.device("cpu"))
    assert masks.any(dim=0).all(), "every position must be occluded by some patch"
    assert masks.any(dim=1).all(), "no patch may be empty after clipping"
    assert (masks.sum(dim=1) <= kernel).all()
    starts = [start for start, _ in patch_intervals(size, kernel, stride)]
    assert starts == sorted(starts)


def test_patch_grid_rejects_bad_sizes():
    with pytest.raises(ValueError, match="kernel_size"):
        patch_intervals(10, 0, 1)
    with pytest.raises(ValueError, match="stride"):
        patch_intervals(10, 3, 1.5)


# --------------------------------------------------------------------------------------------------
# Occlusion


@pytest.mark.parametrize("kernel,stride", [(3, 2), (4, 2), (2, 3), (16, 8)])
def test_occlusion_linear_model_closed_form(kernel, stride):
    """Zeroing patch P changes a linear logit by Σ_{q∈P} W_c(q)·x(q); each patch shares it over |P|."""
    task, weight = linear_task()
    maps = Occlusion(kernel_size=kernel, stride=stride)(task)
    contrib = torch.einsum("kchw,bchw->bkhw", weight, task.inputs)  # (B, K, h, w)
    expected = torch.zeros(maps.shape, dtype=torch.float64)
    for r0, r1 in patch_intervals(task.inputs.shape[-2], kernel, stride):
        for c0, c1 in patch_intervals(task.inputs.shape[-1], kernel, stride):
            change = contrib[:, :, r0:r1, c0:c1].sum(dim=(2, 3)) / ((r1 - r0) * (c1 - c0))  # (B, K)
            expected[:, :, r0:r1, c0:c1] += change.gather(1, task.classes)[:, :, None, None]
    assert maps.dtype == torch.float32 and maps.shape == (2, 2, 7, 9)
    torch.testing.assert_close(maps, expected.float(), rtol=1e-5, atol=1e-5)


def test_occlusion_window_follows_the_paper_rule_by_layer():
    method = Occlusion()
    assert method.window(linear_task(layer="input")[0]) == (16, 8)
    assert method.window(linear_task(layer="conv5")[0]) == (5, 2)
    assert Occlusion(kernel_size=3).window(linear_task(layer="input")[0]) == (3, 8)
    assert attreval.METHODS.get("occlusion") == Occlusion()


def test_occlusion_rejects_bad_windows():
    with pytest.raises(ValueError, match="kernel_size"):
        Occlusion(kernel_size=0)
    with pytest.raises(ValueError, match="hidden_stride"):
        Occlusion(hidden_stride=2.5)


def test_occlusion_chunk_size_does_not_change_the_maps():
    task, _ = linear_task(chunk_size=1)
    small = Occlusion(kernel_size=4, stride=2)(task)
    large = Occlusion(kernel_size=4, stride=2)(linear_task(chunk_size=1000)[0])
    torch.testing.assert_close(small, large, rtol=1e-6, atol=1e-7)


def difull_support(size: int, cell: slice, kernel: int, stride: int) -> torch.Tensor:
    """Positions on one axis covered by some patch that meets ``cell``: ``(size,)`` bool."""
    masks = interval_masks(size, kernel, stride, torch.device("cpu"))
    return masks[masks[:, cell].any(dim=1)].any(dim=0)


@pytest.mark.parametrize("kernel,stride", [(4, 4), (16, 8), (5, 2)])
def test_difull_occlusion_is_zero_where_no_patch_meets_the_heads_cell(kernel, stride):
    """DiFull head h cannot see outside cell h: only patches meeting the cell change its logit. With
    cell-aligned patches (K = s | cell side) the map is exactly zero outside the cell."""
    model = tiny_model("vgg")
    images = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = attreval.attribute(
        model,
        images,
        torch.tensor([[1, 2]]),
        "occlusion",
        setting="difull",
        kernel_size=kernel,
        stride=stride,
        chunk_size=64,
    )
    for t, (rows, cols) in enumerate([(slice(0, 16), slice(0, 16)), (slice(16, 32), slice(16, 32))]):
        support = difull_support(32, rows, kernel, stride)[:, None] & difull_support(32, cols, kernel, stride)[None]
        assert (maps[0, t][~support] == 0).all()
        assert maps[0, t][rows, cols].abs().sum() > 0
        if kernel == stride:
            inside = torch.zeros(32, 32, dtype=torch.bool)
            inside[rows, cols] = True
            assert torch.equal(support, inside)


@pytest.mark.parametrize("layer,kernel,stride", [("input", 16, 8), ("input", 5, 3), ("middle", 5, 2), ("final", 3, 1)])
@pytest.mark.parametrize("heads", [(0, 3), (1, 2, 3)])
def test_difull_occlusion_per_head_windows_equal_every_window_through_every_head(layer, kernel, stride, heads):
    """DiFull skips windows outside a head's block and runs the others through that head's block alone;
    the maps equal running every window through every head, with fewer rows."""
    import dataclasses

    from attreval.api import build_task
    from attreval.bench import EveryWindow
    from attreval.runs.counting import PassCounter
    from attreval.settings import make_setting

    setting = make_setting("difull", tiny_model("resnet"), 2)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    classes = torch.tensor([[1, 2, 3], [4, 5, 6]])[:, : len(heads)]
    task = build_task(setting, images, classes, layer, heads, chunk_size=7)
    method = Occlusion(kernel_size=kernel, stride=stride)
    fast, every = PassCounter(), PassCounter()
    skipped = method(fast.instrument(task))
    full = method(every.instrument(dataclasses.replace(task, tail=EveryWindow(task.tail))))
    torch.testing.assert_close(skipped, full, rtol=1e-5, atol=1e-6)
    assert fast.forward_rows < every.forward_rows * len(heads)  # block passes: one per row vs len(heads) per row


def test_occlusion_rejects_a_class_outside_the_model_on_difull():
    with pytest.raises(ValueError, match="expected target classes in"):
        attreval.attribute(tiny_model("vgg"), torch.randn(1, 3, 32, 32), torch.tensor([[1, 99]]), "occlusion", setting="difull")


# --------------------------------------------------------------------------------------------------
# RISE


def test_rise_masks_mean_shape_and_seed():
    masks = rise_masks(28, 20, 1000, 6, 0.1, 0)
    assert masks.shape == (1000, 28, 20) and masks.dtype == torch.float32
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.1) < 0.01
    assert torch.equal(rise_masks(28, 20, 1000, 6, 0.1, 0), masks)  # reproducible from the seed
    assert not torch.equal(rise_masks(28, 20, 1000, 6, 0.1, 1), masks)


def test_rise_on_a_constant_model_is_softmax_times_mean_mask():
    """If f ignores its input, softmax_c(f(x ⊙ m)) = softmax_c(z), so the map is softmax_c(z)·mean(m)/p1."""
    logits = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]])
    task = constant_task(logits)
    method = RISE(num_masks=200)
    maps = method(task)
    probs = logits.softmax(dim=-1)[task.heads[None], task.classes]  # (B, T)
    mean_mask = rise_masks(12, 10, 200, 6, 0.1, 0).mean(dim=0)
    torch.testing.assert_close(maps, probs[:, :, None, None] * mean_mask / 0.1, rtol=1e-5, atol=1e-6)


def test_rise_chunk_size_batch_and_seed():
    model = tiny_model("resnet")
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[1, 4], [3, 3]])

    def run(x=images, y=targets, **options):
        return attreval.attribute(model, x, y, "rise", n=1, num_masks=24, **options)

    reference = run(chunk_size=64)
    assert reference.shape == (2, 2, 16, 16) and torch.isfinite(reference).all()
    torch.testing.assert_close(run(chunk_size=5), reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run(x=images[1:], y=targets[1:], chunk_size=64), reference[1:], rtol=1e-5, atol=1e-6)
    assert torch.equal(run(chunk_size=64), reference)
    assert not torch.allclose(run(seed=1, chunk_size=64), reference)


def test_rise_rejects_bad_options():
    with pytest.raises(ValueError, match="keep_prob"):
        RISE(keep_prob=0.0)
    with pytest.raises(ValueError, match="num_masks"):
        RISE(num_masks=0)
