"""Fidelity to the authors' code (issue 18): RISE's mirrored mask borders, Grad-CAM++ numerics, the metric's
zero-mass threshold, the bench's RISE reference batch, and Captum's trapezoid rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import attreval
from attreval.bench import reference_maps, reference_pattern
from attreval.methods import resolve_method
from attreval.methods.base import Task
from attreval.methods.cam import GradCAMPlusPlus
from attreval.methods.perturbation import RISE, rise_masks, upsampling_rows
from attreval.metric import ZERO_MASS, localization_score, score_from_parts
from attreval.runs.counting import PassCounter
from attreval.settings import make_setting
from tiny_models import tiny_model

skimage_transform = pytest.importorskip("skimage.transform")


# --------------------------------------------------------------------------------------------------
# RISE: the masks are skimage's order-1 "reflect" resize (mirrored borders), not a clamped upsampling


def skimage_upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The authors' upsampling of one RISE grid (float64)."""
    return skimage_transform.resize(grid, size, order=1, mode="reflect", anti_aliasing=False)


@pytest.mark.parametrize("grid_size,cell_h,cell_w", [(6, 3, 5), (6, 1, 1), (2, 4, 3), (5, 7, 2), (1, 3, 2), (7, 2, 9)])
def test_upsampling_rows_equal_skimage_reflect_resize_on_random_grids(grid_size, cell_h, cell_w):
    """Real-valued random grids (not just binary ones), crops at every shift, two map sizes per cell size."""
    g = torch.Generator().manual_seed(grid_size * 100 + cell_h)
    for height, width in ((grid_size * cell_h, grid_size * cell_w), (grid_size * (cell_h - 1) + 1, grid_size * (cell_w - 1) + 1)):
        shifts_h, shifts_w = torch.arange(cell_h), torch.arange(cell_w)  # every shift a mask can draw
        rows = upsampling_rows(height, grid_size, shifts_h).double()  # (cell_h, height, s)
        cols = upsampling_rows(width, grid_size, shifts_w).double()
        assert rows.shape == (cell_h, height, grid_size) and cols.shape == (cell_w, width, grid_size)
        for _ in range(3):
            grid = torch.rand(grid_size, grid_size, generator=g, dtype=torch.float64)
            up = skimage_upsample(grid.numpy(), ((grid_size + 1) * cell_h, (grid_size + 1) * cell_w))
            for i in range(cell_h):
                for j in range(cell_w):
                    crop = up[i : i + height, j : j + width]
                    np.testing.assert_allclose((rows[i] @ grid @ cols[j].T).numpy(), crop, rtol=0, atol=1e-6)


def test_rise_masks_equal_skimage_reflect_resize_then_crop():
    """The paper's recipe, draws in this order from the seeded generator: grids, row shifts, column shifts."""
    height, width, count, s = 28, 20, 40, 6
    masks = rise_masks(height, width, count, s, 0.5, 11)
    g = torch.Generator().manual_seed(11)
    grids = (torch.rand(count, s, s, generator=g) < 0.5).double().numpy()
    cell_h, cell_w = math.ceil(height / s), math.ceil(width / s)
    shift_h = torch.randint(0, cell_h, (count,), generator=g)
    shift_w = torch.randint(0, cell_w, (count,), generator=g)
    clamped_differs = 0.0
    for m in range(count):
        up = skimage_upsample(grids[m], ((s + 1) * cell_h, (s + 1) * cell_w))
        crop = up[shift_h[m] : shift_h[m] + height, shift_w[m] : shift_w[m] + width]
        np.testing.assert_allclose(masks[m].numpy(), crop, rtol=0, atol=1e-6)
        # the bilinear upsampling with clamped borders (what attreval did before) is another mask near the borders
        clamped = F.interpolate(torch.from_numpy(grids[m])[None, None], size=up.shape, mode="bilinear", align_corners=False)
        clamped_differs = max(clamped_differs, float(np.abs(clamped[0, 0].numpy() - up).max()))
    assert clamped_differs > 0.2


def test_mirrored_border_interpolates_towards_the_second_cell():
    """A 1-D check by hand: a grid that is 1 in cell 1 only. The first output position samples coordinate
    x = 0.5·s/L − 0.5 < 0; mirroring puts cell 1's value at −1, so the value there is |x|, not 0 (clamped)."""
    s, cell = 4, 3
    length = (s + 1) * cell
    rows = upsampling_rows(s * cell, s, torch.zeros(1, dtype=torch.long))[0].double()  # positions 0 … s·cell − 1
    grid = torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    x = 0.5 * s / length - 0.5
    assert x < 0 and torch.isclose(rows[0] @ grid, torch.tensor(-x, dtype=torch.float64))
    assert torch.allclose(rows.sum(dim=1), torch.ones(s * cell, dtype=torch.float64))  # a partition of unity


# --------------------------------------------------------------------------------------------------
# Grad-CAM++ on an ill-conditioned input


def ill_conditioned_task() -> tuple[Task, torch.Tensor, torch.Tensor]:
    """A float32 linear head whose gradients g sit within ±1e-3 (relative) of the α singularity
    ``2 + S·g = 0`` (channel sums S ≈ −9.6e4, as at an input layer), half of them positive."""
    c, h, w = 3, 16, 16
    g = torch.Generator().manual_seed(0)
    a = -400 + 50 * torch.rand(1, c, h, w, generator=g)
    sums = a.double().sum(dim=(-2, -1))[0]  # (C,)
    near = 1 + (torch.rand(2, c, h, w, generator=g, dtype=torch.float64) - 0.5) * 2e-3
    m = (-2 / sums[None, :, None, None] * near).float()
    m[:, :, ::2] *= -1  # negative gradients: α·ReLU(g) = 0 there

    def forward(x):
        return torch.einsum("nchw,kchw->nk", x, m.to(x.dtype))[:, None]

    task = Task(tail=forward, inputs=a, heads=torch.zeros(2, dtype=torch.long), classes=torch.tensor([[0, 1]]), chunk_size=16)
    return task, m[None], a


def grad_cam_pp_reference(grads: torch.Tensor, a: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The paper's formula, evaluated in ``dtype`` in the paper's order of operations."""
    g, a = grads.to(dtype), a.to(dtype)
    sums = a.sum(dim=(-2, -1))[:, None, :, None, None]
    denominator = 2 * g**2 + sums * g**3
    alpha = g**2 / torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    weights = (alpha * g.clamp(min=0)).sum(dim=(-2, -1))
    return torch.einsum("btc,bchw->bthw", weights, a).clamp(min=0)


def test_grad_cam_pp_is_within_1e_5_of_float64_on_an_ill_conditioned_input():
    task, grads, a = ill_conditioned_task()
    reference = grad_cam_pp_reference(grads, a, torch.float64)
    scale = reference.abs().max()
    assert scale > 0 and (reference > 0).any()
    # the case is ill-conditioned: the same formula in float32 is far off
    assert (grad_cam_pp_reference(grads, a, torch.float32).double() - reference).abs().max() / scale > 1e-4
    maps = GradCAMPlusPlus()(task)
    assert maps.dtype == torch.float32
    assert (maps.double() - reference).abs().max() / scale <= 1e-5


# --------------------------------------------------------------------------------------------------
# The metric's zero-mass rule


def test_zero_mass_threshold_is_the_authors_1e_7():
    assert ZERO_MASS == 1e-7
    maps = torch.zeros(3, 1, 4, 4)
    maps[0, 0, 0, 0] = 5e-8  # total positive mass 5e-8 ≤ 1e-7: scores 0
    maps[1, 0, 0, 0] = 2e-7  # > 1e-7: a real score (all of it in cell 0)
    maps[2, 0, 0, 0], maps[2, 0, 3, 3] = 1e-7, -1.0  # exactly at the threshold: 0
    cells = torch.zeros(3, 1, dtype=torch.long)
    assert localization_score(maps, 2, cells)[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert localization_score(maps, 2, cells, threshold=0.0)[:, 0].tolist() == [1.0, 1.0, 1.0]
    assert localization_score(maps, 2, cells, threshold=1e-6)[:, 0].tolist() == [0.0, 0.0, 0.0]


def test_score_from_parts_threshold_and_bad_threshold():
    inside, total = torch.tensor([5e-8, 1e-7, 0.5]), torch.tensor([5e-8, 2e-7, 1.0])
    torch.testing.assert_close(score_from_parts(inside, total), torch.tensor([0.0, 0.5, 0.5]))
    torch.testing.assert_close(score_from_parts(inside, total, threshold=0), torch.tensor([1.0, 0.5, 0.5]))
    for bad in (-1e-7, float("nan"), "1e-7", True):
        with pytest.raises(ValueError, match="expected a zero-mass threshold ≥ 0"):
            score_from_parts(inside, total, threshold=bad)


# --------------------------------------------------------------------------------------------------
# The bench's reference pattern: RISE with 2 masked inputs per forward, one grid per call


def test_reference_pattern_runs_rise_two_masks_per_forward():
    assert reference_pattern("rise", resolve_method("rise")) == (1, 2)
    assert reference_pattern("occlusion", resolve_method("occlusion")) == (1, 8)
    model = tiny_model("resnet")
    setting = make_setting("gridpg", model, 2)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    classes = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [1, 3, 5, 7]])
    heads = setting.target_heads(4)
    method = RISE(num_masks=6)
    counter = PassCounter()
    maps = reference_maps(method, "rise", setting, images, classes, "input", heads, counter)
    # 3 grids × 4 targets (one per call) × 6 masks, 2 per forward
    assert counter.forward_rows == 3 * 4 * 6 and counter.calls == 3 * 4 * 6 // 2
    ours = attreval.attribute(model, images, classes, method, setting="gridpg", layer="input", n=2)
    torch.testing.assert_close(maps, ours, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# IntGrad's trapezoid rule against Captum's: same nodes, weights summing to 1 instead of (n − 1)/n


@pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")
@pytest.mark.parametrize("rule,captum_rule", [("riemann_trapezoid", "riemann_trapezoid"), ("riemann_middle", "riemann_middle")])
def test_int_grad_rules_against_captum(rule, captum_rule):
    captum_attr = pytest.importorskip("captum.attr")
    n_steps = 5
    model = tiny_model("vgg")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([[3], [1]])
    captum = captum_attr.IntegratedGradients(model).attribute(x.clone(), target=y[:, 0], n_steps=n_steps, method=captum_rule)
    expected = captum.detach().sum(dim=1, keepdim=True)
    if rule == "riemann_trapezoid":
        expected = expected * n_steps / (n_steps - 1)  # Captum's trapezoid weights sum to (n − 1)/n
    ours = attreval.attribute(model, x, y, "int_grad", n=1, n_steps=n_steps, rule=rule)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
