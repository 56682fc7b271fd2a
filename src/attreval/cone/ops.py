"""Which traced graph operations keep a changed region where it is (see :mod:`attreval.cone.graph`).

Every operation of a torch.fx graph is run out of place here (``x += y`` as ``x + y``, ``relu_`` as ``relu``,
``inplace=True`` dropped), so cached activations are never written to. An operation is **position-wise** if
output position (h, w) depends only on the inputs at (h, w): elementwise arithmetic and activations with
broadcast constants, eval-mode normalisation over channels, stochastic depth and dropout in eval. On a
channels-last tensor ``(B, H, W, C)`` (ConvNeXt's ``permute → LayerNorm → Linear → permute``), layer norms over
the last dimension and linear layers are position-wise too.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.nn import functional as F

IN_PLACE: dict[Any, Any] = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}

ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
    torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.clamp,
    torch.maximum, torch.minimum, torch.abs, torch.where,
    F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh,
    F.sigmoid, F.tanh, F.softplus,
}  # fmt: skip
ELEMENTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "relu", "sigmoid", "tanh", "exp", "clamp", "clamp_min", "clamp_max", "abs",
    "contiguous", "clone", "float", "double", "to", "type_as", "__add__", "__mul__", "__sub__", "__truediv__", "__radd__",
    "__rmul__",
}  # fmt: skip
ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardtanh, nn.Mish, nn.Identity, nn.Softplus,
)  # fmt: skip
DROPOUT_MODULES = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)


def run_node(node: fx.Node, module: fx.GraphModule, args: tuple, kwargs: dict[str, Any]) -> Any:
    """Execute ``node``'s operation out of place on concrete ``args`` / ``kwargs``."""
    kwargs = {k: v for k, v in kwargs.items() if k != "inplace"}
    if node.op == "call_module":
        sub = module.get_submodule(str(node.target))
        if getattr(sub, "inplace", False) and args and isinstance(args[0], Tensor):
            args = (args[0].clone(), *args[1:])
        return sub(*args, **kwargs)
    if node.op == "call_function":
        target: Any = IN_PLACE.get(node.target, node.target)
        return target(*args, **kwargs)
    if node.op == "call_method":
        name = str(node.target)
        if name.endswith("_") and not name.endswith("__") and hasattr(args[0], name[:-1]):
            name = name[:-1]
        return getattr(args[0], name)(*args[1:], **kwargs)
    if node.op == "get_attr":
        value: Any = module
        for part in str(node.target).split("."):
            value = getattr(value, part)
        return value
    raise ValueError(f"expected an operation node, got {node.op} {node.name}")


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def is_identity(node: fx.Node, module: fx.GraphModule) -> bool:
    """Stochastic depth / dropout in eval mode, ``contiguous``: the value passes through unchanged."""
    if node.op == "call_function" and getattr(node.target, "__name__", "") in ("stochastic_depth", "drop_path", "dropout"):
        return _arg(node, 3 if node.target.__name__ == "stochastic_depth" else 2, "training", True) is False  # type: ignore[union-attr]
    if node.op == "call_method" and node.target == "contiguous":
        return True
    if node.op == "call_module":
        sub = module.get_submodule(str(node.target))
        return isinstance(sub, (nn.Identity, *DROPOUT_MODULES)) and not (isinstance(sub, DROPOUT_MODULES) and sub.training)
    return False


def permutation(node: fx.Node) -> tuple[int, ...] | None:
    """The dims of a ``permute`` node (method or function form), else None."""
    if node.op == "call_method" and node.target == "permute":
        dims = node.args[1:]
    elif node.op == "call_function" and node.target is torch.permute:
        dims = (_arg(node, 1, "dims"),)
    else:
        return None
    if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
        dims = tuple(dims[0])
    return tuple(d for d in dims if isinstance(d, int)) if all(isinstance(d, int) for d in dims) else None


def pointwise_kind(node: fx.Node, module: fx.GraphModule) -> str | None:
    """``"any"``: position-wise in any layout; ``"first"``: channels first only (normalisation over dim 1);
    ``"last"``: channels-last only (layer norm / linear over the last dim); None: not position-wise."""
    if node.op == "call_module":
        sub = module.get_submodule(str(node.target))
        if isinstance(sub, ELEMENTWISE_MODULES):
            return "any"
        if isinstance(sub, nn.LayerNorm) and len(sub.normalized_shape) == 1:
            return "last"
        if isinstance(sub, nn.Linear):
            return "last"
        return None
    if node.op == "call_function":
        if node.target in ELEMENTWISE_FUNCTIONS:
            return "any"
        if node.target is F.batch_norm and _arg(node, 5, "training", False) is False:
            return "first"
        if node.target is F.layer_norm and len(_arg(node, 1, "normalized_shape", ())) == 1:
            return "last"
        if node.target is F.linear:
            return "last"
        return None
    if node.op == "call_method" and node.target in ELEMENTWISE_METHODS:
        return "any"
    if node.op == "call_method" and str(node.target).endswith("_") and str(node.target)[:-1] in ELEMENTWISE_METHODS:
        return "any"
    return None


def concat_dim(node: fx.Node) -> int | None:
    """The dimension of a ``torch.cat`` node, else None."""
    if node.op == "call_function" and node.target is torch.cat:
        dim = _arg(node, 1, "dim", 0)
        return dim if isinstance(dim, int) else None
    return None


SHAPE_METHODS = ("size", "dim")
