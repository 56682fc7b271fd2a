"""The pass-count limit: the time a method's counted passes take as plain passes of their networks.

The passes are counted by :class:`~attreval.runs.counting.PassCounter` (forward rows with and without a
recorded graph, per network, and backward passes); the per-row rates come from
:func:`attreval.bench.timing.pass_rates`.
"""

from __future__ import annotations

from attreval.bench.timing import PassTimes
from attreval.runs.counting import PassCounter


def pass_limit(counter: PassCounter, rates: dict[str, PassTimes]) -> float:
    """Seconds the counted passes take as plain passes of their networks at their best batch sizes: each
    row at its network's forward rate (with or without a recorded graph), each backward at the backward
    rate of the network whose graph it runs back through (one head's where gradients went through
    the ``rows`` of a tail whose cells are separate, DiFull)."""
    full, head = rates["forward"], rates.get("head", rates["forward"])
    image = rates["image"].forward if "image" in rates else 0.0
    full_graph = counter.graph_rows - counter.head_graph_rows
    full_plain = counter.forward_rows - counter.image_rows - counter.head_rows - full_graph
    head_plain = counter.head_rows - counter.head_graph_rows
    backward = head.backward if counter.head_graph_rows else full.backward
    return (
        full_plain * full.forward
        + full_graph * full.graph_forward
        + head_plain * head.forward
        + counter.head_graph_rows * head.graph_forward
        + counter.image_rows * image
        + counter.backward_rows * backward
    )
