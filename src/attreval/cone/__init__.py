"""Receptive-field cones: the logits of many occluded copies of one input, recomputing only what changes.

Zeroing a window of a layer's input changes, at every later layer, only the positions whose receptive field
meets the window (its *cone*); everything else equals the clean forward. :class:`ConePlan` computes the clean
forward once, keeps every intermediate activation, and for a batch of P windows recomputes, module by
module, only a rectangle per window that contains the cone (Krypton's incremental view maintenance,
Nakandala et al., SIGMOD 2019). The results are the full computation's up to float rounding (a convolution
summed over a sub-window instead of the whole map), not an approximation.

A changed region is a :class:`Patch`: the clean activations ``base (B, C, H, W)`` of B examples and, for each
of P windows, the values on a rectangle of one size ``h × w`` for all windows at per-window offsets
``top, left (P,)``, kept inside the map (at a border the rectangle shifts inward: recomputing a few unchanged
positions is exact and harmless). :func:`read` is the one primitive every rule uses: the patched tensor on
any rectangle, with the module's padding value outside the map.

Rules (:func:`compile_module`):

* ``Conv2d`` (zero padding, any kernel/stride/dilation/groups), ``MaxPool2d`` (padding value −inf),
  ``AvgPool2d`` (zero padding counted, or none): the output rectangle from the input's, computed by the same
  operator without padding on the patched input read around it;
* ``BatchNorm2d`` in eval mode, pointwise activations, ``Identity``, dropout in eval mode: same rectangle;
* ``nn.Sequential``: the chain; torchvision ``BasicBlock`` / ``Bottleneck``: main branch and shortcut
  (``downsample`` or identity), read on the union of their rectangles, added, ReLU;
* anything else (a timm block, an fx ``GraphModule``, pooling + classifier): the patched tensor is
  materialised ``(B·P, C, H, W)`` and the module runs in full on it (correct, only slower); every later module
  then runs in full too (:class:`Dense`).

Nothing here mutates a module, the caller's tensors or the cache (activations are never passed to an
in-place operation), and no hooks are registered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from attreval.cone.patch import Dense, Patch, gather, occluded_patch, read
from attreval.cone.rules import ChainRule, ConvRule, Rule, compile_module

__all__ = ["ConePlan", "ConvRule", "Dense", "Patch", "Rule", "compile_module", "gather", "occluded_patch", "read"]


class ConePlan:
    """The cone engine over a chain of modules (a tail's stages, optionally its head).

    Args:
        modules: applied in order to ``(B, C, H, W)`` activations.

    ``prepare(x)`` runs the clean forward once and returns its cache; ``occluded(cache, x, boxes)`` gives the
    output of the chain on every example with each window zeroed, ``(B·P, …)`` example-major (the same as
    running the chain on the materialised copies).
    """

    def __init__(self, modules: Sequence[nn.Module]):
        self.rule = ChainRule(nn.Identity(), [compile_module(m) for m in modules])

    @property
    def fallbacks(self) -> list[nn.Module]:
        """Modules without a rule, which run in full on the materialised patched tensor."""
        return [rule.module for rule in self.rule.full_rules()]

    @property
    def incremental(self) -> bool:
        """Whether the chain's first module recomputes only a region. When it has no rule (a tail that is just
        pooling + classifier) every module runs in full on the materialised copies, and the cache costs time
        for nothing (measured: 0.13–0.3× at the shipped ResNet's final layer), so tails fall back."""
        rule: Rule = self.rule
        while isinstance(rule, ChainRule) and rule.rules:
            rule = rule.rules[0]
        return type(rule) is not Rule

    def prepare(self, x: Tensor) -> object:
        with torch.no_grad():
            return self.rule.clean(x)[1]

    def occluded(self, cache: object, x: Tensor, boxes: Tensor) -> Tensor:
        """``(B·P, …)``: the chain's output for ``x (B, C, H, W)`` with ``boxes (P, 4)`` (see :func:`occluded_patch`)."""
        with torch.no_grad():
            # the cache comes from prepare(), i.e. ChainRule.clean: a list of per-rule caches typed as object there
            return self.rule.patch(cast(list, cache), occluded_patch(x, boxes)).dense()
