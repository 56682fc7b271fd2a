"""What every attribution method shares: the :class:`Task` it explains (:mod:`attreval.methods.task`), the
method interface, the registry, and the two batched primitives (target gradients, target logits of perturbed inputs).

A method asks ``task.tail`` (:class:`~attreval.tail.Tail`) what it can do (``separate_cells``, ``regions``,
``whole``, ``modules``) and declares what it needs (``Method.needs``); it never branches on which setting made it.

A method is a frozen dataclass of its hyper-parameters with ``__call__(task) -> maps``; its paper
configuration is the instance registered under its name (PAPER.md §4). Maps are ``(B, T, h, w)``
float32 at the resolution of ``task.inputs``, summed over channels, sign kept: a ReLU that defines a
method belongs to the method; taking the positive part belongs to the metric.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from attreval.methods.capabilities import missing
from attreval.methods.task import Task
from attreval.registry import Registry, did_you_mean
from attreval.tail import Tail, as_tail

Forward = Callable[[Tensor], Tensor]
__all__ = ["METHODS", "Method", "ReferencePattern", "Task", "register"]


@dataclass(frozen=True)
class ReferencePattern:
    """The authors' pass pattern of a method (PAPER.md Appendix A), read by the bench only: ``grids`` per call
    (``None``: the script's batch, ``REFERENCE_BATCH``), ``rows`` inputs per forward (``None``: one per grid, times
    the value of the field ``copies_field``, e.g. SmoothGrad's ``num_samples``; ``""``: one)."""

    grids: int | None = None
    rows: int | None = None
    copies_field: str = ""


class Method:
    """Base class of attribution methods (use as a frozen dataclass).

    Class attributes:
        display: name for plots and tables (``"Grad-CAM++"``).
        family: ``"backprop"``, ``"activation"`` or ``"perturbation"`` (PAPER.md §4).
        stochastic: whether the method draws random numbers (it then has a ``seed`` field).
        test_preset: field values that make the method cheap enough for the generated contract tests
            (fewer samples or steps); they must not change what the tests check.
        requires: modules of an optional extra the method needs to run (LRP: ``("zennit",)``).
        needs: what it needs from the tail, by capability name (:mod:`attreval.methods.capabilities`:
            ``"modules"`` for hooks, ``"whole"`` to run from the image, ``"token_attention"``); it refuses a tail
            without them in one line (:meth:`check_tail`), and a run skips such units before any work.
        reference_layer: non-empty on the one method the paper compares smoothed maps with, at that layer
            (Grad-CAM at the final layer, PAPER.md §6.2: Tables 1–2, Fig. 5).
        reference: the authors' pass pattern (:class:`ReferencePattern`), for the bench.
        difull_exact: whether every map is exactly zero outside the region its head can depend on
            (``tail.regions``: the head's cell in DiFull), as the gradient of a head is.
    """

    display: ClassVar[str] = "?"
    family: ClassVar[str] = "custom"
    stochastic: ClassVar[bool] = False
    test_preset: ClassVar[dict[str, Any]] = {}
    reference_layer: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[frozenset[str]] = frozenset()
    reference: ClassVar[ReferencePattern] = ReferencePattern()
    difull_exact: ClassVar[bool] = False

    @property
    def claims_difull_exact(self) -> bool:
        """Whether the method claims exact zeros outside what each head can see (``tail.regions``, DiFull):
        checked by ``attreval check-method`` and the contract tests."""
        return type(self).difull_exact

    def __call__(self, task: Task) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def configured(self, **options: Any) -> Method:
        """This method with ``options`` replacing fields of its preset; an unknown option is a one-line error
        naming the valid ones."""
        if not options:
            return self
        spec: Any = self  # fields/replace: the type system cannot see that a Method is a dataclass
        fields = {f.name for f in dataclasses.fields(spec) if f.init}
        unknown = sorted(set(options) - fields)
        if unknown:
            hint = did_you_mean(unknown[0], sorted(fields))
            raise ValueError(
                f"unknown option '{unknown[0]}' for {type(self).__name__}{hint}; expected one of: {', '.join(sorted(fields)) or 'none'}"
            )
        return dataclasses.replace(spec, **options)

    def check_tail(self, tail: Tail) -> None:
        """A one-line ``ValueError`` unless ``tail`` has every capability in :attr:`needs`."""
        reason = missing(self.needs, tail, self.display)
        if reason is not None:
            raise ValueError(reason)


METHODS: Registry[Method] = Registry("method")


def register(name: str, preset: Method) -> Method:
    """Register ``preset`` (the paper's configuration) under ``name``."""
    return METHODS.register(name)(preset)


# --------------------------------------------------------------------------------------------------
# Batched primitives


def chunks(count: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` covering ``range(count)``.

    >>> list(chunks(5, 2))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def check_classes(classes: Tensor, num_classes: int) -> None:
    """A one-line error for target classes outside the model's ``num_classes`` outputs."""
    if classes.numel() and (classes.max() >= num_classes or classes.min() < 0):
        raise ValueError(f"expected target classes in [0, {num_classes - 1}], got values in [{int(classes.min())}, {int(classes.max())}]")


def pick(out: Tensor, heads: Tensor, classes: Tensor) -> Tensor:
    """Row-wise logit selection: ``out (N, H, K)``, ``heads``/``classes`` ``(N,)`` → ``(N,)``."""
    check_classes(classes, out.shape[-1])
    rows = torch.arange(out.shape[0], device=out.device)
    return out[rows, heads.to(out.device), classes.to(out.device)]


def pick_targets(out: Tensor, heads: Tensor, classes: Tensor) -> Tensor:
    """Every target of every variant: ``out (B, P, H, K)``, heads ``(T,)``, classes ``(B, T)`` → ``(B, P, T)``."""
    check_classes(classes, out.shape[-1])
    per_head = out.index_select(2, heads.to(out.device))  # (B, P, T, K)
    index = classes.to(out.device)[:, None, :, None].expand(-1, out.shape[1], -1, 1)
    return per_head.gather(3, index).squeeze(3)


def target_gradients(
    tail: Tail | Forward,
    x: Tensor,
    heads: Tensor,
    classes: Tensor,
    chunk_size: int,
    rows: bool = False,
) -> tuple[Tensor, Tensor]:
    """Gradient of each row's own target logit with respect to that row.

    Rows are independent in eval mode, so one backward of the summed logits gives every row's gradient.

    Args:
        x: ``(N, C, h, w)`` inputs; heads, classes: ``(N,)`` the logit each row explains.
        rows: compute only each row's own head (``tail.rows``) instead of all heads (``tail(x)``).

    Returns:
        grads ``(N, C, h, w)`` and the explained logits ``(N,)``, both detached.
    """
    grads, logits = torch.empty_like(x), x.new_empty(x.shape[0])
    for part in chunks(x.shape[0], chunk_size):
        leaf = x[part].detach().requires_grad_(True)
        with torch.enable_grad():
            if not rows:
                y = pick(tail(leaf), heads[part], classes[part])
            else:
                out = as_tail(tail).rows(leaf, heads[part].to(leaf.device))
                y = pick(out[:, None], torch.zeros_like(heads[part]), classes[part])
            (grad,) = torch.autograd.grad(y.sum(), leaf)
        grads[part], logits[part] = grad, y.detach()
    return grads, logits


def shared_forward_gradients(tail: Tail | Forward, x: Tensor, heads: Tensor, classes: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Gradients of all T targets of every row from one forward per row and one backward per target.

    Args:
        x: ``(N, C, h, w)`` inputs; heads ``(T,)`` and classes ``(N, T)``: the T logits of each row.
        chunk_size: most rows per backward pass (a forward carries ``chunk_size // T`` rows, at least 1).

    Returns:
        grads ``(N, T, C, h, w)`` and the logits ``(N, T)``, both detached. Equal to running every
        (row, target) pair on its own: rows are independent in eval mode and each backward starts from
        one target column.
    """
    t = heads.numel()
    grads, logits = x.new_empty((x.shape[0], t, *x.shape[1:])), x.new_empty((x.shape[0], t))
    for part in chunks(x.shape[0], max(1, chunk_size // t)):
        leaf = x[part].detach().requires_grad_(True)
        with torch.enable_grad():
            y = pick_targets(tail(leaf)[:, None], heads, classes[part])[:, 0]  # (n, T)
            for column in range(t):
                (grads[part, column],) = torch.autograd.grad(y[:, column].sum(), leaf, retain_graph=column < t - 1)
        logits[part] = y.detach()
    return grads, logits


def example_gradients(task: Task, x: Tensor, example: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of all T targets of ``task`` at inputs ``x (N, C, h, w)``; row i belongs to example ``example[i]``.

    Two routes with the same result: when the tail's cells are separate (heads that see disjoint blocks,
    DiFull), every (row, target) pair runs only its own head's block, one forward and backward each;
    otherwise (heads that share the backbone: GridPG, DiPart) each row runs one forward and one backward
    per target (:func:`shared_forward_gradients`), which saves T − 1 forwards per row.

    Returns:
        grads ``(N, T, C, h, w)`` and the target logits ``(N, T)``, detached.
    """
    t, classes = task.num_targets, task.classes.to(x.device)[example]  # (N, T)
    heads = task.heads.to(x.device)
    if not task.tail.separate_cells or t == 1:
        return shared_forward_gradients(task.tail, x, heads, classes, task.chunk_size)
    grads, logits = target_gradients(
        task.tail,
        x.repeat_interleave(t, dim=0),
        heads.repeat(x.shape[0]),
        classes.reshape(-1),
        task.chunk_size,
        rows=True,
    )
    return grads.view(x.shape[0], t, *x.shape[1:]), logits.view(x.shape[0], t)


def perturbed_targets(
    task: Task,
    perturb: Callable[[slice], Tensor],
    count: int,
    *,
    tail: Tail | None = None,
    softmax: bool = False,
) -> Tensor:
    """Target outputs of ``count`` perturbed copies of every example, all T targets from each forward.

    Args:
        perturb: ``part → (B, len(part), C, h, w)``: the variants ``part`` of every example.
        count: number of variants P.
        tail: the network to run (default ``task.tail``; Score-CAM passes ``task.tail.whole()``).
        softmax: return each head's softmax probabilities instead of logits (RISE, Score-CAM).

    Returns:
        ``(B, P, T)`` float32, computed under ``torch.no_grad`` with at most ~``task.chunk_size`` inputs
        per forward (at least one variant of every example).
    """
    tail = task.tail if tail is None else tail
    per_chunk = max(1, task.chunk_size // task.batch)
    out = []
    with torch.no_grad():
        for part in chunks(count, per_chunk):
            variants = perturb(part)
            b, p = variants.shape[:2]
            logits = tail(variants.flatten(0, 1)).unflatten(0, (b, p))
            if softmax:
                logits = logits.float().softmax(dim=-1)
            out.append(pick_targets(logits, task.heads, task.classes).float())
    return torch.cat(out, dim=1)


def sum_channels(maps: Tensor) -> Tensor:
    """``(N, C, h, w) → (N, h, w)`` float32."""
    return maps.sum(dim=1).float()
