"""The explained network: what a setting hands a method for one layer (f_explain of PAPER.md §2).

A :class:`Tail` is the network from a layer's activations to the logits of some heads. Methods call it and
ask it what it can do, never which setting made it:

* ``tail(x)``: ``(N, C, h, w) → (N, H, K)``, the logits of its H heads;
* ``tail.rows(x, index)``: ``(N, K)``, row r through head ``index[r]`` only; ``tail.separable`` says whether
  that is cheaper than the full call (DiFull: one cell's block instead of all heads);
* ``tail.regions(size)``: ``(H, h, w)`` bool, the positions each head can depend on, or ``None`` (all);
* ``tail.whole()``: the same heads from the image (Score-CAM masks the image at every layer);
* ``tail.occluder(x)``: an :class:`Occluder`, the logits of ``x`` with each of many windows zeroed (Occlusion);
  a tail that knows its modules recomputes only each window's receptive-field cone (:mod:`attreval.cone`);
* ``tail.modules``: every module the tail runs, for hooks scoped to it (:func:`module_hooks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class Tail:
    """Base class of explained networks (see the module docstring). Subclasses implement ``__call__``.

    Attributes:
        heads: the setting's head index of each of the H output columns.
        modules: every ``nn.Module`` the tail runs.
        separable: whether :meth:`rows` runs only each row's own head (cheaper than ``__call__``).
    """

    heads: tuple[int, ...] = (0,)
    modules: tuple[nn.Module, ...] = ()
    separable: bool = False

    def __call__(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def rows(self, x: Tensor, index: Tensor) -> Tensor:
        """Logits ``(N, K)`` of head ``index[r]`` (a position in :attr:`heads`) for row r of ``x``."""
        out = self(x)
        return out[torch.arange(out.shape[0], device=out.device), index.to(out.device)]

    def regions(self, size: tuple[int, int]) -> Tensor | None:
        """``(H, h, w)`` bool: what each head can depend on in an ``h × w`` map, or ``None`` (everything)."""
        return None

    def whole(self) -> Tail:
        """The same heads from the input image."""
        raise ValueError(f"expected a tail that can run from the image, got a {type(self).__name__}")

    def occluder(self, x: Tensor) -> Occluder:
        """The logits of ``x (B, C, h, w)`` with windows zeroed (:class:`Occluder`); this default runs the
        materialised copies through the tail, one full pass each."""
        return Occluder(self, x)


def occluded_copies(x: Tensor, boxes: Tensor) -> Tensor:
    """Copies of ``x (B, C, h, w)`` with window ``boxes[k] = (top, bottom, left, right)`` (half-open) set to 0:
    ``(B, P, C, h, w)``."""
    boxes = boxes.to(x.device)
    rows = torch.arange(x.shape[-2], device=x.device)
    cols = torch.arange(x.shape[-1], device=x.device)
    inside = ((rows >= boxes[:, :1]) & (rows < boxes[:, 1:2]))[:, :, None] & ((cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:]))[:, None, :]
    return torch.where(inside[None, :, None], torch.zeros((), dtype=x.dtype, device=x.device), x[:, None])


class Occluder:
    """The logits of one input with each of many windows zeroed, for one tail (made by :meth:`Tail.occluder`).

    ``occluder(boxes)``: ``boxes (P, 4)`` long ``(top, bottom, left, right)`` half-open windows of the map →
    ``(B, P, H, K)``, the tail's logits of every example with window p set to 0; ``occluder(boxes, index)``:
    ``index (P,)`` a position in ``heads`` per window → ``(B, P, K)``, window p through head ``index[p]`` only
    (:meth:`Tail.rows`). This base class materialises the copies and runs them through the tail; subclasses
    compute the same logits with less work and may keep a cache of the clean input (one occluder per input).
    """

    def __init__(self, tail: Tail, x: Tensor):
        self.tail, self.x = tail, x

    def __call__(self, boxes: Tensor, index: Tensor | None = None) -> Tensor:
        b, p = self.x.shape[0], boxes.shape[0]
        copies = occluded_copies(self.x, boxes).flatten(0, 1)
        if index is None:
            return self.tail(copies).unflatten(0, (b, p))
        return self.tail.rows(copies, index.to(copies.device).repeat(b)).unflatten(0, (b, p))


class DelegatingTail(Tail):
    """``inner`` unchanged: every call and capability forwarded. Wrappers that change one capability (count the
    passes, hide the regions, keep the plain occluder) subclass it and override only that."""

    def __init__(self, inner: Tail):
        self.inner, self.heads, self.modules, self.separable = inner, inner.heads, inner.modules, inner.separable

    def __call__(self, x: Tensor) -> Tensor:
        return self.inner(x)

    def rows(self, x: Tensor, index: Tensor) -> Tensor:
        return self.inner.rows(x, index)

    def regions(self, size: tuple[int, int]) -> Tensor | None:
        return self.inner.regions(size)

    def whole(self) -> Tail:
        return self.inner.whole()

    def occluder(self, x: Tensor) -> Occluder:
        return self.inner.occluder(x)


class FunctionTail(Tail):
    """A plain function ``(N, C, h, w) → (N, H, K)`` as a tail with no capabilities.

    Args:
        fn: the function.
        whole: the function from the image (for Score-CAM), if any.
        modules: modules the function runs (for scoped hooks such as Guided Backprop's).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], whole: Callable[[Tensor], Tensor] | None = None, modules: Iterable[nn.Module] = ()):
        self.fn, self._whole, self.modules = fn, whole, tuple(modules)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def whole(self) -> Tail:
        if self._whole is None:
            return super().whole()
        return self._whole if isinstance(self._whole, Tail) else FunctionTail(self._whole, modules=self.modules)


def as_tail(value: Tail | Callable[[Tensor], Tensor]) -> Tail:
    """``value`` if it is a :class:`Tail`, else the callable wrapped as a :class:`FunctionTail`."""
    if isinstance(value, Tail):
        return value
    if not callable(value):
        raise TypeError(f"expected a Tail or a callable (N, C, h, w) → (N, H, K), got {type(value).__name__}")
    return FunctionTail(value)


@contextmanager
def module_hooks(modules: Iterable[nn.Module], kind: type[nn.Module], hook: Callable) -> Iterator[int]:
    """Within the block, ``hook`` is a forward hook of every submodule of type ``kind`` of ``modules``.

    Scoped to those modules (not process-wide), each module hooked once, every handle removed in ``finally``,
    also when the block raises. Yields the number of hooked modules.
    """
    seen: dict[int, nn.Module] = {}
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, kind):
                seen.setdefault(id(sub), sub)
    handles = []
    try:
        for sub in seen.values():
            handles.append(sub.register_forward_hook(hook))
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()
