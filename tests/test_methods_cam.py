"""The CAM family by hand on tiny heads, and its identities on ResNet's final layer (PAPER.md §4.2, §9.5)."""

import logging
import math

import pytest
import torch
from torch.nn import functional as F

import attreval
from attreval.methods.base import Task
from attreval.methods.cam import (
    AblationCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    exp_logit_scale,
)
from attreval.tail import FunctionTail
from tiny_models import tiny_model

B, C, H, W, K = 2, 3, 2, 2, 4


def make_task(forward, inputs, classes, heads=None, chunk_size=16, image_forward=None, **extra):
    classes = torch.as_tensor(classes)
    heads = torch.zeros(classes.shape[1], dtype=torch.long) if heads is None else torch.as_tensor(heads)
    tail = FunctionTail(forward, whole=image_forward)
    return Task(tail=tail, inputs=inputs, heads=heads, classes=classes, chunk_size=chunk_size, **extra)


def linear_head(seed=0, dtype=torch.float64):
    """``y_k = Σ_{c,i,j} M[k,c,i,j]·A[c,i,j] + b_k`` on a 2×2 map: ∂y_k/∂A = M[k] everywhere."""
    g = torch.Generator().manual_seed(seed)
    m, b = torch.randn(K, C, H, W, generator=g, dtype=dtype), torch.randn(K, generator=g, dtype=dtype)
    return m, b, lambda a: (torch.einsum("nchw,kchw->nk", a, m) + b)[:, None]


def gap_linear_head(seed=0):
    """Global average pooling + a linear layer, one head (ResNet's f_explain at its final layer)."""
    g = torch.Generator().manual_seed(seed)
    w, b = torch.randn(K, C, generator=g, dtype=torch.float64), torch.randn(K, generator=g, dtype=torch.float64)
    return w, b, lambda a: (a.mean(dim=(-2, -1)) @ w.T + b)[:, None]


def activations(seed=1):
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).abs()


CLASSES = [[0, 3], [2, 2]]


def cam(weights, a):
    """Reference ``ReLU(Σ_k w_k A_k)`` for weights ``(B, T, C)``."""
    return (weights[..., None, None] * a[:, None]).sum(2).clamp(min=0).float()


def test_grad_cam_by_hand():
    m, _, forward = linear_head()
    a = activations()
    weights = m[torch.tensor(CLASSES)].mean(dim=(-2, -1))  # mean of g over the whole map
    torch.testing.assert_close(GradCAM()(make_task(forward, a, CLASSES)), cam(weights, a))


def test_grad_cam_on_a_gap_linear_head_uses_the_fc_row_over_hw():
    w, _, forward = gap_linear_head()
    a = activations()
    expected = cam(w[torch.tensor(CLASSES)] / (H * W), a)
    torch.testing.assert_close(GradCAM()(make_task(forward, a, CLASSES)), expected)


def test_layer_cam_by_hand():
    m, _, forward = linear_head()
    a = activations() - 0.5  # some negative activations: the outer ReLU matters
    g = m[torch.tensor(CLASSES)]  # (B, T, C, H, W)
    expected = (g.clamp(min=0) * a[:, None]).sum(2).clamp(min=0).float()
    torch.testing.assert_close(LayerCAM()(make_task(forward, a, CLASSES)), expected)


def test_grad_cam_pp_by_hand():
    m, bias, forward = linear_head()
    a = activations()
    a[0, 1] = 0.0  # Σ_ab A_k = 0: α = 1/2 where g ≠ 0
    m[1, 2, 0, 0] = 0.0  # g = 0: a zero denominator, replaced by 1, gives α = 0
    task = make_task(forward, a, CLASSES)
    g = m[task.classes]
    sums = a.sum(dim=(-2, -1))[:, None, :, None, None]
    denominator = 2 * g**2 + sums * g**3
    alpha = torch.where(denominator == 0, torch.zeros_like(g), g**2 / denominator)
    logits = forward(a)[:, 0].gather(1, task.classes)
    weights = (torch.relu(logits.exp()[..., None, None, None] * g) * alpha).sum(dim=(-2, -1))
    torch.testing.assert_close(GradCAMPlusPlus(exp_score=True)(task), cam(weights, a))
    unscaled = GradCAMPlusPlus(exp_score=False)(task)
    torch.testing.assert_close(unscaled, cam((g.clamp(min=0) * alpha).sum(dim=(-2, -1)), a))


def test_grad_cam_pp_exp_factor_never_overflows(caplog):
    maps = torch.rand(2, 1, 3, 3) + 0.1
    logits = torch.tensor([[200.0], [-200.0]])
    with caplog.at_level(logging.WARNING, logger="attreval.methods.cam"):
        scaled = exp_logit_scale(maps, logits)
    assert torch.isfinite(scaled).all() and (scaled > 0).all()
    assert "clipped for 2 map(s)" in caplog.text

    # a positive per-map scale: the shape of every map is kept
    def shape(x):
        return x / x.amax(dim=(-2, -1), keepdim=True)

    torch.testing.assert_close(shape(scaled), shape(maps))
    expected = maps * torch.tensor([math.e, 1.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(exp_logit_scale(maps, torch.tensor([[1.0], [0.0]])), expected)
    assert exp_logit_scale(torch.zeros(1, 1, 2, 2), torch.tensor([[1000.0]])).eq(0).all()


class CountingForward:
    def __init__(self, forward):
        self.forward, self.calls = forward, 0

    def __call__(self, x):
        self.calls += 1
        return self.forward(x)


@pytest.mark.parametrize("chunk_size", [1, 4, 64])
def test_ablation_cam_by_hand_on_a_gap_linear_head(chunk_size):
    w, bias, forward = gap_linear_head()
    a = activations()
    classes = torch.tensor([[0, 3, 1], [2, 2, 0]])
    counter = CountingForward(forward)
    maps = AblationCAM()(make_task(counter, a, classes, heads=[0, 0, 0], chunk_size=chunk_size))
    y = a.mean(dim=(-2, -1)) @ w.T + bias  # (B, K)
    drop = w[classes] * a.mean(dim=(-2, -1))[:, None, :]  # y − y(A_k ← 0) = w_ck · mean(A_k)
    torch.testing.assert_close(maps, cam(drop / y.gather(1, classes)[..., None], a))
    # one forward for the logits, then C ablated copies per example in chunks; never one per target
    assert counter.calls == 1 + math.ceil(C / max(1, chunk_size // B))


def test_ablation_cam_zero_logit_gives_a_zero_map():
    w, bias, forward = gap_linear_head()
    w[1], bias[1] = 0.0, 0.0  # y_1 ≡ 0
    maps = AblationCAM()(make_task(forward, activations(), [[1, 0], [1, 2]]))
    assert torch.isfinite(maps).all() and maps[:, 0].eq(0).all() and maps[:, 1].abs().sum() > 0


def multi_head_image_forward(seed=2):
    """``(N, 3, 4, 4) → (N, 4 heads, K)``: every head its own linear classifier."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, K, 3 * 16, generator=g, dtype=torch.float64)
    return lambda x: torch.einsum("hkd,nd->nhk", w, x.flatten(1))


def score_cam_by_hand(a, image, image_forward, heads, classes):
    weights = torch.zeros(a.shape[0], len(heads), a.shape[1], dtype=a.dtype)
    for k in range(a.shape[1]):  # the reference's one forward per channel
        up = F.interpolate(a[:, k : k + 1], size=image.shape[-2:], mode="bilinear", align_corners=False)
        low, high = up.amin(dim=(-2, -1), keepdim=True), up.amax(dim=(-2, -1), keepdim=True)
        constant = a[:, k].amax(dim=(-2, -1)) == a[:, k].amin(dim=(-2, -1))  # (B,): weight 0, not 0/0
        masks = torch.nan_to_num((up - low) / (high - low))
        probs = image_forward(masks * image).softmax(dim=-1)  # (B, heads, K)
        for t, (head, column) in enumerate(zip(heads, classes.T)):
            chosen = probs[torch.arange(a.shape[0]), head, column]
            weights[:, t, k] = torch.where(constant, torch.zeros_like(chosen), chosen)
    return cam(weights, a)


def test_score_cam_by_hand_uses_the_explained_head():
    image_forward = multi_head_image_forward()
    image = torch.randn(B, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = activations()
    a[1, 2] = 0.7  # a constant channel: weight 0, no 0/0
    classes, heads = torch.tensor([[1, 1], [2, 2]]), [0, 3]  # same class on head 0 and head 3
    task = make_task(lambda x: x, a, classes, heads=heads, chunk_size=3, image=image, image_forward=image_forward)
    maps = ScoreCAM()(task)
    assert torch.isfinite(maps).all()
    torch.testing.assert_close(maps, score_cam_by_hand(a, image, image_forward, heads, classes))
    head0 = score_cam_by_hand(a, image, image_forward, [0, 0], classes)
    assert not torch.allclose(maps[:, 1], head0[:, 1])  # head 3's softmax, not head 0's


def test_score_cam_on_difull_weights_each_corner_head_by_its_own_softmax():
    model = tiny_model("vgg")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    setting = attreval.make_setting("difull", model, 2)
    targets = torch.tensor([[5, 5]])
    maps = attreval.attribute(model, x, targets, "score_cam", setting=setting, layer="final", heads=[0, 3])
    a = setting.activations(x, "final").double()

    def image_forward(images):
        return setting.tail("input", (0, 1, 2, 3))(images.float()).double()

    expected = score_cam_by_hand(a, x.double(), image_forward, [0, 3], targets)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


def test_grad_cam_equals_relu_ixg_at_the_resnet_final_layer_in_gridpg():
    model = tiny_model("resnet")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    grad_cam = attreval.attribute(model, x, targets, "grad_cam", layer="final")
    ixg = attreval.attribute(model, x, targets, "input_x_grad", layer="final")
    torch.testing.assert_close(grad_cam, ixg.clamp(min=0), rtol=1e-4, atol=1e-6)
    assert grad_cam.sum() > 0
