"""Backpropagation-based methods (PAPER.md §4.1): Grad, Guided Backprop, Input×Gradient, IntGrad.

Every method here explains ``task.tail`` (f_explain of PAPER.md §2) with respect to ``task.inputs``
(the activations at the layer) and returns ``(B, T, h, w)`` float32 maps summed over channels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from attreval.methods.base import Method, Task, chunks, example_gradients, register
from attreval.methods.capabilities import MODULES
from attreval.tail import module_hooks
from attreval.validation import fits_in_memory, positive_int

logger = logging.getLogger(__name__)


def input_gradients(task: Task) -> tuple[Tensor, Tensor]:
    """Gradient of every target logit w.r.t. the inputs: ``(B, T, C, h, w)`` and the logits ``(B, T)``."""
    return example_gradients(task, task.inputs, torch.arange(task.batch, device=task.inputs.device))


@dataclass(frozen=True)
class Grad(Method):
    """Gradient (Simonyan et al. 2014): ``|∂y_c/∂A|`` summed over channels (absolute value, PAPER.md §4.1)."""

    display = "Grad"
    difull_exact = True
    family = "backprop"
    absolute: bool = True

    def __call__(self, task: Task) -> Tensor:
        grads, _ = input_gradients(task)
        grads = grads.abs() if self.absolute else grads
        return grads.sum(dim=2).float()


# --------------------------------------------------------------------------------------------------
# Guided Backprop


class GuidedReLU(torch.autograd.Function):
    """Identity forward, ``grad.clamp(min=0)`` backward.

    Placed right after an ``nn.ReLU`` (whose own backward masks by ``x > 0``), the pair back-propagates
    ``grad · [grad > 0] · [x > 0]``: the guided ReLU of Springenberg et al. 2015. The forward returns a copy
    because autograd forbids in-place changes (``out += identity``, a second in-place ReLU) of a tensor that
    a custom Function returned unchanged.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


def _guide_relu(module: nn.Module, inputs: Any, output: Any) -> Tensor | None:
    """Forward hook of an ``nn.ReLU``: route its output through :class:`GuidedReLU` when autograd is on."""
    if isinstance(output, Tensor) and torch.is_grad_enabled():
        return GuidedReLU.apply(output)
    return None


@contextmanager
def guided_relus(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, every ``nn.ReLU`` among ``modules`` (the tail's: f_explain) back-propagates only
    positive gradients.

    The hooks are scoped to those modules (:func:`~attreval.tail.module_hooks`), as Captum's GuidedBackprop
    hooks the modules of the model it wraps (PAPER.md §4.1), and removed in ``finally``, also when the
    forward raises; other models in the process are not affected. The activations before the layer are
    computed without autograd, so only f_explain's ReLUs are guided. Functional ``F.relu`` calls are not
    modified (as in Captum).
    """
    with module_hooks(modules, nn.ReLU, _guide_relu):
        yield


@dataclass(frozen=True)
class GuidedBackprop(Method):
    """Guided Backprop (Springenberg et al. 2015), then absolute value, summed over channels (PAPER.md §4.1).

    The backward pass of every ``nn.ReLU`` module of the tail (``task.tail.modules``) passes only positive
    gradients (:func:`guided_relus`). Maps ``(B, T, h, w)`` float32, non-negative when ``absolute``.
    """

    display = "Guided Backprop"
    difull_exact = True
    family = "backprop"
    needs: ClassVar[frozenset[str]] = frozenset({MODULES})
    absolute: bool = True

    def __call__(self, task: Task) -> Tensor:
        self.check_tail(task.tail)
        with guided_relus(task.tail.modules):
            grads, _ = input_gradients(task)
        grads = grads.abs() if self.absolute else grads
        return grads.sum(dim=2).float()


# --------------------------------------------------------------------------------------------------
# Input × Gradient


@dataclass(frozen=True)
class InputXGradient(Method):
    """Input × Gradient (Shrikumar et al. 2017): ``Σ_k A_k · ∂y_c/∂A_k``, signed (PAPER.md §4.1).

    At the final layer of a GAP + linear head this is "DetGrad-CAM" (Saha et al. 2020).
    """

    display = "IxG"
    difull_exact = True
    family = "backprop"

    def __call__(self, task: Task) -> Tensor:
        grads, _ = input_gradients(task)
        return (grads * task.inputs[:, None]).sum(dim=2).float()


# --------------------------------------------------------------------------------------------------
# Integrated Gradients

RULES = ("gauss_legendre", "riemann_trapezoid", "riemann_middle")


def integration_points(n_steps: int, rule: str = "gauss_legendre") -> tuple[Tensor, Tensor]:
    """Nodes α ∈ [0, 1] and weights of a quadrature rule for ∫₀¹ g(α) dα: two float64 tensors ``(n_steps,)``.

    ``gauss_legendre`` (Captum's default ``"gausslegendre"``) is exact for polynomials of degree < 2·n_steps;
    ``riemann_middle`` (cell midpoints, weights 1/n) equals Captum's rule of that name. ``riemann_trapezoid``
    is the trapezoid rule on the nodes ``0, 1/(n−1), …, 1`` (weights ``1/(n−1)``, end weights halved:
    they sum to 1). Captum's ``"riemann_trapezoid"`` (0.9) uses the same nodes but weights ``1/n`` with the
    ends halved, which sum to ``(n−1)/n``; so with that rule attreval's IntGrad maps are Captum's times
    ``n/(n−1)`` (checked in tests/test_fidelity.py), and only attreval's satisfy completeness exactly for
    an integrand linear in α.

    >>> integration_points(3, "riemann_trapezoid")
    (tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64), tensor([0.2500, 0.5000, 0.2500], dtype=torch.float64))
    >>> [round(float(v), 6) for v in integration_points(2)[0]]
    [0.211325, 0.788675]
    """
    if rule == "gauss_legendre":
        fits_in_memory(f"the {n_steps}-node Gauss-Legendre rule of IntGrad (an n_steps² matrix)", 8 * n_steps**2, "lower n_steps")
        nodes, gauss = np.polynomial.legendre.leggauss(n_steps)  # on [-1, 1]; computed once per call
        return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(gauss / 2)
    if rule == "riemann_trapezoid":
        alphas = torch.linspace(0, 1, n_steps, dtype=torch.float64)
        weights = torch.full((n_steps,), 1 / (n_steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return alphas, weights
    if rule == "riemann_middle":
        alphas = (torch.arange(n_steps, dtype=torch.float64) + 0.5) / n_steps
        return alphas, torch.full((n_steps,), 1 / n_steps, dtype=torch.float64)
    raise ValueError(f"expected an integration rule in {RULES}, got {rule!r}")


def path_gradients(task: Task, alphas: Tensor, weights: Tensor, baseline: float) -> Tensor:
    """``Σ_s weights_s · ∂y_c/∂A (baseline + α_s (A − baseline))`` for every target: ``(B, T, C, h, w)``.

    The B·S path points (example, step) go through :func:`example_gradients` (all T targets of a point
    from one forward where the heads share the network) in chunks of ``task.chunk_size // T`` points;
    each chunk's scaled inputs are built on the fly, so memory stays O(B·T + chunk).
    """
    x, b, t, s = task.inputs, task.batch, task.num_targets, alphas.numel()
    device = x.device
    alphas, weights = alphas.to(device=device, dtype=x.dtype), weights.to(device=device, dtype=x.dtype)
    delta = x - baseline
    total = torch.zeros((b, t * x[0].numel()), dtype=x.dtype, device=device)
    fits_in_memory(
        "IntGrad's path points of one forward", min(b * s, task.chunk_size) * x[0].numel() * x.element_size(), "lower chunk_size", device
    )
    for part in chunks(b * s, max(1, task.chunk_size // t)):
        points = torch.arange(part.start, part.stop, device=device)
        example, step = points // s, points % s
        scaled = baseline + alphas[step].view(-1, 1, 1, 1) * delta[example]
        grads, _ = example_gradients(task, scaled, example)  # (n, T, C, h, w)
        total.index_add_(0, example, grads.flatten(1) * weights[step].view(-1, 1))
    return total.view(b, t, *x.shape[1:])


@dataclass(frozen=True)
class IntegratedGradients(Method):
    """Integrated Gradients (Sundararajan et al. 2017), signed, summed over channels (PAPER.md §4.1).

    ``(A − baseline) · ∫₀¹ ∂y_c/∂A (baseline + α (A − baseline)) dα``, in the paper code's configuration
    ``n_steps = 20``, Captum's default Gauss–Legendre rule, zero baseline (the mean pixel in normalised image
    space; a zero activation at hidden layers). Completeness: the map sums to ``y_c(A) − y_c(baseline)`` up
    to the quadrature error (none for polynomial integrands of degree < 2·n_steps).

    Attributes:
        n_steps: quadrature nodes S; S forwards and T·S backwards per image (T·S of each on DiFull).
        rule: one of :data:`RULES`. A node at α = 0 (``riemann_trapezoid``) takes a gradient at the baseline
            itself, where the ReLUs of a bias-free net sit at their kink (gradient 0).
        baseline: constant baseline value.
    """

    display = "IntGrad"
    difull_exact = True
    family = "backprop"
    test_preset: ClassVar[dict[str, Any]] = {"n_steps": 6}
    n_steps: int = 20
    rule: str = "gauss_legendre"
    baseline: float = 0.0

    def __post_init__(self) -> None:
        positive_int("n_steps", self.n_steps)
        if self.rule not in RULES:
            raise ValueError(f"expected an integration rule in {RULES}, got {self.rule!r}")
        if self.rule == "riemann_trapezoid" and self.n_steps < 2:
            raise ValueError(f"expected n_steps >= 2 for the trapezoid rule, got {self.n_steps}")

    def __call__(self, task: Task) -> Tensor:
        alphas, weights = integration_points(self.n_steps, self.rule)
        integral = path_gradients(task, alphas, weights, self.baseline)
        return ((task.inputs - self.baseline)[:, None] * integral).sum(dim=2).float()


register("grad", Grad())
register("guided_backprop", GuidedBackprop())
register("input_x_grad", InputXGradient())
register("int_grad", IntegratedGradients())
