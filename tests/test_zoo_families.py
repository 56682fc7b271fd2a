"""The families a newcomer brings beyond the CNN zoo (issue 25): hierarchical transformers (Swin, Swin-v2, MaxViT,
TinyViT, EfficientViT, MobileViT), multi-branch CNNs (HRNet, Xception) and the timm families that run at one input
size only (BEiT, PiT, LeViT, EfficientFormer) or whose blocks take more than the tokens (EVA-02, XCiT).

Every family either splits — logits reproduced at the cell size, DiFull's input gradient of head h exactly zero
outside cell h, middle strictly above final in resolution, GridPG running at middle — or is refused with one line
that names the family and the StagedModel route (never a traceback). Random weights, nothing downloaded, the
smallest variants (timm / torchvision constructors with fewer blocks and narrower widths) and 32/64-px cells.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import attreval
from attreval.models.splitters import describe_layers, splitter_for
from attreval.models.splitters.layer_rule import middle_index

K = 10


def timm_model(name, **kw):
    def build():
        timm = pytest.importorskip("timm")
        return timm.create_model(name, pretrained=False, num_classes=K, **kw)

    return build


def tv_swin(v2: bool):
    def build():
        from torchvision.models import swin_transformer as sw

        extra = {"block": sw.SwinTransformerBlockV2, "downsample_layer": sw.PatchMergingV2} if v2 else {}
        return sw.SwinTransformer([4, 4], 16, [1, 1, 1, 1], [1, 1, 1, 1], [2, 2], num_classes=K, **extra)

    return build


SMALL_SWIN = {"embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 2, "dynamic_img_size": True}

# (id, constructor, cell side, splitter or "refused: <family words>")
FAMILIES = [
    ("tv_swin", tv_swin(False), 32, "stages"),
    ("tv_swin_v2", tv_swin(True), 32, "stages"),
    ("timm_swin", timm_model("swin_tiny_patch4_window7_224", **SMALL_SWIN), 32, "stages"),
    ("timm_swinv2", timm_model("swinv2_tiny_window8_256", **SMALL_SWIN), 32, "stages"),
    ("maxvit", timm_model("maxvit_pico_rw_256", img_size=64), 64, "stages"),
    ("tinyvit", timm_model("tiny_vit_5m_224"), 32, "stages"),
    ("efficientvit", timm_model("efficientvit_b0"), 64, "stages"),
    ("mobilevit", timm_model("mobilevit_xxs"), 64, "stages"),
    ("hrnet", timm_model("hrnet_w18_small"), 32, "timm"),
    ("xception", timm_model("xception41"), 64, "timm"),
    ("beit", timm_model("beit_base_patch16_224", depth=1, embed_dim=32, num_heads=1), 64, "refused: BEiT"),
    ("eva02", timm_model("eva02_tiny_patch14_224", depth=2, dynamic_img_size=True), 56, "tokens"),
    ("eva02_fixed", timm_model("eva02_tiny_patch14_224", depth=1), 56, "refused: dynamic_img_size=True"),
    ("pit", timm_model("pit_ti_224"), 64, "refused: PiT"),
    ("levit", timm_model("levit_128s"), 64, "refused: LeViT"),
    ("efficientformer", timm_model("efficientformer_l1"), 64, "refused: EfficientFormer"),
    ("xcit", timm_model("xcit_nano_12_p16_224", depth=2), 64, "tokens"),
]


@functools.lru_cache(maxsize=1)
def built(name: str) -> nn.Module:
    constructor = next(c for n, c, _, _ in FAMILIES if n == name)
    torch.manual_seed(0)
    return constructor().eval()


def test_middle_rule_takes_an_earlier_stage_or_none():
    """Reduction levels (log2) of the stages, final last: middle is strictly finer than final, or refused."""
    assert middle_index([1, 2, 3, 4, 5]) == 2  # ResNet-like: r8 for final r32 (PAPER.md §2)
    assert middle_index([2, 5]) == 0  # the first stage reaching r8 is final itself: take the earlier one
    assert middle_index([2, 3, 5, 5]) == 1
    assert middle_index([5, 5]) is None and middle_index([3]) is None


def test_a_model_of_one_resolution_refuses_middle_in_one_line(tmp_path, capsys):
    from attreval.cli import main

    (tmp_path / "flat.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))\n"
    )
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, K),
    ).eval()
    staged = attreval.split_model(model, (3, 16, 16))
    assert "final" in staged.aliases and "middle" not in staged.aliases
    with pytest.raises(ValueError, match=r"above the final layer's resolution.*\(16×16\)") as err:
        staged.resolve("middle")
    assert "\n" not in str(err.value) and "stages 0 (16×16), 1 (16×16)" in str(err.value)
    with pytest.raises(ValueError, match="above the final layer's resolution"):
        attreval.attribute(model, torch.randn(1, 3, 32, 32), torch.tensor([[0, 3]]), "grad", setting="difull", layer="middle")
    assert main(["list", "layers", "flat", "--architecture", f"{tmp_path / 'flat.py'}:build", "--input-size", "16"]) == 0
    assert "middle: not given — expected a middle layer above" in capsys.readouterr().out


def test_alexnet_middle_is_above_final():
    """AlexNet's third block holds conv3 … conv5 at one resolution: middle is conv2 (27×27), not conv3 (13×13)."""
    import torchvision

    model = torchvision.models.alexnet(weights=None, num_classes=K).eval()
    staged = attreval.split_model(model)
    sides = {layer: shape[-1] for layer, _, shape in describe_layers(staged, torch.zeros(1, 3, 224, 224))}
    assert staged.aliases == {"middle": "conv2", "final": "conv5"} and sides["conv2"] == 27 and sides["conv5"] == 13


class SmallImageVGG(nn.Module):
    def __init__(self, features: nn.Module, avgpool: nn.Module, classifier: nn.Module):
        super().__init__()
        self.features, self.avgpool, self.classifier = features, avgpool, classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def test_gridpg_refusal_says_what_the_slid_classifier_needs():
    """A VGG whose adaptive pool resizes small maps to the classifier's 7×7: GridPG needs 7×7 final features per
    cell (56-px cells for this 8×-reducing model), not "the training size"."""
    features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )  # fmt: skip
    model = SmallImageVGG(features, nn.AdaptiveAvgPool2d(7), nn.Sequential(nn.Linear(8 * 7 * 7, 16), nn.ReLU(), nn.Linear(16, K)))
    grids = torch.randn(1, 3, 32, 32)  # 16-px cells: 2×2 final features
    with pytest.raises(ValueError, match=r"7×7 window, one window per cell: about 56-px cells for this model.*got 2×2") as err:
        attreval.attribute(model.eval(), grids, torch.tensor([[0, 1, 2, 3]]), "grad", setting="gridpg")
    assert "\n" not in str(err.value) and "DiFull/DiPart" in str(err.value)
    maps = attreval.attribute(model.eval(), grids, torch.tensor([[0, 3]]), "grad", setting="difull")  # its own avgpool: fine
    assert maps.shape == (1, 2, 32, 32)


@pytest.mark.slow
def test_occlusion_is_zero_where_random_logits_do_not_move_in_float32():
    """The all-zero Occlusion maps of a random-weight GoogLeNet are a property of the weights, not a bug:
    torchvision's initialisation (std 0.01, BatchNorm at identity) shrinks activations about tenfold per stage,
    so the logits are the classifier's bias to the last float32 bit — no perturbation of any layer moves them,
    while gradients (computed analytically) stay non-zero. The same architecture with PyTorch's default
    initialisation gives non-zero Occlusion maps at the middle layer."""
    import torchvision

    torch.manual_seed(0)
    images, targets = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)), torch.tensor([[0, 3]])
    dead = torchvision.models.googlenet(weights=None, num_classes=K, aux_logits=False, init_weights=True).eval()
    with torch.no_grad():
        assert torch.equal(dead(images[..., :32, :32]), dead.fc.bias[None].expand(1, K))  # features vanish in float32
        assert torch.equal(dead(torch.zeros(1, 3, 32, 32)), dead(images[..., :32, :32]))
    staged = attreval.split_model(dead, (3, 32, 32))
    assert attreval.attribute(staged, images, targets, "occlusion", setting="difull", layer="middle").abs().sum() == 0
    assert attreval.attribute(staged, images, targets, "grad", setting="difull", layer="middle").abs().sum() > 0
    alive = torchvision.models.googlenet(weights=None, num_classes=K, aux_logits=False, init_weights=False).eval()
    staged = attreval.split_model(alive, (3, 32, 32))
    assert attreval.attribute(staged, images, targets, "occlusion", setting="difull", layer="middle").abs().sum() > 0


@pytest.mark.slow
@pytest.mark.parametrize("name,cell,expect", [(n, c, e) for n, _, c, e in FAMILIES], ids=[n for n, *_ in FAMILIES])
def test_family_splits_exactly_or_is_refused_in_one_line(name, cell, expect):
    model = built(name)
    if expect.startswith("refused"):
        with pytest.raises(ValueError) as err:
            attreval.split_model(model, (3, cell, cell))
        message = str(err.value)
        assert "\n" not in message and expect.split(": ")[1] in message and "StagedModel" in message, message
        return
    assert splitter_for(model)[0] == expect
    state = {k: v.clone() for k, v in model.state_dict().items()}
    staged = attreval.split_model(model, (3, cell, cell))
    x = torch.randn(2, 3, cell, cell, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(staged.cell_head(staged.run(x)), model(x), rtol=1e-4, atol=1e-5)
        middle = staged.run(x, 0, staged.index("middle"))
        final = staged.run(middle, staged.index("middle"), staged.index("final"))
    # middle strictly above final at these cells (xception41 at 64 px: blocks.1 8×8 over act 2×2, was act's 2×2 before);
    # token maps (EVA, XCiT) keep one resolution by design, as ViT's (docs/transformers.md), but middle is an earlier block
    if expect == "tokens":
        assert staged.index("middle") < staged.index("final") and middle.shape == final.shape
    else:
        assert middle.dim() == final.dim() == 4 and middle.shape[-1] > final.shape[-1] and middle.shape[-2] > final.shape[-2]

    images = torch.randn(1, 3, 2 * cell, 2 * cell, generator=torch.Generator().manual_seed(1))
    maps = attreval.attribute(staged, images, torch.tensor([[0, 3]]), "grad", setting="difull")
    assert maps[0, 0, cell:, :].abs().sum() == 0 and maps[0, 0, :, cell:].abs().sum() == 0  # head 0 sees cell 0 only
    assert maps[0, 1, :cell, :].abs().sum() == 0 and maps[0, 1, :, :cell].abs().sum() == 0
    assert maps[0, 0, :cell, :cell].abs().sum() > 0
    if name == "xcit":  # its class-attention head does not pool a tiling of one cell's tokens: GridPG refused in one line
        with pytest.raises(ValueError, match="pooled over a grid for GridPG"):
            attreval.attribute(staged, images, torch.tensor([[0, 1, 2, 3]]), "grad", setting="gridpg", layer="middle")
    else:
        pooled = attreval.attribute(staged, images, torch.tensor([[0, 1, 2, 3]]), "grad", setting="gridpg", layer="middle")
        assert torch.isfinite(pooled).all() and pooled.abs().sum() > 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_torchvision_swin_t_middle_is_a_real_stage_above_final():
    """swin_t at 224 px: five stages on channels-first maps, middle features.3 (28×28) above final features.7
    (7×7); before, middle and final were one `permute` node."""
    import torchvision

    model = torchvision.models.swin_t(weights=None, num_classes=K).eval()
    staged = attreval.split_model(model, (3, 224, 224))
    rows = describe_layers(staged, torch.zeros(1, 3, 224, 224))
    sides = {layer: shape[-1] for layer, _, shape in rows}
    assert staged.aliases == {"middle": "features.3", "final": "features.7"}
    assert (sides["features.3"], sides["features.7"]) == (28, 7)


def test_a_splitter_failing_inside_a_model_is_one_line_not_a_traceback(monkeypatch):
    """XCiT used to end in a bare StopIteration from inside the graph splitter; any exception a splitter raises is
    now a one-line refusal naming the model, the error and the StagedModel route."""
    from attreval.models.splitters.graph import GraphSplitter

    def broken(self, model, probe):
        raise StopIteration

    monkeypatch.setattr(GraphSplitter, "split", broken)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, K)).eval()
    with pytest.raises(ValueError, match=r"cannot split Sequential into stages \(the graph splitter failed: StopIteration") as err:
        attreval.split_model(model, (3, 16, 16))
    assert "\n" not in str(err.value) and "StagedModel" in str(err.value)


def test_timm_names_are_built_for_any_input_size_where_the_family_allows_it():
    """`timm:NAME` in a config builds with dynamic_img_size=True where the constructor takes it (Swin, EVA, ViT …:
    cells and grids of other sizes than the training images split), plainly otherwise; the weights' keys are the same."""
    pytest.importorskip("timm")
    from attreval.models.loading import _timm_create

    swin = _timm_create("swin_tiny_patch4_window7_224", K)
    assert swin.patch_embed.strict_img_size is False
    plain = timm_model("swin_tiny_patch4_window7_224")()
    assert swin.state_dict().keys() == plain.state_dict().keys()
    assert type(_timm_create("resnet10t", K)).__name__ == "ResNet"  # no dynamic_img_size: built as it is
