"""pytorch-grad-cam (PyPI ``grad-cam``, import ``pytorch_grad_cam``) as a bench peer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from attreval.bench.peers.base import PEERS, Peer, PeerCall

_OUT = (
    "timed as called (its output is ReLU'd, min–max normalised and upsampled to the image, in numpy); "
    "compared on its raw CAM at the layer's resolution (get_cam_image, then ReLU)"
)


@PEERS.register("pytorch_grad_cam")
class PytorchGradCAM(Peer):
    package, display = "pytorch_grad_cam", "pytorch-grad-cam"
    methods: ClassVar[dict[str, str]] = {"grad_cam": "GradCAM", "grad_cam_pp": "GradCAMPlusPlus", "layer_cam": "LayerCAM"}
    notes: ClassVar[dict[str, str]] = {
        "grad_cam": _OUT,
        "grad_cam_pp": _OUT + "; ε = 1e-6 in α's denominator, which dominates 2g² + ΣA·g³ where gradients are small",
        "layer_cam": _OUT,
    }

    def _cam(self, kind: str, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(c)) for c in target]
        with getattr(pytorch_grad_cam, kind)(model=call.net, target_layers=[call.layer_module]) as cam:
            cam(input_tensor=x.clone().requires_grad_(True), targets=targets)
            grads = cam.activations_and_grads
            raw = cam.get_cam_image(
                x, call.layer_module, targets, grads.activations[0].cpu().numpy(), grads.gradients[0].cpu().numpy(), False
            )
        return torch.from_numpy(raw).float().clamp(min=0).to(x.device)

    def grad_cam(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        return self._cam("GradCAM", call, x, target)

    def grad_cam_pp(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        return self._cam("GradCAMPlusPlus", call, x, target)

    def layer_cam(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        return self._cam("LayerCAM", call, x, target)
