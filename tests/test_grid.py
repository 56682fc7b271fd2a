import pytest
import torch

from attreval.grid import GridSpec, fold_cells, row_blocks, select_cells, unfold_cells


def test_fold_unfold_round_trip_and_row_major_order():
    x = torch.randn(3, 2, 12, 18)
    cells = fold_cells(x, 3)
    assert cells.shape == (27, 2, 4, 6)
    # cell 5 of grid 1 = row 1, column 2
    assert torch.equal(cells[1 * 9 + 5], x[1, :, 4:8, 12:18])
    assert torch.equal(unfold_cells(cells, 3), x)


def test_select_cells_matches_boxes():
    spec = GridSpec(2, 3, 3)
    x = torch.randn(2, 1, 6, 6)
    blocks = select_cells(x, 2, (0, 3))
    for g in range(2):
        for j, cell in enumerate((0, 3)):
            rows, cols = spec.cell_box(cell)
            assert torch.equal(blocks[g * 2 + j], x[g, :, rows, cols])


def test_cell_masks_partition_the_map():
    masks = GridSpec(3, 5, 5).cell_masks(9, 12)
    assert masks.shape == (9, 9, 12)
    assert torch.equal(masks.sum(0), torch.ones(9, 12, dtype=torch.long))
    assert masks[4, 3:6, 4:8].all() and masks[4].sum() == 12


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_gridspec_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="positive integer"):
        GridSpec(bad, 4, 4)


def test_indivisible_map_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by the grid size 2"):
        fold_cells(torch.zeros(1, 1, 5, 4), 2)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_row_blocks_takes_each_rows_own_cell(n):
    x = torch.randn(7, 3, 4 * n, 5 * n)
    cells = torch.randint(0, n * n, (7,), generator=torch.Generator().manual_seed(n))
    got = row_blocks(x, n, cells)
    for r in range(7):
        assert torch.equal(got[r], select_cells(x[r : r + 1], n, (int(cells[r]),))[0])
    # gradients flow back to exactly that block
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(row_blocks(leaf, n, cells).sum(), leaf)
    expected = torch.stack([GridSpec(n, 4, 5).cell_masks(4 * n, 5 * n)[int(c)] for c in cells])[:, None].expand_as(x)
    assert torch.equal(grad, expected.float())
