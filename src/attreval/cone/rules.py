"""How each module type maps a changed region to its output's (see :mod:`attreval.cone`: the rules)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck

from attreval.cone.patch import Dense, Patch, Rule, Value, gather, read


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _clipped(first: Tensor, length: int | Tensor, size: int) -> tuple[Tensor, int]:
    """One rectangle size for all windows covering each window's ``[first, first + length)`` clipped to
    ``[0, size)``: the widest clipped extent (at least 1), and per-window starts shifted inward to fit it."""
    lo, hi = first.clamp(min=0), (first + length).clamp(max=size)
    side = max(min(int((hi - lo).max()), size), 1)
    return lo.clamp(max=size - side), side


class WindowRule(Rule):
    """A sliding-window operator (convolution, pooling) with integer padding: output rectangles from inputs."""

    pad_value = 0.0

    def __init__(self, module: nn.Module, kernel, stride, padding, dilation=1):
        super().__init__(module)
        self.kernel, self.stride = _pair(kernel), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)

    def apply(self, x: Tensor) -> Tensor:  # the operator without padding on ``(N, C, h, w)``
        raise NotImplementedError

    def patch(self, cache: Tensor, value: Value) -> Value:
        if not isinstance(value, Patch):
            return super().patch(cache, value)
        starts, sizes, reads = [], [], []
        for axis in (0, 1):
            k, s, p, d = self.kernel[axis], self.stride[axis], self.padding[axis], self.dilation[axis]
            first = value.top if axis == 0 else value.left
            length, out_size = value.size[axis], cache.shape[-2 + axis]
            reach = d * (k - 1)
            # outputs o whose taps o·s − p + d·j (j < k) meet [first, first + length): [lo, hi), clipped to the
            # map, so a window at a border recomputes only its clipped cone (the chunk's widest one sets the size)
            lo = torch.div(first + p - reach + s - 1, s, rounding_mode="floor")
            hi = torch.div(first + length - 1 + p, s, rounding_mode="floor") + 1
            start, size = _clipped(lo, hi - lo, out_size)
            starts.append(start)
            sizes.append(size)
            reads.append((start * s - p, (size - 1) * s + reach + 1))
        x = read(value, reads[0][0], reads[1][0], (reads[0][1], reads[1][1]), self.pad_value)
        out = self.apply(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        return Patch(cache, out, starts[0], starts[1])


class ConvRule(WindowRule):
    """``Conv2d``. Where the changed input is small next to the output rectangle it reaches (a large kernel whose
    cone covers the whole output, e.g. VGG's 7×7 sliding classifier in GridPG), the change is propagated
    linearly instead: ``conv(patched) = conv(clean) + conv(patched − clean)``, the second term a transposed
    convolution of the ``h × w`` difference (``h·w·k²`` products per channel pair instead of the output
    rectangle's ``Lo_h·Lo_w·k²``)."""

    delta_share = 0.6  # use the linear update when the changed input is at most this share of the output rectangle

    def __init__(self, module: nn.Conv2d):
        super().__init__(module, module.kernel_size, module.stride, module.padding, module.dilation)

    def patch(self, cache: Tensor, value: Value) -> Value:
        m = self.module
        linear = m.stride == (1, 1) and m.dilation == (1, 1) and m.groups == 1 and self.kernel[0] * self.kernel[1] > 1
        if linear and isinstance(value, Patch):
            out_h = min(value.size[0] + self.kernel[0] - 1, cache.shape[-2])
            out_w = min(value.size[1] + self.kernel[1] - 1, cache.shape[-1])
            if value.size[0] * value.size[1] <= self.delta_share * out_h * out_w:
                return self.delta(cache, value)
        return super().patch(cache, value)

    def delta(self, cache: Tensor, value: Patch) -> Patch:
        m, (h, w), (kh, kw) = self.module, value.size, self.kernel
        rows = value.top[:, None] + torch.arange(h, device=value.top.device)
        cols = value.left[:, None] + torch.arange(w, device=value.top.device)
        diff = (value.values - gather(value.base, rows, cols)[0]).flatten(0, 1)  # (B·P, Cin, h, w)
        spread = F.conv_transpose2d(diff, m.weight.flip(2, 3).transpose(0, 1))  # (B·P, Cout, h+kh−1, w+kw−1)
        # its first row/column is output position top + padding − (k − 1) (may lie outside the output map)
        top = value.top + self.padding[0] - (kh - 1)
        left = value.left + self.padding[1] - (kw - 1)
        rows = top[:, None] + torch.arange(spread.shape[-2], device=top.device)
        cols = left[:, None] + torch.arange(spread.shape[-1], device=top.device)
        raw = Patch(cache, gather(cache, rows, cols)[0] + spread.unflatten(0, value.values.shape[:2]), top, left, overhangs=True)
        (start_h, out_h), (start_w, out_w) = (
            _clipped(first, spread.shape[axis - 2], cache.shape[axis - 2]) for axis, first in enumerate((top, left))
        )
        return Patch(cache, read(raw, start_h, start_w, (out_h, out_w), 0.0), start_h, start_w)

    def apply(self, x: Tensor) -> Tensor:
        m = cast(nn.Conv2d, self.module)
        return F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)


class MaxPoolRule(WindowRule):
    pad_value = float("-inf")

    def __init__(self, module: nn.MaxPool2d):
        super().__init__(module, module.kernel_size, module.stride or module.kernel_size, module.padding, module.dilation)

    def apply(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel, self.stride, 0, self.dilation)


class AvgPoolRule(WindowRule):
    def __init__(self, module: nn.AvgPool2d):
        super().__init__(module, module.kernel_size, module.stride or module.kernel_size, module.padding)

    def apply(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel, self.stride, 0, divisor_override=self.module.divisor_override)


class PointwiseRule(Rule):
    """A module acting on every position alone: the rectangle is unchanged."""

    def run(self, x: Tensor) -> Tensor:
        if isinstance(self.module, nn.ReLU):
            return F.relu(x)  # never the module's in-place variant: x may be cached
        if getattr(self.module, "inplace", False):
            x = x.clone()
        return self.module(x)

    def clean(self, a: Tensor) -> tuple[Tensor, object]:
        out = self.run(a)
        return out, out

    def patch(self, cache: Tensor, value: Value) -> Value:
        if not isinstance(value, Patch):
            return Dense(self.run(value.dense()), value.windows)
        out = self.run(value.values.flatten(0, 1)).unflatten(0, value.values.shape[:2])
        return Patch(cache, out, value.top, value.left)


class ChainRule(Rule):
    """``nn.Sequential``: the rules of its children in order."""

    def __init__(self, module: nn.Module, rules: Sequence[Rule]):
        super().__init__(module)
        self.rules = list(rules)

    def clean(self, a: Tensor) -> tuple[Tensor, object]:
        caches = []
        for rule in self.rules:
            a, cache = rule.clean(a)
            caches.append(cache)
        return a, caches

    def patch(self, cache: list, value: Value) -> Value:
        for rule, sub in zip(self.rules, cache):
            value = rule.patch(sub, value)
        return value

    def full_rules(self) -> list[Rule]:
        return [r for rule in self.rules for r in rule.full_rules()]


class ResidualRule(Rule):
    """torchvision ``BasicBlock`` / ``Bottleneck``: ``relu(main(x) + shortcut(x))``, decomposed."""

    def __init__(self, module: nn.Module):
        super().__init__(module)
        m = module
        convs = ["conv1", "bn1", "relu", "conv2", "bn2"] + (["relu", "conv3", "bn3"] if isinstance(m, Bottleneck) else [])
        self.main = ChainRule(m, [compile_module(getattr(m, name)) for name in convs])
        self.shortcut = compile_module(m.downsample) if m.downsample is not None else None

    def clean(self, a: Tensor) -> tuple[Tensor, object]:
        main, main_cache = self.main.clean(a)
        if self.shortcut is None:
            short, short_cache = a, a
        else:
            short, short_cache = self.shortcut.clean(a)
        total = main + short
        out = F.relu(total)
        return out, (main_cache, short_cache, main, short, out)

    def patch(self, cache: tuple, value: Value) -> Value:
        main_cache, short_cache, main_clean, short_clean, out_clean = cache
        main = self.main.patch(main_cache, value)
        short = value if self.shortcut is None else self.shortcut.patch(short_cache, value)
        if not (isinstance(main, Patch) and isinstance(short, Patch)):
            return Dense(F.relu(main.dense() + short.dense()), value.windows)
        starts, sizes = [], []
        for axis in (0, 1):
            a0 = main.top if axis == 0 else main.left
            b0 = short.top if axis == 0 else short.left
            lo = torch.minimum(a0, b0)
            hi = torch.maximum(a0 + main.size[axis], b0 + short.size[axis])
            out_size = out_clean.shape[-2 + axis]
            size = min(int((hi - lo).max()), out_size)
            starts.append(lo.clamp(max=out_size - size))
            sizes.append(size)
        total = read(main, starts[0], starts[1], tuple(sizes), 0.0) + read(short, starts[0], starts[1], tuple(sizes), 0.0)
        return Patch(out_clean, F.relu(total), starts[0], starts[1])

    def full_rules(self) -> list[Rule]:
        return self.main.full_rules() + (self.shortcut.full_rules() if self.shortcut is not None else [])


POINTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Mish,
    nn.Identity,
    nn.LocalResponseNorm,
)
DROPOUT = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)


def compile_module(module: nn.Module) -> Rule:
    """The rule of ``module``: a known type's, else the full-computation fallback (see the module docstring)."""
    kind = type(module)
    if kind is nn.Conv2d and module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return ConvRule(module)
    if kind is nn.MaxPool2d and not module.ceil_mode and not module.return_indices:
        return MaxPoolRule(module)
    if kind is nn.AvgPool2d and not module.ceil_mode and (module.count_include_pad or not any(_pair(module.padding))):
        return AvgPoolRule(module)
    if kind is nn.BatchNorm2d and not module.training and module.running_mean is not None:
        return PointwiseRule(module)
    if isinstance(module, POINTWISE) or (isinstance(module, DROPOUT) and not module.training):
        return PointwiseRule(module)
    if kind is nn.Sequential:
        return ChainRule(module, [compile_module(child) for child in module])
    if kind in (BasicBlock, Bottleneck):
        return ResidualRule(module)
    from attreval.cone.graph import graph_rule  # graph.py builds on these rules

    rule = graph_rule(module, compile_module)  # a traced graph (fx stages, timm blocks, …), rules per operation
    return rule if rule is not None else Rule(module)
