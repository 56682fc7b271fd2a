"""The transformer methods (attention rollout, Chefer relevance) against references computed by hand from the
attention probabilities of timm's non-fused path / torchvision's own attention weights, plus their contract."""

import copy
import json

import pandas as pd
import pytest
import torch
from torch.nn import functional as F

import attreval
from attreval.cli import main
from attreval.grid import GridSpec
from attreval.methods.attention import readout
from attreval.models.splitters.vit import explicit_attention
from attreval.settings import SETTINGS
from test_contract import all_hooks
from tiny_models import tiny_model, tiny_run_config
from tiny_vit import tiny_torchvision_vit, tiny_vit

METHODS = ["attention_rollout", "chefer"]
N, CELL = 2, 16


def images(b=2, n=N, cell=CELL, seed=0):
    return torch.randn(b, 3, n * cell, n * cell, generator=torch.Generator().manual_seed(seed))


def reference_probs(model, x, target=None):
    """Per block: attention probabilities ``(B, heads, N, N)`` from timm's non-fused path on a deep copy of the
    model (so the caller's flags stay as they are), and their gradient for the logit of class ``target``."""
    ref = copy.deepcopy(model)
    probs = []
    for block in ref.blocks:
        block.attn.fused_attn = False  # timm's own explicit softmax(q·kᵀ)·v; attn_drop sees the probabilities
        block.attn.attn_drop.register_forward_hook(lambda m, i, o: probs.append(o) or o.retain_grad())
    logits = ref(x)
    if target is not None:
        logits[:, target].sum().backward()
    return probs, logits


def patch_row(matrix, extra):
    """Row 0 (the class token) of a ``(B, N, N)`` matrix, patch columns, as ``(B, h, w)`` maps."""
    row = matrix[:, 0, extra:]
    side = int(row.shape[-1] ** 0.5)
    return row.reshape(-1, side, side)


def test_rollout_of_two_blocks_is_the_matrix_product_by_hand():
    model = tiny_vit("token", img=CELL, patch=4, dim=8, seed=2, depth=2)
    x = images(n=1)
    probs, _ = reference_probs(model, x)
    hats = [0.5 * a.mean(dim=1) + 0.5 * torch.eye(a.shape[-1]) for a in probs]
    targets = torch.tensor([[3], [5]])
    got = attreval.attribute(model, x, targets, "attention_rollout", setting="gridpg", n=1)
    by_hand = patch_row(hats[1] @ hats[0], 1)  # R = Â₂ Â₁, class-token row
    up = F.interpolate(by_hand[:, None], size=(CELL, CELL), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got[:, 0], up[:, 0], rtol=1e-5, atol=1e-7)
    # at the block in between only the last block's attention is left
    mid = attreval.attribute(model, x, targets, "attention_rollout", setting="gridpg", n=1, layer="blocks.0")
    torch.testing.assert_close(mid[:, 0], patch_row(hats[1], 1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reg", [0, 2])
def test_chefer_equals_the_explicit_computation(reg):
    model = tiny_vit("token", reg=reg, img=CELL, patch=4, dim=8, seed=3, depth=3)
    x = images(b=1, n=1, seed=1)
    target = 7
    probs, _ = reference_probs(model, x, target)
    relevance = torch.eye(probs[0].shape[-1])[None]
    for a in probs:  # Chefer et al. 2021, Eq. 5-6: R ← R + E_h[(∇A ⊙ A)⁺] R
        relevance = relevance + (a.grad * a).clamp(min=0).mean(dim=1) @ relevance
    got = attreval.attribute(model, x, torch.tensor([[target]]), "chefer", setting="gridpg", n=1)
    up = F.interpolate(patch_row(relevance, 1 + reg)[:, None], size=(CELL, CELL), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got[:, 0], up[:, 0].detach(), rtol=1e-4, atol=1e-7)


def test_torchvision_rollout_uses_its_own_attention_weights():
    model = tiny_torchvision_vit(img=CELL, patch=4)
    x = images(b=1, n=1, seed=2)
    weights, handles = [], []
    for block in model.encoder.layers:  # the module's own need_weights=True path on the block's normed input
        handles.append(
            block.ln_1.register_forward_hook(
                lambda m, i, o, block=block: weights.append(block.self_attention(o, o, o, need_weights=True)[1])
            )
        )
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    rollout = torch.eye(weights[0].shape[-1])[None]
    for a in weights:
        rollout = (0.5 * a + 0.5 * torch.eye(a.shape[-1])) @ rollout
    got = attreval.attribute(model, x, torch.tensor([[1]]), "attention_rollout", setting="gridpg", n=1)
    up = F.interpolate(patch_row(rollout, 1)[:, None], size=(CELL, CELL), mode="bilinear", align_corners=False)
    torch.testing.assert_close(got[:, 0], up[:, 0], rtol=1e-4, atol=1e-7)


def test_explicit_attention_reproduces_the_fused_modules():
    for model in (tiny_vit("token", img=CELL, patch=4, dim=8), tiny_torchvision_vit(img=CELL, patch=4)):
        attn = model.blocks[0].attn if hasattr(model, "blocks") else model.encoder.layers[0].self_attention
        tokens = torch.randn(2, 17, attn.qkv.in_features if hasattr(attn, "qkv") else attn.embed_dim)
        args = (tokens,) if hasattr(attn, "qkv") else (tokens, tokens, tokens)
        kwargs = {} if hasattr(attn, "qkv") else {"need_weights": False}
        expected = attn(*args, **kwargs)
        out, probs = explicit_attention(attn, args, kwargs)
        out, expected = (out[0], expected[0]) if isinstance(out, tuple) else (out, expected)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))


def test_after_the_last_block_the_map_is_the_heads_readout():
    model = tiny_vit("avg", cls=False, img=CELL, patch=4, dim=8, seed=4)  # final = after the last block
    x, targets = images(), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    for name in METHODS:
        grid = attreval.attribute(model, x, targets, name, setting="gridpg", layer="final", n=N)
        torch.testing.assert_close(grid, torch.full_like(grid, 1 / 64))  # mean over all 8×8 patch tokens
        part = attreval.attribute(model, x, targets[:, [0, 3]], name, setting="dipart", layer="final", n=N)
        cells = GridSpec(N, 1, 1).cell_masks(8, 8)[[0, 3]].float() / 16  # mean over cell k's 4×4 tokens
        torch.testing.assert_close(part, cells[None].expand(2, -1, -1, -1))


def test_readout_is_the_pooling_weights():
    g = torch.zeros(2, 6, 2, 2)  # D = 3, one extra token
    g[0, :3] = torch.tensor([1.0, -2.0, 0.5])[:, None, None]  # average pooling: the same vector everywhere
    g[1, 3:] = 0.25  # class-token pooling: read through the mean over positions
    torch.testing.assert_close(readout(g, 1).float(), torch.tensor([[0, 0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0, 0.0]]))


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("layer", ["input", "middle", "final", "blocks.3"])
def test_difull_maps_are_zero_outside_the_heads_cell(name, layer):
    model = tiny_vit("token", reg=1, img=CELL, patch=4, dim=8, seed=1)
    x, targets = images(), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    maps = attreval.attribute(model, x, targets, name, setting="difull", layer=layer, n=N)
    inside = GridSpec(N, 1, 1).cell_masks(*maps.shape[-2:])  # (4, h, w): every head, every cell
    assert (maps.masked_fill(inside[None], 0) == 0).all()  # exactly zero: cells run separately
    assert (maps.masked_fill(~inside[None], 0).flatten(2).sum(-1) > 0).all() or layer == "blocks.3"


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("setting", SETTINGS.names())
def test_batch_targets_and_model_untouched(name, setting):
    model = tiny_vit("avg", reg=1, img=CELL, patch=4, dim=8, seed=5)
    fused = [b.attn.fused_attn for b in model.blocks]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(b=3)
    targets = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [9, 8, 7, 6]])
    targets = targets if setting == "gridpg" else targets[:, [0, 3]]
    heads = None if setting == "gridpg" else [0, 3]
    maps = attreval.attribute(model, x, targets, name, setting=setting, layer="middle", n=N, chunk_size=4)
    for b in range(3):
        one = attreval.attribute(model, x[b : b + 1], targets[b : b + 1], name, setting=setting, layer="middle", n=N)
        torch.testing.assert_close(one, maps[b : b + 1], rtol=1e-4, atol=1e-7)
    for t in range(targets.shape[1]):
        one = attreval.attribute(
            model, x, targets[:, t : t + 1], name, setting=setting, layer="middle", n=N, heads=None if heads is None else [heads[t]]
        )
        torch.testing.assert_close(one, maps[:, t : t + 1], rtol=1e-4, atol=1e-7)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [b.attn.fused_attn for b in model.blocks] == fused and all_hooks(model) == 0


def test_rollout_is_class_agnostic_and_chefer_is_not():
    model = tiny_vit("token", img=CELL, patch=4, dim=8, seed=1)
    x, targets = images(b=1), torch.tensor([[0, 1, 2, 3]])
    rollout = attreval.attribute(model, x, targets, "attention_rollout", setting="gridpg", n=N)
    chefer = attreval.attribute(model, x, targets, "chefer", setting="gridpg", n=N)
    assert all(torch.equal(rollout[:, 0], rollout[:, t]) for t in range(4))
    assert not torch.allclose(chefer[:, 0], chefer[:, 1])


def test_no_hooks_left_after_an_exception():
    model = tiny_vit("token", img=CELL, patch=4, dim=8)
    for name in METHODS:
        with pytest.raises(ValueError, match="target classes"):
            attreval.attribute(model, images(), torch.full((2, 4), 50), name, setting="gridpg", n=N)
        assert all_hooks(model) == 0


@pytest.mark.parametrize("name", METHODS)
def test_cnn_tails_are_refused_in_one_line(name):
    with pytest.raises(ValueError, match=r"^expected a transformer tail .* got a tail of [^\n]*$"):
        attreval.attribute(tiny_model("vgg"), images(), torch.tensor([[0, 1, 2, 3]] * 2), name, n=N)


def test_run_skips_units_a_method_does_not_apply_to(tmp_path, capsys, caplog):
    body = """
[evaluation]
settings = ["gridpg"]
layers = ["input"]
methods = [METHODS]
"""
    config, out = tmp_path / "c.toml", tmp_path / "out"
    config.write_text(tiny_run_config(0, body.replace("METHODS", '"grad", "chefer"'), limit=300, gridpg=1))
    with caplog.at_level("WARNING", logger="attreval.runs.run"):
        assert main(["run", str(config), "--out", str(out), "-q", "--no-report"]) == 0
    assert any("'chefer' does not apply to model 'fashion_resnet'" in r.getMessage() for r in caplog.records)
    assert set(pd.read_parquet(out / "results.parquet")["method"]) == {"grad"}
    assert json.loads((out / "meta.json").read_text())["not_applicable"] == ["fashion_resnet__gridpg__input__chefer"]
    # nothing applicable: one line before any work, and no run directory left behind
    config.write_text(tiny_run_config(0, body.replace("METHODS", '"chefer"')))
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(tmp_path / "none"), "-q", "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected at least one method that applies" in err[0]
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())
