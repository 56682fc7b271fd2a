"""The cone over traced graphs (attreval.cone.graph, issue 24 §1): rules per fx operation give the full
computation's logits and maps on timm and torchvision CNNs beyond VGG/ResNet (channels-last ConvNeXt blocks,
DenseNet concatenations, squeeze-excitation gates, stochastic depth), input and middle layer, border windows
included; nothing cached is written to."""

from __future__ import annotations

import pandas as pd
import pytest
import timm
import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

import attreval
from attreval.cone import ConePlan
from attreval.cone.graph import GraphRule
from attreval.cone.report import recording, summary
from attreval.models.staged import StagedModel
from test_cone import double_setting, occlusion_maps, relative
from tiny_models import randomize_bn, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module


class Block(nn.Module):
    """Every graph operation with a rule, and two global ones: a dilated grouped conv, a ConvNeXt-style
    channels-last LayerNorm → Linear → GELU → Linear with a layer scale, stochastic depth, an in-place residual
    add, a concatenation over channels, a broadcast constant, then a squeeze-excitation gate (global)."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=2, dilation=2, groups=c)
        self.norm = nn.LayerNorm(c)
        self.fc1, self.fc2 = nn.Linear(c, 2 * c), nn.Linear(2 * c, c)
        self.scale = nn.Parameter(torch.rand(c))
        self.drop = StochasticDepth(0.5, "row")
        self.bn = nn.BatchNorm2d(2 * c)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.squeeze, self.excite = nn.Conv2d(2 * c, c, 1), nn.Conv2d(c, 2 * c, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y)))) * self.scale
        y = self.drop(y.permute(0, 3, 1, 2))
        y += x
        z = torch.cat([y, torch.relu(x) * 0.5 + 1.0], 1)
        z = self.pool(self.bn(z))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(z.mean((2, 3), keepdim=True)))))
        return z * gate


def test_every_graph_rule_matches_the_full_computation_and_the_gate_is_global():
    torch.manual_seed(0)
    block = randomize_bn(Block()).eval().double()
    plan = ConePlan([block, nn.Conv2d(8, 3, 3, padding=1).double()])
    rule = plan.rule.rules[0]
    assert isinstance(rule, GraphRule) and plan.incremental
    # the gate is the global operation: the mean, and the product where the region meets it, run on the
    # materialised copies (everything after them too)
    names = [r.node for r in rule.full_rules()]
    assert names[0] == "mean" and names[1].startswith("mul") and len(names) == 2
    x = torch.randn(2, 4, 19, 17, dtype=torch.float64)
    cache = plan.prepare(x)
    snapshot = [t.clone() for t in cache[0][0].values() if isinstance(t, Tensor)]
    boxes = torch.tensor([[0, 3, 0, 3], [16, 19, 14, 17], [5, 9, 6, 11], [0, 19, 0, 17], [18, 19, 0, 1]])
    got = plan.occluded(cache, x, boxes)
    copies = x.repeat_interleave(len(boxes), 0)
    for k, (t, b, l_, r) in enumerate(boxes.tolist() * 2):
        copies[k, :, t:b, l_:r] = 0
    with torch.no_grad():
        ref = plan.rule.rules[1].module(block(copies))
    assert relative(got, ref) <= 1e-12
    after = [t for t in cache[0][0].values() if isinstance(t, Tensor)]
    assert all(torch.equal(a, b) for a, b in zip(snapshot, after))  # the in-place add wrote into no cached tensor


def test_without_the_gate_the_block_stays_a_region_to_the_end():
    torch.manual_seed(1)

    class NoGate(Block):
        def forward(self, x: Tensor) -> Tensor:
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y)))) * self.scale
            y = self.drop(y.permute(0, 3, 1, 2)) + x
            return self.pool(self.bn(torch.cat([y, torch.relu(x)], 1)))

    block = randomize_bn(NoGate()).eval().double()
    plan = ConePlan([block])
    assert plan.fallbacks == []
    x = torch.randn(1, 4, 24, 24, dtype=torch.float64)
    boxes = torch.tensor([[0, 4, 20, 24], [10, 14, 10, 14]])
    copies = x.repeat(2, 1, 1, 1)
    for k, (t, b, l_, r) in enumerate(boxes.tolist()):
        copies[k, :, t:b, l_:r] = 0
    with torch.no_grad():
        assert relative(plan.occluded(plan.prepare(x), x, boxes), block(copies)) <= 1e-12


def build(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind.startswith("timm_"):
        model = timm.create_model(kind[5:], pretrained=False, num_classes=10)
    else:
        model = getattr(torchvision.models, kind)(num_classes=10)
    return randomize_bn(model).eval()


# (model, setting, layer, kernel, stride) on 2×2 grids of 32-px cells: K=24, s=16 overhangs the border (starts −16 … 48)
CASES = [
    ("timm_resnet18", "gridpg", "input", 24, 16),
    ("timm_resnet18", "difull", "middle", 5, 4),
    ("convnext_tiny", "gridpg", "input", 24, 16),
    ("convnext_tiny", "dipart", "middle", 3, 2),
    ("densenet121", "gridpg", "input", 24, 16),
    ("densenet121", "difull", "middle", 5, 4),
    ("mobilenet_v3_small", "dipart", "input", 24, 16),
    ("mobilenet_v3_small", "gridpg", "middle", 5, 4),
    ("regnet_y_400mf", "gridpg", "input", 24, 16),
    ("regnet_x_400mf", "difull", "middle", 3, 2),
    ("timm_efficientnet_b0", "dipart", "input", 24, 16),
    ("timm_efficientnet_b0", "gridpg", "middle", 5, 4),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind,setting_name,layer,kernel,stride", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_graph_cone_maps_equal_the_full_computation(kind, setting_name, layer, kernel, stride):
    model = build(kind)
    setting = double_setting(setting_name, model)
    for _, stage in setting.staged.stages:
        stage.double()  # a traced stage holds its own references to buffers (timm's BatchNormAct2d)
    images = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    ref = occlusion_maps(setting, images, layer, kernel, stride, materialise=True)
    got = occlusion_maps(setting, images, layer, kernel, stride, materialise=False, chunk_size=16)
    assert got.shape == ref.shape and ref.abs().max() > 0
    assert relative(got, ref) <= 1e-5
    # the cone was taken: the tail's first stage keeps regions (a traced graph or a chain of rules); without
    # squeeze-excitation gates only the head (global pooling + classifier) runs in full
    tail = setting.tail(layer, (0,))
    occluder = tail.occluder(setting.activations(images, layer))
    assert occluder.plan.incremental
    if kind in ("timm_resnet18", "convnext_tiny", "densenet121") and setting_name == "gridpg":
        head = {m for module in tail.chain.head for m in module.modules()}
        assert occluder.plan.fallbacks and all(m in head for m in occluder.plan.fallbacks)


def staged_with_block() -> StagedModel:
    torch.manual_seed(2)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    stages = (("a", nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())), ("b", randomize_bn(Block()).eval()))
    return StagedModel(stages, head, head, {"middle": "a"}, "block test model")


def test_the_run_is_told_where_the_cone_stops():
    images, classes = torch.randn(1, 3, 32, 32), torch.tensor([[1]])
    lines = {}
    for name, model, layer in (
        ("gated", staged_with_block(), "input"),
        ("resnet", tiny_model("resnet"), "input"),
        ("final", tiny_model("resnet"), "final"),
    ):
        with recording() as notes:
            attreval.attribute(model, images, classes, "occlusion", layer=layer, kernel_size=8, stride=8)
        lines[name] = summary(notes)
    assert lines["gated"] == "partial: full passes from b:mean"
    assert lines["resnet"] == "cone"
    assert lines["final"] is not None and lines["final"].startswith("full passes (")
    assert summary([]) is None  # a unit without Occlusion


def test_the_run_writes_a_cone_column_and_logs_a_fallback_once_per_unit(tmp_path, caplog):
    from attreval.config import load_config
    from attreval.runs.run import run
    from tiny_models import tiny_run_config

    body = """
[evaluation]
settings = ["gridpg"]
layers = ["input", "final"]
methods = ["occlusion", "grad"]
heads = "corners"
batch_size = 2
[methods.occlusion]
input_kernel_size = 16
input_stride = 16
hidden_kernel_size = 1
hidden_stride = 1
"""
    (tmp_path / "run.toml").write_text(tiny_run_config(3, body, gridpg=2, disconnected=2))
    with caplog.at_level("INFO", logger="attreval.runs.run"):
        store = run(load_config(tmp_path / "run.toml"), tmp_path / "out", progress=False)
    costs = pd.read_parquet(store.root / "costs.parquet").set_index(["layer", "method"])["cone"]
    assert costs["input", "occlusion"] == "cone"
    assert costs["final", "occlusion"].startswith("full passes (")
    assert pd.isna(costs["input", "grad"]) and pd.isna(costs["final", "grad"])  # not an Occlusion unit
    lines = [r.getMessage() for r in caplog.records if "receptive-field cone" in r.getMessage()]
    assert len(lines) == 1 and "final__occlusion" in lines[0]
