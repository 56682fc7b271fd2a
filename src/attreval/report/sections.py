"""The report's sections of one model (median tables, box plots, smoothing, SmoothGrad sweep, correlations)
and of the whole run (metadata, the Tables 1–2 analogue). Each reads the run through ``page.run``."""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pandas as pd

import attreval.plots as plots
from attreval.analysis import correlation, smoothgrad_sweep, smoothing_curves
from attreval.analysis.conventions import reference_evaluation
from attreval.report.aggatt import aggatt_section
from attreval.report.page import Page
from attreval.report.statistics import statistics_section
from attreval.settings import SETTINGS
from attreval.summary import median_stats

#: Paired instances below which a Spearman ρ gets a note: its standard error under no correlation is
#: 1/√(n − 1), 0.19 at n = 30 (0.38 at n = 8).
MIN_RHO_PAIRS = 30


def metadata(page: Page, results: pd.DataFrame) -> None:
    page.heading(2, "Run metadata", "metadata")
    meta, config = page.run.meta, page.run.config_dict
    if meta is None:
        page.note("meta.json missing or unreadable: versions, device and timing unknown (unfinished run?).")
    else:
        rows: dict[str, Any] = {
            k: meta[k]
            for k in (
                "attreval",
                "torch",
                "python",
                "platform",
                "device",
                "device_name",
                "threads",
                "seed",
                "git_revision",
                "seconds",
                "resumed",
            )
            if k in meta
        }
        rows.update({k: v for k, v in meta.items() if k not in rows})
        if isinstance(rows.get("seconds"), (int, float)):
            rows["seconds"] = f"{rows['seconds']:.1f} s"
        page.table(pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows)))
    page.add(
        f"<p>{len(results)} result rows; models: {html.escape(', '.join(map(str, pd.unique(results['model']))))}; "
        f"settings: {html.escape(', '.join(map(str, pd.unique(results['setting']))))}.</p>"
    )
    if config is None:
        page.note("config.json missing: the run's configuration is unknown.")
    else:
        page.add(
            "<details><summary>Configuration (config.json)</summary><pre>"
            + html.escape(json.dumps(config, indent=2, sort_keys=True))
            + "</pre></details>"
        )


def grid_n(page: Page, results: pd.DataFrame) -> int:
    config = page.run.config_dict or {}
    n = config.get("grids", {}).get("n") if isinstance(config.get("grids"), dict) else None
    return int(n) if n else plots.infer_n(results)


def median_table(rows: pd.DataFrame, value: str = "score") -> pd.DataFrame:
    """:func:`attreval.summary.median_stats` for display: each cell as ``"0.923 (n=32)"`` (n maps)."""
    table, counts = median_stats(rows, value)
    return pd.DataFrame(
        [[_with_n(m, c) for m, c in zip(table.loc[i], counts.loc[i], strict=True)] for i in table.index],
        index=[plots.method_display(m) for m in table.index],
        columns=pd.MultiIndex.from_tuples([(plots.setting_display(s), layer) for s, layer in table.columns]),
    )


def _with_n(median: float, count: float) -> str:
    return "–" if not count or pd.isna(median) else f"{median:.3f} (n={int(count)})"


def model(page: Page, results: pd.DataFrame, model: str, cell: int) -> None:
    rows = results[results["model"] == model]
    n = grid_n(page, results)
    page.heading(2, f"Model {model}", f"model-{model}")
    statistics_section(page, model)
    _native(page, rows, model)
    page.heading(3, "Localization scores")
    page.figure(f"{model}__boxplots", lambda: plots.localization_boxplots(results, model, n=n), f"{model} box plots")
    page.how("boxplots")
    aggatt_section(page, results, model, cell)
    curves = smoothing_curves.smoothing_curves(results, model)
    smoothed = plots.method_order(curves.loc[curves["role"] == "curve", "method"])
    page.heading(3, "Smoothing" + (f" ({', '.join(f'S-{plots.method_display(m)}' for m in smoothed)})" if smoothed else ""))
    if curves.empty:
        page.note("no smoothed rows (kernel_size > 0) for this model: smoothing curves skipped.")
    else:
        page.figure(
            f"{model}__smoothing", lambda: plots.smoothing_curves_figure(curves, f"{model}: smoothing", n=n), f"{model} smoothing curves"
        )
        page.how("smoothing")
    _sweep(page, results, model, n)
    page.heading(3, "Correlation of per-instance scores (GridPG)")
    if not ((rows["setting"] == correlation.SETTING) & (rows["kernel_size"] == 0)).any():
        page.note("no GridPG results for this model: correlations skipped.")
        return
    matrix = correlation.method_layer_correlations(results, model)
    page.figure(
        f"{model}__correlation", lambda: plots.correlation_heatmap(matrix, f"{model}: Spearman ρ, GridPG"), f"{model} correlation heat map"
    )
    page.how("heatmap")
    pairs = _pair_counts(results, model)
    page.add(f'<p class="caption">Each ρ is over {_span(pairs)} paired instances (GridPG grid cells).</p>')
    _small_rho_note(page, pairs, n)
    page.add("<details><summary>Correlation matrix as a table</summary>")
    labelled = matrix.copy()
    labelled.index = labelled.columns = [plots.evaluation_label(*k) for k in matrix.columns]
    page.table(labelled, digits=2)
    page.add("</details>")


def _pair_counts(results: pd.DataFrame, model: str) -> list[int]:
    """Instances paired by every pair of the heat map's evaluations (pairwise-complete, as ρ is computed)."""
    table = correlation.score_table(results, model)
    finite = np.isfinite(table.to_numpy(dtype=np.float64)).astype(np.int64)
    counts = finite.T @ finite
    return counts[np.triu_indices(len(counts), 1)].tolist() or counts.ravel().tolist()


def _span(counts: list[int]) -> str:
    low, high = (min(counts), max(counts)) if counts else (0, 0)
    return f"n={low}" if low == high else f"n={low}–{high}"


def _small_rho_note(page: Page, pairs: list[int], n: int) -> None:
    if pairs and min(pairs) < MIN_RHO_PAIRS:
        page.note(
            f"small sample: ρ over as few as {min(pairs)} instances; under no correlation its standard error is "
            f"1/√(n − 1) = {1 / np.sqrt(max(min(pairs) - 1, 1)):.2f}, so read only large differences. Ask for "
            f"at least {MIN_RHO_PAIRS} instances: [grids] gridpg = {-(-MIN_RHO_PAIRS // (n * n))} or more "
            f"({n * n} instances per {n}×{n} grid)."
        )


def _native(page: Page, rows: pd.DataFrame, model: str) -> None:
    """DiFull below the input: upsampled vs native-resolution medians (the upsampling leak vs real leakage)."""
    separate = [name for name, cls in SETTINGS.items() if cls.separate_cells]  # DiFull
    hidden = rows[rows["setting"].isin(separate) & (rows["layer"] != "input") & (rows["kernel_size"] == 0)]
    if hidden.empty:
        return
    page.heading(3, "DiFull below the input: upsampling leak or real leakage? (n maps)")
    frames, missing = [], []
    for (setting, layer, method), _ in hidden.groupby(["setting", "layer", "method"], sort=False):
        try:
            frames.append(page.run.native_scores(model, setting, layer, method))
        except ValueError as err:
            missing.append(f"{plots.method_display(method)} at {layer} ({err})")
    if missing:
        page.note("native scores skipped (they need the stored maps): " + "; ".join(missing))
    if not frames:
        return
    both = pd.concat(frames, ignore_index=True)
    table = pd.concat({"upsampled (paper)": median_table(both, "score"), "native": median_table(both, "native")}, axis=1)
    page.table(table)
    page.how("native")


def _sweep(page: Page, results: pd.DataFrame, model: str, n: int) -> None:
    page.heading(3, "SmoothGrad noise sweep vs S-IntGrad / S-IxG (PAPER.md §6.3)")
    if page.run.config_dict is None:
        page.note("config.json missing: SmoothGrad noise levels unknown, sweep skipped.")
        return
    sweep = smoothgrad_sweep.smoothgrad_sweep(results, page.run.config, model)
    if sweep.empty:
        page.note('no SmoothGrad rows for this model (add smoothgrad or [variants.NAME] with method = "smoothgrad"): sweep skipped.')
        return
    page.figure(
        f"{model}__smoothgrad_sweep",
        lambda: plots.smoothgrad_sweep_figure(sweep, f"{model}: SmoothGrad noise sweep", n=n),
        f"{model} SmoothGrad sweep",
    )
    page.how("sweep")
    page.table(smoothgrad_sweep.sweep_table(sweep))


def correlation_tables(page: Page, results: pd.DataFrame) -> None:
    """The Tables 1–2 analogue over all models: ρ(reference, each smoothed method) per kernel size."""
    reference, layer = reference_evaluation()
    page.heading(2, "Grad-CAM (final) vs S-IntGrad / S-IxG (input) on GridPG: the Tables 1–2 analogue", "correlation")
    table = correlation.reference_table(results)
    if table.empty:
        page.note(f"needs GridPG rows for {reference} at the {layer} layer and smoothed methods (kernel_size > 0) at the input: skipped.")
        return
    shown = table.copy()
    shown.columns = ["Orig" if c == 0 else f"K={c}" for c in shown.columns]
    long = pd.concat(
        [
            correlation.reference_correlations(results, m)
            for m in pd.unique(results["model"])
            if ((results["model"] == m) & (results["setting"] == correlation.SETTING)).any()
        ],
        ignore_index=True,
    )
    pairs = {key: group["pairs"].tolist() for key, group in long.groupby(["method", "model"], sort=False)}
    shown["n instances"] = [_span(pairs.get(key, [])) for key in table.index]
    shown.index = pd.MultiIndex.from_tuples([(f"S-{plots.method_display(m)}", model) for m, model in shown.index])
    page.table(shown, digits=2)
    _small_rho_note(page, long["pairs"].tolist(), grid_n(page, results))
    page.figure("correlation_reference", lambda: plots.reference_correlation_figure(table), "Tables 1-2 analogue")
    page.how("reference")
