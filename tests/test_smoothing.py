"""Gaussian smoothing of maps (PAPER.md §6.1) and the SmoothGrad baseline (§6.3)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

import attreval
from attreval.api import build_task
from attreval.methods.smoothgrad import SmoothGrad
from attreval.settings import make_setting
from attreval.smoothing import gaussian_kernel1d, scaled_kernel_sizes, smooth_maps
from tiny_models import tiny_model


def random_maps(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------------
# Kernel and smoothing


@pytest.mark.parametrize("size", [3, 9, 17, 129, 257])
def test_kernel_is_a_normalised_gaussian_with_sigma_k_over_4(size):
    kernel = gaussian_kernel1d(size)
    assert kernel.shape == (size,) and kernel.dtype == torch.float32
    torch.testing.assert_close(kernel.sum(), torch.tensor(1.0))
    torch.testing.assert_close(kernel, kernel.flip(0))
    taps = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    expected = torch.exp(-(taps**2) / (2 * (size / 4) ** 2))
    torch.testing.assert_close(kernel, (expected / expected.sum()).float())
    assert kernel.argmax() == size // 2


@pytest.mark.parametrize("size", [0, 1])
def test_kernel_sizes_0_and_1_are_the_identity(size):
    maps = random_maps(2, 3, 5, 6)
    assert torch.equal(gaussian_kernel1d(size), torch.ones(1))
    out = smooth_maps(maps, size)
    assert torch.equal(out, maps) and out is not maps


def test_impulse_becomes_the_outer_product_gaussian():
    maps = torch.zeros(1, 1, 31, 31)
    maps[0, 0, 15, 15] = 2.0
    kernel = gaussian_kernel1d(9)
    expected = torch.zeros(31, 31)
    expected[11:20, 11:20] = 2.0 * torch.outer(kernel, kernel)
    torch.testing.assert_close(smooth_maps(maps, 9)[0, 0], expected)


def test_mass_is_preserved_away_from_borders_and_leaks_at_borders():
    maps = torch.zeros(2, 3, 40, 40)
    maps[..., 10:30, 12:28] = random_maps(2, 3, 20, 16)  # support ≥ 8 = ⌊17/2⌋ from every border
    torch.testing.assert_close(smooth_maps(maps, 17).sum(dim=(2, 3)), maps.sum(dim=(2, 3)), rtol=1e-5, atol=1e-4)
    corner = torch.zeros(1, 1, 40, 40)
    corner[0, 0, 0, 0] = 1.0
    assert smooth_maps(corner, 17).sum() < 0.5  # zero padding: mass near the border leaks out


@pytest.mark.parametrize("size,shape", [(5, (9, 7)), (17, (9, 7)), (33, (20, 24)), (4, (8, 8))])
def test_separable_equals_dense_2d_convolution_with_zero_padding(size, shape):
    maps = random_maps(2, 2, *shape)  # signed maps, kernels larger than the map included
    kernel = gaussian_kernel1d(size)
    padded = F.pad(maps.reshape(-1, 1, *shape), ((size - 1) // 2, size // 2) * 2)  # PyTorch's 'same' split
    dense = F.conv2d(padded, torch.outer(kernel, kernel)[None, None])
    out = smooth_maps(maps, size)
    assert out.shape == maps.shape and out.dtype == maps.dtype
    torch.testing.assert_close(out, dense.view(maps.shape), rtol=1e-5, atol=1e-6)
    assert (out < 0).any() and (out > 0).any()


def test_smoothing_keeps_dtype_and_rejects_bad_input():
    assert smooth_maps(random_maps(1, 1, 6, 6).double(), 3).dtype == torch.float64
    with pytest.raises(ValueError, match="expected floating-point maps"):
        smooth_maps(torch.zeros(3, 6, 6), 3)
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_kernel1d(-1)


def test_scaled_kernel_sizes():
    assert scaled_kernel_sizes(448) == [9, 17, 33, 65, 129, 257]
    # The paper's qualitative sizes: 129 at the input → 17 at 56², 9 at 28² (PAPER.md §6.1).
    assert scaled_kernel_sizes(56, sizes=(129,)) == [17] and scaled_kernel_sizes(28, sizes=(129,)) == [9]
    assert scaled_kernel_sizes(56) == [1, 3, 5, 9, 17, 33]
    assert scaled_kernel_sizes(14) == [1, 3, 5, 9]
    assert scaled_kernel_sizes(224, reference_side=224) == [9, 17, 33, 65, 129, 257]
    for side in (1, 7, 32, 100, 896):
        sizes = scaled_kernel_sizes(side)
        assert all(k % 2 == 1 and k >= 1 for k in sizes) and len(set(sizes)) == len(sizes)
    with pytest.raises(ValueError):
        scaled_kernel_sizes(0)


# --------------------------------------------------------------------------------------------------
# SmoothGrad


@pytest.fixture(scope="module")
def vgg():
    return tiny_model("vgg")


def grids(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, 16, generator=g), torch.randint(0, 10, (batch, 2), generator=g)


@pytest.mark.parametrize("base", ["input_x_grad", "int_grad"])
def test_smoothgrad_with_zero_noise_is_the_base_method(vgg, base):
    x, y = grids()
    options = {"n_steps": 4} if base == "int_grad" else {}
    expected = attreval.attribute(vgg, x, y, base, n=1, **options)
    maps = attreval.attribute(vgg, x, y, "smoothgrad", n=1, base=base, base_options=options, noise_level=0.0)
    assert torch.equal(maps, expected)
    assert SmoothGrad().base == "int_grad" and SmoothGrad().num_samples == 15


def test_smoothgrad_is_the_mean_over_noisy_samples(vgg):
    """Against a loop over samples: sample i of example b is x_b + σ_b·ε_i, σ_b = level·range(x_b)."""
    x, y = grids()
    level, samples, seed = 0.2, 4, 3
    maps = attreval.attribute(vgg, x, y, "smoothgrad", n=1, base="input_x_grad", noise_level=level, num_samples=samples, seed=seed)
    eps = torch.randn((samples, 3, 16, 16), generator=torch.Generator().manual_seed(seed))
    sigma = level * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
    loop = [attreval.attribute(vgg, x + sigma.view(-1, 1, 1, 1) * e, y, "input_x_grad", n=1) for e in eps]
    torch.testing.assert_close(maps, torch.stack(loop).mean(dim=0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(maps, attreval.attribute(vgg, x, y, "input_x_grad", n=1))


def test_smoothgrad_at_a_hidden_layer_matches_a_loop(vgg):
    x, y = grids()
    task = build_task(make_setting("gridpg", vgg, 1), x, y, "middle", (0, 0))
    method = SmoothGrad(base="grad", num_samples=3, noise_level=0.1)
    noise = method.noise(task.inputs)  # (S, B, C, h, w)
    loop = [attreval.METHODS.get("grad")(dataclasses.replace(task, inputs=task.inputs + n)) for n in noise]
    torch.testing.assert_close(method(task), torch.stack(loop).mean(dim=0), rtol=1e-5, atol=1e-6)


def test_smoothgrad_batch_chunks_and_seed(vgg):
    x, y = grids(batch=3)
    options = dict(n=1, base="input_x_grad", num_samples=3, noise_level=0.1)
    reference = attreval.attribute(vgg, x, y, "smoothgrad", chunk_size=64, **options)
    torch.testing.assert_close(attreval.attribute(vgg, x, y, "smoothgrad", chunk_size=1, **options), reference)
    torch.testing.assert_close(attreval.attribute(vgg, x[1:2], y[1:2], "smoothgrad", **options), reference[1:2])
    assert torch.equal(attreval.attribute(vgg, x, y, "smoothgrad", chunk_size=64, **options), reference)
    assert not torch.allclose(attreval.attribute(vgg, x, y, "smoothgrad", seed=1, **options), reference)


def test_smoothgrad_options():
    method = SmoothGrad(base="int_grad", base_options={"n_steps": 5})
    assert method.base_options == (("n_steps", 5),) and hash(method) == hash(SmoothGrad(base_options=(("n_steps", 5),)))
    assert method.base_method().n_steps == 5
    with pytest.raises(ValueError, match="noise_level"):
        SmoothGrad(noise_level=-0.1)
    with pytest.raises(ValueError, match="num_samples"):
        SmoothGrad(num_samples=0)
    with pytest.raises(ValueError, match="did you mean"):
        SmoothGrad(base="int_grad", base_options={"n_step": 5}).base_method()
