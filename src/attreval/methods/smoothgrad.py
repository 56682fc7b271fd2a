"""SmoothGrad (Smilkov et al. 2017) over any base method: the baseline for smoothing (PAPER.md §6.3)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from attreval.methods.base import Method, ReferencePattern, Task, chunks, register
from attreval.validation import positive_int


@dataclass(frozen=True)
class SmoothGrad(Method):
    """Average of a base method's maps over noisy copies of the inputs (PAPER.md §6.3).

    Sample i of example b is ``x_b + σ_b · ε_i`` with ``σ_b = noise_level · (max(x_b) - min(x_b))`` (over
    all channels and positions of that example's inputs at the layer) and ``ε_i ~ N(0, I)`` drawn from
    ``seed`` on a CPU ``torch.Generator``. The same ε_i serve every example, so a batch gives the same
    maps as each example alone. All samples of several examples go through the base method in one call
    (``chunk_size // num_samples`` examples, at least one, per call); the base does its own batching.

    The paper applies SmoothGrad to IntGrad and IxG at the input with **15 samples** and sweeps the noise
    level **from 1% to 30%**, reporting the best (the best level is not recovered). ``noise_level = 0`` is
    the base method itself (every sample would be identical), computed once.

    Attributes:
        base: registry name of the base method (default ``"int_grad"``) or a method object.
        base_options: options replacing fields of the base preset, as ``(name, value)`` pairs (a dict is
            accepted and stored as sorted pairs), e.g. ``(("n_steps", 50),)``.
        num_samples: noisy copies per example, **15**.
        noise_level: σ as a fraction of each example's input range; default 0.1.
        seed: seed of the noise generator.
    """

    display = "SmoothGrad"
    difull_exact = True
    family = "backprop"
    stochastic = True
    test_preset: ClassVar[dict[str, Any]] = {"num_samples": 3, "base": "input_x_grad"}
    reference: ClassVar[ReferencePattern] = ReferencePattern(copies_field="num_samples")
    base: str | Method = "int_grad"
    base_options: tuple[tuple[str, Any], ...] = ()
    num_samples: int = 15
    noise_level: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.base_options, dict):
            object.__setattr__(self, "base_options", tuple(sorted(self.base_options.items())))
        positive_int("num_samples", self.num_samples)
        level = self.noise_level
        if not (isinstance(level, (int, float)) and not isinstance(level, bool) and math.isfinite(level) and level >= 0):
            raise ValueError(f"expected a finite noise_level ≥ 0, got {self.noise_level!r}")

    def base_method(self) -> Method:
        """The base method with ``base_options`` applied."""
        from attreval.methods import resolve_method  # the package imports this module: resolve lazily

        return resolve_method(self.base, **dict(self.base_options))

    def noise(self, x: Tensor) -> Tensor:
        """``(S, B, C, h, w)`` noise: shared standard normal draws scaled by each example's σ_b."""
        generator = torch.Generator().manual_seed(int(self.seed))
        eps = torch.randn((self.num_samples, *x.shape[1:]), generator=generator)
        eps = eps.to(device=x.device, dtype=x.dtype)
        spread = x.flatten(1).amax(dim=1) - x.flatten(1).amin(dim=1)
        return eps[:, None] * (self.noise_level * spread).view(1, -1, 1, 1, 1)

    def __call__(self, task: Task) -> Tensor:
        """Maps ``(B, T, h, w)`` float32: the mean of the base maps over the noisy samples."""
        base = self.base_method()
        if self.noise_level == 0:
            return base(task)
        samples, x = self.num_samples, task.inputs
        noise = self.noise(x)
        maps = []
        for part in chunks(task.batch, max(1, task.chunk_size // samples)):
            noisy = (x[part][:, None] + noise[:, part].transpose(0, 1)).flatten(0, 1)  # (b·S, C, h, w)
            image = None if task.image is None else task.image[part].repeat_interleave(samples, dim=0)
            sub = dataclasses.replace(task, inputs=noisy, classes=task.classes[part].repeat_interleave(samples, dim=0), image=image)
            out = base(sub)
            maps.append(out.unflatten(0, (-1, samples)).mean(dim=1))
        return torch.cat(maps).float()


register("smoothgrad", SmoothGrad())
