"""The cone over a traced graph: rules per torch.fx operation, for any module the splitters cut (issue 24 §1).

A stage cut by the graph or timm splitter is a ``torch.fx.GraphModule`` of leaf modules and functions; any
other module without a rule of its own is traced with ``torch.fx.symbolic_trace`` (falling back to running it
in full when that fails). :class:`GraphRule` runs such a graph node by node. ``clean(a)`` keeps every node's
clean output; ``patch`` maps each node's inputs to its output as one of

* a **constant** (the node does not depend on the graph's input: parameters, buffers, their products);
* a :class:`~attreval.cone.patch.Patch` ``(B, C, H, W)``, or a channels-last :class:`Last` (a Patch of the
  tensor permuted back to channels first) — the region changed by each window;
* a :class:`~attreval.cone.patch.Dense` materialised copy per window (after a global operation).

Per operation: leaf modules with a rule (convolutions of any groups/dilation, pooling, eval BatchNorm,
activations, dropout) use it; elementwise arithmetic with broadcast constants and residual adds/muls of two
regions (read on the union of their rectangles), eval-mode ``F.batch_norm``, stochastic depth, and ``torch.cat``
over channels keep a region; so do layer norms over channels and linear layers on channels-last tensors
(ConvNeXt). Anything else — global pooling, a squeeze-excitation gate, reshapes — is a global operation: it
runs on the materialised copies, and everything after it too (the region is the whole map from there on).
Exact in every case, up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn

import attreval.cone.ops as ops
from attreval.cone.patch import Dense, Patch, Rule, Value, read

CONST, SHAPE, PATCH, LAST, DENSE = "const", "shape", "patch", "last", "dense"
TO_LAST, TO_FIRST = (0, 2, 3, 1), (0, 3, 1, 2)


@dataclass(frozen=True)
class Last:
    """A channels-last tensor ``(B·P, H, W, C)`` held as the :class:`Patch` of its channels-first permutation."""

    patch: Patch

    def dense(self) -> Tensor:
        return self.patch.dense().permute(*TO_LAST)

    @property
    def windows(self) -> int:
        return self.patch.windows


def _is_nn_leaf(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torch.nn") and not isinstance(module, nn.Sequential)


def trace_module(module: nn.Module) -> fx.GraphModule | None:
    """``module`` as a graph: itself when it is one, else its ``symbolic_trace`` (None for torch.nn leaves and
    modules torch.fx cannot trace)."""
    if isinstance(module, fx.GraphModule):
        return module
    if _is_nn_leaf(module):
        return None
    try:
        return fx.symbolic_trace(module)
    except Exception:
        return None


class GraphRule(Rule):
    """The rule of a traced module (see the module docstring); build it with :func:`graph_rule`."""

    def __init__(self, module: nn.Module, graph: fx.GraphModule, compile_leaf):
        super().__init__(module)
        self.graph = graph
        self.nodes = list(graph.graph.nodes)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError(f"expected a graph of one input, got {len(placeholders)}")
        self.input = placeholders[0]
        if not isinstance(self.nodes[-1].args[0], fx.Node):
            raise ValueError("expected a graph with one output tensor")
        self.leaf_rules = {n: compile_leaf(graph.get_submodule(str(n.target))) for n in self.nodes if n.op == "call_module"}
        self.kinds, self.fallback_nodes = self._infer()

    # static analysis: the kind of every node's value when the input is a Patch
    def _infer(self) -> tuple[dict[fx.Node, str], list[fx.Node]]:
        kinds: dict[fx.Node, str] = {}
        fallbacks = []
        for node in self.nodes:
            if node.op == "placeholder":
                kinds[node] = PATCH
                continue
            if node.op == "output":
                kinds[node] = kinds.get(node.args[0], DENSE) if isinstance(node.args[0], fx.Node) else DENSE
                continue
            args = [kinds[a] for a in node.all_input_nodes]
            kinds[node] = self._kind(node, args)
            if kinds[node] == DENSE and any(k in (PATCH, LAST) for k in args) and not self._shape_only(node):
                fallbacks.append(node)
        return kinds, fallbacks

    def _shape_only(self, node: fx.Node) -> bool:
        return (node.op == "call_method" and node.target in ops.SHAPE_METHODS) or (
            node.op == "call_function" and node.target is getattr and bool(node.args[1] == "shape")
        )

    def _kind(self, node: fx.Node, args: list[str]) -> str:
        if all(k == CONST for k in args):
            return CONST
        if DENSE in args:
            return DENSE
        if self._shape_only(node) or all(k in (CONST, SHAPE) for k in args):
            return SHAPE  # sizes of the materialised copies (B·P, …), recomputed in every patch pass
        if SHAPE in args:
            return DENSE
        region = [k for k in args if k != CONST]
        layout = region[0] if all(k == region[0] for k in region) else None
        if layout is None:
            return DENSE
        if ops.is_identity(node, self.graph):
            return layout
        perm = ops.permutation(node)
        if perm is not None:
            moves: dict[tuple[str, tuple[int, ...]], str] = {(PATCH, TO_LAST): LAST, (LAST, TO_FIRST): PATCH}
            return moves.get((layout, perm), DENSE)
        if node.op == "call_module":
            rule = self.leaf_rules[node]
            kind = ops.pointwise_kind(node, self.graph)
            if layout == PATCH and len(node.args) == 1 and not node.kwargs and _has_rule(rule):
                return PATCH
            if kind == "any" or (kind == "last" and layout == LAST):
                return layout
            return DENSE
        dim = ops.concat_dim(node)
        if dim is not None:
            return layout if (layout, dim) in ((PATCH, 1), (PATCH, -3), (LAST, 3), (LAST, -1)) else DENSE
        kind = ops.pointwise_kind(node, self.graph)
        if kind == "any" or (kind == "first" and layout == PATCH) or (kind == "last" and layout == LAST):
            return layout
        return DENSE

    @property
    def useful(self) -> bool:
        """Whether some operation on a changed region keeps it a region (else running in full is as good)."""
        return any(self.kinds[n] in (PATCH, LAST) for n in self.nodes if n.op not in ("placeholder", "output"))

    # running
    def clean(self, a: Tensor) -> tuple[Tensor, Any]:
        env: dict[fx.Node, Any] = {}
        subcaches: dict[fx.Node, Any] = {}
        for node in self.nodes:
            if node.op == "placeholder":
                env[node] = a
            elif node.op == "output":
                out = fx.node.map_arg(node.args[0], env.__getitem__)
                return out, (env, subcaches, {})
            elif node.op == "call_module" and self.kinds[node] == PATCH and _has_rule(self.leaf_rules[node]):
                env[node], subcaches[node] = self.leaf_rules[node].clean(env[node.args[0]])
            else:
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
                env[node] = ops.run_node(node, self.graph, args, kwargs)
        raise ValueError("expected an output node in the traced graph")

    def patch(self, cache: Any, value: Value) -> Value:
        if not isinstance(value, Patch):
            return Dense(self.module(value.dense()), value.windows)
        clean, subcaches, firsts = cache
        env: dict[fx.Node, Any] = {}
        for node in self.nodes:
            if node.op == "placeholder":
                env[node] = value
            elif node.op == "output":
                out = env[node.args[0]]
                return out if isinstance(out, (Patch, Dense)) else Dense(_dense(out, value.windows), value.windows)
            elif self.kinds[node] == CONST:
                env[node] = clean[node]
            else:
                env[node] = self._step(node, env, clean, subcaches, firsts, value.windows)
        raise ValueError("expected an output node in the traced graph")

    def _step(self, node: fx.Node, env: dict, clean: dict, subcaches: dict, firsts: dict, windows: int) -> Any:
        kind = self.kinds[node]
        inputs = [env[a] for a in node.all_input_nodes]
        if kind == SHAPE:  # sizes of the materialised copies, without materialising them
            lookup = lambda n: _meta(env[n], windows) if isinstance(env[n], (Patch, Last, Dense)) else env[n]
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lookup)
            return ops.run_node(node, self.graph, args, kwargs)
        if kind != DENSE and not any(isinstance(v, Dense) for v in inputs):
            region = next(v for v in inputs if isinstance(v, (Patch, Last)))
            if ops.is_identity(node, self.graph):
                return region
            if ops.permutation(node) is not None:
                return Last(region) if isinstance(region, Patch) else region.patch
            if node in subcaches:
                return self.leaf_rules[node].patch(subcaches[node], region)
            base = _channels_first(node, clean, firsts) if kind == LAST else clean[node]
            out = _positionwise(node, self.graph, env, base, kind == LAST)
            if out is not None:
                return Last(out) if kind == LAST else out
        # a global operation (or constants with a spatial extent): on the materialised copies
        lookup = lambda n: _dense(env[n], windows) if isinstance(env[n], (Patch, Last, Dense)) else env[n]
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lookup)
        return Dense(ops.run_node(node, self.graph, args, kwargs), windows)

    def full_rules(self) -> list[Rule]:
        out = []
        for node in self.fallback_nodes:
            rule = Rule(self.graph.get_submodule(str(node.target)) if node.op == "call_module" else self.module)
            rule.node = node.name  # type: ignore[attr-defined]
            out.append(rule)
        return out


def _has_rule(rule: Any) -> bool:
    """Whether a leaf module's rule maps a region to a region (not the full-computation fallback)."""
    return type(rule) is not Rule and not rule.full_rules() and getattr(rule, "output_kind", PATCH) == PATCH


def _spatial_constant(value: Any, last: bool) -> bool:
    """Whether a constant would vary over positions (or examples) when broadcast against a region."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return False
    spatial = value.shape[-3:-1] if last else value.shape[-2:]
    if last:
        return (value.dim() >= 2 and any(s > 1 for s in spatial)) or (value.dim() >= 4 and value.shape[0] > 1)
    return (value.dim() == 1 and value.numel() > 1) or any(s > 1 for s in spatial) or (value.dim() >= 4 and value.shape[0] > 1)


def _channels_first(node: fx.Node, clean: dict, firsts: dict) -> Tensor:
    """The clean output of a channels-last node permuted to ``(B, C, H, W)`` (memoised in the cache)."""
    if node not in firsts:
        firsts[node] = clean[node].permute(*TO_FIRST).contiguous()
    return firsts[node]


def _dense(value: Any, windows: int) -> Tensor:
    if isinstance(value, (Patch, Last, Dense)):
        return value.dense()
    return value.repeat_interleave(windows, 0)  # a clean (B, …) tensor copied per window


def _meta(value: Any, windows: int) -> Tensor:
    if isinstance(value, Dense):
        return value.values
    patch = value.patch if isinstance(value, Last) else value
    b, c, h, w = patch.base.shape
    shape = (b * windows, h, w, c) if isinstance(value, Last) else (b * windows, c, h, w)
    return torch.empty(shape, device="meta", dtype=patch.base.dtype)


def _positionwise(node: fx.Node, graph: fx.GraphModule, env: dict, base: Tensor, last: bool) -> Patch | None:
    """A position-wise operation on regions: every region read on the union of their rectangles (one region: its
    own), constants broadcast; ``base`` is the node's clean output, channels first. None when a constant has a
    spatial extent or the result is not position-wise after all (the caller runs it in full)."""
    if any(_spatial_constant(env[a], last) for a in node.all_input_nodes if not isinstance(env[a], (Patch, Last))):
        return None
    regions = [env[a].patch if isinstance(env[a], Last) else env[a] for a in node.all_input_nodes if isinstance(env[a], (Patch, Last))]
    first = regions[0]
    if all(r.top is first.top and r.left is first.left and r.size == first.size for r in regions):
        top, left, size = first.top, first.left, first.size
        values = {id(r): r.values for r in regions}
    else:
        starts, sizes = [], []
        for axis in (0, 1):
            lo = torch.stack([(r.top if axis == 0 else r.left) for r in regions]).min(0).values
            hi = torch.stack([(r.top if axis == 0 else r.left) + r.size[axis] for r in regions]).max(0).values
            side = min(int((hi - lo).max()), base.shape[-2 + axis])
            starts.append(lo.clamp(max=base.shape[-2 + axis] - side))
            sizes.append(side)
        top, left, size = starts[0], starts[1], (sizes[0], sizes[1])
        values = {id(r): read(r, top, left, size, 0.0) for r in regions}
    b, p = first.values.shape[:2]

    def lookup(n: fx.Node) -> Any:
        v = env[n]
        if isinstance(v, (Patch, Last)):
            flat = values[id(v.patch if isinstance(v, Last) else v)].flatten(0, 1)
            return flat.permute(*TO_LAST) if last else flat
        return v

    args, kwargs = fx.node.map_arg((node.args, node.kwargs), lookup)
    out = ops.run_node(node, graph, args, kwargs)
    if last:
        out = out.permute(*TO_FIRST)
    if not isinstance(out, Tensor) or tuple(out.shape) != (b * p, base.shape[1], *size):
        return None
    return Patch(base, out.unflatten(0, (b, p)), top, left)


def graph_rule(module: nn.Module, compile_leaf) -> GraphRule | None:
    """A :class:`GraphRule` for ``module`` when it traces and keeps some region; None otherwise."""
    graph = trace_module(module)
    if graph is None:
        return None
    try:
        rule = GraphRule(module, graph, compile_leaf)
    except Exception:  # a graph this engine cannot analyse (several inputs or outputs, odd nodes): run it in full
        return None
    return rule if rule.useful else None
