"""The report's AggAtt section of one model (PAPER.md §3): per setting and layer, the mean maps per score
bin and the bins' median examples, read through the run reader (:mod:`attreval.analysis.aggatt_run`)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd

import attreval.plots as plots
from attreval.analysis import aggatt_run
from attreval.analysis.aggatt import AggAtt
from attreval.analysis.conventions import PAPER_KERNEL_REF
from attreval.runs.reader import grid_kind

if TYPE_CHECKING:
    from attreval.report.page import Page

#: Maps an AggAtt needs so that its 2 % bins hold at least one map each (50 · 2 % = 1, §3.4).
MIN_AGGATT_MAPS = 50


def aggatt_section(page: Page, results: pd.DataFrame, model: str, cell: int) -> None:
    """Each method of each (setting, layer), unsmoothed and, where the run smoothed it, at the paper's
    qualitative kernel (K = 129 at 448 px, §6.1)."""
    rows = results[results["model"] == model]
    page.heading(3, f"AggAtt (target cell {cell})")
    page.how("aggatt")
    page.how("examples")
    for setting in plots.ordered(rows["setting"].unique(), plots.SETTING_ORDER):
        try:
            spec = aggatt_run.grid_spec(page.run, model, setting)
        except ValueError as err:
            page.note(f"{setting}: AggAtt skipped ({err})")
            continue
        for layer in plots.ordered(rows[rows["setting"] == setting]["layer"].unique(), plots.LAYER_ORDER):
            unit = rows[(rows["setting"] == setting) & (rows["layer"] == layer)]
            entries, missing = [], []
            for method in plots.method_order(unit["method"].unique()):
                variants = [(0, plots.method_display(method))]
                if ((unit["method"] == method) & (unit["kernel_ref"] == PAPER_KERNEL_REF)).any():
                    variants.append((PAPER_KERNEL_REF, f"S-{plots.method_display(method)} K={PAPER_KERNEL_REF}"))
                for kernel_ref, label in variants:
                    try:
                        a = aggatt_run.aggatt_from_run(
                            page.run, model, setting, layer, method, cell=cell, kernel_ref=kernel_ref, results=results, spec=spec
                        )
                        ex = aggatt_run.examples_from_run(
                            page.run, a, model, setting, layer, method, kernel_ref=kernel_ref, results=results
                        )
                    except ValueError as err:
                        missing.append(f"{label} ({err})")
                        continue
                    entries.append((label, a, ex))
            title = f"{model} · {plots.setting_display(setting)} · {layer}"
            page.heading(4, title)
            if missing:
                page.note("skipped: " + "; ".join(missing))
            if not entries:
                continue
            base = f"{model}__{setting}__{layer}"
            page.figure(
                f"{base}__aggatt", lambda: plots.aggatt_figure([(lab, a) for lab, a, _ in entries], f"AggAtt: {title}"), f"AggAtt {title}"
            )
            _caption(page, entries[0][1], model, setting)
            page.figure(
                f"{base}__examples", lambda: plots.aggatt_examples_figure(entries, f"AggAtt examples: {title}"), f"AggAtt examples {title}"
            )


def _caption(page: Page, a: AggAtt, model: str, setting: str) -> None:
    """Maps and most frequent target-cell classes per bin under an AggAtt figure, and a note when the
    unit has too few maps for its 2 % bins."""
    try:
        classes = aggatt_run.bin_classes(page.run, a, model, setting)
    except ValueError:
        classes = [[] for _ in a.bins]
    parts = []
    for b, top in zip(a.bins, classes, strict=True):
        names = ", ".join(f"{name} ×{count}" for name, count in top)
        parts.append(f"{b.label}: {b.size} map{'s' if b.size != 1 else ''}" + (f" ({names})" if names else ""))
    page.add('<p class="caption">Maps per bin (most frequent classes of the target cell): ' + html.escape("; ".join(parts)) + "</p>")
    count = sum(b.size for b in a.bins)
    if count < MIN_AGGATT_MAPS:
        key = grid_kind(setting)
        page.note(
            f"small sample: {count} maps of the target cell, so {sum(b.empty for b in a.bins)} of the "
            f"{len(a.bins)} bins are empty and the others hold few maps; the 2 % bins need ≥ {MIN_AGGATT_MAPS} "
            f"maps (one per grid): ask for [grids] {key} = {MIN_AGGATT_MAPS} or more."
        )
