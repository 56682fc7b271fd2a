"""Captum (``captum.attr``) as a bench peer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from attreval.bench.peers.base import PEERS, Peer, PeerCall, channel_sum
from attreval.methods.gradient import IntegratedGradients as IntGradMethod
from attreval.methods.perturbation import Occlusion as OcclusionMethod
from attreval.methods.perturbation import patch_intervals


def captum_windows(size: int, kernel: int, stride: int) -> int:
    """Windows along one axis in Captum's ``Occlusion``: starts 0, s, … that fit inside the map (no overhang)."""
    return (size - kernel) // stride + 1 if size >= kernel else 0


@PEERS.register("captum")
class Captum(Peer):
    package, display = "captum", "Captum"
    methods: ClassVar[dict[str, str]] = {
        "grad": "Saliency",
        "guided_backprop": "GuidedBackprop",
        "input_x_grad": "InputXGradient",
        "int_grad": "IntegratedGradients",
        "occlusion": "Occlusion",
        "grad_cam": "LayerGradCam",
    }
    notes: ClassVar[dict[str, str]] = {
        "int_grad": "Gauss–Legendre nodes, as attreval",
        "grad_cam": "LayerGradCam(relu_attributions=True), at the layer's resolution",
    }

    def grad(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        from captum.attr import Saliency

        return channel_sum(Saliency(call.net).attribute(x, target=target, abs=True))

    def guided_backprop(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        from captum.attr import GuidedBackprop

        return channel_sum(GuidedBackprop(call.net).attribute(x, target=target), absolute=True)

    def input_x_grad(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        from captum.attr import InputXGradient

        return channel_sum(InputXGradient(call.net).attribute(x.clone().requires_grad_(True), target=target))

    def int_grad(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        from captum.attr import IntegratedGradients

        method = call.method_as(IntGradMethod)
        attribution = IntegratedGradients(call.net).attribute(
            x, baselines=float(method.baseline), target=target, n_steps=method.n_steps, method="gausslegendre"
        )
        return channel_sum(attribution)

    def occlusion(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        """Captum averages the output drops of the windows covering a pixel; attreval sums drop / |P| over
        them (PAPER.md §4.3). With full windows (Captum's never overhang) the two differ by count(p) / K²,
        which is undone here, so the maps agree wherever both run the same windows."""
        from captum.attr import Occlusion

        kernel, stride = _window(call)
        c = x.shape[1]
        attribution = Occlusion(call.net).attribute(
            x,
            sliding_window_shapes=(c, kernel, kernel),
            strides=(c, stride, stride),
            baselines=0.0,
            target=target,
            perturbations_per_eval=max(1, call.chunk_size // x.shape[0]),
        )  # attreval's batch
        counts = [_coverage(size, kernel, stride, x.device) for size in x.shape[-2:]]
        return attribution[:, 0].detach().float() * (counts[0][:, None] * counts[1][None, :]) / kernel**2

    def grad_cam(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        from captum.attr import LayerGradCam

        return channel_sum(LayerGradCam(call.net, call.layer_module).attribute(x, target=target, relu_attributions=True))

    def note(self, name: str, call: PeerCall, shape: tuple[int, int]) -> str:
        if name != "occlusion":
            return super().note(name, call, shape)
        kernel, stride = _window(call)
        theirs = captum_windows(shape[0], kernel, stride) * captum_windows(shape[1], kernel, stride)
        ours = len(patch_intervals(shape[0], kernel, stride)) * len(patch_intervals(shape[1], kernel, stride))
        rescaled = "Captum averages the drops per pixel (rescaled here to attreval's Σ drop / |P|)"
        if theirs == ours:
            return f"same {ours} windows; {rescaled}"
        return (
            f"Captum's windows do not overhang the border: {theirs} windows vs attreval's {ours} (the paper's), "
            f"so maps differ near the border; {rescaled}"
        )


def _window(call: PeerCall) -> tuple[int, int]:
    """Occlusion's ``(kernel, stride)`` at the input layer (the only layer the peers are compared at)."""
    method = call.method_as(OcclusionMethod)
    kernel = method.input_kernel_size if method.kernel_size is None else method.kernel_size
    stride = method.input_stride if method.stride is None else method.stride
    return kernel, stride


def _coverage(size: int, kernel: int, stride: int, device: torch.device) -> Tensor:
    """How many of Captum's windows cover each position along one axis: ``(size,)`` float."""
    count = torch.zeros(size, device=device)
    for start in range(0, captum_windows(size, kernel, stride) * stride, stride):
        count[start : start + kernel] += 1
    return count
