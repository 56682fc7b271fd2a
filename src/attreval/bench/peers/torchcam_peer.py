"""TorchCAM (``torchcam.methods``) as a bench peer."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from attreval.bench.peers.base import PEERS, Peer, PeerCall

_RAW = "normalized=False: ReLU'd CAM at the layer's resolution (TorchCAM's default min–max normalises each map)"


@PEERS.register("torchcam")
class TorchCAM(Peer):
    package, display = "torchcam", "TorchCAM"
    methods: ClassVar[dict[str, str]] = {"grad_cam": "GradCAM", "grad_cam_pp": "GradCAMpp", "layer_cam": "LayerCAM"}
    notes: ClassVar[dict[str, str]] = {
        "grad_cam": _RAW,
        "grad_cam_pp": _RAW + "; α is never divided (0.5.0 divides a boolean-indexed copy in place), so "
        "α = g² and w = Σ g²·ReLU(g), not Grad-CAM++'s (its denominator would also sum "
        "g³·A over the map, not g³·ΣA, and add ε = 1e-8)",
        "layer_cam": _RAW,
    }

    def _cam(self, kind: str, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        import torchcam.methods

        extractor = getattr(torchcam.methods, kind)(call.net, target_layer=call.layer_module)
        try:
            scores = call.net(x.clone().requires_grad_(True))  # frozen parameters: the graph needs a leaf
            cams = extractor(class_idx=target.tolist(), scores=scores, normalized=False)
        finally:
            extractor.remove_hooks()
        return cams[0].detach().float()

    def grad_cam(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        return self._cam("GradCAM", call, x, target)

    def grad_cam_pp(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        return self._cam("GradCAMpp", call, x, target)

    def layer_cam(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        return self._cam("LayerCAM", call, x, target)
