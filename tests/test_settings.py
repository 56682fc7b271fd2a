"""The settings' guarantees (PAPER.md §1) on torchvision VGG11 and ResNet18 with random weights."""

import pytest
import torch
import torchvision

from attreval import make_setting, split_model
from attreval.grid import GridSpec
from attreval.methods.base import target_gradients
from attreval.settings import SETTINGS

pytestmark = pytest.mark.slow  # the guarantees on torchvision VGG11 / ResNet18: left out of `make test-fast`


@pytest.fixture(scope="module")
def vgg11():
    torch.manual_seed(0)
    return torchvision.models.vgg11(num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def test_named_layers_follow_the_paper(vgg11, resnet18):
    vgg, res = split_model(vgg11), split_model(resnet18)
    assert vgg.aliases == {"middle": "conv5", "final": "conv8"}
    assert res.aliases == {"middle": "layer2", "final": "layer4"}
    assert res.layer_names == ["input", "conv1", "layer1", "layer2", "layer3", "layer4"]
    assert vgg.layer_names[-1] == "pool" and len(vgg.layer_names) == 10
    # VGG11's conv5 is features[12], conv8 is features[19] (PAPER.md §2): same activations
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(vgg.run(x, 0, vgg.index("middle")), vgg11.features[:13](x))
        assert torch.allclose(vgg.run(x, 0, vgg.index("final")), vgg11.features[:20](x))
        assert torch.allclose(res.run(x, 0, res.index("final")), torch.nn.Sequential(*list(resnet18.children())[:8])(x))


def test_unknown_layer_has_did_you_mean(resnet18):
    with pytest.raises(ValueError, match="did you mean 'layer2'"):
        split_model(resnet18).resolve("layr2")


@pytest.mark.parametrize("setting", SETTINGS.names())
def test_n1_every_setting_is_the_plain_model(setting, vgg11, resnet18):
    for model, size in ((vgg11, 224), (resnet18, 64)):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected = model(x)
        logits = make_setting(setting, model, 1).logits(x)
        assert logits.shape == (2, 1, 10)
        assert torch.allclose(logits[:, 0], expected, atol=1e-5, rtol=1e-4)


def test_convolutional_vgg_head_equals_fc_classifier_on_one_cell(vgg11):
    staged = split_model(vgg11)
    features = torch.randn(3, 512, 7, 7)
    with torch.no_grad():
        assert torch.allclose(staged.grid_head(features), vgg11.classifier(features.flatten(1)), atol=1e-5)


def test_gridpg_vgg_averages_the_sliding_windows(vgg11):
    staged = split_model(vgg11)
    features = torch.randn(1, 512, 14, 14)
    with torch.no_grad():
        windows = [vgg11.classifier(features[:, :, i : i + 7, j : j + 7].flatten(1)) for i in range(8) for j in range(8)]
        assert torch.allclose(staged.grid_head(features), torch.stack(windows).mean(0), atol=1e-5)


def test_logit_shapes(resnet18):
    x = torch.randn(2, 3, 96, 96)
    assert make_setting("gridpg", resnet18, 3).logits(x).shape == (2, 1, 10)
    assert make_setting("difull", resnet18, 3).logits(x).shape == (2, 2, 10)
    assert make_setting("dipart", resnet18, 3).logits(x, heads=range(9)).shape == (2, 9, 10)


def test_difull_head_is_the_model_on_its_cell(resnet18):
    x = torch.randn(2, 3, 64, 64)
    spec = GridSpec(2, 32, 32)
    logits = make_setting("difull", resnet18, 2).logits(x, heads=range(4))
    with torch.no_grad():
        for cell in range(4):
            rows, cols = spec.cell_box(cell)
            assert torch.allclose(logits[:, cell], resnet18(x[:, :, rows, cols]), atol=1e-5)


def test_dipart_equals_difull_at_the_final_layer_only_when_connected_features_agree(resnet18):
    # DiPart runs the grid jointly: its corner head differs from DiFull's (neighbouring cells leak in)…
    x = torch.randn(1, 3, 64, 64)
    full = make_setting("difull", resnet18, 2).logits(x)
    part = make_setting("dipart", resnet18, 2).logits(x)
    assert not torch.allclose(full, part, atol=1e-4)
    # …but from the final layer on both apply the same head to the same block.
    s_full, s_part = make_setting("difull", resnet18, 2), make_setting("dipart", resnet18, 2)
    a = s_part.activations(x, "final")
    assert torch.allclose(s_full.tail("final", (0, 3))(a), s_part.tail("final", (0, 3))(a), atol=1e-5)


def _difull_grads_outside(model, size, layer):
    setting = make_setting("difull", model, 2)
    x = torch.randn(2, 3, 2 * size, 2 * size)
    a = setting.activations(x, layer)
    heads = (0, 1, 2, 3)
    forward = setting.tail(layer, heads)
    rows = a.repeat_interleave(4, 0)
    head_idx = torch.arange(4).repeat(2)
    grads, _ = target_gradients(forward, rows, head_idx, torch.full((8,), 3), chunk_size=8)
    masks = GridSpec(2, a.shape[-2] // 2, a.shape[-1] // 2).cell_masks(*a.shape[-2:])
    outside = ~masks[head_idx][:, None].expand_as(grads)
    inside = ~outside
    return grads[outside].abs().max().item(), grads[inside].abs().max().item()


@pytest.mark.parametrize("layer", ["input", "conv1", "layer1", "middle", "layer3", "final"])
def test_difull_gradients_are_exactly_zero_outside_the_head_cell_resnet18(resnet18, layer):
    outside, inside = _difull_grads_outside(resnet18, 32, layer)
    assert outside == 0.0 and inside > 0.0


@pytest.mark.parametrize("layer", ["input", "conv1", "conv3", "middle", "conv7", "final"])
def test_difull_gradients_are_exactly_zero_outside_the_head_cell_vgg11(vgg11, layer):
    outside, inside = _difull_grads_outside(vgg11, 32, layer)
    assert outside == 0.0 and inside > 0.0


def test_gridpg_gradients_do_reach_other_cells(resnet18):
    setting = make_setting("gridpg", resnet18, 2)
    x = torch.randn(1, 3, 64, 64)
    grads, _ = target_gradients(setting.tail("input", (0,)), x, torch.zeros(1, dtype=torch.long), torch.tensor([3]), 4)
    assert all(grads[0, :, r, c].abs().sum() > 0 for r, c in ((slice(0, 32),) * 2, (slice(32, 64),) * 2))


def test_unsplittable_model_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot split Linear"):
        split_model(torch.nn.Linear(3, 3))


@pytest.mark.parametrize("layer", ["input", "middle", "final"])
def test_difull_row_tail_equals_the_full_tail_at_each_rows_head(resnet18, layer):
    s = make_setting("difull", resnet18, 2)
    heads = (0, 3, 1)
    a = s.activations(torch.randn(5, 3, 64, 64), layer)
    index = torch.tensor([0, 2, 0, 1, 0])
    with torch.no_grad():
        full = s.tail(layer, heads)(a)[torch.arange(5), index]
        tail = s.tail(layer, heads)
        rows = tail.rows(a, index)
    assert tail.separate_cells
    torch.testing.assert_close(rows, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("setting", ["gridpg", "dipart"])
def test_shared_backbone_tails_do_not_separate_cells(resnet18, setting):
    # their heads share the backbone: one forward for all heads is cheaper than one per row
    tail = make_setting(setting, resnet18, 2).tail("input", (0,))
    assert not tail.separate_cells and tail.regions((64, 64)) is None
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():  # the generic rows() still gives each row's own head
        torch.testing.assert_close(tail.rows(x, torch.zeros(3, dtype=torch.long)), tail(x)[:, 0])


def test_difull_regions_are_the_head_cells(resnet18):
    regions = make_setting("difull", resnet18, 2).tail("middle", (3, 0)).regions((8, 8))
    assert regions.shape == (2, 8, 8) and regions[0, 4:, 4:].all() and regions[0].sum() == 16
    assert regions[1, :4, :4].all() and regions[1].sum() == 16


@pytest.mark.parametrize("setting", SETTINGS.names())
def test_tail_modules_cover_the_classifier_and_the_later_stages(vgg11, setting):
    tail = make_setting(setting, vgg11, 2).tail("final", (0,))
    linear_weights = {
        m.weight.data_ptr() for mod in tail.modules for m in mod.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))
    }
    # every classifier layer (as the Linear itself or its sliding Conv2d view) and the last max-pool's stage
    assert {m.weight.data_ptr() for m in vgg11.classifier if isinstance(m, torch.nn.Linear)} <= linear_weights
    assert any(isinstance(m, torch.nn.MaxPool2d) for mod in tail.modules for m in mod.modules())
    assert not any(m is vgg11.features[0] for mod in tail.modules for m in mod.modules())


def test_protocol_facts_belong_to_the_settings(resnet18):
    grid, full = make_setting("gridpg", resnet18, 2), make_setting("difull", resnet18, 2)
    assert grid.grids == "gridpg" and full.grids == "disconnected"
    assert grid.evaluated_cells() == (0, 1, 2, 3) and grid.heads_for((0, 1, 2, 3)) == (0, 0, 0, 0)
    assert full.evaluated_cells() == (0, 3) and full.heads_for((0, 3)) == (0, 3)
    assert full.evaluated_cells(all_cells=True) == (0, 1, 2, 3)
