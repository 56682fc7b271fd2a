"""LRP through Zennit: equal to Zennit's own attributor, layer-wise, conservative, exact in DiFull, and the
caller's model untouched (tests/test_contract.py covers shape, batching, targets and hooks)."""

import copy
import sys

import pytest
import torch
from torch import nn

import attreval
from attreval.grid import GridSpec
from attreval.methods import resolve_method
from tiny_models import TinyResNet, TinyVGG, randomize_bn, tiny_model

pytestmark = pytest.mark.slow  # Zennit composites on torchvision models: left out of `make test-fast`

zennit = pytest.importorskip("zennit")
from zennit.attribution import Gradient  # noqa: E402
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlusFlat, LayerMapComposite, layer_map_base  # noqa: E402
from zennit.rules import Epsilon  # noqa: E402
from zennit.torchvision import ResNetCanonizer, VGGCanonizer  # noqa: E402
from zennit.types import Convolution  # noqa: E402

from attreval.methods.lrp import IMAGENET_HIGH, IMAGENET_LOW  # noqa: E402
from attreval.settings import SETTINGS  # noqa: E402

torchvision = pytest.importorskip("torchvision")

LRP = ["lrp_epsilon", "lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box", "lrp_epsilon_alpha2_beta1"]


def split(model, side=32):
    """The split of a float64 model (the splitters' default probe is float32); ``side``: one cell's size."""
    probe = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return attreval.split_model(model, probe)


def zennit_composite(name, canonizers):
    """Zennit's own composite for each preset (plain ε: Zennit's base layer map with ε everywhere)."""
    low, high = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (IMAGENET_LOW, IMAGENET_HIGH))
    return {
        "lrp_epsilon": lambda: LayerMapComposite(
            layer_map_base() + [(Convolution, Epsilon()), (nn.Linear, Epsilon())], canonizers=canonizers
        ),
        "lrp_epsilon_plus_flat": lambda: EpsilonPlusFlat(canonizers=canonizers),
        "lrp_epsilon_gamma_box": lambda: EpsilonGammaBox(low=low, high=high, canonizers=canonizers),
        "lrp_epsilon_alpha2_beta1": lambda: EpsilonAlpha2Beta1(canonizers=canonizers),
    }[name]()


def narrow_vgg(batch_norm):
    """torchvision VGG11 / VGG11-BN: the full ``features`` (where the canonizers act), with the classifier narrowed
    (same layer types and order, 64 wide after a 2×2 pool instead of 4096 after 7×7) so a call takes
    milliseconds instead of reading 400 MB of weights; float64 so equality can be checked to 1e-5 relative."""
    torch.manual_seed(0)
    model = (torchvision.models.vgg11_bn if batch_norm else torchvision.models.vgg11)(num_classes=10)
    model.avgpool = nn.AdaptiveAvgPool2d(2)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 4, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 10)
    )
    return randomize_bn(model).double().eval()


def resnet18():
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.resnet18(num_classes=10)).double().eval()


@pytest.fixture(scope="module")
def models():
    return {"vgg11": narrow_vgg(False), "vgg11_bn": narrow_vgg(True), "resnet18": resnet18()}


def zennit_maps(model, name, x, classes, canonizers, layer_module=None):
    """Zennit's Gradient attributor, one (image, class) at a time, output relevance = one-hot · logit; summed
    over channels. With ``layer_module``: the relevance arriving at that module's output instead."""
    maps = []
    for b in range(x.shape[0]):
        row = []
        for c in classes[b].tolist():
            captured = []
            with Gradient(model, zennit_composite(name, canonizers)) as attributor:
                handle = None
                if layer_module is not None:

                    def capture(module, inputs, output):
                        output.register_hook(captured.append)  # returns None: the output is not replaced

                    handle = layer_module.register_forward_hook(capture)
                try:
                    out, relevance = attributor(x[b : b + 1], lambda o: nn.functional.one_hot(torch.tensor([c]), 10) * o)
                finally:
                    if handle is not None:
                        handle.remove()
            row.append((captured[0] if layer_module is not None else relevance).sum(1)[0])
        maps.append(torch.stack(row))
    return torch.stack(maps)


def assert_close(got, ref, rtol=1e-5):
    scale = ref.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(got.double(), ref.double(), rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", LRP)
@pytest.mark.parametrize("arch", ["vgg11", "vgg11_bn", "resnet18"])
def test_input_maps_equal_zennits_attributor(arch, name, models):
    """n = 1, so the tail is the plain model: DiFull for VGG (its own head), GridPG for ResNet18 (two targets
    from one forward). One 32-px image keeps it fast; the contract tests check batching."""
    model = models[arch]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    setting, classes = ("gridpg", torch.tensor([[1, 3]])) if arch == "resnet18" else ("difull", torch.tensor([[7]]))
    got = attreval.attribute(split(model), x, classes, name, setting=setting, n=1)
    canonizers = [ResNetCanonizer()] if arch == "resnet18" else [VGGCanonizer()]
    assert_close(got, zennit_maps(model, name, x, classes, canonizers))


@pytest.mark.parametrize("name", LRP)
@pytest.mark.parametrize("arch, layer", [("vgg11_bn", "middle"), ("resnet18", "layer2")])
def test_hidden_layer_maps_are_the_full_models_relevance_there(arch, layer, name, models):
    """LRP is layer-wise: the ML-Att map at L (the tail from L, ordinary rules only) equals the relevance at L of
    Zennit's LRP of the whole model (first-layer rule at the model's first layer).

    BatchNorm eps = 0 here: Zennit's merge leaves each BatchNorm computing x / sqrt(1 + eps) rather than x, so
    its canonical model differs from the model by (1 + eps)^(-1/2) per BatchNorm (~5e-5 relative at ResNet18's
    layer2 with eps = 1e-5); the tail from L is canonized only above L, so the two agree exactly only when eps = 0.
    """
    model = zero_eps(models[arch])
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    classes = torch.tensor([[4]])
    staged = split(model)
    got = attreval.attribute(staged, x, classes, name, setting="difull", n=1, layer=layer)
    stage = dict(staged.stages)[staged.resolve(layer)]
    last = stage[-1] if isinstance(stage, nn.Sequential) and arch != "resnet18" else stage
    canonizers = [ResNetCanonizer()] if arch == "resnet18" else [VGGCanonizer()]
    assert_close(got, zennit_maps(model, name, x, classes, canonizers, layer_module=last))


def bias_free(kind):
    """A tiny model without biases (ResNet: BatchNorms with zero shift, so the merged convs have none either)."""
    model = tiny_model(kind, seed=3).double()
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias = None
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.zero_()
            m.running_mean.zero_()
            m.eps = 0.0  # Zennit's merged BatchNorm computes x / sqrt(1 + eps): exactly the model only with eps = 0
    return model


@pytest.mark.parametrize("layer", ["input", "middle", "final"])
@pytest.mark.parametrize("setting", SETTINGS.names())
@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_epsilon_conserves_the_logit_without_biases(kind, setting, layer):
    """ε → 0, no biases: every rule of LRP-ε (ε, Norm for sums and pools, pass-through elsewhere) conserves
    relevance, so each map sums to the logit it explains, at every layer and in every setting."""
    model = bias_free(kind)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    classes = torch.tensor([[1, 5], [2, 8]])
    heads = None if setting == "gridpg" else [0, 3]
    model = split(model, 16)
    maps = attreval.attribute(
        model, x, classes, "lrp_epsilon", setting=setting, n=2, layer=layer, heads=heads, epsilon=1e-12, stabilizer=1e-12
    )
    logits = attreval.make_setting(setting, model, 2).logits(x, (0,) if setting == "gridpg" else (0, 3))
    h = [0, 0] if setting == "gridpg" else [0, 1]
    expected = torch.stack([logits[b, h, classes[b]] for b in range(2)])
    assert expected.abs().min() > 1e-4
    torch.testing.assert_close(maps.double().sum(dim=(2, 3)), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", LRP)
@pytest.mark.parametrize("layer", ["input", "middle", "final"])
@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_difull_relevance_stays_in_the_heads_cell(kind, layer, name):
    model = tiny_model(kind, seed=5)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    classes = torch.tensor([[1, 5], [2, 8]])
    maps = attreval.attribute(model, x, classes, name, setting="difull", n=2, layer=layer, heads=[0, 3])
    inside = GridSpec(2, 1, 1).cell_masks(*maps.shape[-2:])[[0, 3]][None].expand_as(maps)  # (B, T, h, w)
    assert (maps[~inside] == 0).all()
    assert (maps[inside] != 0).any()


@pytest.mark.parametrize("name", LRP)
def test_gridpg_sliding_classifier_gets_the_linear_rule(name):
    """With n = 1 GridPG's convolutional classifier has one window: it must explain like the model's own
    fully connected head (DiFull), i.e. its convolutions get the Linear rule and the window average Norm."""
    model = tiny_model("vgg", seed=7)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    classes = torch.tensor([[3], [6]])
    for layer in ["input", "final"]:
        grid = attreval.attribute(model, x, classes, name, setting="gridpg", n=1, layer=layer)
        cell = attreval.attribute(model, x, classes, name, setting="difull", n=1, layer=layer)
        assert_close(grid, cell, rtol=1e-4)


def test_output_relevance_one_is_the_logit_map_divided_by_the_logit():
    model = tiny_model("resnet", seed=9)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    classes = torch.tensor([[2, 7]])
    logit = attreval.attribute(model, x, classes, "lrp_epsilon_plus_flat")
    one = attreval.attribute(model, x, classes, "lrp_epsilon_plus_flat", output_relevance="one")
    y = attreval.make_setting("gridpg", model, 2).logits(x)[0, 0, classes[0]]
    assert_close(logit, one * y.view(1, 2, 1, 1), rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# The caller's model


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: id(p) for n, p in model.named_parameters()},
        [type(m).forward is m.forward.__func__ for m in model.modules()],
        len(list(model.modules())),
    )


def assert_unchanged(model, before, x, out_before):
    state, ids, forwards, count = before
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())
    assert {n: id(p) for n, p in model.named_parameters()} == ids
    assert [type(m).forward is m.forward.__func__ for m in model.modules()] == forwards
    assert len(list(model.modules())) == count
    with torch.no_grad():
        assert torch.equal(model(x), out_before)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


@pytest.fixture
def bn_models():
    torch.manual_seed(10)
    vgg = TinyVGG()
    vgg.features = nn.Sequential(
        *[m for layer in vgg.features for m in ([layer, nn.BatchNorm2d(layer.out_channels)] if isinstance(layer, nn.Conv2d) else [layer])]
    )
    return {"vgg_bn": randomize_bn(vgg).eval(), "resnet": randomize_bn(TinyResNet(), 10).eval()}


@pytest.mark.parametrize("name", LRP)
@pytest.mark.parametrize("kind", ["vgg_bn", "resnet"])
def test_canonizers_leave_the_callers_model_bit_identical(kind, name, bn_models):
    model = bn_models[kind]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        out = model(x[:, :, :16, :16])
    before = snapshot(model)
    for setting in ["gridpg", "difull"]:
        attreval.attribute(model, x, torch.tensor([[1, 2]]), name, setting=setting, heads=None if setting == "gridpg" else [0, 3])
        assert_unchanged(model, before, x[:, :, :16, :16], out)
    with pytest.raises(ValueError, match="target classes"):  # raised in the forward, canonizers and hooks active
        attreval.attribute(model, x, torch.tensor([[1, 99]]), name)
    assert_unchanged(model, before, x[:, :, :16, :16], out)


def test_a_canonizer_failing_half_way_is_undone(bn_models, monkeypatch):
    """Zennit loses the merges it made before a failing one; lrp_scope's snapshot puts them back."""
    from zennit.canonizers import MergeBatchNorm

    model = bn_models["vgg_bn"]
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        out = model(x[:, :, :16, :16])
    before = snapshot(model)
    merge, calls = MergeBatchNorm.merge_batch_norm, []

    def flaky(modules, batch_norm):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated failure")
        merge(modules, batch_norm)

    monkeypatch.setattr(MergeBatchNorm, "merge_batch_norm", staticmethod(flaky))
    with pytest.raises(ValueError, match="expected modules Zennit can canonize.*simulated failure"):
        attreval.attribute(model, x, torch.tensor([[1, 2]]), "lrp_epsilon")
    assert len(calls) == 3
    assert_unchanged(model, before, x[:, :, :16, :16], out)


# --------------------------------------------------------------------------------------------------
# Options and the optional extra


def test_options_are_checked_in_one_line():
    with pytest.raises(ValueError, match="expected canonizer in"):
        resolve_method("lrp_epsilon", canonizer="vgg")
    with pytest.raises(ValueError, match="expected low < high"):
        resolve_method("lrp_epsilon_gamma_box", low=1.0, high=0.0)
    method = resolve_method("lrp_epsilon_gamma_box", low=[-0.66], high=[2.35])  # TOML gives lists
    assert method.low == (-0.66,) and hash(method)
    model = tiny_model("vgg", seed=13)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="expected low with 1 or 3 values"):
        attreval.attribute(model, x, torch.tensor([[1]]), "lrp_epsilon_gamma_box", low=(0.0, 0.0), high=(1.0, 1.0))


def test_a_scalar_box_equals_the_same_box_per_channel():
    model = tiny_model("resnet", seed=14)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(14))
    one = attreval.attribute(model, x, torch.tensor([[1]]), "lrp_epsilon_gamma_box", low=-2.0, high=2.5)
    per = attreval.attribute(model, x, torch.tensor([[1]]), "lrp_epsilon_gamma_box", low=(-2.0,) * 3, high=(2.5,) * 3)
    torch.testing.assert_close(one, per, rtol=0, atol=0)


def test_without_zennit_the_methods_say_how_to_install_it(monkeypatch):
    for module in [m for m in sys.modules if m == "zennit" or m.startswith("zennit.")]:
        monkeypatch.setitem(sys.modules, module, None)
    model = tiny_model("vgg", seed=15)
    with pytest.raises(ValueError, match=r"pip install attreval\[zennit\]"):
        attreval.attribute(model, torch.randn(1, 3, 32, 32), torch.tensor([[1]]), "lrp_epsilon")
    assert "lrp_epsilon_plus_flat" in attreval.METHODS  # listed (attreval list methods) either way


# --------------------------------------------------------------------------------------------------
# Invariance (docs/results.md): functions that are equal, maps that may not be


def fold_batchnorm(model):
    """A deep copy with every conv → BatchNorm pair folded by hand into one conv (the BN becomes Identity)."""
    folded = copy.deepcopy(model)

    def fold(conv, bn):
        scale = bn.weight / (bn.running_var + bn.eps).sqrt()
        new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
        new.weight.data = conv.weight.data * scale[:, None, None, None]
        bias = conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)
        new.bias.data = (bias - bn.running_mean) * scale + bn.bias.data
        return new.to(conv.weight.dtype)

    for parent in folded.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                parent._modules[a], parent._modules[b] = fold(conv, bn), nn.Identity()
    return folded


def zero_eps(model):
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    return model


def test_hand_folded_batchnorm_equals_zennits_merge(models):
    """Folding BN by hand and merging it with the canonizer give the same LRP maps (with BN eps = 0: Zennit's
    merged BatchNorm keeps dividing by sqrt(1 + eps), see the hidden-layer test)."""
    model = zero_eps(models["vgg11_bn"])
    folded = fold_batchnorm(model)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))
    for name in LRP:
        merged = attreval.attribute(split(model), x, torch.tensor([[3]]), name, setting="difull", n=1, canonizer="merge_batchnorm")
        by_hand = attreval.attribute(split(folded), x, torch.tensor([[3]]), name, setting="difull", n=1, canonizer="none")
        assert_close(merged, by_hand)


@pytest.mark.parametrize("setting", SETTINGS.names())
@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_epsilon_to_zero_is_input_times_gradient(kind, setting):
    """LRP-0 of a ReLU network is Input × Gradient (Ancona et al. 2018), biases included; with the ResNet
    canonizer the Norm rule of the residual sums keeps that (BN eps = 0, see above). A check of the relevance
    convention: the map is Zennit's modified gradient, not multiplied by the activations again."""
    model = tiny_model(kind, seed=17).double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    model = split(model, 16)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(17), dtype=torch.float64)
    classes, heads = torch.tensor([[1, 5], [2, 8]]), None if setting == "gridpg" else [0, 3]
    for layer in ["input", "middle"]:
        lrp = attreval.attribute(
            model, x, classes, "lrp_epsilon", setting=setting, layer=layer, heads=heads, epsilon=1e-12, stabilizer=1e-12
        )
        ixg = attreval.attribute(model, x, classes, "input_x_grad", setting=setting, layer=layer, heads=heads)
        assert_close(lrp, ixg, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in attreval.METHODS.names() if n.startswith("lrp")])
def test_lrp_refuses_transformer_tails_with_one_line(name):
    pytest.importorskip("timm")
    from tiny_vit import tiny_vit

    model = tiny_vit("token", img=16, patch=4, dim=8)
    x, targets = torch.randn(1, 3, 32, 32), torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="expected a CNN for Zennit's LRP rules") as err:
        attreval.attribute(model, x, targets, name)
    assert "\n" not in str(err.value)
