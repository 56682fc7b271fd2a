"""Bring your own method: any callable ``(forward, inputs, targets) -> maps``, or a Captum class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from attreval.methods.base import Method, Task


@dataclass(frozen=True)
class FunctionMethod(Method):
    """Wrap ``fn(forward, inputs, targets, **options) -> maps`` as a method, one call per target column.

    ``forward`` maps ``(N, C, h, w)`` to the logits ``(N, K)`` of the head being explained, ``inputs`` are
    ``(B, C, h, w)`` and ``targets`` a ``LongTensor (B,)``: the Captum convention. ``fn`` may return
    ``(B, h, w)`` or ``(B, C, h, w)`` (summed over channels). ``options`` are keyword arguments passed on every
    call (``[variants.NAME]`` keys next to ``callable``), kept as sorted ``(name, value)`` pairs so that the
    method stays hashable and its repr names them.

    A function can declare what it guarantees as attributes, read like a method class's: ``fn.difull_exact =
    True`` (zero outside each DiFull head's region, checked by ``attreval check-method``), ``fn.display``.
    """

    fn: Callable[..., Tensor]
    name: str = "custom"
    options: tuple[tuple[str, Any], ...] = ()
    display = "custom"

    def __call__(self, task: Task) -> Tensor:
        maps = [self._one_target(task, t) for t in range(task.num_targets)]
        return torch.stack(maps, dim=1)

    def configured(self, **options: Any) -> FunctionMethod:
        """The same function with ``options`` added to (or replacing) its keyword arguments."""
        if not options:
            return self
        return replace(self, options=tuple(sorted({**dict(self.options), **options}.items())))

    @property
    def claims_difull_exact(self) -> bool:
        return bool(getattr(self.fn, "difull_exact", False))

    def _one_target(self, task: Task, t: int) -> Tensor:
        head = int(task.heads[t])

        def forward(x: Tensor) -> Tensor:
            return task.tail(x)[:, head]

        out = self.fn(forward, task.inputs.clone(), task.classes[:, t].clone(), **dict(self.options))
        if not isinstance(out, Tensor) or out.dim() not in (3, 4) or out.shape[0] != task.batch:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"expected the custom method {self.name!r} to return (B, h, w) or (B, C, h, w) maps, got {shape}")
        return (out.sum(dim=1) if out.dim() == 4 else out).detach().float()


def captum_method(attribution_class: Any, name: str | None = None, **attribute_kwargs: Any) -> FunctionMethod:
    """Wrap a Captum attribution class (e.g. ``captum.attr.Saliency``) as an attreval method.

    >>> from captum.attr import Saliency  # the `ref` extra
    >>> captum_method(Saliency, abs=True).name
    'Saliency'
    """

    def run(forward: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        return attribution_class(forward).attribute(inputs, target=targets, **attribute_kwargs)

    return FunctionMethod(run, name=name or attribution_class.__name__)
