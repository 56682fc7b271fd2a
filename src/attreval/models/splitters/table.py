"""The model table of docs/models.md, generated from the splits themselves so the docs cannot drift.

:func:`layer_table` splits each model as ``attreval list layers`` does (the splitter's own probe) and writes one
Markdown row per model: splitter, number of stages, middle and final with their map sizes at a 224-px input
(299 px for Inception), and whether GridPG can pool the head. ``tests/test_models_doc.py`` compares the table
in docs/models.md (between the ``<!-- layer-table -->`` markers) with this output.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

HEADER = ["| model | splitter | stages | middle | final | GridPG head |", "|---|---|---|---|---|---|"]
MARKER = "<!-- layer-table -->"


def table_row(name: str, model: nn.Module, side: int = 224) -> str:
    """One row for ``model`` with map sizes at a ``side``-px input (middle refused: its one-line reason's gist)."""
    from attreval.models.splitters import describe_layers, in_channels, probe_input, split_model, splitter_for

    splitter = splitter_for(model)[0]
    staged = split_model(model)
    rows = describe_layers(staged, probe_input((in_channels(model), side, side), torch.device("cpu")))
    sides = {layer: f"{shape[-2]}×{shape[-1]}" for layer, _, shape in rows}
    cells = []
    for alias in ("middle", "final"):
        stage = staged.aliases.get(alias)
        cells.append(f"`{stage}` ({sides[stage]})" if stage else "refused (one resolution)")
    head = "yes" if staged.grid_head is not None else "no"
    return f"| {name} | {splitter} | {len(staged.stages)} | {cells[0]} | {cells[1]} | {head} |"


def layer_table(models: Iterable[tuple[str, nn.Module, int]]) -> list[str]:
    """The Markdown table (header first) for ``(name, model, side)`` triples."""
    return HEADER + [table_row(name, model, side) for name, model, side in models]


def doc_table(text: str) -> list[str]:
    """The table lines between the two :data:`MARKER` lines of a document."""
    parts = text.split(MARKER)
    if len(parts) != 3:
        raise ValueError(f"expected two '{MARKER}' lines around the model table, got {len(parts) - 1}")
    return [line for line in parts[1].strip().splitlines() if line.strip()]
