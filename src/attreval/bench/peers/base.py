"""What a peer library adapter is, and the network every peer explains.

A peer adapter (:class:`Peer`) wraps one other library's implementations of methods attreval has. Each
method is an adapter function ``(call, x (B, C, H, W), target (B,)) → maps (B, h, w)`` that runs the
library's own API as a user would, one target class per example, and reduces its output to attreval's
convention: maps summed over channels, sign kept (attreval's absolute value where the method takes one),
CAMs at the layer's resolution. A new peer is one subclass plus one ``@PEERS.register`` line.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from torch import Tensor, nn

from attreval.methods.base import Method
from attreval.models.staged import StagedModel
from attreval.registry import Registry

M = TypeVar("M", bound=Method)


class PeerNet(nn.Module):
    """GridPG's network as one plain module (what a peer explains): the stages on the whole grid, then the
    grid head; ``forward(x (B, C, H, W)) → logits (B, K)``.

    It holds a **copy** of the model with frozen parameters: the peers call ``backward()``, which would write
    ``.grad`` into the caller's model, and register hooks on it. Frozen parameters also spare the peers the
    parameter gradients (attreval never computes them), so the time ratios do not charge the peers for them.
    """

    def __init__(self, staged: StagedModel):
        super().__init__()
        stages, head = copy.deepcopy(([m for _, m in staged.stages], staged.grid_head_or_error()))
        for m in stages:
            if not isinstance(m, nn.Module):
                raise TypeError(f"expected nn.Module stages for the peers, got {type(m).__name__}")
        self.stage_list = nn.ModuleList(stages)
        self.head = head
        self.staged = staged
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stage_list:
            x = stage(x)
        return self.head(x)

    def layer(self, layer: str) -> nn.Module | None:
        """The module whose output is the activations at ``layer`` (``None`` at the input)."""
        index = self.staged.index(layer)
        return self.stage_list[index - 1] if index else None


@dataclass(frozen=True)
class PeerCall:
    """What an adapter function needs: the network, the module of the layer explained (``None``: the input),
    the layer's name, attreval's method object (its hyper-parameters are the peer's) and attreval's
    ``chunk_size`` (the most inputs per forward, given to a peer that batches perturbations)."""

    net: PeerNet
    layer_module: nn.Module | None
    layer: str
    method: Method
    chunk_size: int = 64

    def method_as(self, kind: type[M]) -> M:
        """``method`` as a ``kind``: the adapter for a method name is given that method (a one-line error otherwise)."""
        if not isinstance(self.method, kind):
            raise TypeError(f"expected attreval's {kind.__name__} for this adapter, got {type(self.method).__name__}")
        return self.method


Adapter = Callable[[PeerCall, Tensor, Tensor], Tensor]


class Peer:
    """One peer library. Subclasses set the class attributes and define one function per method.

    Class attributes:
        package: the import name of the library (``captum``); the peer is skipped when it is missing.
        display: the name in tables.
        methods: attreval registry name → (name of the library's class, name of this adapter's function).
        notes: attreval registry name → where the library departs from the method's definition or from
            attreval's convention (shown in the table's notes column).
    """

    package: ClassVar[str] = ""
    display: ClassVar[str] = ""
    methods: ClassVar[dict[str, str]] = {}
    notes: ClassVar[dict[str, str]] = {}

    def missing(self) -> str | None:
        """Why the peer cannot run (``None`` when it can)."""
        if importlib.util.find_spec(self.package) is None:
            return f"{self.package} not installed (pip install 'attreval[peers]')"
        return None

    def adapter(self, name: str) -> Adapter | None:
        """The adapter function for attreval method ``name``, ``None`` where the library has no such method."""
        if name not in self.methods:
            return None
        return getattr(self, name)

    def note(self, name: str, call: PeerCall, shape: tuple[int, int]) -> str:
        """The notes for method ``name`` on inputs of spatial size ``shape`` (subclasses add computed facts)."""
        return self.notes.get(name, "")


PEERS: Registry[type[Peer]] = Registry("peer")


def channel_sum(attribution: Tensor, absolute: bool = False) -> Tensor:
    """``(B, C, h, w)`` → ``(B, h, w)``: attreval's convention (sum over channels, absolute value first where the
    method takes one)."""
    return (attribution.abs() if absolute else attribution).sum(1).detach().float()
