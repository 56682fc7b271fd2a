"""A transformer layer's activations as a token map, and self-attention with its probabilities explicit.

A layer's tokens ``(B, E + h·w, D)`` (E extra tokens first: class, distillation, register) travel as a map
``(B, D·(1+E), h, w)``: the patch tokens as channels, each extra token as D constant channels (:func:`pack`,
:func:`unpack`, and the adjoint :func:`pack_grad`), so every method works on ViTs as on CNNs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

try:  # timm is optional for torchvision-only installs
    from timm.models.vision_transformer import Attention as _TimmAttention
except ImportError:  # pragma: no cover - timm is installed in the dev environment
    _TimmAttention = None  # type: ignore[assignment, misc]  # the isinstance checks below test for None first


def pack(tokens: Tensor, num_extra: int, size: tuple[int, int]) -> Tensor:
    """Token sequence ``(B, E + h·w, D)`` (extra tokens first) → token map ``(B, D·(1+E), h, w)``.

    >>> seq = torch.arange(2 * 5 * 3.).view(2, 5, 3); m = pack(seq, 1, (2, 2)); m.shape
    torch.Size([2, 6, 2, 2])
    >>> torch.equal(unpack(m, 1), seq)
    True
    """
    b, length, d = tokens.shape
    h, w = size
    if length != num_extra + h * w:
        raise ValueError(f"expected {num_extra} + {h}·{w} tokens, got {length}")
    patches = tokens[:, num_extra:].transpose(1, 2).reshape(b, d, h, w)
    if not num_extra:
        return patches
    extra = tokens[:, :num_extra].reshape(b, num_extra * d, 1, 1).expand(-1, -1, h, w)
    return torch.cat([patches, extra], dim=1)


def unpack(tokens: Tensor, num_extra: int) -> Tensor:
    """Token map ``(B, D·(1+E), h, w)`` → sequence ``(B, E + h·w, D)``; extra tokens = mean over positions."""
    b, c, h, w = tokens.shape
    if c % (1 + num_extra):
        raise ValueError(f"expected a token map with D·(1+{num_extra}) channels, got {c}")
    d = c // (1 + num_extra)
    patches = tokens[:, :d].flatten(2).transpose(1, 2)
    if not num_extra:
        return patches
    extra = tokens[:, d:].mean(dim=(-2, -1)).view(b, num_extra, d)
    return torch.cat([extra, patches], dim=1)


def pack_grad(grad: Tensor, num_extra: int) -> Tensor:
    """The gradient with respect to a token sequence from the gradient with respect to its token map (the adjoint
    of :func:`pack`): ``(B, D·(1+E), h, w) → (B, E + h·w, D)``; an extra token's gradient is the sum over the
    positions that carry it.

    >>> seq = torch.randn(2, 5, 3, requires_grad=True); m = pack(seq, 1, (2, 2)); g = torch.randn_like(m)
    >>> torch.allclose(pack_grad(g, 1), torch.autograd.grad(m, seq, g)[0])
    True
    """
    b, c, h, w = grad.shape
    d = c // (1 + num_extra)
    patches = grad[:, :d].flatten(2).transpose(1, 2)
    if not num_extra:
        return patches
    return torch.cat([grad[:, d:].sum(dim=(-2, -1)).view(b, num_extra, d), patches], dim=1)


def explicit_attention(module: nn.Module, args: tuple, kwargs: dict) -> tuple[object, Tensor]:
    """Recompute a self-attention module's call from its own weights with the attention probabilities explicit.

    timm's ``Attention`` and ``nn.MultiheadAttention`` use fused ``scaled_dot_product_attention``, which never
    forms the probabilities; this computes the same output through ``softmax(q·kᵀ·scale) @ v`` so that the
    probabilities are part of the graph (their gradient is what gradient-weighted attention methods read).

    Args:
        module: a timm ``Attention`` or a ``batch_first`` self-attention ``nn.MultiheadAttention`` (as in
            torchvision's ``EncoderBlock``), in eval mode (dropout off).
        args, kwargs: the module's call arguments (tokens ``(B, N, D)``).

    Returns:
        the output in the module's own structure (a tensor; for ``nn.MultiheadAttention`` ``(out, None)``) and
        the probabilities ``(B, heads, N, N)``, rows summing to 1. Unsupported calls (masks, causal attention,
        cross-attention, separate q/k/v weights) raise a one-line ``ValueError``.
    """
    if _TimmAttention is not None and isinstance(module, _TimmAttention):
        if kwargs.get("attn_mask") is not None or kwargs.get("is_causal") or len(args) > 1:
            raise ValueError("expected unmasked, non-causal self-attention in the ViT blocks, got a mask or causal flag")
        x = args[0] if args else kwargs["x"]
        b, n, _ = x.shape
        gate = module.gate(x).sigmoid() if getattr(module, "gate", None) is not None else None  # type: ignore[misc]  # timm's optional gate
        q, k, v = module.qkv(x).reshape(b, n, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = module.q_norm(q), module.k_norm(k)
        probs = ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = module.norm((module.attn_drop(probs) @ v).transpose(1, 2).reshape(b, n, -1))
        if gate is not None:
            out = out * gate
        return module.proj_drop(module.proj(out)), probs
    if isinstance(module, nn.MultiheadAttention):
        query, key, value = (list(args) + [kwargs.get(k) for k in ("query", "key", "value")[len(args) :]])[:3]
        if (
            not (query is key is value)
            or not module.batch_first
            or not module._qkv_same_embed_dim
            or module.bias_k is not None
            or module.add_zero_attn
            or kwargs.get("attn_mask") is not None
            or kwargs.get("key_padding_mask") is not None
            or kwargs.get("is_causal")
        ):
            raise ValueError("expected batch-first, unmasked self-attention (query = key = value) in the ViT blocks, got another call")
        b, n, d = query.shape
        heads = module.num_heads
        q, k, v = (
            t.view(b, n, heads, d // heads).transpose(1, 2)
            for t in F.linear(query, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
        )
        probs = ((q * (d // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        probs_used = F.dropout(probs, module.dropout, module.training)
        out = module.out_proj((probs_used @ v).transpose(1, 2).reshape(b, n, d))
        return (out, None), probs
    raise ValueError(f"expected a timm Attention or nn.MultiheadAttention, got {type(module).__name__}")
