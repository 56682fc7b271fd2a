"""The report's cost section (PAPER.md §7): the run's ``costs.parquet`` (through the run reader) as a table,
the cost figures, and smoothing against SmoothGrad."""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING

import pandas as pd

import attreval.plots as plots
from attreval.analysis import cost_summary, smoothgrad_sweep
from attreval.analysis.conventions import PAPER_KERNEL_REF, smoothed_methods
from attreval.runs.reader import Run

if TYPE_CHECKING:
    from attreval.report.page import Page

#: Hook for the cost analysis (PAPER.md §7): a table written by the cost step, shown when present.
COSTS_FILE = "costs.parquet"
#: The columns the cost figures need (the cost step writes them; a foreign table is only listed).
FIGURE_COLUMNS = {"forward_passes", "backward_passes", "seconds_per_grid"}


def _read_costs(run: Run) -> tuple[pd.DataFrame | None, str]:
    """``run.costs`` and an empty string, or ``None`` and why not (absent, unreadable)."""
    try:
        costs = run.costs
    except (OSError, ValueError) as err:
        return None, f"{COSTS_FILE} unreadable ({err})."
    return (None, f"no {COSTS_FILE} in this run directory: cost section empty.") if costs.empty else (costs, "")


def cost_section(run: Run | str | os.PathLike) -> str:
    """HTML of the cost section: the run's ``costs.parquet`` as a table when present (PAPER.md §7).

    This is the hook for the cost analysis: whatever writes ``costs.parquet`` (one row per measured
    item, any columns) appears here on the next ``attreval report``.
    """
    head = '<h2 id="costs">Computational cost</h2>'
    costs, why = _read_costs(run if isinstance(run, Run) else Run(run))
    if costs is None:
        return head + f'<p class="note">{html.escape(why)}</p>'
    return head + costs.to_html(float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, index=False)


def cost_sections(page: Page) -> None:
    """The cost table, then (for tables of the cost step) the cost figures and smoothing vs SmoothGrad."""
    page.add(cost_section(page.run))
    costs, _ = _read_costs(page.run)
    if costs is None or not FIGURE_COLUMNS <= set(costs.columns):
        return
    for model in pd.unique(costs["model"]):
        page.figure(f"{model}__costs", lambda: plots.cost_figure(costs, model), f"{model} costs")
    page.how("costs")
    config = page.run.config_dict or {}
    summary = cost_summary.smoothing_vs_smoothgrad(
        costs, smoothgrad_sweep.smoothgrad_points(config), _smoothing_seconds(page.run, costs, config)
    )
    page.heading(3, "Smoothing vs SmoothGrad")
    if summary.empty:
        page.note("no SmoothGrad units with a base method in this run: smoothing-vs-SmoothGrad cost skipped.")
        return
    for model in pd.unique(summary["model"]):
        page.figure(f"{model}__smoothing_cost", lambda: plots.smoothing_cost_figure(summary, model), f"{model} smoothing cost")
    page.how("smoothing_cost")
    page.table(summary, digits=4, index=False, fmt="g")


def _smoothing_seconds(run: Run, costs: pd.DataFrame, config: dict) -> dict[tuple, float]:
    """Seconds per grid of one K = 129 Gaussian convolution on the stored maps of each unit of a method the
    run smoothed (its S-method's extra cost)."""
    from attreval.smoothing import scaled_kernel_size

    reference = (config.get("evaluation") or {}).get("reference_side", 448)
    seconds = {}
    for r in costs[costs["method"].isin(smoothed_methods(run.results))].itertuples(index=False):
        try:
            shape = run.maps(r.model, r.setting, r.layer, r.method).shape
        except ValueError:
            continue  # maps not stored: the convolution is left out (negligible, see the how-to-read)
        kernel = scaled_kernel_size(PAPER_KERNEL_REF, shape[-1], reference)
        seconds[r.model, r.setting, r.layer, r.method] = cost_summary.time_smoothing(tuple(shape), kernel)
    return seconds
