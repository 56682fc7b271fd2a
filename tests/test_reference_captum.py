"""Reference checks against Captum (optional extra ``[ref]``) on tiny models, n = 1 GridPG (= the plain model).

Captum is the implementation the paper's code used (PAPER.md §4). Methods compared:

* ``grad`` vs ``Saliency(abs=True)``; ``input_x_grad`` vs ``InputXGradient``; ``int_grad`` vs
  ``IntegratedGradients(n_steps=20, method="gausslegendre")``; ``guided_backprop`` vs ``GuidedBackprop`` (abs);
  all at the input layer, Captum summed over channels.
* ``grad_cam`` vs ``LayerGradCam(relu_attributions=True)`` at the final layer, on the network's tail.
  Layer-CAM has no Captum counterpart.
* ``occlusion`` vs Captum ``Occlusion``. The window definitions differ in two ways: Captum places windows only
  fully inside the input (starts ``0, s, …, W-K``) and divides the *sum* of the output changes by the number
  of windows covering each pixel; the paper lets border windows stick out (starts from ``-(K/s-1)·s``, clipped)
  and divides *each* change by that window's clipped area |P| (PAPER.md §4.3). They coincide, up to the
  constant K², when the windows tile the map: K = s dividing the side (one full window per pixel). Captum's
  window also spans the channel axis here (all channels occluded together, as in the paper), so its map is
  the same for every channel: we compare its channel mean.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attreval
from attreval.api import build_task
from attreval.settings import make_setting
from tiny_models import tiny_model

captum_attr = pytest.importorskip("captum.attr")
pytestmark = [
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients"),
    pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU"),
]

ATOL = 1e-5


@pytest.fixture(scope="module", params=["vgg", "resnet"])
def model(request):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 16, 16, generator=g), torch.tensor([[3, 7], [1, 1]])


def captum_maps(attributor, x, targets, **kwargs):
    """Captum attributions for each target column, summed over channels: ``(B, T, h, w)``."""
    maps = [attributor.attribute(x.clone(), target=targets[:, t], **kwargs) for t in range(targets.shape[1])]
    return torch.stack([m.detach().sum(dim=1) for m in maps], dim=1)


@pytest.mark.parametrize(
    "name,captum_class,kwargs",
    [
        ("grad", "Saliency", {"abs": True}),
        ("input_x_grad", "InputXGradient", {}),
        ("int_grad", "IntegratedGradients", {"n_steps": 20, "method": "gausslegendre"}),
    ],
)
def test_backprop_methods_match_captum(model, batch, name, captum_class, kwargs):
    x, y = batch
    expected = captum_maps(getattr(captum_attr, captum_class)(model), x, y, **kwargs)
    ours = attreval.attribute(model, x, y, name, n=1)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=ATOL)


def test_guided_backprop_matches_captum(model, batch):
    x, y = batch
    attributor = captum_attr.GuidedBackprop(model)
    maps = [attributor.attribute(x.clone(), target=y[:, t]).detach().abs().sum(dim=1) for t in range(2)]
    ours = attreval.attribute(model, x, y, "guided_backprop", n=1)
    torch.testing.assert_close(ours, torch.stack(maps, dim=1), rtol=1e-4, atol=ATOL)


class Tail(nn.Module):
    """The network from a layer on, with an identity module marking the layer for Captum's layer methods."""

    def __init__(self, forward):
        super().__init__()
        self.layer = nn.Identity()
        self.forward_fn = forward

    def forward(self, activations):
        return self.forward_fn(self.layer(activations))[:, 0]


def test_grad_cam_matches_captum_layer_grad_cam(model, batch):
    x, y = batch
    task = build_task(make_setting("gridpg", model, 1), x, y, "final", (0, 0))
    tail = Tail(task.tail)
    attributor = captum_attr.LayerGradCam(tail, tail.layer)
    expected = captum_maps(attributor, task.inputs, y, relu_attributions=True)
    ours = attreval.attribute(model, x, y, "grad_cam", n=1, layer="final")
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=ATOL)


@pytest.mark.parametrize("window", [4, 8])
def test_occlusion_matches_captum_where_windows_tile_the_map(model, batch, window):
    x, y = batch
    attributor = captum_attr.Occlusion(model)
    maps = [
        attributor.attribute(
            x.clone(),
            target=y[:, t],
            sliding_window_shapes=(3, window, window),
            strides=(3, window, window),
            baselines=0,
        ).mean(dim=1)
        for t in range(2)
    ]
    expected = torch.stack(maps, dim=1) / window**2
    ours = attreval.attribute(model, x, y, "occlusion", n=1, kernel_size=window, stride=window)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=ATOL)


def test_occlusion_differs_from_captum_when_windows_overlap(model, batch):
    """K = 2s: the paper's border windows stick out and each change is shared over |P|; Captum's are not."""
    x, y = batch
    captum = (
        captum_attr.Occlusion(model)
        .attribute(x.clone(), target=y[:, 0], sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0)
        .mean(dim=1)
    )
    ours = attreval.attribute(model, x, y[:, :1], "occlusion", n=1, kernel_size=8, stride=4)[:, 0]
    assert not torch.allclose(ours, captum / 64, atol=ATOL)
