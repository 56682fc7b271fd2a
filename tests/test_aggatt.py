"""AggAtt (PAPER.md §3): bins, the rounding rule, sorting, colour scale, mean maps and examples."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from attreval.analysis.aggatt import (
    BIN_EDGES,
    Bin,
    aggatt,
    bin_bounds,
    colour_scale,
    example_positions,
    localization_of,
    normalise,
    sort_order,
)
from attreval.metric import localization_parts, score_from_parts


def sizes(count: int) -> list[int]:
    return [b.size for b in bin_bounds(count)]


def test_paper_bins_for_2000():
    bins = bin_bounds(2000)
    assert sizes(2000) == [40, 60, 900, 900, 60, 40]
    assert [(b.start, b.end) for b in bins] == [(0, 40), (40, 100), (100, 1000), (1000, 1900), (1900, 1960), (1960, 2000)]
    assert [b.label for b in bins] == ["0–2%", "2–5%", "5–50%", "50–95%", "95–98%", "98–100%"]
    assert [b.median for b in bins] == [20, 70, 550, 1450, 1930, 1980]


@pytest.mark.parametrize(
    "count, expected",
    [
        (96, [2, 3, 43, 43, 3, 2]),  # the Fashion-MNIST default: 1.92 → 2, 4.8 → 5, 91.2 → 91, 94.08 → 94
        (50, [1, 2, 22, 23, 1, 1]),  # 2.5 → 3 and 47.5 → 48: halves round up
        (10, [0, 1, 4, 5, 0, 0]),  # empty bins, no failure
        (1, [0, 0, 1, 0, 0, 0]),
        (0, [0, 0, 0, 0, 0, 0]),
    ],
)
def test_rounding_rule_for_awkward_counts(count, expected):
    assert sizes(count) == expected


def test_rounding_rule_is_round_half_up_and_tiles():
    percents = (0, 2, 5, 50, 95, 98, 100)
    for count in range(0, 400):
        bins = bin_bounds(count)
        # boundary = floor(N·p/100 + 1/2), in integers: (2·N·p + 100) // 200
        assert [b.start for b in bins] + [bins[-1].end] == [(2 * count * p + 100) // 200 for p in percents]
        assert all(a.end == b.start for a, b in zip(bins, bins[1:]))
        assert sum(b.size for b in bins) == count and all(b.size >= 0 for b in bins)


def test_float_edges_are_read_as_decimals():
    # 50 · 0.29 is 14.499999999999998 in floats (→ 14); read as 29/100 it is exactly 14.5 → rounds up to 15
    assert [b.size for b in bin_bounds(50, [0, 0.29, 1])] == [15, 35]
    assert bin_bounds(100, [0, Fraction(1, 3), 1])[0].end == 33


def test_bad_edges_and_counts_raise():
    with pytest.raises(ValueError, match="expected non-decreasing edges"):
        bin_bounds(10, [0, 0.5, 0.4, 1])
    with pytest.raises(ValueError, match="expected a non-negative integer count"):
        bin_bounds(-1)


def test_sort_descending_score_ties_by_inside_then_index():
    scores = np.array([0.5, 1.0, 1.0, 1.0, 0.9, 1.0], np.float32)
    inside = np.array([9.0, 2.0, 5.0, 2.0, 7.0, 3.0], np.float32)
    assert sort_order(scores, inside).tolist() == [2, 5, 1, 3, 4, 0]


def test_tie_breaking_on_maps_with_all_mass_inside():
    # DiFull-like: every map has all positive mass in cell 0 (score 1), with different amounts
    amounts = torch.tensor([1.0, 4.0, 2.0, 3.0])
    maps = torch.zeros(4, 4, 4)
    maps[:, :2, :2] = amounts[:, None, None]
    maps[:, 3, 3] = -1.0  # negative outside: ignored by the metric
    result = aggatt(maps, n=2, cell=0)
    assert (result.scores == 1).all()
    assert result.order.tolist() == [1, 3, 2, 0]
    np.testing.assert_allclose(result.inside, amounts * 4)


def test_colour_scale_is_the_995_per_mille_value():
    values = np.random.default_rng(0).random((6, 20, 30))
    flat = np.sort(values.ravel())
    assert colour_scale(values) == flat[int(len(flat) * 0.995)]
    assert colour_scale(np.arange(1000.0).reshape(2, 10, 50)) == 995.0
    assert colour_scale(np.arange(200.0)) == 199.0  # index 199 = int(200 · 0.995), kept in range
    with_empty = np.stack([values[0], np.full_like(values[0], np.nan)])
    flat = np.sort(values[0].ravel())
    assert colour_scale(with_empty) == flat[len(flat) * 995 // 1000]  # NaN (empty bins) left out
    assert colour_scale(np.zeros((6, 4, 4))) == 1.0 and colour_scale(np.full((2, 2), np.nan)) == 1.0
    assert colour_scale(np.array([-4.0, 1.0, 2.0])) == 4.0  # signed maps: absolute values
    np.testing.assert_array_equal(normalise(np.array([-3.0, 0.5, 2.0, 9.0]), 2.0), [-1.0, 0.25, 1.0, 1.0])


def _ramp_maps(count: int = 50) -> torch.Tensor:
    """Map i: cell 0 = i+1, other cells = count-i, one negative pixel; score rises with i."""
    i = torch.arange(count, dtype=torch.float32)
    maps = (count - i)[:, None, None].repeat(1, 4, 4)
    maps[:, :2, :2] = (i + 1)[:, None, None]
    maps[:, 3, 3] = -5.0
    return maps


def test_mean_maps_on_a_constructed_example():
    maps = _ramp_maps(50)
    result = aggatt(maps, n=2, cell=0)
    assert result.order.tolist() == list(range(49, -1, -1))
    bounds = [(b.start, b.end) for b in result.bins]
    assert bounds == [(0, 1), (1, 3), (3, 25), (25, 48), (48, 49), (49, 50)]
    for (start, end), mean in zip(bounds, result.maps):
        members = np.arange(49, -1, -1)[start:end]
        expected = np.full((4, 4), np.mean(50 - members), np.float32)
        expected[:2, :2] = np.mean(members + 1)
        expected[3, 3] = 0.0  # clipped before averaging
        np.testing.assert_allclose(mean, expected, rtol=1e-6)
    assert result.scale == colour_scale(result.maps)
    assert np.abs(result.normalised()).max() <= 1.0


def test_mean_maps_upsample_then_clip_like_the_metric():
    maps = torch.randn(20, 4, 4, generator=torch.Generator().manual_seed(1))
    result = aggatt(maps, n=2, cell=3, size=(8, 8), chunk_size=3)
    positive = F.interpolate(maps[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0].clamp(min=0)
    inside, total = localization_parts(maps[:, None], 2, torch.full((20, 1), 3), size=(8, 8))
    np.testing.assert_allclose(result.scores, score_from_parts(inside, total)[:, 0], rtol=1e-5)
    np.testing.assert_allclose(result.inside, inside[:, 0], rtol=1e-5)
    for b, mean in zip(result.bins, result.maps):
        np.testing.assert_allclose(mean, positive[result.order[b.start : b.end]].mean(0), rtol=1e-5, atol=1e-6)
    # the same from float16 numpy (a stored memmap), given the stored scores
    again = aggatt(maps.numpy().astype(np.float16), 2, 3, (8, 8), scores=result.scores, inside=result.inside)
    np.testing.assert_array_equal(again.order, result.order)
    np.testing.assert_allclose(again.maps, result.maps, atol=5e-3)


def test_signed_variant_keeps_negatives():
    maps = _ramp_maps(50)
    signed = aggatt(maps, n=2, signed=True)
    np.testing.assert_array_equal(signed.order, aggatt(maps, n=2).order)
    assert (signed.maps[:, 3, 3] == -5.0).all()
    assert signed.scale == colour_scale(signed.maps)


def test_example_positions_are_bin_medians():
    maps = _ramp_maps(50)
    result = aggatt(maps, n=2)
    medians = [(b.start + b.end) // 2 for b in result.bins]
    assert medians == [0, 2, 14, 36, 48, 49]
    assert result.examples == tuple(int(result.order[m]) for m in medians) == (49, 47, 35, 13, 1, 0)
    assert example_positions(Bin(Fraction(0), Fraction(1), 10, 15), 5) == [12, 13, 11, 14, 10]
    assert example_positions(Bin(Fraction(0), Fraction(1), 3, 5), 9) == [4, 3]
    assert example_positions(Bin(Fraction(0), Fraction(1), 3, 3), 2) == []


def test_small_n_gives_empty_bins_without_failing():
    result = aggatt(torch.rand(10, 4, 4), n=2)
    empty = [b.empty for b in result.bins]
    assert empty == [True, False, False, False, True, True]
    assert all(np.isnan(result.maps[i]).all() for i, e in enumerate(empty) if e)
    assert all(np.isfinite(result.maps[i]).all() for i, e in enumerate(empty) if not e)
    assert [ex is None for ex in result.examples] == empty
    assert math.isfinite(result.scale)
    nothing = aggatt(torch.zeros(0, 4, 4), n=2)
    assert all(b.empty for b in nothing.bins) and nothing.scale == 1.0 and nothing.maps.shape == (6, 4, 4)


def test_smoothing_is_applied_before_upsampling():
    from attreval.smoothing import smooth_maps

    maps = torch.randn(12, 8, 8, generator=torch.Generator().manual_seed(2))
    scores, inside = localization_of(maps, 2, 0, (16, 16), kernel_size=5)
    ref_inside, ref_total = localization_parts(smooth_maps(maps[:, None], 5), 2, torch.zeros(12, 1, dtype=torch.long), (16, 16))
    np.testing.assert_allclose(scores, score_from_parts(ref_inside, ref_total)[:, 0], rtol=1e-5)


def test_argument_errors():
    with pytest.raises(ValueError, match="expected a cell"):
        aggatt(torch.rand(4, 4, 4), n=2, cell=4)
    with pytest.raises(ValueError, match="expected both scores and inside"):
        aggatt(torch.rand(4, 4, 4), n=2, scores=np.ones(4))
    with pytest.raises(ValueError, match="expected 4 scores and inside masses"):
        aggatt(torch.rand(4, 4, 4), n=2, scores=np.ones(3), inside=np.ones(3))
    assert len(BIN_EDGES) == 7
