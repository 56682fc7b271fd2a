"""The explained network: what a setting hands a method for one layer (f_explain of PAPER.md §2).

A :class:`Tail` is the network from a layer's activations to the logits of some heads. A setting's tail is a
:class:`~attreval.chain.Chain` (the network written down as data) and everything it offers is read off that chain;
a plain callable is a tail with no chain (:class:`FunctionTail`). Methods call it and ask it what it can do, never
which setting made it:

* ``tail(x)``: ``(N, C, h, w) → (N, H, K)``, the logits of its H heads;
* ``tail.rows(x, index)``: ``(N, K)``, row r through head ``index[r]`` only; ``tail.separate_cells`` says whether
  head i depends on cell block i alone, so that a row runs only its own block (DiFull);
* ``tail.regions(size)``: ``(H, h, w)`` bool, the positions each head can depend on, or ``None`` (all);
* ``tail.whole()``: the same heads from the image (Score-CAM masks the image at every layer);
* ``tail.occluder(x)``: an :class:`Occluder`, the logits of ``x`` with each of many windows zeroed (Occlusion);
  a chain recomputes only each window's receptive-field cone (:mod:`attreval.cone.occluder`);
* ``tail.modules``: every module the tail runs, for hooks scoped to it (:func:`module_hooks`); empty for a plain
  callable, which the methods that need modules refuse (:class:`~attreval.methods.base.Capability`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import Tensor, nn

from attreval.chain import Chain
from attreval.cone.occluder import ConeOccluder
from attreval.cone.report import note


class Occluding(Protocol):
    """What :meth:`Tail.occluder` returns (see :class:`Occluder`): ``x`` and ``(boxes, index) → logits``."""

    x: Tensor

    def __call__(self, boxes: Tensor, index: Tensor | None = None) -> Tensor: ...


class Tail:
    """The network of a :class:`~attreval.chain.Chain` (see the module docstring).

    Args:
        chain: the network, as data.
        whole: makes the same heads' tail from the image (for :meth:`whole`), if there is one.

    Attributes:
        chain: the chain, or ``None`` for a plain callable (:class:`FunctionTail`).
        heads: the setting's head index of each of the H output columns.
        modules: every ``nn.Module`` the tail runs (empty: unknown).
        separate_cells: whether head i depends on cell block ``heads[i]`` alone (DiFull): :meth:`rows` then runs
            one block per row, and :meth:`regions` says which.
    """

    chain: Chain | None = None
    heads: tuple[int, ...] = (0,)
    modules: tuple[nn.Module, ...] = ()
    separate_cells: bool = False
    _make_whole: Callable[[], Tail] | None = None

    def __init__(self, chain: Chain, whole: Callable[[], Tail] | None = None):
        self.chain, self._make_whole = chain, whole
        self.heads, self.modules, self.separate_cells = chain.heads, chain.modules, chain.separate_cells

    def __call__(self, x: Tensor) -> Tensor:
        if self.chain is None:  # pragma: no cover - subclasses without a chain implement it
            raise NotImplementedError
        return self.chain(x)

    def rows(self, x: Tensor, index: Tensor) -> Tensor:
        """Logits ``(N, K)`` of head ``index[r]`` (a position in :attr:`heads`) for row r of ``x``."""
        if self.chain is not None:
            return self.chain.rows(x, index)
        out = self(x)
        return out[torch.arange(out.shape[0], device=out.device), index.to(out.device)]

    def regions(self, size: tuple[int, int]) -> Tensor | None:
        """``(H, h, w)`` bool: what each head can depend on in an ``h × w`` map, or ``None`` (everything)."""
        return None if self.chain is None else self.chain.regions(size)

    @property
    def runs_whole(self) -> bool:
        """Whether :meth:`whole` gives the same heads from the image."""
        return self._make_whole is not None

    def whole(self) -> Tail:
        """The same heads from the input image."""
        if self._make_whole is None:
            raise ValueError(f"expected a tail that can run from the image, got a {type(self).__name__}")
        return self._make_whole()

    def occluder(self, x: Tensor) -> Occluding:
        """The logits of ``x (B, C, h, w)`` with windows zeroed: the chain's receptive-field cones
        (:class:`~attreval.cone.occluder.ConeOccluder`), or the materialised copies (:class:`Occluder`) when there
        is no chain or its first module has no cone rule (nothing to save)."""
        if self.chain is not None:
            cone = ConeOccluder(self.chain, x)
            note(cone, self.chain.named(cone.modules))  # for the run's `cone` column (attreval.cone.report)
            if cone.incremental:
                return cone
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
        self.inner, self.chain, self.heads = inner, inner.chain, inner.heads
        self.modules, self.separate_cells = inner.modules, inner.separate_cells

    def __call__(self, x: Tensor) -> Tensor:
        return self.inner(x)

    def rows(self, x: Tensor, index: Tensor) -> Tensor:
        return self.inner.rows(x, index)

    def regions(self, size: tuple[int, int]) -> Tensor | None:
        return self.inner.regions(size)

    @property
    def runs_whole(self) -> bool:
        return self.inner.runs_whole

    def whole(self) -> Tail:
        return self.inner.whole()

    def occluder(self, x: Tensor) -> Occluding:
        return self.inner.occluder(x)


class FunctionTail(Tail):
    """A plain function ``(N, C, h, w) → (N, H, K)`` as a tail with no chain: no rows of its own, no regions, the
    materialised occluder, and no modules unless named (methods that need them refuse it in one line).

    Args:
        fn: the function.
        whole: the function from the image (for Score-CAM), if any.
        modules: modules the function runs (for scoped hooks such as Guided Backprop's), if known.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], whole: Callable[[Tensor], Tensor] | None = None, modules: Iterable[nn.Module] = ()):
        self.fn, self.modules = fn, tuple(modules)
        if whole is not None:
            self._make_whole = lambda: as_tail(whole) if isinstance(whole, Tail) else FunctionTail(whole, modules=self.modules)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)


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
