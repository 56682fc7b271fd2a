"""Transformer-specific methods: attention rollout and gradient-weighted attention relevance (docs/transformers.md).

Both propagate a relevance row vector over the tokens backwards through the attention of the blocks the tail runs:

* **Rollout** (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): per block the head-averaged
  attention with the residual connection, ``Â = ½·E_h[A] + ½·I`` (rows sum to 1), ``R = Â_L ⋯ Â_1``.
* **Chefer** (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability", self-attention rule):
  ``R₀ = I``, per block ``R ← R + Ā·R`` with ``Ā = E_h[(∇A ⊙ A)⁺]``, ∇A the gradient of the explained logit
  with respect to the block's attention probabilities A.

The map is the **readout** row ``pᵀR`` restricted to the patch tokens (extra tokens are not part of it). The papers
read the class token's row; here ``p`` is the share each token of the last block's output has in what the
explained head reads, ``p_j = ‖∂y/∂t_j‖ / Σ_k ‖∂y/∂t_k‖``: for a pooling head (``y = f(Σ_j w_j t_j)``, every
head of the ViT splitter) that is exactly the pooling weights — the class token's one-hot row for class-token
models (the papers' choice), ``1/(h·w)`` on every patch for average-pooled models, ``1/|cell k|`` on cell k's
patches for DiPart's head k. The method never asks which setting made the tail.

Where the tokens are (asked of the tail, never of the setting's name): the attention probabilities come from
forward hooks on the attention modules of the tail's token blocks (:class:`~attreval.models.splitters.vit.TokenBlock`)
that replace each module's output with :func:`~attreval.models.splitters.vit.explicit_attention` (the same
function from the module's own weights with the probabilities explicit; checked against the module's fused output
on every call, a one-line error if they differ). The token map at the first stage the tail runs is recorded by a
forward pre-hook, and the relevance there goes back to the tail's input through the tail's own routing by one
vector-Jacobian product (in DiFull: cell k's block of the grid, nothing anywhere else). All hooks are removed in
``finally``; the caller's modules are never modified.

What a map means:

* at the **input** layer (pixels): the relevance of each patch token entering the first block, a ``(h, w)`` patch
  map upsampled bilinearly (``align_corners=False``, as the metric upsamples layer maps) to each image the patch
  embedding sees (each cell separately in DiFull);
* at a **block** layer: the relevance of the tokens there, as a ``(h, w)`` token map — how much the explained
  head's readout draws on token (i, j) at that layer through the attention of the *remaining* blocks only (the
  value/MLP paths in between are not followed, as in the papers). After the last block (average-pooled models'
  ``final``) no attention is left and the map is the readout ``p`` itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attreval.methods.base import Method, Task, chunks, pick_targets, register
from attreval.methods.capabilities import MODULES, capability
from attreval.models.splitters.vit import (
    TimmEmbed,
    TokenBlock,
    TokenHead,
    TorchvisionEmbed,
    explicit_attention,
    pack_grad,
)
from attreval.tail import Tail

_ENTRIES = (TokenBlock, TimmEmbed, TorchvisionEmbed)


def _transformer_parts(tail: Tail) -> tuple[list[TokenBlock], list[TokenHead], str]:
    """The tail's token blocks (in order), its token heads, and a short list of its module kinds."""
    seen: dict[int, nn.Module] = {}
    for module in tail.modules:
        for sub in module.modules():
            seen.setdefault(id(sub), sub)
    blocks = [m for m in seen.values() if isinstance(m, TokenBlock)]
    heads = [m for m in seen.values() if isinstance(m, TokenHead)]
    kinds = list(dict.fromkeys(type(m).__name__ for m in seen.values() if not list(m.children())))
    shown = ", ".join(kinds[:4]) + (", …" if len(kinds) > 4 else "") if kinds else "no modules"
    return blocks, heads, shown


def _not_a_transformer(tail: Tail) -> str | None:
    _, heads, shown = _transformer_parts(tail)
    return None if len(heads) == 1 else f"a tail of {shown}"


TOKEN_ATTENTION = capability("token_attention", "a transformer tail (ViT token blocks and head)", _not_a_transformer)


@dataclass
class _Record:
    entry: Tensor | None = None  # the input of the first stage the tail ran
    entry_is_image: bool = False
    probs: list[Tensor] = field(default_factory=list)  # per block run: (rows, heads, N, N)
    last: Tensor | None = None  # the output token map of the last block run
    last_extra: int = 0
    grid: tuple[int, int] = (0, 0)  # the (h, w) patch grid of the first block's input


@contextmanager
def _recording(blocks: Sequence[TokenBlock], entries: Sequence[nn.Module]) -> Iterator[_Record]:
    """Within the block, a forward of the tail records its entry, attention probabilities and last block output."""
    record = _Record()
    handles = []

    def on_entry(module: nn.Module, args: tuple) -> None:
        if record.entry is None:
            record.entry, record.entry_is_image = args[0], not isinstance(module, TokenBlock)
        if isinstance(module, TokenBlock) and record.grid == (0, 0):
            record.grid = tuple(args[0].shape[-2:])

    def on_attention(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        ours: Any  # typed object there: a tensor, or (out, None) for nn.MultiheadAttention, as `output` is
        ours, probs = explicit_attention(module, args, kwargs)
        if record.probs and probs.shape[-1] != record.probs[0].shape[-1]:
            raise ValueError(f"expected {record.probs[0].shape[-1]} tokens in every block the tail runs, got {probs.shape[-1]}")
        fused, mine = (output[0], ours[0]) if isinstance(output, tuple) else (output, ours)
        scale = max(float(fused.detach().abs().max()), 1.0)
        if not torch.allclose(mine.detach(), fused.detach(), rtol=1e-4, atol=1e-5 * scale):
            raise ValueError(
                f"expected the explicit attention of {type(module).__name__} to reproduce its output, got a "
                f"largest difference of {float((mine - fused).abs().max()):.3g}"
            )
        record.probs.append(probs)
        return ours  # the probabilities are now on the path to the logits, so their gradient is ∇A

    def on_block(module: TokenBlock, args: tuple, output: Tensor) -> None:
        record.last, record.last_extra = output, module.num_extra

    try:
        for module in entries:
            handles.append(module.register_forward_pre_hook(on_entry))
        for block in blocks:
            handles.append(block.attention.register_forward_hook(on_attention, with_kwargs=True))
            handles.append(block.register_forward_hook(on_block))
        yield record
    finally:
        for handle in handles:
            handle.remove()


def readout(grad: Tensor, num_extra: int) -> Tensor:
    """``p (rows, E + h·w)``: each token's share ``‖∂y/∂t_j‖ / Σ_k ‖∂y/∂t_k‖`` of a head's read of the token map whose
    gradient is ``grad (rows, D·(1+E), h, w)``; all zeros for a row the head does not read.

    >>> g = torch.zeros(1, 4, 1, 2); g[:, 2:] = 0.5   # D = 2: the head reads only the extra token, via its mean
    >>> readout(g, 1).tolist()
    [[1.0, 0.0, 0.0]]
    """
    norms = pack_grad(grad, num_extra).norm(dim=-1).double()
    total = norms.sum(dim=-1, keepdim=True)
    return norms / torch.where(total > 0, total, torch.ones_like(total))


class _AttentionMethod(Method):
    """Shared machinery: one forward per chunk of examples, one backward per target (see the module docstring)."""

    family: ClassVar[str] = "activation"
    needs: ClassVar[frozenset[str]] = frozenset({MODULES, TOKEN_ATTENTION})
    needs_attention_grad: ClassVar[bool] = False

    def block_matrix(self, probs: Tensor, grad: Tensor | None) -> Tensor:  # pragma: no cover - interface
        """``(rows, N, N)`` float64 mixing matrix of one block from its probabilities ``(rows, heads, N, N)``."""
        raise NotImplementedError

    def __call__(self, task: Task) -> Tensor:
        self.check_tail(task.tail)
        blocks, (head,), _ = _transformer_parts(task.tail)
        entries = [m for module in task.tail.modules for m in module.modules() if isinstance(m, _ENTRIES)]
        t = task.num_targets
        maps = torch.empty((task.batch, t, *task.inputs.shape[-2:]), dtype=torch.float32, device=task.inputs.device)
        heads = task.heads.to(task.inputs.device)
        for part in chunks(task.batch, max(1, task.chunk_size // t)):
            leaf = task.inputs[part].detach().requires_grad_(True)
            with torch.enable_grad(), _recording(blocks, entries) as record:
                y = pick_targets(task.tail(leaf)[:, None], heads, task.classes[part])[:, 0]  # (n, T)
                for column in range(t):
                    keep = column < t - 1
                    maps[part, column] = self._map(record, leaf, head, y[:, column].sum(), keep)
        return maps

    def _map(self, record: _Record, leaf: Tensor, head: TokenHead, y: Tensor, keep: bool) -> Tensor:
        """The maps ``(n, h, w)`` at the tail's input of one target column whose summed logit is ``y``."""
        if record.last is None:  # no block left: the map is the head's readout of the layer's own token map
            (grad,) = torch.autograd.grad(y, leaf, retain_graph=keep)
            return readout(grad, head.num_extra)[:, head.num_extra :].reshape(leaf.shape[0], *leaf.shape[-2:]).float()
        wanted = [record.last] + (list(record.probs) if self.needs_attention_grad else [])
        grads = torch.autograd.grad(y, wanted, retain_graph=True)
        r = readout(grads[0], record.last_extra)  # (rows, N)
        attention_grads = grads[1:] if self.needs_attention_grad else [None] * len(record.probs)
        for probs, attention_grad in reversed(list(zip(record.probs, attention_grads))):
            r = (r[:, None, :] @ self.block_matrix(probs.detach().double(), attention_grad)).squeeze(1)
        entry = cast(Tensor, record.entry)  # set: a block ran (record.last), and every block is an entry with a pre-hook
        token_map = r[:, record.last_extra :].reshape(-1, 1, *record.grid).to(entry.dtype)  # extra tokens dropped
        if record.entry_is_image:  # patch relevance → the pixels of each image the patch embedding saw
            token_map = F.interpolate(token_map, size=tuple(entry.shape[-2:]), mode="bilinear", align_corners=False)
        cotangent = torch.zeros_like(entry)
        cotangent[:, 0] = token_map[:, 0]
        if entry is leaf:
            routed = cotangent
        else:  # the tail's own routing of its input to the first stage (DiFull: a cell's block), by one VJP
            (routed,) = torch.autograd.grad(entry, leaf, cotangent, retain_graph=keep)
        return routed[:, 0].float()


@dataclass(frozen=True, eq=False)
class AttentionRollout(_AttentionMethod):
    """Attention rollout (Abnar & Zuidema 2020): ``pᵀ Â_L ⋯ Â_1`` with ``Â = (1 − α)·E_h[A] + α·I``.

    Args:
        residual: α, the weight of the identity (the residual connection); 0.5 in the paper.

    Maps ``(B, T, h, w)`` float32, non-negative, each summing to the patch tokens' share of the rolled-out
    relevance (≤ 1). The attention does not depend on the target; the readout ``p`` does only through which
    head is explained (DiFull/DiPart), so in GridPG every class of an image gets the same map.
    """

    display: ClassVar[str] = "Rollout"
    residual: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.residual <= 1.0:
            raise ValueError(f"expected residual in [0, 1], got {self.residual!r}")

    def block_matrix(self, probs: Tensor, grad: Tensor | None) -> Tensor:
        eye = torch.eye(probs.shape[-1], dtype=probs.dtype, device=probs.device)
        return (1 - self.residual) * probs.mean(dim=1) + self.residual * eye  # rows sum to 1: no renormalisation


@dataclass(frozen=True, eq=False)
class CheferRelevance(_AttentionMethod):
    """Gradient-weighted attention relevance (Chefer, Gur & Wolf 2021, Eq. 5–6 for self-attention):
    ``R ← R + E_h[(∇A ⊙ A)⁺]·R`` per block from ``R = I``, map ``pᵀR`` on the patch tokens.

    ∇A is the gradient of the explained target's logit with respect to the block's attention probabilities (one
    backward per target), so maps are class-specific. ``(B, T, h, w)`` float32, non-negative.
    """

    display: ClassVar[str] = "Chefer"
    needs_attention_grad: ClassVar[bool] = True

    def block_matrix(self, probs: Tensor, grad: Tensor | None) -> Tensor:
        if grad is None:
            raise ValueError("expected the gradient of the attention probabilities for Chefer, got None")
        weighted = (grad.detach().double() * probs).clamp(min=0).mean(dim=1)
        return weighted + torch.eye(probs.shape[-1], dtype=probs.dtype, device=probs.device)


register("attention_rollout", AttentionRollout())
register("chefer", CheferRelevance())
