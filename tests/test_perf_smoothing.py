"""The run's smoothing sweep in one batched product (issue 24 §4): the same maps as smoothing kernel by kernel."""

from __future__ import annotations

import pytest
import torch

from attreval.smoothing import smooth_maps, smooth_sweep, smoothing_matrix


@pytest.mark.parametrize("side", [(7, 7), (14, 9), (56, 56)])
def test_sweep_equals_smoothing_each_kernel(side):
    torch.manual_seed(0)
    maps = torch.randn(3, 2, *side)
    kernels = [0, 1, 3, 4, 9, 17, 33]  # the identity, odd and even kernels, kernels larger than the map
    got = smooth_sweep(maps, kernels)
    assert got.shape == (len(kernels), *maps.shape)
    for v, k in enumerate(kernels):
        ref = smooth_maps(maps, k)
        assert float((got[v] - ref).abs().max()) <= 1e-6 * float(ref.abs().max())
    assert torch.equal(got[0], maps) and torch.equal(got[1], maps)


def test_smoothing_matrix_is_the_zero_padded_convolution():
    impulse = torch.zeros(1, 1, 11, 11, dtype=torch.float64)
    impulse[0, 0, 0, 1] = 1.0  # near the border: the mass outside the map leaks into the padding
    matrix = smoothing_matrix(11, 5, dtype=torch.float64)
    assert torch.allclose(smooth_maps(impulse, 5)[0, 0], torch.outer(matrix[:, 0], matrix[:, 1]))
    assert float(matrix[:, 0].sum()) < 1.0


def test_sweep_refuses_bad_maps():
    with pytest.raises(ValueError, match="expected floating-point maps of shape"):
        smooth_sweep(torch.zeros(3, 4, 5), [3])
