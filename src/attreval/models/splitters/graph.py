"""Any ``nn.Module`` that torch.fx can trace: the graph is cut where a single tensor is live.

How a model is cut (PAPER.md §5.2's generic rule made precise):

1. ``torch.fx.symbolic_trace`` records the model's forward as a graph; shapes are recorded by running it on
   the probe and on a probe twice as large. A node is **spatial** if its output is ``(B, C, h, w)`` with
   ``h, w`` growing with the input, and a **cut** if it is the only value computed so far that later nodes
   still use (parameters and buffers aside): the network after a cut depends on nothing else.
2. Candidate stage boundaries are the ends of modules: the model's top-level children, where fewer than four
   are spatial the largest container among them replaced by its children, repeated (torchvision MobileNet's
   ``features.0`` … ``features.18``, RegNet's ``trunk_output.block1`` …); or, for timm, the modules of its
   ``feature_info``. A candidate becomes a stage if its end is a spatial cut.
3. **final** = the last spatial cut outside the classifier modules (``classifier``, ``fc``, ``head`` …): the
   last feature map before pooling + classifier; a function after the last module (DenseNet's ReLU) becomes
   a stage of its own. The **head** is the graph from final to the logits.
4. **middle** = the first stage whose reduction (input side ÷ map side, as a power of two) reaches
   ``2^⌈(L+1)/2⌉`` when final's is ``2^L``: the middle of the ladder 1, 2, …, 2^L. This is r8 for final r32
   (ResNet18's layer2, a 28×28 map for 224-px cells) and for final r16 (VGG11's Conv5), and r4 for final r8
   (the CIFAR VGG11's Conv3): the paper's choices (§2).
5. GridPG pools the head over the grid only if the head is a global pooling head: applied to a 2×2 tiling of
   one cell's final features it must give the same logits (else GridPG is refused for the model).

Each stage and the head are ``torch.fx.GraphModule`` s holding the caller's own submodules, so module hooks
(Guided Backprop, LRP) see them. An in-place first operation of a stage is preceded by a copy, so a tail never
writes into the activations it is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, fx, nn

from attreval.models.splitters.common import in_channels, model_device
from attreval.models.splitters.layer_rule import RuledStagedModel, rule_aliases
from attreval.models.staged import StagedModel

HEAD_NAMES = ("classifier", "fc", "head", "heads", "global_pool", "avgpool", "head_drop", "pre_logits", "last_linear", "flatten")


class _ShapeRecorder(fx.Interpreter):
    """Runs a GraphModule and records the shape of every tensor-valued node."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module)
        self.shapes: dict[fx.Node, tuple[int, ...] | None] = {}

    def run_node(self, node: fx.Node) -> Any:
        out = super().run_node(node)
        self.shapes[node] = tuple(out.shape) if isinstance(out, Tensor) else None
        return out


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's forward as an fx graph, or a one-line error (dynamic control flow, unsupported ops)."""
    try:
        return fx.symbolic_trace(model)
    except Exception as err:
        detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ValueError(f"torch.fx cannot trace its forward ({type(err).__name__}: {detail})") from None


def module_path(node: fx.Node) -> list[str]:
    """Qualified names of the modules a node runs inside, outermost first."""
    stack = node.meta.get("nn_module_stack") or {}
    return [value[0] if isinstance(value, tuple) else str(key) for key, value in stack.items()]


def cuts(nodes: list[fx.Node]) -> set[fx.Node]:
    """Nodes after which they alone are live (get_attr nodes are constants and do not count)."""
    position = {node: i for i, node in enumerate(nodes)}
    last_use = {node: max((position[u] for u in node.users), default=position[node]) for node in nodes}
    live: set[fx.Node] = set()
    found = set()
    for i, node in enumerate(nodes):
        if node.op not in ("get_attr", "output"):
            live.add(node)
        live = {m for m in live if last_use[m] > i or m is node}
        if live == {node} and node.op not in ("get_attr", "output"):
            found.add(node)
    return found


class GraphCut:
    """The traced graph of a model with the facts needed to cut it (see the module docstring)."""

    def __init__(self, model: nn.Module, probe: Tensor):
        self.model, self.module = model, trace(model)
        self.nodes = list(self.module.graph.nodes)
        self.position = {node: i for i, node in enumerate(self.nodes)}
        small = self._shapes(probe)
        large = self._shapes(torch.cat([torch.cat([probe, probe], 2)] * 2, 3))
        self.side = probe.shape[-1]
        self.shape = small
        self.spatial = {n for n, s in small.items() if s is not None and len(s) == 4 and large.get(n) is not None and large[n][-1] > s[-1]}
        self.cuts = cuts(self.nodes)
        self.last_node: dict[str, int] = {}
        self.count: dict[str, int] = {}
        for node in self.nodes:
            for path in module_path(node):
                self.last_node[path] = self.position[node]
                self.count[path] = self.count.get(path, 0) + 1

    def _shapes(self, x: Tensor) -> dict[fx.Node, tuple[int, ...] | None]:
        recorder = _ShapeRecorder(self.module)
        with torch.no_grad():
            try:
                recorder.run(x)
            except Exception as err:
                raise ValueError(f"its traced graph fails on a {tuple(x.shape[1:])} input ({type(err).__name__})") from None
        return recorder.shapes

    def is_stage_end(self, path: str) -> bool:
        node = self.nodes[self.last_node[path]] if path in self.last_node else None
        return node is not None and node in self.cuts and node in self.spatial

    def structural_boundaries(self, head_names: Iterable[str]) -> list[str]:
        """Module paths proposed as stage ends: top-level children, the largest container expanded while
        fewer than four of them end at a spatial cut."""
        heads = set(head_names)
        proposals = [name for name, _ in self.model.named_children() if name not in heads and name in self.last_node]
        pooling = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
        expanded: set[str] = set()
        while sum(self.is_stage_end(p) for p in proposals) < 4:
            containers = [p for p in proposals if p not in expanded and len(list(self.model.get_submodule(p).children())) >= 2]
            if not containers:
                break
            biggest = max(containers, key=lambda p: self.count.get(p, 0))
            expanded.add(biggest)
            children = [f"{biggest}.{c}" for c, _ in self.model.get_submodule(biggest).named_children()]
            index = proposals.index(biggest)
            proposals[index : index + 1] = [c for c in children if c in self.last_node] or [biggest]
        # a bare pooling module is no stage of its own: it starts the next one (as VGG's max-pools do)
        return [p for p in proposals if not isinstance(self.model.get_submodule(p), pooling)]

    def final_node(self, head_names: Iterable[str]) -> fx.Node:
        """The last spatial cut outside the head modules."""
        heads = tuple(head_names)
        inside_head = lambda node: any(p.split(".")[0] in heads or p in heads for p in module_path(node))
        finals = [n for n in self.nodes if n in self.cuts and n in self.spatial and not inside_head(n) and n.op != "placeholder"]
        if not finals:
            raise ValueError("found no spatial feature map that alone feeds the classifier")
        return finals[-1]

    def name_of(self, node: fx.Node, taken: set[str], proposals: Iterable[str] = ()) -> str:
        """The shallowest module path that ends at ``node`` and holds no proposed boundary (``blocks.9``
        rather than ``blocks``), else the node's own name."""
        parents = {p.rsplit(".", i)[0] for p in proposals for i in range(1, p.count(".") + 1)}
        for path in module_path(node):
            if self.last_node.get(path) == self.position[node] and path not in taken and path not in parents:
                return path
        return node.name if node.name not in taken else f"{node.name}_{self.position[node]}"

    def staged(self, boundaries: list[str], head_names: Iterable[str], architecture: str) -> StagedModel:
        """Cut at the boundaries that are spatial cuts up to final; verify nothing (the caller does)."""
        head_names = tuple(head_names)
        final = self.final_node(head_names)
        proposed = {self.last_node[p]: p for p in boundaries if self.is_stage_end(p) and self.last_node[p] <= self.position[final]}
        ends = sorted(proposed)
        if not ends or ends[-1] != self.position[final]:
            ends.append(self.position[final])
        names: list[str] = []
        for i in ends:  # the proposed module's name, else the shallowest module ending there, else the node's
            names.append(proposed[i] if i in proposed else self.name_of(self.nodes[i], set(names), boundaries))
        stages, start = [], 0
        for name, end in zip(names, ends):
            stages.append((name, self.subgraph(start, end, name)))
            start = end
        head = self.subgraph(ends[-1], len(self.nodes) - 1, "head")
        sides = [self.side_of(self.nodes[i]) for i in ends]
        aliases, refusals = rule_aliases(architecture, names, sides, self.side)
        grid_head = head if self.pools(stages, head) else None
        return RuledStagedModel(tuple(stages), head, grid_head, aliases, architecture, refusals=refusals)

    def side_of(self, node: fx.Node) -> tuple[int, int]:
        """``(h, w)`` of a spatial node's map on the probe."""
        shape = self.shape[node]
        assert shape is not None
        return int(shape[-2]), int(shape[-1])

    def pools(self, stages: list[tuple[str, nn.Module]], head: nn.Module) -> bool:
        """Whether the head is a global pooling head: equal logits on a 2×2 tiling of one cell's features."""
        generator = torch.Generator().manual_seed(0)
        shape = self.shape[self.nodes[0]]
        x = torch.randn(shape, generator=generator).to(model_device(self.model))
        with torch.no_grad():
            for _, stage in stages:
                x = stage(x)
            try:
                one, tiled = head(x), head(x.repeat(1, 1, 2, 2))
            except Exception:
                return False
        scale = max(float(one.abs().max()), 1.0)
        return one.shape == tiled.shape and float((one - tiled).abs().max()) <= 1e-4 * scale

    def subgraph(self, start: int, end: int, name: str) -> fx.GraphModule:
        """Nodes ``(start, end]`` (``start`` = 0: from the placeholder) as a module of one input."""
        graph = fx.Graph()
        x = graph.placeholder("x")
        env: dict[fx.Node, fx.Node] = {self.nodes[start]: x}
        if any(_in_place(user) for user in self.nodes[start].users):
            env[self.nodes[start]] = graph.call_method("clone", (x,))  # never write into the given activations

        def lookup(node: fx.Node) -> fx.Node:
            if node not in env:
                if node.op != "get_attr":
                    raise ValueError(f"expected node {node.name} to be computed inside stage {name}")
                env[node] = graph.node_copy(node, lookup)
            return env[node]

        for node in self.nodes[start + 1 : end + 1]:  # nodes[0] is the placeholder: stage 1 starts after it
            if node.op == "output":
                graph.output(fx.map_arg(node.args[0], lookup))
                break
            env[node] = graph.node_copy(node, lookup)
        else:
            graph.output(env[self.nodes[end]])
        return fx.GraphModule(self.module, graph, class_name=f"Stage_{name.replace('.', '_')}")


def _in_place(node: fx.Node) -> bool:
    """Whether ``node`` may modify its first argument in place."""
    if node.kwargs.get("inplace") is True:
        return True
    if node.op == "call_method" and isinstance(node.target, str) and node.target.endswith("_") and not node.target.endswith("__"):
        return True
    if node.op == "call_module":
        module = node.graph.owning_module.get_submodule(node.target) if node.graph.owning_module is not None else None
        return bool(getattr(module, "inplace", False))
    return False


class GraphSplitter:
    """The fallback for any module: torch.fx cut at the structural boundaries (module docstring)."""

    def accepts(self, model: nn.Module) -> bool:
        return isinstance(model, nn.Module)

    def probe_shape(self, model: nn.Module) -> tuple[int, int, int]:
        return in_channels(model), 224, 224

    def split(self, model: nn.Module, probe: Tensor) -> StagedModel:
        cut = GraphCut(model, probe)
        boundaries = cut.structural_boundaries(HEAD_NAMES)
        return cut.staged(boundaries, HEAD_NAMES, f"{type(model).__name__} (fx graph)")
