"""The :class:`Task` a method explains: the network from a layer on, the activations there, and the targets."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attreval.tail import Tail, as_tail
from attreval.validation import positive_int


@dataclass(frozen=True, eq=False)
class Task:
    """One attribution job: explain ``tail`` at ``inputs`` for T targets per example.

    Attributes:
        tail: the network from the layer on, ``(N, C, h, w) → (N, H, K)`` logits of H heads
            (a :class:`~attreval.tail.Tail`; a plain callable is wrapped as a tail without capabilities).
        inputs: ``(B, C, h, w)`` activations at the layer (the image at the input layer), detached.
        heads: ``LongTensor (T,)``: the head (index into H) of each target column.
        classes: ``LongTensor (B, T)``: the class explained in each target column.
        layer: the layer name (``"input"`` or a stage); presets may depend on whether it is the input.
        image: ``(B, C0, H0, W0)`` the grid images (Score-CAM masks the image at every layer, through
            ``tail.whole()``).
        chunk_size: most inputs per forward pass (IG steps, windows, masks, channels, targets).
    """

    tail: Tail
    inputs: Tensor
    heads: Tensor
    classes: Tensor
    layer: str = "input"
    image: Tensor | None = None
    chunk_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "tail", as_tail(self.tail))
        if self.inputs.dim() != 4:
            raise ValueError(f"expected inputs of shape (B, C, h, w), got {tuple(self.inputs.shape)}")
        if self.classes.dim() != 2 or self.classes.shape[0] != self.inputs.shape[0]:
            raise ValueError(f"expected classes of shape (B={self.inputs.shape[0]}, T), got {tuple(self.classes.shape)}")
        if self.heads.shape != (self.classes.shape[1],):
            raise ValueError(f"expected heads of shape (T={self.classes.shape[1]},), got {tuple(self.heads.shape)}")
        positive_int("chunk_size", self.chunk_size)

    @property
    def batch(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_targets(self) -> int:
        return self.classes.shape[1]

    @property
    def is_input_layer(self) -> bool:
        return self.layer == "input"

    def rows(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every (example, target) pair as one row: inputs ``(B·T, C, h, w)``, heads and classes ``(B·T,)``."""
        t = self.num_targets
        return (
            self.inputs.repeat_interleave(t, dim=0),
            self.heads.to(self.inputs.device).repeat(self.batch),
            self.classes.to(self.inputs.device).reshape(-1),
        )
