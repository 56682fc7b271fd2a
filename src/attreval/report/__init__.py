"""A static HTML report of a run directory: ``RUN/report.html`` plus its figures in ``RUN/report/``.

The figures are separate PNG files referenced by relative links, not inlined base64: the HTML stays
small and quick to open, each figure can be used on its own (slides, papers), and re-running the report
rewrites files in place. Move or share the run directory as a whole (the links are relative, so it opens
from any location, from disk, with no server). A tiny inline script marks any figure that fails to load
(and counts them on ``<body data-broken-images>``), so a missing file is visible, not silent.

Works on partial runs: every piece (metadata, a setting, a layer, a method's maps, the grid file, GridPG
for correlations, smoothed rows) is used when present and replaced by a note when absent. Everything is
read through :func:`attreval.load_run`. Every statistic shows its sample size (n maps of a median, paired
instances of a Spearman ρ, maps per AggAtt bin), with a note where it is too small to read.

The page is built by :class:`~attreval.report.page.Page`; its sections are :mod:`~attreval.report.sections`
(metadata, median tables, box plots, smoothing, correlation), :mod:`~attreval.report.aggatt` and
:mod:`~attreval.report.costs`; the how-to-read texts are :mod:`~attreval.report.text`.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from attreval.report import sections
from attreval.report.costs import COSTS_FILE, cost_section, cost_sections
from attreval.report.page import FIGURE_DIR, Page
from attreval.runs.reader import load_run

__all__ = ["COSTS_FILE", "FIGURE_DIR", "cost_section", "write_report"]


def write_report(run_dir: str | Path, *, cell: int = 0, dpi: int = 90) -> Path:
    """Write ``run_dir/report.html`` (and its figures in ``run_dir/report/``); returns the HTML path.

    Args:
        run_dir: a run directory with at least ``results.parquet``.
        cell: the grid position of the AggAtt figures (PAPER.md §3: top-left, 0).
        dpi: figure resolution.
    """
    run = load_run(run_dir)
    # What the report reads must match the manifest (attreval.runs.manifest); a missing file becomes a note below.
    problems = run.problems()
    if problems:
        more = f" (and {len(problems) - 1} more: see attreval verify {run.root})" if len(problems) > 1 else ""
        raise ValueError(f"expected the files of {run.root} to match its manifest, got {problems[0]}{more}")
    results = run.results
    page = Page(run, dpi)
    models = list(pd.unique(results["model"]))
    page.heading(1, f"attreval report: {run.root.resolve().name}")
    page.add(
        "<p>Contents: "
        + " · ".join(
            ['<a href="#metadata">metadata</a>']
            + [f'<a href="#model-{html.escape(m)}">{html.escape(m)}</a>' for m in models]
            + ['<a href="#correlation">correlation</a>', '<a href="#costs">costs</a>']
        )
        + "</p>"
    )
    sections.metadata(page, results)
    for model in models:
        sections.model(page, results, model, cell)
    sections.correlation_tables(page, results)
    cost_sections(page)
    return page.write()
