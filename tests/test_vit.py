"""Vision Transformers in the three settings (docs/transformers.md): token maps, reproduction, locality."""

import pytest
import torch
from timm.models.deit import VisionTransformerDistilled

from attreval import make_setting, split_model
from attreval.grid import GridSpec
from attreval.methods.base import target_gradients
from attreval.models.splitters import splitter_for
from attreval.models.splitters.vit import pack, unpack
from attreval.settings import SETTINGS
from tiny_vit import _shake, tiny_torchvision_vit, tiny_vit

pytestmark = pytest.mark.slow  # ViT splits at several sizes: left out of `make test-fast`

N = 2
VARIANTS = {
    "cls": dict(pool="token"),
    "cls_reg": dict(pool="token", reg=2),
    "avg": dict(pool="avg", cls=False),
    "avg_reg": dict(pool="avg", cls=False, reg=2),
    "avg_with_cls": dict(pool="avg"),
}


def distilled(dynamic=False):
    torch.manual_seed(0)
    model = VisionTransformerDistilled(
        img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2, num_classes=10, dynamic_img_size=dynamic
    )
    return _shake(model, 0)


def models():
    out = {name: tiny_vit(**kw) for name, kw in VARIANTS.items()}
    out["deit_distilled"] = distilled()
    out["torchvision"] = tiny_torchvision_vit()
    return out


MODELS = models()


@pytest.fixture(scope="module")
def grids():
    return torch.randn(2, 3, N * 32, N * 32, generator=torch.Generator().manual_seed(3))


def test_pack_unpack_roundtrip():
    seq = torch.randn(3, 2 + 12, 5)
    m = pack(seq, 2, (3, 4))
    assert m.shape == (3, 15, 3, 4)
    assert torch.equal(m[:, :5].flatten(2).transpose(1, 2), seq[:, 2:])  # patch (i, j) at position (i, j)
    assert torch.equal(m[:, 5:10, 1, 2], seq[:, 0]) and torch.equal(m[:, 10:, 2, 3], seq[:, 1])
    torch.testing.assert_close(unpack(m, 2), seq, rtol=0, atol=1e-6)
    assert torch.equal(pack(seq[:, 2:], 0, (3, 4)), m[:, :5])  # no extra tokens: a plain patch-token map


@pytest.mark.parametrize("name", sorted(MODELS))
def test_vit_splitter_takes_the_model_and_names_its_layers(name):
    model = MODELS[name]
    assert splitter_for(model)[0] == "vit"
    staged = split_model(model)
    blocks = staged.layer_names[2:]
    assert len(blocks) == 4 and staged.aliases["middle"] == blocks[1]
    # class-token models: final is the last block's input (after it the head reads the class token only)
    token = name not in ("avg", "avg_reg", "avg_with_cls")
    assert staged.aliases["final"] == blocks[2 if token else 3]


@pytest.mark.parametrize("setting", SETTINGS.names())
@pytest.mark.parametrize("name", sorted(MODELS))
def test_n1_every_setting_is_the_plain_model(name, setting):
    model = MODELS[name]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    got = make_setting(setting, model, 1).logits(x)[:, 0]
    if setting == "dipart" and name in ("cls", "cls_reg", "deit_distilled", "torchvision"):
        # DiPart's head of a class-token model reads the mean of the cell's patch tokens (part_head)
        assert not torch.allclose(got, expected, atol=1e-3)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(VARIANTS) + ["deit_distilled"])
def test_gridpg_is_the_model_with_dynamic_image_size_on_the_grid(name, grids):
    model = MODELS[name]
    reference = distilled(dynamic=True) if name == "deit_distilled" else tiny_vit(dynamic=True, **VARIANTS[name])
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = reference.eval()(grids)
        got = make_setting("gridpg", model, N).logits(grids)[:, 0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("setting", SETTINGS.names())
@pytest.mark.parametrize("name", ["cls_reg", "avg_reg", "torchvision"])
def test_tail_from_every_layer_gives_the_same_logits(name, setting, grids):
    s = make_setting(setting, MODELS[name], N)
    heads = tuple(range(s.num_heads))
    expected = s.logits(grids, heads)
    with torch.no_grad():
        for layer in s.staged.layer_names:
            got = s.tail(layer, heads)(s.activations(grids, layer))
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=f"layer {layer}")


@pytest.mark.parametrize("name", ["cls", "cls_reg", "avg_reg", "torchvision"])
def test_difull_head_is_the_model_on_its_cell(name, grids):
    model = MODELS[name]
    logits = make_setting("difull", model, N).logits(grids, heads=range(N * N))
    spec = GridSpec(N, 32, 32)
    with torch.no_grad():
        for cell in range(N * N):
            rows, cols = spec.cell_box(cell)
            torch.testing.assert_close(logits[:, cell], model(grids[:, :, rows, cols]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cls_reg", "avg_reg", "torchvision"])
def test_difull_gradients_are_zero_outside_the_head_cell_at_every_layer(name, grids):
    s = make_setting("difull", MODELS[name], N)
    for layer in s.staged.layer_names:
        a = s.activations(grids, layer)
        masks = GridSpec(N, 1, 1).cell_masks(*a.shape[-2:])
        for head in range(N * N):
            tail = s.tail(layer, (head,))
            classes = torch.tensor([head, 9 - head])
            grads, _ = target_gradients(tail, a, torch.zeros(2, dtype=torch.long), classes, chunk_size=8)
            assert grads[:, :, masks[head]].abs().sum() > 0, f"{layer}: head {head} depends on its own cell"
            assert torch.count_nonzero(grads[:, :, ~masks[head]]) == 0, f"{layer}: head {head} sees other cells"


@pytest.mark.parametrize("name", ["cls_reg", "avg", "torchvision"])
def test_dipart_head_reads_only_its_cell_of_the_final_map(name, grids):
    s = make_setting("dipart", MODELS[name], N)
    last = s.staged.layer_names[-1]
    a = s.activations(grids, last)
    masks = GridSpec(N, 1, 1).cell_masks(*a.shape[-2:])
    for head in range(N * N):
        grads, _ = target_gradients(s.tail(last, (head,)), a, torch.zeros(2, dtype=torch.long), torch.tensor([1, 2]), 8)
        assert torch.count_nonzero(grads[:, :, ~masks[head]]) == 0
    # but the joint backbone mixes cells: at the input, head 0 depends on every cell
    x = grids.clone()
    grads, _ = target_gradients(s.tail("input", (0,)), x, torch.zeros(2, dtype=torch.long), torch.tensor([1, 2]), 8)
    assert all(grads[:, :, m].abs().sum() > 0 for m in GridSpec(N, 32, 32).cell_masks(64, 64))


def test_dipart_class_token_rule_is_the_classifier_on_the_mean_of_the_cell_tokens(grids):
    """The documented rule: head k = head(fc_norm(mean of cell k's patch tokens after the final norm))."""
    model = MODELS["cls_reg"]
    reference = tiny_vit(dynamic=True, **VARIANTS["cls_reg"])
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        tokens = reference.eval().forward_features(grids)[:, reference.num_prefix_tokens :]  # (B, 64, D) normed
        side = grids.shape[-1] // 8
        grid = tokens.view(2, side, side, -1)
        half = side // N
        expected = torch.stack(
            [
                model.head(model.fc_norm(grid[:, r * half : (r + 1) * half, c * half : (c + 1) * half].mean(dim=(1, 2))))
                for r in range(N)
                for c in range(N)
            ],
            1,
        )
        got = make_setting("dipart", model, N).logits(grids, heads=range(N * N))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_unsupported_vit_variants_are_not_taken():
    attn_pool = tiny_vit(pool="map")
    assert splitter_for(attn_pool)[0] != "vit"


def test_cells_not_divisible_by_the_patch_size_get_a_clear_error():
    with pytest.raises(ValueError, match="divisible by the patch size 8×8"):
        make_setting("difull", MODELS["cls"], 2).logits(torch.randn(1, 3, 60, 60))


def test_zoo_vit_splits_with_an_8x8_token_grid():
    from attreval.models.zoo import build_model

    model = build_model("fashion_vit").eval()
    staged = split_model(model)
    assert staged.resolve("middle") == "blocks.1" and staged.resolve("final") == "blocks.2"  # class token: input of the last block
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert make_setting("difull", model, 2).activations(x, "middle").shape == (2, 2 * 48, 16, 16)


def test_shipped_vit_weights_match_their_sidecar():
    import hashlib
    import json

    from attreval.models.zoo import load_default_model, weights_path

    path = weights_path("fashion_vit")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["train_data"].endswith("3000-9999") and meta["test_num_images"] == 3000
    model = load_default_model("fashion_vit")
    from attreval.data.fashion_mnist import fashion_mnist_dataset

    images, labels = fashion_mnist_dataset("test").tensors
    with torch.no_grad():  # held-out images (never trained on): the recorded accuracy, on a 500-image subset
        accuracy = (model(images[:3000:6]).argmax(1) == labels[:3000:6]).float().mean().item()
    assert abs(accuracy - meta["test_accuracy"]) < 0.05


def test_holdout_training_keeps_the_first_images_out(tmp_path):
    from attreval import train as training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches gain nothing from threads on a loaded machine
    try:
        meta = training.train("fashion_vit", out=tmp_path / "v.pt", epochs=1, batch_size=20, holdout=9960, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert meta["train_images"] == 40 and meta["test_num_images"] == 9960
    assert meta["train_data"] == "embedded Fashion-MNIST test images 9960-9999"
    with pytest.raises(ValueError, match="expected --holdout in"):
        training.train("fashion_vit", out=tmp_path / "w.pt", holdout=10000, progress=False)
    with pytest.raises(ValueError, match="expected a Fashion-MNIST model for --holdout"):
        training.train("cifar_vgg11", holdout=10, progress=False)
