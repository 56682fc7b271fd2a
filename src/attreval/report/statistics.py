"""The report's statistics: medians with their bootstrap intervals, the tier table, and how many grids a run
needs (:mod:`attreval.analysis.statistics`)."""

from __future__ import annotations

import pandas as pd

import attreval.plots as plots
from attreval.analysis.conventions import LAYER_ORDER, SETTING_ORDER, method_order, position
from attreval.analysis.statistics import ALPHA, TARGET_HALF_WIDTH, sample_size, tiers
from attreval.report.page import Page

#: Column headers of the sample-size table (attreval.analysis.statistics.sample_size).
HEADERS = {
    "median_half_width": "median half-width",
    "max_half_width": "largest half-width",
    "grids_for_median_unit": "grids for the median unit",
    "grids_for_every_unit": "grids for every unit",
}


def _pivot(rows: pd.DataFrame, cell) -> pd.DataFrame:
    """``rows`` (one per method × setting × layer) as a method × (setting, layer) table of ``cell(row)`` strings."""
    columns = sorted(
        {(s, layer) for s, layer in zip(rows["setting"], rows["layer"])},
        key=lambda c: (position(c[0], SETTING_ORDER), position(c[1], LAYER_ORDER), c),
    )
    methods = method_order(pd.unique(rows["method"]))
    lookup = {(r.method, r.setting, r.layer): cell(r) for r in rows.itertuples()}
    return pd.DataFrame(
        [[lookup.get((m, s, layer), "–") for s, layer in columns] for m in methods],
        index=[plots.method_display(m) for m in methods],
        columns=pd.MultiIndex.from_tuples([(plots.setting_display(s), layer) for s, layer in columns]),
    )


def median_table(statistics: pd.DataFrame, model: str) -> pd.DataFrame:
    """Unsmoothed medians of ``model`` as ``"0.923 [0.901, 0.944] n=32"``: median, 95 % interval, maps."""
    rows = statistics[(statistics["model"] == model) & (statistics["kernel_ref"] == 0)]
    return _pivot(rows, lambda r: f"{r.median:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] n={int(r.n)}")


def tier_table(statistics: pd.DataFrame, comparisons: pd.DataFrame, model: str, alpha: float = ALPHA) -> pd.DataFrame:
    """Tier of every unsmoothed method of ``model`` per setting / layer (1 = not distinguishable from the best)."""
    stats = statistics[(statistics["model"] == model) & (statistics["kernel_ref"] == 0)]
    pairs = comparisons[(comparisons["model"] == model) & (comparisons["kernel_ref"] == 0)]
    return _pivot(tiers(stats, pairs, alpha), lambda r: str(int(r.tier)))


def statistics_section(page: Page, model: str) -> None:
    """Medians with intervals, the tier table and the sample-size advice of one model."""
    run = page.run
    page.heading(3, "Median localization score with 95 % bootstrap interval (unsmoothed; rows: method, columns: setting / layer; n maps)")
    page.table(median_table(run.statistics, model))
    page.how("intervals")
    page.heading(3, f"Which differences are real: tiers (paired Wilcoxon on the same maps, Holm-corrected, α = {ALPHA})")
    page.table(tier_table(run.statistics, run.comparisons, model))
    page.how("tiers")
    size = sample_size(run.statistics[run.statistics["model"] == model])
    if not size.empty:
        page.heading(3, f"How many grids: interval half-widths and the grids that would bring them under {TARGET_HALF_WIDTH}")
        shown = size.drop(columns="model").set_index("setting").rename(columns=HEADERS)
        shown.index = [plots.setting_display(s) for s in shown.index]
        page.table(shown, digits=3)
        page.how("sample_size")
