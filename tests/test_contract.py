"""The method contract, generated from the registry: every method × setting × layer × model family.

Properties (HOUSE_STYLE "Tests that mean something"): shape, dtype, device, finite; batch == each example
alone; all T targets at once == one at a time; same seed → same maps; the caller's model and tensors
unchanged; no hooks left behind, also after an exception.
"""

import dataclasses

import pytest
import torch

import attreval
from attreval import METHODS
from attreval.methods.contract import close as contract_close
from attreval.methods.contract import hook_count
from attreval.settings import SETTINGS
from tiny_models import tiny_model
from tiny_vit import tiny_vit

LAYERS = ["input", "middle", "final"]
N, CELL = 2, 16


def fast_options(name):
    """The method's own ``test_preset``: smaller hyper-parameters that keep the suite fast."""
    return dict(type(METHODS.get(name)).test_preset)


@pytest.fixture(scope="module", params=["vgg", "resnet", "vit"])
def model(request):
    if request.param == "vit":  # a class token and a register token: extra tokens ride in the token map
        return tiny_vit("token", reg=1, img=CELL, patch=4, dim=8, seed=1)
    return tiny_model(request.param, seed=1)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, N * CELL, N * CELL, generator=g)
    labels = torch.stack([torch.randperm(10, generator=g)[: N * N] for _ in range(2)])
    return images, labels


def targets_for(setting, labels):
    return labels if setting == "gridpg" else labels[:, [0, N * N - 1]]


def heads_for(setting, columns):
    corners = [0, N * N - 1]
    return None if setting == "gridpg" else [corners[c] for c in columns]


def skip_without_extras(name):
    """Methods backed by an optional extra (LRP: zennit) are checked where it is installed (`make test` is)."""
    for module in getattr(METHODS.get(name), "requires", ()):
        pytest.importorskip(module)


def skip_inapplicable(name, model, setting, layer):
    """Methods that need something of the tail (``Method.needs``: the attention methods a transformer, LRP a CNN)
    are checked where they apply; their refusal elsewhere is tested in tests/test_attention.py and
    tests/test_methods_lrp.py."""
    method = METHODS.get(name)
    if method.needs:
        s = attreval.make_setting(setting, model, N)
        try:
            method.check_tail(s.tail(layer))
        except ValueError as err:
            pytest.skip(f"{name} does not apply here: {err}")


def all_hooks(model):
    """Hooks on ``model`` and process-wide: the contract's own count (attreval.methods.contract, what
    ``attreval check-method`` checks), so the test and the command cannot disagree."""
    return hook_count(model)


def run(model, images, targets, name, setting, layer, heads=None):
    return attreval.attribute(
        model,
        images,
        targets,
        name,
        setting=setting,
        layer=layer,
        n=N,
        heads=heads,
        chunk_size=64,
        **fast_options(name),
    )


def close(a, b):
    """Equal to the contract's tolerance (``attreval.methods.contract.close``: rtol 1e-3, atol 1e-4 of the scale)."""
    difference = contract_close(a, b)
    assert not difference, difference


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("setting", SETTINGS.names())
@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name, setting, layer, model, data):
    skip_without_extras(name)
    skip_inapplicable(name, model, setting, layer)
    images, labels = data
    targets = targets_for(setting, labels)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images_before, targets_before = images.clone(), targets.clone()

    maps = run(model, images, targets, name, setting, layer)

    staged = attreval.split_model(model)
    h, w = attreval.make_setting(setting, model, N).activations(images, layer).shape[-2:]
    assert maps.shape == (2, targets.shape[1], h, w)
    assert maps.dtype == torch.float32 and maps.device == images.device
    assert torch.isfinite(maps).all()
    assert maps.abs().sum() > 0, "a method that returns all zeros explains nothing"

    for b in range(2):  # batch == each example alone
        close(run(model, images[b : b + 1], targets[b : b + 1], name, setting, layer), maps[b : b + 1])
    for t in range(targets.shape[1]):  # T targets at once == one at a time
        one = run(model, images, targets[:, t : t + 1], name, setting, layer, heads=heads_for(setting, [t]))
        close(one, maps[:, t : t + 1])
    torch.testing.assert_close(run(model, images, targets, name, setting, layer), maps, rtol=0, atol=0)

    assert torch.equal(images, images_before) and torch.equal(targets, targets_before)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert not model.training and all_hooks(model) == 0
    del staged


@pytest.mark.parametrize("name", METHODS.names())
def test_no_hooks_left_after_an_exception(name, data):
    skip_without_extras(name)
    model = tiny_model("vgg", seed=2)
    if METHODS.get(name).needs:  # may refuse CNNs: try it on a ViT too
        try:
            skip_inapplicable(name, model, "gridpg", "input")
        except pytest.skip.Exception:
            model = tiny_vit("token", reg=1, img=CELL, patch=4, dim=8, seed=2)
    images, labels = data
    with pytest.raises(ValueError, match="target classes"):
        run(model, images, labels + 100, name, "gridpg", "input")
    assert all_hooks(model) == 0


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_display_name_and_family(name):
    method = METHODS.get(name)
    assert method.display != "?" and method.family in {"backprop", "activation", "perturbation"}
    if method.stochastic:
        assert "seed" in {f.name for f in dataclasses.fields(method)}
