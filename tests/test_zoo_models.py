"""The model zoo: one model of every torchvision classification CNN family and five timm CNN families
(random weights, small inputs), each split automatically and checked.

For every model: the split reproduces the model's logits and is taken by the splitter expected for it;
in DiFull the input-layer gradient of head h is exactly zero outside cell h; GridPG, DiFull and DiPart run at
input / middle / final for a gradient, a CAM and a perturbation method with finite, non-trivial maps.
Families are kept small (fewer blocks, narrower widths, 32-px cells) so the whole file takes seconds per model.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import convnext, densenet, resnet

import attreval
from attreval.models.splitters import SPLITTERS, splitter_for

pytestmark = pytest.mark.slow  # end-to-end runs / zoo / training: left out of `make test-fast`

K = 10
METHODS = {"grad": {}, "grad_cam": {}, "occlusion": {"input_kernel_size": 16, "input_stride": 16}}


def tv(name, **kw):
    return functools.partial(torchvision.models.get_model, name, weights=None, num_classes=K, **kw)


def timm_model(name):
    def build():
        timm = pytest.importorskip("timm")
        return timm.create_model(name, pretrained=False, num_classes=K)

    return build


# (id, constructor, cell side, splitter expected); families from torchvision.models' classification list
ZOO = [
    ("alexnet", tv("alexnet"), 64, "vgg"),
    ("vgg11_bn", tv("vgg11_bn", init_weights=False), 32, "vgg"),
    ("resnet18", tv("resnet18"), 32, "resnet"),
    ("resnext", lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=8, num_classes=K), 32, "resnet"),
    ("wide_resnet", lambda: resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], width_per_group=32, num_classes=K), 32, "resnet"),
    ("densenet", lambda: densenet.DenseNet(8, (2, 2, 2, 2), 16, num_classes=K), 32, "graph"),
    (
        "convnext",
        lambda: convnext.ConvNeXt(
            [
                convnext.CNBlockConfig(16, 32, 1),
                convnext.CNBlockConfig(32, 64, 1),
                convnext.CNBlockConfig(64, 128, 1),
                convnext.CNBlockConfig(128, None, 1),
            ],
            num_classes=K,
        ),
        32,
        "graph",
    ),
    ("efficientnet_b0", tv("efficientnet_b0"), 32, "graph"),
    ("efficientnet_v2_s", tv("efficientnet_v2_s"), 32, "graph"),
    ("googlenet", tv("googlenet", aux_logits=False, init_weights=False), 32, "graph"),
    ("inception_v3", tv("inception_v3", aux_logits=False, init_weights=False), 80, "graph"),
    ("mnasnet0_5", tv("mnasnet0_5"), 32, "graph"),
    ("mobilenet_v2", tv("mobilenet_v2", width_mult=0.5), 32, "graph"),
    ("mobilenet_v3_small", tv("mobilenet_v3_small"), 32, "graph"),
    ("regnet_x_400mf", tv("regnet_x_400mf"), 32, "graph"),
    ("shufflenet_v2_x0_5", tv("shufflenet_v2_x0_5"), 32, "graph"),
    ("squeezenet1_1", tv("squeezenet1_1"), 32, "graph"),
    ("timm_efficientnet_b0", timm_model("efficientnet_b0"), 32, "timm"),
    ("timm_convnext_atto", timm_model("convnext_atto"), 32, "timm"),
    ("timm_mobilenetv3", timm_model("mobilenetv3_small_050"), 32, "timm"),
    ("timm_regnetx_002", timm_model("regnetx_002"), 32, "timm"),
    ("timm_ghostnet", timm_model("ghostnet_050"), 32, "timm"),
    ("vit_torchvision_tiny", lambda: __import__("tiny_vit").tiny_torchvision_vit(), 32, "vit"),  # docs/transformers.md
]


@functools.lru_cache(maxsize=1)
def built(name: str) -> nn.Module:
    constructor = next(c for n, c, _, _ in ZOO if n == name)
    torch.manual_seed(0)
    model = constructor().eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so eval mode is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def grids(cell: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, channels, 2 * cell, 2 * cell, generator=g), torch.randperm(K, generator=g)[:4][None]


def test_every_splitter_is_exercised_by_the_zoo():
    from test_zoo_families import FAMILIES  # the hierarchical / refused families (issue 25)

    families = {"refused" if expected.startswith("refused") else expected for *_, expected in FAMILIES}
    assert {expected for *_, expected in ZOO} | families == set(SPLITTERS.names())


@pytest.mark.parametrize("name,cell,splitter", [(n, c, s) for n, _, c, s in ZOO], ids=[n for n, *_ in ZOO])
def test_zoo_model_is_split_checked_and_runs_every_setting(name, cell, splitter):
    model = built(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert splitter_for(model)[0] == splitter
    staged = attreval.split_model(model, (3, cell, cell))
    x = torch.randn(2, 3, cell, cell, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(staged.cell_head(staged.run(x)), model(x), rtol=1e-4, atol=1e-5)
    assert {"middle", "final"} <= set(staged.aliases) and staged.index("input") < staged.index("middle") <= staged.index("final")

    images, labels = grids(cell)
    corners = labels[:, [0, 3]]
    # DiFull: the input-layer gradient of head h is exactly zero outside cell h (separate cells, PAPER.md §1.3)
    maps = attreval.attribute(model, images, corners, "grad", setting="difull")
    assert maps[0, 0, cell:, :].abs().sum() == 0 and maps[0, 0, :, cell:].abs().sum() == 0
    assert maps[0, 1, :cell, :].abs().sum() == 0 and maps[0, 1, :, :cell].abs().sum() == 0
    assert maps[0, 0, :cell, :cell].abs().sum() + maps[0, 1, cell:, cell:].abs().sum() > 0  # (a ReLU'd head can be dead)
    with torch.no_grad():  # unpadded convs/pools (AlexNet, Inception): a 2×2 grid's features are not 2× a cell's
        tiles = staged.run(images).shape[-1] == 2 * staged.run(images[..., :cell, :cell]).shape[-1]

    for setting in attreval.SETTINGS.names():
        targets = labels if attreval.SETTINGS.get(setting).pooled else corners
        if setting == "gridpg" and staged.window is not None:  # FC classifier: cells must fit its window
            with pytest.raises(ValueError, match="GridPG's convolutional classifier"):
                attreval.attribute(model, images, targets, "grad", setting=setting)
            continue
        if setting == "dipart" and not tiles:
            with pytest.raises(ValueError, match="split into 2×2 cell blocks for DiPart"):
                attreval.attribute(model, images, targets, "grad", setting=setting)
            continue
        for layer in ("input", "middle", "final"):
            for method, options in METHODS.items():
                out = attreval.attribute(model, images, targets, method, setting=setting, layer=layer, **options)
                assert out.shape[:2] == targets.shape and torch.isfinite(out).all(), (setting, layer, method)
                assert out.abs().sum() > 0 or method == "grad_cam", (setting, layer, method)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_unsplittable_model_names_the_way_out():
    class Recurrent(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            while x.shape[-1] > 8:
                x = self.conv(x) if x.sum() > 0 else -self.conv(x)
            return x.mean((2, 3))

    with pytest.raises(ValueError, match=r"cannot split Recurrent.*StagedModel") as err:
        attreval.split_model(Recurrent())
    assert "\n" not in str(err.value)


def test_a_wrong_split_is_refused_with_the_largest_difference():
    from attreval.models.staged import StagedModel

    model = tiny_resnet()
    bad = StagedModel(
        (("conv1", nn.Sequential(model.conv1, model.bn1)),), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)), None
    )
    with pytest.raises(ValueError, match="largest difference"):
        bad.verify(model, torch.randn(1, 3, 16, 16))


def tiny_resnet():
    from tiny_models import tiny_model

    return tiny_model("resnet")


def test_densenet_is_not_mistaken_for_a_vgg():
    model = built("densenet")
    assert splitter_for(model)[0] == "graph"
    staged = attreval.split_model(model, (3, 32, 32))
    assert staged.aliases["final"] == "relu"  # the ReLU after norm5, before pooling (post-ReLU, as PAPER.md §2)
    assert staged.layer_names[staged.index("middle")] == "features.transition1"


def test_layer_rule_on_torchvision_224():
    """The generic middle rule gives the 28×28 map of a 224-px input, like the paper's VGG11/ResNet18 (§2)."""
    for name in ("mobilenet_v3_small", "shufflenet_v2_x0_5"):
        staged = attreval.split_model(built(name), (3, 224, 224))
        x = torch.zeros(1, 3, 224, 224)
        with torch.no_grad():
            middle = staged.run(x, 0, staged.index("middle"))
            final = staged.run(x, 0, staged.index("final"))
        assert middle.shape[-1] == 28 and final.shape[-1] == 7, name
