import pytest
import torch

from attreval import localization_score
from attreval.metric import localization_parts


def test_all_mass_inside_is_one():
    maps = torch.zeros(1, 4, 8, 8)
    for cell in range(4):
        r, c = divmod(cell, 2)
        maps[0, cell, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4] = torch.rand(4, 4) + 0.1
    score = localization_score(maps, 2, torch.arange(4)[None])
    assert torch.allclose(score, torch.ones(1, 4))


@pytest.mark.parametrize("n", [2, 3])
def test_uniform_is_one_over_n_squared(n):
    maps = torch.ones(2, 3, 6 * n, 6 * n)
    score = localization_score(maps, n, torch.zeros(2, 3, dtype=torch.long))
    assert torch.allclose(score, torch.full((2, 3), 1 / n**2))


def test_all_outside_is_zero_and_negatives_are_ignored():
    maps = torch.zeros(1, 1, 4, 4)
    maps[0, 0, 2:, 2:] = 1.0  # all positive mass in cell 3
    maps[0, 0, :2, :2] = -5.0  # negative mass in the target cell does not count
    assert localization_score(maps, 2, torch.tensor([[0]])).item() == 0.0
    assert localization_score(maps, 2, torch.tensor([[3]])).item() == 1.0


def test_zero_total_gives_zero_not_nan():
    maps = -torch.rand(2, 2, 4, 4)
    maps[1] = 0
    score = localization_score(maps, 2, torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(score, torch.zeros(2, 2))


def test_upsampling_happens_before_clipping():
    # A 2×2 map with +1 in cell 0 and -1 in cell 3: bilinear upsampling spreads the positive value
    # towards cell 3 only partly; clipping after upsampling keeps mass only in the positive region.
    maps = torch.tensor([[[[1.0, 0.0], [0.0, -1.0]]]])
    inside, total = localization_parts(maps, 2, torch.tensor([[0]]), size=(8, 8))
    up = torch.nn.functional.interpolate(maps, size=(8, 8), mode="bilinear", align_corners=False).clamp(min=0)
    assert torch.isclose(total, up.sum()).all() and torch.isclose(inside, up[..., :4, :4].sum()).all()


def test_resnet_final_layer_constant_for_uniform_block():
    # PAPER.md §9.4: a map uniform over a 7×7 block of a 14×14 map, upsampled to 448, gives ≈ 0.9646.
    maps = torch.zeros(1, 1, 14, 14)
    maps[..., :7, :7] = 1.0
    score = localization_score(maps, 2, torch.tensor([[0]]), size=(448, 448)).item()
    assert abs(score - 0.98214**2) < 1e-4


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"shape \(B, T, h, w\)"):
        localization_score(torch.zeros(4, 4), 2, torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="cells of shape"):
        localization_score(torch.zeros(1, 2, 4, 4), 2, torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"cells in \[0, 3\]"):
        localization_score(torch.zeros(1, 1, 4, 4), 2, torch.tensor([[4]]))
