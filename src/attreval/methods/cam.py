"""Activation-based methods, the CAM family (PAPER.md §4.2): Grad-CAM, Grad-CAM++, Layer-CAM, Ablation-CAM,
Score-CAM.

With A = ``task.inputs`` ``(B, C, h, w)`` (the activations at the layer; the image channels at the input
layer) and g = ∂y_c/∂A, every method but Layer-CAM is ``ReLU(Σ_k w_k A_k)`` for per-channel weights
``w (B, T, C)``: a new variant is one weights function. Maps are ``(B, T, h, w)`` float32 at the layer's
resolution; no per-map normalisation (it would change nothing in the score and break AggAtt's
common scale, PAPER.md §3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from attreval.methods.base import Method, Task, perturbed_targets, register
from attreval.methods.capabilities import WHOLE
from attreval.methods.gradient import input_gradients

logger = logging.getLogger(__name__)


def weighted_cam(weights: Tensor, activations: Tensor) -> Tensor:
    """``ReLU(Σ_k w_k A_k)``: weights ``(B, T, C)``, activations ``(B, C, h, w)`` → ``(B, T, h, w)`` float32.

    >>> weighted_cam(torch.tensor([[[1., -1.]]]), torch.tensor([[[[2.]], [[3.]]]])).flatten().tolist()
    [0.0]
    """
    maps = torch.einsum("btc,bchw->bthw", weights.to(activations.dtype), activations)
    return maps.clamp(min=0).float()


@dataclass(frozen=True)
class GradCAM(Method):
    """Grad-CAM (Selvaraju et al. 2017): w_k = mean over the whole (grid) map of g_k (PAPER.md §4.2).

    At the input layer: ``ReLU(Σ_c mean(g_c) · x_c)``.
    """

    display = "Grad-CAM"
    family = "activation"
    reference_layer: ClassVar[str] = "final"  # the paper's reference for the smoothing comparisons (§6.2)

    def __call__(self, task: Task) -> Tensor:
        grads, _ = input_gradients(task)
        return weighted_cam(grads.mean(dim=(-2, -1)), task.inputs)


def exp_logit_scale(maps: Tensor, logits: Tensor) -> Tensor:
    """``maps · exp(logits)`` per map, computed in float64, returned float32 without overflow or underflow.

    ``maps (B, T, h, w)``, ``logits (B, T)``. Where ``exp(y_c)`` would push a map's peak outside the normal
    float32 range (|y_c| ≳ 80), the factor is clipped so the peak stays finite and non-zero; this rescales the
    whole map by a positive constant, which changes neither its shape nor its localization score (Eq. 1),
    and a warning is logged.
    """
    peak = maps.double().amax(dim=(-2, -1))
    scale = logits.double().exp()
    finfo = torch.finfo(torch.float32)
    positive = peak > 0
    peak = torch.where(positive, peak, torch.ones_like(peak))  # an all-zero map stays zero: factor 1
    clipped = torch.where(positive, scale.clamp(min=finfo.tiny * 4 / peak, max=finfo.max / 4 / peak), 1.0)
    changed = positive & (clipped != scale)
    if bool(changed.any()):
        logger.warning(
            "Grad-CAM++: exp(y_c) clipped for %d map(s) to stay in float32 (|logit| up to %.1f); "
            "a positive per-map scale, the localization score is unchanged",
            int(changed.sum()),
            float(logits.abs().max()),
        )
    return (maps.double() * clipped[..., None, None]).float()


@dataclass(frozen=True)
class GradCAMPlusPlus(Method):
    """Grad-CAM++ (Chattopadhay et al. 2018), as in the paper's code (PAPER.md §4.2).

    α = g² / (2g² + (Σ_ab A_k)·g³), a zero denominator replaced by 1; w_k = Σ_ij ReLU(exp(y_c)·g_k)·α_k;
    map = ReLU(Σ_k w_k A_k). Since exp(y_c) > 0, ``ReLU(exp(y_c)·g) = exp(y_c)·ReLU(g)`` and the factor moves
    out of both ReLUs: the map is computed without it and multiplied by exp(y_c) at the end
    (:func:`exp_logit_scale`, float64, guarded against overflow) when ``exp_score=True``.

    The factor is a positive per-map scale: it does not change the localization score, but it makes maps
    of confident images e^Δy times larger than others, so AggAtt's mean maps would show a handful of
    images, and float16 map storage would overflow. attreval therefore leaves it out by default
    (``exp_score=False``); set ``exp_score=True`` for the paper code's exact map values.
    """

    display = "Grad-CAM++"
    family = "activation"
    exp_score: bool = False

    def __call__(self, task: Task) -> Tensor:
        grads, logits = input_gradients(task)
        maps = weighted_cam(grad_cam_pp_weights(grads, task.inputs), task.inputs.double())
        return exp_logit_scale(maps, logits) if self.exp_score else maps


def grad_cam_pp_weights(grads: Tensor, activations: Tensor) -> Tensor:
    """Grad-CAM++'s ``w (B, T, C)`` from ``grads (B, T, C, h, w)`` and ``activations (B, C, h, w)``, float64.

    The α denominator ``g²·(2 + S·g)`` (S = Σ_ab A_k) is ill-conditioned: where ``S·g ≈ −2`` it cancels,
    and since S reaches 1e5 at the input layer, hundreds of entries of a 448² grid lie within 1e-3 of the
    singularity; those with g > 0 (S < 0) carry the largest α·ReLU(g) terms. In float32 the cancellation
    leaves errors of ~1e-3 in the map, so α, its weighted sum and the weighted channel sum are computed in
    float64 from the float32 gradients: on tests/test_fidelity.py's ill-conditioned head the float32 map is
    then 3e-8 (its own rounding) off a float64 evaluation, against 2.8e-3 in float32 (relative to the
    map's peak). The cost is elementwise work on the gradients, small next to the backward pass.
    """
    g = grads.double()
    sums = activations.double().sum(dim=(-2, -1))[:, None, :, None, None]  # (B, 1, C, 1, 1)
    g2 = g * g
    denominator = 2 * g2 + sums * g2 * g
    alpha = g2 / torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return (alpha * g.clamp(min=0)).sum(dim=(-2, -1))


@dataclass(frozen=True)
class LayerCAM(Method):
    """Layer-CAM (Jiang et al. 2021): ``ReLU(Σ_k ReLU(g_k) ⊙ A_k)``, no pooling (PAPER.md §4.2)."""

    display = "Layer-CAM"
    difull_exact = True
    family = "activation"

    def __call__(self, task: Task) -> Tensor:
        grads, _ = input_gradients(task)
        return (grads.clamp(min=0) * task.inputs[:, None]).sum(dim=2).clamp(min=0).float()


def ablated_channels(activations: Tensor, part: slice) -> Tensor:
    """Copies of ``activations (B, C, h, w)`` with channel k zeroed for each k in ``part``: ``(B, P, C, h, w)``."""
    channels = torch.arange(part.start, part.stop, device=activations.device)
    copies = activations[:, None].repeat(1, channels.numel(), 1, 1, 1)
    copies[:, torch.arange(channels.numel(), device=activations.device), channels] = 0
    return copies


@dataclass(frozen=True)
class AblationCAM(Method):
    """Ablation-CAM (Desai & Ramaswamy 2020): w_k = (y_c − y_c^(A_k←0)) / y_c on logits (PAPER.md §4.2).

    The C ablated copies of every example run in chunks of ``task.chunk_size`` inputs, and each forward
    gives all T targets. A target whose logit is exactly 0 gets zero weights (the relative drop is
    undefined), hence an all-zero map.
    """

    display = "Ablation-CAM"
    family = "activation"

    def __call__(self, task: Task) -> Tensor:
        a = task.inputs
        logits = perturbed_targets(task, lambda part: a[:, None], 1)[:, 0, :, None]  # (B, T, 1)
        ablated = perturbed_targets(task, lambda part: ablated_channels(a, part), a.shape[1])  # (B, C, T)
        zero = logits == 0
        drop = (logits - ablated.transpose(1, 2)) / torch.where(zero, torch.ones_like(logits), logits)
        return weighted_cam(drop.masked_fill(zero, 0), a)


def score_masks(activations: Tensor, part: slice, size: tuple[int, int]) -> Tensor:
    """Channels ``part`` upsampled bilinearly to ``size`` and min–max normalised per example: ``(B, P, H, W)``.

    A constant channel gives an all-zero mask instead of 0/0 (its weight is zeroed by :class:`ScoreCAM`).
    """
    up = F.interpolate(activations[:, part], size=size, mode="bilinear", align_corners=False)
    low, high = up.amin(dim=(-2, -1), keepdim=True), up.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    return (up - low) / torch.where(span == 0, torch.ones_like(span), span)


@dataclass(frozen=True)
class ScoreCAM(Method):
    """Score-CAM (Wang et al. 2020): w_k = softmax of the explained head at class c for the image masked by
    the upsampled, min–max normalised A_k (PAPER.md §4.2).

    Runs ``task.tail.whole()`` (the full network from the image) on C masked images per example, in chunks
    of ``task.chunk_size``, all T targets from each forward. Two fixes to the paper's code (§4.2 caveats):
    the softmax is that of each target's own head (``task.heads``), and a constant channel (0/0 in the
    normalisation) gets weight 0.
    """

    display = "Score-CAM"
    family = "activation"
    needs: ClassVar[frozenset[str]] = frozenset({WHOLE})

    def __call__(self, task: Task) -> Tensor:
        if task.image is None:
            raise ValueError("expected a task with the grid images for Score-CAM, got image=None")
        self.check_tail(task.tail)
        whole = task.tail.whole()
        a, image = task.inputs, task.image
        size = (image.shape[-2], image.shape[-1])

        def perturb(part: slice) -> Tensor:
            return score_masks(a, part, size).to(image.dtype)[:, :, None] * image[:, None]

        scores = perturbed_targets(task, perturb, a.shape[1], tail=whole, softmax=True)
        constant = (a.amax(dim=(-2, -1)) == a.amin(dim=(-2, -1)))[:, None, :]  # (B, 1, C)
        return weighted_cam(scores.transpose(1, 2).masked_fill(constant, 0), a)


register("grad_cam", GradCAM())
register("grad_cam_pp", GradCAMPlusPlus())
register("layer_cam", LayerCAM())
register("ablation_cam", AblationCAM())
register("score_cam", ScoreCAM())
