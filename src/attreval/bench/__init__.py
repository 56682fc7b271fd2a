"""``attreval bench``: every method × layer × setting against its pass-count limit and the reference pattern.

For each unit the bench measures the wall time per grid image and counts the forward and backward
passes per grid image (:class:`~attreval.runs.counting.PassCounter`). The **limit** is the time the same
number of plain passes of the same networks take, each at its best batch size, timed in the same run
(:func:`pass_limit`): every row at its network's forward rate — the network from the layer with all
explained heads, with one head only (the ``rows`` of a tail whose cells are separate, DiFull: one block), or from the image (Score-CAM);
with or without a recorded graph — and every backward at the backward rate of its network (gradient
methods on GridPG/DiPart run one forward and one backward per target). The **limit ratio** is
measured ÷ limit (1.0 = no overhead beyond the passes themselves); the overhead is measured − limit.

The **reference pattern** is the authors' pass pattern (PAPER.md Appendix A, :func:`reference_pattern`),
run through the same method code, so both produce the same maps; the scores are checked equal
(|Δ| ≤ 1e-4) and the speed-up is reported. ``--peers`` times other libraries' implementations of the
same methods side by side (:mod:`attreval.bench.peers`).

Modules: :mod:`~attreval.bench.timing` (timed calls, per-row pass times), :mod:`~attreval.bench.limit`
(the pass-count limit), :mod:`~attreval.bench.reference` (the authors' pattern), :mod:`~attreval.bench.unit`
(one unit), :mod:`~attreval.bench.cli` (parser, tables), :mod:`~attreval.bench.peers` (other libraries).
"""

from attreval.bench.cli import configure_parser, markdown, method_markdown, parse_options, run_from_args, summary
from attreval.bench.limit import pass_limit
from attreval.bench.reference import REFERENCE_BATCH, EveryWindow, reference_maps, reference_pattern
from attreval.bench.timing import BATCHES, BUDGET, PassTimes, pass_rates, per_row_times, timed
from attreval.bench.unit import bench_unit, random_grids, scores_of

__all__ = [
    "BATCHES",
    "BUDGET",
    "REFERENCE_BATCH",
    "EveryWindow",
    "PassTimes",
    "bench_unit",
    "configure_parser",
    "markdown",
    "method_markdown",
    "parse_options",
    "pass_limit",
    "pass_rates",
    "per_row_times",
    "random_grids",
    "reference_maps",
    "reference_pattern",
    "run_from_args",
    "scores_of",
    "summary",
    "timed",
]
