"""Layer-wise Relevance Propagation through Zennit (PAPER.md §4, §8: the TPAMI version evaluates LRP; its
configuration is not recovered, so the presets below are the composites the LRP literature recommends).

Zennit (an optional extra: ``pip install attreval[zennit]``) provides the rules and canonizers; this module
only decides *where* they go and batches them like every other backprop method:

* **Scope.** The composite is registered on the tail's modules only (``task.tail.modules``, collected in an
  ``nn.ModuleList``), inside a ``with`` whose ``finally`` removes every hook and reverts every canonizer.
  The activations before the layer were computed without autograd by the setting, so only f_explain is
  modified, as for Guided Backprop.
* **Relevance convention.** In Zennit's hooks the quantity that flows backward *is* relevance: each rule's
  backward multiplies by its own input (its "reducer"), and pass-through modules (ReLU, BatchNorm, max-pool,
  flatten) hand it on. So the relevance at layer L is Zennit's modified gradient of the tail at the
  activations, **not** multiplied by the activations again; this is what ``zennit.attribution.Gradient``
  returns with a composite (checked against it in tests/test_methods_lrp.py).
* **Output relevance.** The explained logit ``y_c`` (``output_relevance="logit"``, the usual LRP start
  R = f_c(x), as Captum's LRP): maps then sum to ``y_c`` where the rules conserve (ε → 0, no biases). With
  ``"one"`` the start is the one-hot vector (Zennit's tutorial convention). Every rule is linear in the upper
  relevance, so the logit start is the one-hot result times ``y_c``, computed from one backward.
* **Batching.** Through :func:`~attreval.methods.base.example_gradients`: DiFull's separable rows and the
  shared forward of GridPG/DiPart apply unchanged (every rule here is computed per row).
* **Any layer.** The composite's special first-layer rule (``Flat``, ``ZBox``) is meant for the *model's*
  first layer, so it is used only at the input layer; at a hidden layer L every layer of the tail gets its
  ordinary rule. LRP is layer-wise, so the map at L then equals the relevance at L of the full model's LRP
  (checked in the tests).
* **GridPG's sliding classifier.** A fully connected VGG classifier becomes ``Conv2d`` modules over the grid
  (:func:`~attreval.models.splitters.vgg.sliding_classifier`); those convolutions are dense layers and get the
  composite's *Linear* rule (as the same weights do as ``nn.Linear`` in DiFull/DiPart), and the average over
  windows (:class:`~attreval.models.splitters.vgg.GlobalAveragePool`) gets Zennit's ``Norm`` rule, like
  ``AdaptiveAvgPool2d``.
* **Canonizers** modify the caller's modules in place for the duration of the call: Zennit's BatchNorm merge
  swaps parameter ``.data`` and restores the original tensors, the ResNet canonizer sets a ``forward`` and a
  ``Sum`` module on each block and deletes them. No copy of the model is made (a deep copy of a large model
  per call costs its whole size, and a cached copy would have to be kept in step with the split and the
  caller's later changes). :func:`lrp_scope` additionally snapshots every parameter, buffer, submodule and
  ``forward`` attribute of the tail's modules (references only, no copies) and puts back anything Zennit did
  not, also when registration or the backward raises; the caller's ``state_dict`` and outputs are
  bit-identical afterwards (tests/test_methods_lrp.py). While a call runs, the tail's modules compute the
  same function in canonical form (merged BatchNorms), so other users of the model see unchanged outputs up
  to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attreval.data.folders import IMAGENET_MEAN, IMAGENET_STD
from attreval.methods.base import Method, Task, example_gradients, register
from attreval.methods.capabilities import MODULES, capability
from attreval.methods.lrp_scope import dense_convs, lrp_scope, require_zennit
from attreval.models.splitters.vgg import GlobalAveragePool
from attreval.tail import Tail
from attreval.validation import choice, positive_number

#: Canonizer choices: ``torchvision`` (BatchNorm merged into the preceding conv/linear, and torchvision
#: ResNet ``BasicBlock``/``Bottleneck`` residual sums as a ``Sum`` module with Zennit's ``Norm`` rule; on
#: VGG-like models only the merge applies, which is Zennit's ``VGGCanonizer``), ``merge_batchnorm`` (the
#: merge only), ``none``.
CANONIZERS = ("torchvision", "merge_batchnorm", "none")
OUTPUT_RELEVANCE = ("logit", "one")

#: The ImageNet-normalised image box: pixel values in [0, 1], normalised per channel with ImageNet's mean
#: and std, ``(v − mean) / std`` (the default input box of ``LRPEpsilonGammaBox``).
IMAGENET_LOW: tuple[float, ...] = tuple(round((0.0 - m) / s, 6) for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
IMAGENET_HIGH: tuple[float, ...] = tuple(round((1.0 - m) / s, 6) for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))


def _attention_modules(tail: Tail) -> str | None:
    """Zennit has rules for convolutions, linear layers, pooling and BatchNorm, none for attention or LayerNorm:
    their gradient passes through unmodified, relevance is not conserved, and the ε rules divide by near-zero sums
    (maps then differ between a batch and its examples by more than their size)."""
    found = next(
        (
            type(m).__name__
            for mod in tail.modules
            for m in mod.modules()
            if isinstance(m, (nn.MultiheadAttention, nn.LayerNorm)) or type(m).__name__.endswith("Attention")
        ),
        None,
    )
    if found is None:
        return None
    return (
        f"a tail with {found} modules (no LRP rule for attention or LayerNorm in Zennit; use a gradient, CAM or "
        "perturbation method on transformers)"
    )


LRP_RULES = capability("lrp_rules", "a CNN for Zennit's LRP rules", _attention_modules)


@dataclass(frozen=True)
class LRP(Method):
    """LRP-ε (Bach et al. 2015): the ε rule at every convolution and linear layer.

    Maps ``(B, T, h, w)`` float32: relevance at the layer's activations, summed over channels, signed.

    Attributes:
        epsilon: ε of the ε rule (Zennit's default 1e-6: almost LRP-0).
        stabilizer: the stabilizer of the other rules' denominators (Zennit's default 1e-6).
        canonizer: one of :data:`CANONIZERS` (default ``torchvision``: BatchNorm merged, residual sums split).
        output_relevance: ``logit`` (R = y_c at the output) or ``one`` (one-hot), see the module docstring.
    """

    display: ClassVar[str] = "LRP-ε"
    family: ClassVar[str] = "backprop"
    requires: ClassVar[tuple[str, ...]] = ("zennit",)
    difull_exact: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({MODULES, LRP_RULES})
    epsilon: float = 1e-6
    stabilizer: float = 1e-6
    canonizer: str = "torchvision"
    output_relevance: str = "logit"

    def __post_init__(self) -> None:
        positive_number("epsilon", self.epsilon)
        positive_number("stabilizer", self.stabilizer)
        choice("canonizer", self.canonizer, CANONIZERS)
        choice("output_relevance", self.output_relevance, OUTPUT_RELEVANCE)

    # rules (templates: Zennit copies one per module) ---------------------------------------------

    def conv_rule(self) -> Any:
        return require_zennit().rules.Epsilon(epsilon=self.epsilon)

    def linear_rule(self) -> Any:
        return require_zennit().rules.Epsilon(epsilon=self.epsilon)

    def first_rule(self, task: Task) -> tuple[tuple[type, ...], Any] | None:
        """``(module types, rule)`` for the model's first layer, used only at the input layer; ``None``: none."""
        return None

    def canonizers(self) -> list[Any]:
        zennit = require_zennit()
        if self.canonizer == "torchvision":
            return [zennit.torchvision.ResNetCanonizer()]
        if self.canonizer == "merge_batchnorm":
            return [zennit.canonizers.SequentialMergeBatchNorm()]
        return []

    def composite(self, task: Task) -> Any:
        """A ``zennit.core.Composite`` for ``task``'s tail: Zennit's layer map, plus GridPG's dense convolutions."""
        zennit = require_zennit()
        rules, types = zennit.rules, zennit.types
        base = [
            (types.Activation, rules.Pass()),
            (zennit.layer.Sum, rules.Norm(stabilizer=self.stabilizer)),
            (types.AvgPool, rules.Norm(stabilizer=self.stabilizer)),
            (GlobalAveragePool, rules.Norm(stabilizer=self.stabilizer)),
            (types.BatchNorm, rules.Pass()),
        ]
        linear = self.linear_rule()
        layer_map = base + [(types.Convolution, self.conv_rule()), (nn.Linear, linear)]
        first = self.first_rule(task) if task.is_input_layer else None
        dense: set[int] = set()

        def module_map(ctx: dict, name: str, module: nn.Module) -> Any:
            if name == "":  # the root ModuleList: collect the sliding classifiers' convolutions once
                dense.update(dense_convs(module))
            if first is not None and not ctx.get("first_done") and isinstance(module, first[0]):
                ctx["first_done"] = True
                return first[1]
            if id(module) in dense:
                return linear
            return next((rule for kinds, rule in layer_map if isinstance(module, kinds)), None)

        return zennit.core.Composite(module_map=module_map, canonizers=self.canonizers())

    def __call__(self, task: Task) -> Tensor:
        self.check_tail(task.tail)
        composite = self.composite(task)
        with lrp_scope(task.tail.modules, composite):
            grads, logits = example_gradients(task, task.inputs, torch.arange(task.batch, device=task.inputs.device))
        if self.output_relevance == "logit":
            grads = grads * logits[:, :, None, None, None]
        return grads.sum(dim=2).float()


@dataclass(frozen=True)
class LRPEpsilonPlusFlat(LRP):
    """LRP ε-+-♭ (Zennit's ``EpsilonPlusFlat``): z⁺ at convolutions, ε at linear layers, the flat rule at the
    model's first layer (input layer only; see the module docstring)."""

    display: ClassVar[str] = "LRP-ε+flat"

    def conv_rule(self) -> Any:
        return require_zennit().rules.ZPlus(stabilizer=self.stabilizer)

    def first_rule(self, task: Task) -> tuple[tuple[type, ...], Any]:
        zennit = require_zennit()
        return (zennit.types.Linear,), zennit.rules.Flat(stabilizer=self.stabilizer)


@dataclass(frozen=True)
class LRPEpsilonAlpha2Beta1(LRP):
    """LRP ε-α2β1 (Zennit's ``EpsilonAlpha2Beta1``): α=2, β=1 at convolutions, ε at linear layers."""

    display: ClassVar[str] = "LRP-εα2β1"

    def conv_rule(self) -> Any:
        return require_zennit().rules.AlphaBeta(alpha=2, beta=1, stabilizer=self.stabilizer)


@dataclass(frozen=True)
class LRPEpsilonGammaBox(LRP):
    """LRP ε-γ-box (Zennit's ``EpsilonGammaBox``): γ at convolutions, ε at linear layers, the z^B (box) rule at
    the model's first convolution (input layer only).

    Attributes:
        gamma: γ of the γ rule (Zennit's default 0.25).
        low, high: the input box: the lowest and highest possible input values, one number or one per input
            channel. Default: the ImageNet-normalised [0, 1] image range (:data:`IMAGENET_LOW`/``HIGH``,
            three channels). For other normalisations set them (e.g. Fashion-MNIST's ``(0 − 0.219) / 0.3318``
            and ``(1 − 0.219) / 0.3318``, configs/fashion_lrp.toml). A fixed box rather than the inputs'
            min/max: the bound is a property of the input domain, and a per-batch min/max would make an
            example's map depend on the others in its batch.
    """

    display: ClassVar[str] = "LRP-εγ-box"
    gamma: float = 0.25
    low: float | tuple[float, ...] = IMAGENET_LOW
    high: float | tuple[float, ...] = IMAGENET_HIGH

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_number("gamma", self.gamma)
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))  # config files give lists; the dataclass stays hashable
            values = getattr(self, name)
            values = values if isinstance(values, tuple) else (values,)
            if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                raise ValueError(f"expected {name} to be a number or one number per input channel, got {value!r}")
        low, high = self._box()
        if low.numel() != 1 and high.numel() != 1 and low.numel() != high.numel():
            raise ValueError(f"expected low and high with the same number of channels, got {self.low!r} and {self.high!r}")
        if not bool((low < high).all()):
            raise ValueError(f"expected low < high for every channel, got low={self.low!r}, high={self.high!r}")

    def _box(self) -> tuple[Tensor, Tensor]:
        as_tensor = lambda v: torch.tensor(v if isinstance(v, tuple) else (v,), dtype=torch.float64)
        return as_tensor(self.low), as_tensor(self.high)

    def conv_rule(self) -> Any:
        return require_zennit().rules.Gamma(gamma=self.gamma, stabilizer=self.stabilizer)

    def first_rule(self, task: Task) -> tuple[tuple[type, ...], Any]:
        zennit = require_zennit()
        low, high = self._box()
        channels = task.inputs.shape[1]
        for name, value in (("low", low), ("high", high)):
            if value.numel() not in (1, channels):
                raise ValueError(
                    f"expected {name} with 1 or {channels} values (one per input channel), got {value.numel()}: "
                    f"{getattr(self, name)!r}; set the input box of lrp_epsilon_gamma_box for this data"
                )
        dtype, device = task.inputs.dtype, task.inputs.device
        low, high = (v.to(dtype=dtype, device=device).view(1, -1, 1, 1) for v in (low, high))
        return (zennit.types.Convolution,), zennit.rules.ZBox(low=low, high=high, stabilizer=self.stabilizer)


register("lrp_epsilon", LRP())
register("lrp_epsilon_plus_flat", LRPEpsilonPlusFlat())
register("lrp_epsilon_gamma_box", LRPEpsilonGammaBox())
register("lrp_epsilon_alpha2_beta1", LRPEpsilonAlpha2Beta1())
