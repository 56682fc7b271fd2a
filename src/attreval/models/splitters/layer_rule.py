"""The middle / final rule shared by the splitters that cut a model by resolution (graph, timm, stages).

**final** is the last stage (the feature map the classifier pools). **middle** is the first stage whose
reduction (input side ÷ map side, as a power of two) reaches ``2^⌈(L+1)/2⌉`` when final's is ``2^L``: the
middle of the ladder 1, 2, …, 2^L (r8 for final r32 and r16, r4 for final r8: the paper's VGG11 / ResNet18
choices, PAPER.md §2). A middle layer is **never at or below final's resolution**: if the first stage reaching
the target is already at final's reduction (a model whose only earlier stages are coarse, or whose cuts skip
the middle of the ladder), the last stage strictly above final's resolution is taken instead; if there is
none, ``middle`` is refused for the model with a one-line error naming its stages and their resolutions
(:class:`RuledStagedModel`), rather than being final under another name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from attreval.models.staged import StagedModel


def reduction_level(input_side: int, map_side: int) -> int:
    """``log2(input side ÷ map side)`` rounded to a whole power of two (unpadded convolutions shrink maps by
    a few pixels: Inception's 35×35 at 299 px is r8)."""
    return round(math.log2(input_side / max(map_side, 1)))


def middle_index(levels: Sequence[int]) -> int | None:
    """Index of the middle stage for stage reduction ``levels`` (final last), or ``None`` when no stage is
    strictly above final's resolution (module docstring)."""
    if len(levels) < 2:
        return None
    final = levels[-1]
    target = math.ceil((final + 1) / 2)
    first = next((i for i, level in enumerate(levels) if level >= target), len(levels) - 1)
    if levels[first] < final:
        return first
    finer = [i for i, level in enumerate(levels[:-1]) if level < final]
    return finer[-1] if finer else None


def middle_refusal(architecture: str, names: Sequence[str], sides: Sequence[tuple[int, int]], input_side: int) -> str:
    """The one-line error for a model without a stage strictly above final's resolution."""
    stages = ", ".join(f"{name} ({h}×{w})" for name, (h, w) in zip(names, sides))
    return (
        f"expected a middle layer above the final layer's resolution in {architecture}, got only stages {stages} "
        f"at {input_side} px; use 'final' or name a stage (attreval list layers)"
    )


def rule_aliases(
    architecture: str, names: Sequence[str], sides: Sequence[tuple[int, int]], input_side: int
) -> tuple[dict[str, str], dict[str, str]]:
    """``(aliases, refusals)`` for stages ``names`` whose maps at an ``input_side``-px probe are ``sides``."""
    levels = [reduction_level(input_side, side[-1]) for side in sides]
    aliases = {"final": names[-1]}
    refusals: dict[str, str] = {}
    index = middle_index(levels)
    if index is None:
        refusals["middle"] = middle_refusal(architecture, names, sides, input_side)
    else:
        aliases["middle"] = names[index]
    return aliases, refusals


@dataclass(frozen=True, eq=False)
class RuledStagedModel(StagedModel):
    """A :class:`StagedModel` whose splitter refused some paper layer names (``middle``) with a reason.

    Attributes:
        refusals: alias → the one-line reason it is not given for this model (raised by :meth:`resolve`).
    """

    refusals: dict[str, str] = field(default_factory=dict)

    def resolve(self, layer: str) -> str:
        if layer not in self.aliases and layer in self.refusals:
            raise ValueError(self.refusals[layer])
        return super().resolve(layer)
