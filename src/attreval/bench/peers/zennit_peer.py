"""Zennit (``zennit.attribution``) as a bench peer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from attreval.bench.peers.base import PEERS, Peer, PeerCall, channel_sum
from attreval.methods.gradient import IntegratedGradients as IntGradMethod


def _one_hot(call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
    """The output attribution Zennit back-propagates: a one-hot ``(B, K)`` of the targets."""
    with torch.no_grad():
        classes = call.net(x[:1]).shape[1]
    return torch.eye(classes, device=x.device)[target]


@PEERS.register("zennit")
class Zennit(Peer):
    package, display = "zennit", "Zennit"
    methods: ClassVar[dict[str, str]] = {
        "grad": "Gradient",
        "guided_backprop": "Gradient + GuidedBackprop composite",
        "int_grad": "IntegratedGradients",
    }
    notes: ClassVar[dict[str, str]] = {
        "int_grad": "right Riemann sum (nodes k/S, one forward per step) instead of Gauss–Legendre: "
        "same S, another quadrature, so maps differ by the quadrature error"
    }

    def grad(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        from zennit.attribution import Gradient

        with Gradient(model=call.net) as attributor:
            _, relevance = attributor(x, _one_hot(call, x, target))
        return channel_sum(relevance, absolute=True)

    def guided_backprop(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        from zennit.attribution import Gradient
        from zennit.composites import GuidedBackprop

        with Gradient(model=call.net, composite=GuidedBackprop()) as attributor:
            _, relevance = attributor(x, _one_hot(call, x, target))
        return channel_sum(relevance, absolute=True)

    def int_grad(self, call: PeerCall, x: Tensor, target: Tensor) -> Tensor:
        from zennit.attribution import IntegratedGradients

        method = call.method_as(IntGradMethod)
        baseline = float(method.baseline)
        with IntegratedGradients(model=call.net, n_iter=method.n_steps, baseline_fn=lambda t: torch.full_like(t, baseline)) as attributor:
            _, relevance = attributor(x, _one_hot(call, x, target))
        return channel_sum(relevance)
