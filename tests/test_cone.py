"""Incremental Occlusion (attreval.cone, issue 17 §1): the receptive-field cone path gives the full computation's
maps in every setting, at the input and a middle layer, on torchvision, shipped and tiny models; modules without a
rule fall back to full passes; nothing is mutated."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck
from torchvision.models.vgg import cfgs, make_layers

from attreval.api import build_task
from attreval.cone import ConePlan, ConvRule, Patch, occluded_patch, read
from attreval.methods.perturbation import Occlusion, interval_masks, window_boxes
from attreval.models.staged import StagedModel
from attreval.models.zoo import resnet_small, vgg_small
from attreval.settings import SETTINGS, make_setting
from attreval.tail import DelegatingTail, Occluder
from tiny_models import randomize_bn, tiny_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("one_thread"),
]  # torchvision ResNet18/VGG11 equivalence runs: left out of `make test-fast`


class Materialised(DelegatingTail):
    """``inner`` with the base class's occluder: every occluded copy through the tail in full (the reference)."""

    def occluder(self, x: Tensor) -> Occluder:
        return Occluder(self, x)


class TorchvisionVGG11(nn.Module):
    """torchvision's VGG11 ``features`` (``make_layers(cfgs["A"])``) with a small pooled classifier, so that
    GridPG's sliding classifier takes 1×1 features and 32-px cells suffice (the full 4096-wide classifier would
    need 224-px cells; the benchmark covers that one)."""

    def __init__(self, batch_norm: bool = False):
        super().__init__()
        self.features = make_layers(cfgs["A"], batch_norm=batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(512, 32), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(32, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def build(kind: str) -> tuple[nn.Module, int, int]:
    """``(model in eval mode, cell side, channels)``."""
    torch.manual_seed(0)
    if kind in ("tiny_vgg", "tiny_resnet"):
        return tiny_model(kind.split("_")[1]), 16, 3
    if kind == "fashion_vgg":
        return vgg_small().eval(), 32, 1
    if kind == "fashion_resnet":
        return randomize_bn(resnet_small()).eval(), 32, 1
    if kind == "resnet18":
        return randomize_bn(torchvision.models.resnet18(num_classes=10)).eval(), 32, 3
    if kind == "vgg11":
        return TorchvisionVGG11().eval(), 32, 3
    if kind == "vgg11_bn":
        return randomize_bn(TorchvisionVGG11(batch_norm=True)).eval(), 32, 3
    raise AssertionError(kind)


def double_setting(name: str, model: nn.Module, n: int = 2):
    """The setting, split in float32 (as the splitters probe) and then converted to float64, so that the
    comparison is not limited by float32 rounding of the full computation itself (~1e-5 of the largest drop)."""
    setting = make_setting(name, model, n)
    model.double()
    for head in (setting.staged.cell_head, setting.staged.grid_head):
        if head is not None:
            head.double()
    return setting


def occlusion_maps(setting, images: Tensor, layer: str, kernel: int, stride: int, materialise: bool, chunk_size: int = 64) -> Tensor:
    heads = (0, 0) if setting.pooled else (0, setting.n * setting.n - 1)
    classes = torch.tensor([[1, 7], [3, 3]])[: images.shape[0]]
    task = build_task(setting, images, classes, layer, heads, chunk_size=chunk_size)
    if materialise:
        task = dataclasses.replace(task, tail=Materialised(task.tail))
    return Occlusion(kernel_size=kernel, stride=stride)(task)


def relative(got: Tensor, ref: Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max())


# (model, setting, layer, kernel, stride): even kernels overhang the border (K=24, s=16 at 64 px: starts −16 … 48;
# K=32, s=24: −24 … 48), odd ones are clipped at it (K=9, s=30: centres 0, 30, 60); hidden layers get the paper's 5/2 and a strided 3/3. The cheap tiny and shipped
# models run every setting × layer; torchvision's every setting at the input and one at the middle layer.
CASES = [
    *[
        (kind, setting, layer, *window)
        for kind, windows in (
            ("tiny_vgg", {"input": (5, 2), "middle": (3, 1)}),
            ("tiny_resnet", {"input": (6, 4), "middle": (5, 2)}),
            ("fashion_vgg", {"input": (24, 16), "middle": (5, 2)}),
            ("fashion_resnet", {"input": (9, 20), "middle": (3, 3)}),
        )
        for setting in SETTINGS.names()
        for layer, window in windows.items()
    ],
    ("resnet18", "gridpg", "input", 32, 24),
    ("resnet18", "difull", "input", 9, 30),
    ("resnet18", "dipart", "input", 32, 24),
    ("resnet18", "gridpg", "middle", 5, 2),
    ("resnet18", "difull", "middle", 3, 3),
    ("vgg11", "gridpg", "input", 9, 30),
    ("vgg11", "difull", "input", 32, 24),
    ("vgg11", "dipart", "input", 9, 30),
    ("vgg11", "dipart", "middle", 5, 2),
    ("vgg11_bn", "gridpg", "input", 32, 24),
]


@pytest.mark.parametrize("kind,setting_name,layer,kernel,stride", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_cone_maps_equal_the_full_computation(kind, setting_name, layer, kernel, stride):
    model, cell, channels = build(kind)
    setting = double_setting(setting_name, model)
    images = torch.randn(1, channels, 2 * cell, 2 * cell, dtype=torch.float64)
    ref = occlusion_maps(setting, images, layer, kernel, stride, materialise=True)
    got = occlusion_maps(setting, images, layer, kernel, stride, materialise=False, chunk_size=16)
    assert got.shape == ref.shape and ref.abs().max() > 0
    assert relative(got, ref) <= 1e-5


def test_float32_logits_match_and_every_rule_is_known_for_resnet18():
    model, cell, _ = build("resnet18")
    setting = make_setting("gridpg", model, 2)
    x = torch.randn(2, 3, 2 * cell, 2 * cell)
    tail = setting.tail("input", (0,))
    boxes = window_boxes(interval_masks(64, 16, 16, x.device), interval_masks(64, 16, 16, x.device))
    occluder = tail.occluder(x)
    with torch.no_grad():
        got, ref = occluder(boxes), Occluder(tail, x)(boxes)
    assert got.shape == ref.shape == (2, boxes.shape[0], 1, 10)
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    # only the head's global pooling + classifier run in full (on the patched final activation)
    assert [type(m) for m in occluder.plan.fallbacks] == [nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]


class Mystery(nn.Module):
    """A module the cone engine has no rule for: its forward branches on a value, so torch.fx cannot trace it."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        scale = 2.0 if float(x.abs().amax()) >= 0 else 1.0  # always 2, but only known at run time
        return torch.tanh(self.conv(x)) * scale + x


def mixed_model() -> StagedModel:
    """Rules of every kind: dilated grouped strided conv, avg/max pooling with padding, in-place activations,
    a Bottleneck with downsampling, an unknown module in the middle."""
    torch.manual_seed(3)
    stages = (
        (
            "a",
            nn.Sequential(
                nn.Conv2d(2, 8, 5, stride=2, padding=3, dilation=2, groups=2), nn.BatchNorm2d(8), nn.LeakyReLU(0.1, inplace=True)
            ),
        ),
        ("b", nn.Sequential(nn.AvgPool2d(3, 2, 1), nn.Conv2d(8, 8, (3, 1), padding=(1, 0)), nn.ReLU(inplace=True))),
        ("c", Mystery(8)),
        (
            "d",
            nn.Sequential(
                nn.MaxPool2d(3, 1, 1), Bottleneck(8, 4, stride=2, downsample=nn.Sequential(nn.Conv2d(8, 16, 1, 2), nn.BatchNorm2d(16)))
            ),
        ),
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 10))
    for _, module in stages:
        randomize_bn(module)
        module.eval()
    return StagedModel(stages, head, head, {"middle": "b"}, "mixed test model")


@pytest.mark.parametrize("setting_name", SETTINGS.names())
@pytest.mark.parametrize("layer", ["input", "middle"])
def test_unknown_module_falls_back_to_full_passes_with_the_same_maps(setting_name, layer):
    staged = mixed_model()
    setting = make_setting(setting_name, staged, 2)
    for _, module in staged.stages:
        module.double()
    staged.cell_head.double()
    images = torch.randn(2, 2, 64, 64, dtype=torch.float64)
    kernel, stride = (20, 16) if layer == "input" else (5, 2)
    ref = occlusion_maps(setting, images, layer, kernel, stride, materialise=True)
    got = occlusion_maps(setting, images, layer, kernel, stride, materialise=False, chunk_size=8)
    assert relative(got, ref) <= 1e-5
    tail = setting.tail(layer, (0,))
    occluder = tail.occluder(setting.activations(images, layer))
    if layer == "middle":  # the tail starts with the Mystery stage: nothing to save, plain materialised copies
        assert type(occluder) is Occluder
        return
    fallbacks = occluder.plan.fallbacks
    assert staged.stages[2][1] in fallbacks  # the Mystery stage ran in full, on the materialised patch
    assert not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d, nn.MaxPool2d, Bottleneck)) for m in fallbacks)


def test_nothing_is_mutated_and_no_hooks_are_left():
    model, cell, _ = build("tiny_resnet")
    setting = make_setting("dipart", model, 2)
    images = torch.randn(2, 3, 2 * cell, 2 * cell)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = setting.activations(images, "input")
    before = x.clone()
    tail = setting.tail("input", (0, 3))
    occluder = tail.occluder(x)
    boxes = torch.tensor([[0, 4, 0, 4], [10, 20, 28, 32]])
    first = occluder(boxes)
    again = occluder(boxes)  # the cache is reused, unchanged
    assert torch.equal(first, again) and torch.equal(x, before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # an empty window changes nothing
    assert torch.allclose(occluder(torch.tensor([[5, 5, 0, 32]]))[:, 0], tail(x), rtol=1e-5, atol=1e-6)


def test_read_gives_the_patched_tensor_with_the_padding_value_outside():
    base = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    values = -torch.ones(2, 2, 3, 2, 2)
    patch = Patch(base, values, torch.tensor([0, 3]), torch.tensor([1, 4]))
    got = read(patch, torch.tensor([-1, 2]), torch.tensor([0, 3]), (3, 4), float("-inf"))
    for p, (top, left) in enumerate([(-1, 0), (2, 3)]):
        dense = base.clone()
        dense[:, :, patch.top[p] : patch.top[p] + 2, patch.left[p] : patch.left[p] + 2] = -1
        padded = torch.nn.functional.pad(dense, (2, 2, 2, 2), value=float("-inf"))
        expected = padded[:, :, top + 2 : top + 5, left + 2 : left + 6]
        assert torch.equal(got[:, p], expected)


def test_plan_on_a_bare_chain_matches_its_modules():
    torch.manual_seed(1)
    chain = [nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=2, dilation=2)]
    x = torch.randn(1, 3, 23, 19)
    plan = ConePlan(chain)
    boxes = torch.tensor([[0, 3, 0, 3], [20, 23, 16, 19], [8, 15, 2, 9], [0, 23, 0, 19]])
    got = plan.occluded(plan.prepare(x), x, boxes)
    copies = x.repeat(4, 1, 1, 1)
    for k, (t, b, l_, r) in enumerate(boxes.tolist()):
        copies[k, :, t:b, l_:r] = 0
    ref = nn.Sequential(*chain)(copies)
    assert plan.fallbacks == [] and torch.allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cone_on_cuda_matches_the_cpu():
    model, cell, _ = build("tiny_resnet")
    images = torch.randn(1, 3, 2 * cell, 2 * cell)
    cpu = occlusion_maps(make_setting("gridpg", model, 2), images, "input", 6, 4, materialise=False)
    model = model.cuda()
    cuda = occlusion_maps(make_setting("gridpg", model, 2), images.cuda(), "input", 6, 4, materialise=False)
    assert cuda.device.type == "cuda" and relative(cuda.cpu(), cpu) <= 1e-4


def test_large_kernel_uses_the_linear_update_with_the_same_result(monkeypatch):
    calls = []
    original = ConvRule.delta
    monkeypatch.setattr(ConvRule, "delta", lambda self, cache, value: calls.append(1) or original(self, cache, value))
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 5, 7, padding=1)  # a 7×7 kernel over a 14×14 map: every window reaches all 10×10 outputs
    x = torch.randn(2, 3, 14, 14, dtype=torch.float64)
    conv.double()
    plan = ConePlan([conv, nn.ReLU()])
    boxes = torch.tensor([[0, 3, 0, 3], [11, 14, 12, 14], [5, 8, 6, 9]])
    got = plan.occluded(plan.prepare(x), x, boxes)
    copies = x.repeat_interleave(3, 0)
    for k, (t, b, l_, r) in enumerate(boxes.tolist() * 2):
        copies[k, :, t:b, l_:r] = 0
    assert relative(got, torch.relu(conv(copies))) <= 1e-12
    assert calls == [1]  # the linear update was the one taken


@pytest.mark.parametrize("groups", [1, 2], ids=["linear_update", "window_rule"])
def test_border_windows_recompute_only_their_clipped_cone(groups):
    """A chunk of corner windows recomputes the cone clipped to the map (3×3 after a 3×3 convolution of a
    2×2 corner window), not a full-size rectangle shifted inward; the values stay the full computation's.
    Both paths of ``ConvRule``: the linear update (groups 1, a small change) and the window rule (grouped)."""
    torch.manual_seed(3)
    conv = nn.Conv2d(2, 4, 3, padding=1, groups=groups).double()
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    rule = ConePlan([conv]).rule.rules[0]
    cache = rule.clean(x)[1]
    boxes = torch.tensor([[0, 2, 0, 2], [7, 9, 7, 9]])  # the two opposite corners
    patch = rule.patch(cache, occluded_patch(x, boxes))
    assert patch.size == (3, 3)  # unclipped: 4×4
    assert patch.top.tolist() == [0, 6] and patch.left.tolist() == [0, 6]
    copies = x.repeat(2, 1, 1, 1)
    for k, (t, b, l_, r) in enumerate(boxes.tolist()):
        copies[k, :, t:b, l_:r] = 0
    assert relative(patch.dense(), conv(copies)) <= 1e-12
    interior = torch.tensor([[3, 5, 3, 5]])  # away from the border the cone keeps its full 4×4
    assert rule.patch(cache, occluded_patch(x, interior)).size == (4, 4)
