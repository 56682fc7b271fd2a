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
"""
from __future__ import annotations

import html
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from attreval import plots
from attreval.analysis import aggatt as agg
from attreval.analysis import correlation, cost_summary, smoothgrad_sweep, smoothing_curves
from attreval.manifest import verify_run
from attreval.reader import Run, grid_kind, load_run
from attreval.settings import SETTINGS
from attreval.store import RunStore, atomic_write

log = logging.getLogger(__name__)

FIGURE_DIR = "report"
#: Hook for the cost analysis (PAPER.md §7): a table written by the cost step, shown when present.
COSTS_FILE = "costs.parquet"
#: Smoothed rows added to the AggAtt figures: the paper's qualitative kernel (K = 129 at 448 px, §6.1).
AGGATT_KERNEL_REF = 129
#: Maps an AggAtt needs so that its 2 % bins hold at least one map each (50 · 2 % = 1, §3.4).
MIN_AGGATT_MAPS = 50
#: Paired instances below which a Spearman ρ gets a note: its standard error under no correlation is
#: 1/√(n − 1), 0.19 at n = 30 (0.38 at n = 8).
MIN_RHO_PAIRS = 30

HOW_TO_READ = {
    "boxplots": "One box per method and layer (colour) over all evaluated maps: the box spans the middle half "
                "of the scores, the line is the median, whiskers reach 1.5 IQR (outliers not drawn). 1 means all "
                "positive attribution lies in the target cell; the lower dashed line is a uniform map (1/n²). "
                "In DiFull at the input layer, anything below 1 is attribution to cells the head cannot see "
                "(unfaithful). Below the input it is not: the maps are bilinearly upsampled to the grid image "
                "before they are scored (PAPER.md §1.5), which spreads even a map that is exactly zero outside "
                "its cell across the border (a 4×4 map scores 0.879, an 8×8 one 0.938). The DiFull native-"
                "resolution table below tells the two apart. A * marks a box whose scores are all equal.",
    "native": "DiFull below the input: the median score as the paper computes it (upsampled, then scored) next to "
              "the median score of the same maps at their own resolution, where each cell is whole pixels "
              "(Run.native_scores, attreval.metric.native_localization_score). A native score of 1 with an "
              "upsampled score below 1 is the upsampling leak, not unfaithfulness; a native score below 1 is "
              "attribution that really lies outside the cell the head can see. – where the map side is not a "
              "multiple of n (cells are not whole pixels there).",
    "aggatt": "Each row is one method; each column averages the (positive) maps of a slice of the instances "
              "sorted by score, best first: 0–2 % are the best localized, 98–100 % the worst. One colour scale "
              "per row (its 99.5th percentile), so rows show how strong the average attribution is in each bin. "
              "The blue square is the target cell. Green = positive attribution. Each bin's title gives its N maps "
              "(one per grid: the maps of the target cell); the line under the figure names the bins' most "
              "frequent classes.",
    "examples": "The instance at the median of each bin: the grid image (grey) and its map (each map on its own "
                "scale); the caption gives the grid, the target cell's class and its score. Use it to see what a "
                "typical map in each bin looks like.",
    "smoothing": "Median (line) and interquartile range (band) of S-IntGrad / S-IxG against the Gaussian kernel "
                 "size, expressed as the paper's size at 448 px (Orig = not smoothed). The dashed line is "
                 "final-layer Grad-CAM in the same setting; a dotted line is SmoothGrad at that layer. Kernels are "
                 "scaled to each map's side, so on small maps the smallest ones become 1 (no smoothing) and "
                 "repeat the Orig value.",
    "sweep": "SmoothGrad (15 noisy copies, PAPER.md §6.3) at each evaluated noise level σ (a fraction of each "
             "input's value range): median localization per base method. The star marks the best level, the one "
             "the paper reports. The dashed line is the base smoothed with a Gaussian instead (S-IntGrad / S-IxG, "
             "K = 129 at 448 px), the dotted line the unsmoothed base. The paper finds the S-methods much better "
             "on GridPG except IxG on ResNet18, and slightly worse on DiFull (leakage across cell borders).",
    "costs": "Measured cost of each unit, per grid image, on a log scale: wall-clock seconds (this machine, "
             "includes the smoothing and scoring of the unit) and network passes, counted as the rows pushed "
             "forward plus the backward passes (a backward costs about one forward). Gradient methods on GridPG "
             "and DiPart run one forward per image and one backward per target; a DiFull row runs one head's "
             "cell only. GridPG attributes its n² cells, DiFull / DiPart only the corner heads.",
    "smoothing_cost": "The cost of smoothing against SmoothGrad (PAPER.md §7): an S-method makes the passes of its "
                      "base plus one Gaussian convolution per map (timed here on the unit's maps, no network pass); "
                      "SmoothGrad makes num_samples (15) times the base's passes.",
    "heatmap": "Spearman rank correlation of the per-instance GridPG scores of every pair of (method, layer), "
               "paired on grid and cell. High ρ: the two evaluations find the same instances easy and hard. "
               "Black lines separate layers.",
    "reference": "The Table 1/2 analogue: Spearman ρ between final-layer Grad-CAM and input-layer S-IntGrad / "
                 "S-IxG scores on GridPG, per kernel size (Orig = not smoothed); one row per method and model. "
                 "The paper finds ρ rising with the kernel for S-IntGrad on both of its models (0.34 → 0.80 on "
                 "VGG11) and for S-IxG on VGG11 only.",
}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; } th { background: #f3f3f3; }
img { max-width: 100%; display: block; margin: .5em 0; border: 1px solid #eee; }
img.broken { border: 2px solid red; min-height: 2em; }
.note { color: #8a6d3b; background: #fcf8e3; padding: .3em .6em; border-left: 3px solid #e0c060; }
.how { color: #444; font-size: 14px; max-width: 900px; }
.caption { color: #444; font-size: 13px; max-width: 1100px; margin-top: -.2em; }
pre { background: #f7f7f7; padding: .5em; overflow-x: auto; font-size: 12px; }
"""

# Marks figures that did not load (red border, alt text, console error) and counts them on <body>.
SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!(images[i].complete && images[i].naturalWidth > 0)) {
      broken++;
      images[i].classList.add("broken");
      images[i].alt = "missing figure: " + images[i].getAttribute("src");
      console.error("attreval report: missing figure " + images[i].getAttribute("src"));
    }
  }
  document.body.setAttribute("data-images", images.length);
  document.body.setAttribute("data-broken-images", broken);
});
"""


@dataclass
class _Report:
    """Accumulates HTML and figure files while the report is built."""

    store: RunStore
    dpi: int
    run: Run | None = None
    parts: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, level: int, text: str, anchor: str | None = None) -> None:
        ident = f' id="{html.escape(anchor)}"' if anchor else ""
        self.add(f"<h{level}{ident}>{html.escape(text)}</h{level}>")

    def note(self, text: str) -> None:
        log.info("report: %s", text)
        self.add(f'<p class="note">{html.escape(text)}</p>')

    def how(self, key: str) -> None:
        self.add(f'<p class="how"><b>How to read.</b> {html.escape(HOW_TO_READ[key])}</p>')

    def table(self, frame: pd.DataFrame, digits: int = 3) -> None:
        self.add(frame.to_html(float_format=lambda v: f"{v:.{digits}f}", na_rep="–", border=0))

    def figure(self, name: str, make, alt: str) -> None:
        """Render ``make()`` to ``report/NAME.png`` and link it; a ``ValueError`` becomes a note."""
        try:
            fig = make()
        except ValueError as err:
            self.note(f"{alt}: skipped ({err})")
            return
        filename = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".png"
        path = plots.save(fig, self.store.root / FIGURE_DIR / filename, dpi=self.dpi)
        self.figures.append(path)
        self.add(f'<img src="{FIGURE_DIR}/{quote(filename)}" alt="{html.escape(alt)}">')


def write_report(run_dir: str | Path, *, cell: int = 0, dpi: int = 90) -> Path:
    """Write ``run_dir/report.html`` (and its figures in ``run_dir/report/``); returns the HTML path.

    Args:
        run_dir: a run directory with at least ``results.parquet``.
        cell: the grid position of the AggAtt figures (PAPER.md §3: top-left, 0).
        dpi: figure resolution.
    """
    # What the report reads must match the manifest (attreval.manifest); a missing file becomes a note below.
    problems = verify_run(RunStore(run_dir).root, missing_ok=True)
    if problems:
        root = RunStore(run_dir).root
        more = f" (and {len(problems) - 1} more: see attreval verify {root})" if len(problems) > 1 else ""
        raise ValueError(f"expected the files of {root} to match its manifest, got {problems[0]}{more}")
    run = load_run(run_dir)
    store = run.store
    results = run.results
    report = _Report(store, dpi, run)
    models = list(pd.unique(results["model"]))
    report.heading(1, f"attreval report: {store.root.resolve().name}")
    report.add("<p>Contents: " + " · ".join(
        ['<a href="#metadata">metadata</a>'] + [f'<a href="#model-{html.escape(m)}">{html.escape(m)}</a>' for m in models]
        + ['<a href="#correlation">correlation</a>', '<a href="#costs">costs</a>']) + "</p>")
    _metadata(report, results)
    for model in models:
        _model(report, results, model, cell)
    _correlation_tables(report, results)
    _costs(report, results)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>attreval report</title>'
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head>\n<body>\n" + "\n".join(report.parts) + "\n</body></html>\n")
    _remove_stale(store.root / FIGURE_DIR, report.figures)
    out = store.root / "report.html"
    atomic_write(out, lambda p: p.write_text(page, encoding="utf-8"))
    return out


def _remove_stale(folder: Path, kept: list[Path]) -> None:
    keep = {p.name for p in kept}
    for path in folder.glob("*.png") if folder.exists() else ():
        if path.name not in keep:
            path.unlink()


def _metadata(report: _Report, results: pd.DataFrame) -> None:
    report.heading(2, "Run metadata", "metadata")
    meta, config = report.run.meta, report.run.config_dict
    if meta is None:
        report.note("meta.json missing or unreadable: versions, device and timing unknown (unfinished run?).")
    else:
        rows = {k: meta[k] for k in ("attreval", "torch", "python", "platform", "device", "device_name", "threads",
                                     "seed", "git_revision", "seconds", "resumed") if k in meta}
        rows.update({k: v for k, v in meta.items() if k not in rows})
        if isinstance(rows.get("seconds"), (int, float)):
            rows["seconds"] = f"{rows['seconds']:.1f} s"
        report.table(pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows)))
    report.add(f"<p>{len(results)} result rows; models: {html.escape(', '.join(map(str, pd.unique(results['model']))))}; "
               f"settings: {html.escape(', '.join(map(str, pd.unique(results['setting']))))}.</p>")
    if config is None:
        report.note("config.json missing: the run's configuration is unknown.")
    else:
        report.add("<details><summary>Configuration (config.json)</summary><pre>"
                   + html.escape(json.dumps(config, indent=2, sort_keys=True)) + "</pre></details>")


def _grid_n(report: _Report, results: pd.DataFrame) -> int:
    config = report.run.config_dict or {}
    n = config.get("grids", {}).get("n") if isinstance(config.get("grids"), dict) else None
    return int(n) if n else plots.infer_n(results)


def _median_table(rows: pd.DataFrame, value: str = "score") -> pd.DataFrame:
    """Median of ``value`` per method × (setting, layer), each cell as ``"0.923 (n=32)"`` (n maps)."""
    stats = rows.pivot_table(index="method", columns=["setting", "layer"], values=value, aggfunc=["median", "count"])
    table, counts = stats["median"], stats["count"]
    columns = sorted(table.columns, key=lambda c: (_rank(c[0], plots.SETTING_ORDER), _rank(c[1], plots.LAYER_ORDER), c))
    index = plots.method_order(table.index)
    table = table.reindex(index=index, columns=pd.MultiIndex.from_tuples(columns))
    counts = counts.reindex(index=index, columns=pd.MultiIndex.from_tuples(columns))
    shown = pd.DataFrame(
        [[_with_n(m, c) for m, c in zip(table.loc[i], counts.loc[i])] for i in index],
        index=[plots.method_display(m) for m in index],
        columns=pd.MultiIndex.from_tuples([(plots.setting_display(s), layer) for s, layer in table.columns]),
    )
    return shown


def _with_n(median: float, count: float) -> str:
    return "–" if not count or pd.isna(median) else f"{median:.3f} (n={int(count)})"


def _rank(value: str, order: tuple[str, ...]) -> int:
    return order.index(value) if value in order else len(order)


def _model(report: _Report, results: pd.DataFrame, model: str, cell: int) -> None:
    rows = results[results["model"] == model]
    n = _grid_n(report, results)
    report.heading(2, f"Model {model}", f"model-{model}")
    report.heading(3, "Median localization score (unsmoothed; rows: method, columns: setting / layer; n maps)")
    report.table(_median_table(rows[rows["kernel_size"] == 0]))
    _native(report, rows, model)
    report.heading(3, "Localization scores")
    report.figure(f"{model}__boxplots", lambda: plots.localization_boxplots(results, model, n=n), f"{model} box plots")
    report.how("boxplots")
    _aggatt(report, results, model, cell)
    report.heading(3, "Smoothing (S-IntGrad, S-IxG)")
    curves = smoothing_curves.smoothing_curves(results, model)
    if curves.empty:
        report.note("no smoothed rows (kernel_size > 0) for this model: smoothing curves skipped.")
    else:
        report.figure(f"{model}__smoothing", lambda: plots.smoothing_curves_figure(curves, f"{model}: smoothing", n=n),
                      f"{model} smoothing curves")
        report.how("smoothing")
    _sweep(report, results, model, n)
    report.heading(3, "Correlation of per-instance scores (GridPG)")
    if not ((rows["setting"] == correlation.SETTING) & (rows["kernel_size"] == 0)).any():
        report.note("no GridPG results for this model: correlations skipped.")
        return
    matrix = correlation.method_layer_correlations(results, model)
    report.figure(f"{model}__correlation", lambda: plots.correlation_heatmap(matrix, f"{model}: Spearman ρ, GridPG"),
                  f"{model} correlation heat map")
    report.how("heatmap")
    pairs = _pair_counts(results, model)
    report.add(f'<p class="caption">Each ρ is over {_span(pairs)} paired instances (GridPG grid cells).</p>')
    _small_rho_note(report, pairs, n)
    report.add("<details><summary>Correlation matrix as a table</summary>")
    labelled = matrix.copy()
    labelled.index = labelled.columns = [plots.evaluation_label(*k) for k in matrix.columns]
    report.table(labelled, digits=2)
    report.add("</details>")


def _pair_counts(results: pd.DataFrame, model: str) -> list[int]:
    """Instances paired by every pair of the heat map's evaluations (pairwise-complete, as ρ is computed)."""
    table = correlation.score_table(results, model)
    finite = np.isfinite(table.to_numpy(dtype=np.float64)).astype(np.int64)
    counts = finite.T @ finite
    return counts[np.triu_indices(len(counts), 1)].tolist() or counts.ravel().tolist()


def _span(counts: list[int]) -> str:
    low, high = (min(counts), max(counts)) if counts else (0, 0)
    return f"n={low}" if low == high else f"n={low}–{high}"


def _small_rho_note(report: _Report, pairs: list[int], n: int) -> None:
    if pairs and min(pairs) < MIN_RHO_PAIRS:
        report.note(f"small sample: ρ over as few as {min(pairs)} instances; under no correlation its standard error is "
                    f"1/√(n − 1) = {1 / np.sqrt(max(min(pairs) - 1, 1)):.2f}, so read only large differences. Ask for "
                    f"at least {MIN_RHO_PAIRS} instances: [grids] gridpg = {-(-MIN_RHO_PAIRS // (n * n))} or more "
                    f"({n * n} instances per {n}×{n} grid).")


def _native(report: _Report, rows: pd.DataFrame, model: str) -> None:
    """DiFull below the input: upsampled vs native-resolution medians (the upsampling leak vs real leakage)."""
    separate = [name for name, cls in SETTINGS.items() if cls.separate_cells]  # DiFull
    hidden = rows[rows["setting"].isin(separate) & (rows["layer"] != "input") & (rows["kernel_size"] == 0)]
    if hidden.empty:
        return
    report.heading(3, "DiFull below the input: upsampling leak or real leakage? (n maps)")
    frames, missing = [], []
    for (setting, layer, method), _ in hidden.groupby(["setting", "layer", "method"], sort=False):
        try:
            frames.append(report.run.native_scores(model, setting, layer, method))
        except ValueError as err:
            missing.append(f"{plots.method_display(method)} at {layer} ({err})")
    if missing:
        report.note("native scores skipped (they need the stored maps): " + "; ".join(missing))
    if not frames:
        return
    both = pd.concat(frames, ignore_index=True)
    table = pd.concat({"upsampled (paper)": _median_table(both, "score"), "native": _median_table(both, "native")}, axis=1)
    report.table(table)
    report.how("native")


def _sweep(report: _Report, results: pd.DataFrame, model: str, n: int) -> None:
    report.heading(3, "SmoothGrad noise sweep vs S-IntGrad / S-IxG (PAPER.md §6.3)")
    if report.run.config_dict is None:
        report.note("config.json missing: SmoothGrad noise levels unknown, sweep skipped.")
        return
    sweep = smoothgrad_sweep.smoothgrad_sweep(results, report.run.config, model)
    if sweep.empty:
        report.note("no SmoothGrad rows for this model (add smoothgrad or [variants.NAME] with method = \"smoothgrad\"): sweep skipped.")
        return
    report.figure(f"{model}__smoothgrad_sweep", lambda: plots.smoothgrad_sweep_figure(sweep, f"{model}: SmoothGrad noise sweep", n=n),
                  f"{model} SmoothGrad sweep")
    report.how("sweep")
    report.table(smoothgrad_sweep.sweep_table(sweep))


def _costs(report: _Report, results: pd.DataFrame) -> None:
    report.add(cost_section(report.store.root))
    path = report.store.root / COSTS_FILE
    try:
        costs = pd.read_parquet(path) if path.exists() else None
    except (OSError, ValueError):
        costs = None
    if costs is None or costs.empty or not {"forward_passes", "backward_passes", "seconds_per_grid"} <= set(costs.columns):
        return
    for model in pd.unique(costs["model"]):
        report.figure(f"{model}__costs", lambda: plots.cost_figure(costs, model), f"{model} costs")
    report.how("costs")
    config = report.run.config_dict or {}
    summary = cost_summary.smoothing_vs_smoothgrad(costs, smoothgrad_sweep.smoothgrad_points(config),
                                                   _smoothing_seconds(report.store, costs, config))
    report.heading(3, "Smoothing vs SmoothGrad")
    if summary.empty:
        report.note("no SmoothGrad units with a base method in this run: smoothing-vs-SmoothGrad cost skipped.")
        return
    for model in pd.unique(summary["model"]):
        report.figure(f"{model}__smoothing_cost", lambda: plots.smoothing_cost_figure(summary, model), f"{model} smoothing cost")
    report.how("smoothing_cost")
    report.add(summary.to_html(float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, index=False))


def _smoothing_seconds(store: RunStore, costs: pd.DataFrame, config: dict) -> dict[tuple, float]:
    """Seconds per grid of one K = 129 Gaussian convolution on each base unit's stored maps."""
    from attreval.smoothing import scaled_kernel_size

    reference = (config.get("evaluation") or {}).get("reference_side", 448)
    seconds = {}
    for r in costs[costs["method"].isin(["int_grad", "input_x_grad"])].itertuples(index=False):
        try:
            shape = store.maps(r.model, r.setting, r.layer, r.method).shape
        except ValueError:
            continue  # maps not stored: the convolution is left out (negligible, see the how-to-read)
        kernel = scaled_kernel_size(AGGATT_KERNEL_REF, shape[-1], reference)
        seconds[r.model, r.setting, r.layer, r.method] = cost_summary.time_smoothing(tuple(shape), kernel)
    return seconds


def _aggatt(report: _Report, results: pd.DataFrame, model: str, cell: int) -> None:
    rows = results[results["model"] == model]
    report.heading(3, f"AggAtt (target cell {cell})")
    report.how("aggatt")
    report.how("examples")
    for setting in plots.ordered(rows["setting"].unique(), plots.SETTING_ORDER):
        try:
            geometry = agg.grid_geometry(report.run, model, setting)
        except ValueError as err:
            report.note(f"{setting}: AggAtt skipped ({err})")
            continue
        for layer in plots.ordered(rows[rows["setting"] == setting]["layer"].unique(), plots.LAYER_ORDER):
            unit = rows[(rows["setting"] == setting) & (rows["layer"] == layer)]
            entries, missing = [], []
            for method in plots.method_order(unit["method"].unique()):
                variants = [(0, plots.method_display(method))]
                if ((unit["method"] == method) & (unit["kernel_ref"] == AGGATT_KERNEL_REF)).any():
                    variants.append((AGGATT_KERNEL_REF, f"S-{plots.method_display(method)} K={AGGATT_KERNEL_REF}"))
                for kernel_ref, label in variants:
                    try:
                        a = agg.aggatt_from_run(report.run, model, setting, layer, method, cell=cell,
                                                kernel_ref=kernel_ref, results=results, geometry=geometry)
                        ex = agg.examples_from_run(report.run, a, model, setting, layer, method,
                                                   kernel_ref=kernel_ref, results=results)
                    except ValueError as err:
                        missing.append(f"{label} ({err})")
                        continue
                    entries.append((label, a, ex))
            title = f"{model} · {plots.setting_display(setting)} · {layer}"
            report.heading(4, title)
            if missing:
                report.note("skipped: " + "; ".join(missing))
            if not entries:
                continue
            base = f"{model}__{setting}__{layer}"
            report.figure(f"{base}__aggatt", lambda: plots.aggatt_figure([(lab, a) for lab, a, _ in entries], f"AggAtt: {title}"),
                          f"AggAtt {title}")
            _aggatt_caption(report, entries[0][1], model, setting)
            report.figure(f"{base}__examples", lambda: plots.aggatt_examples_figure(entries, f"AggAtt examples: {title}"),
                          f"AggAtt examples {title}")


def _aggatt_caption(report: _Report, a: agg.AggAtt, model: str, setting: str) -> None:
    """Maps and most frequent target-cell classes per bin under an AggAtt figure, and a note when the
    unit has too few maps for its 2 % bins."""
    try:
        classes = agg.bin_classes(report.run, a, model, setting)
    except ValueError:
        classes = [[] for _ in a.bins]
    parts = []
    for b, top in zip(a.bins, classes):
        names = ", ".join(f"{name} ×{count}" for name, count in top)
        parts.append(f"{b.label}: {b.size} map{'s' if b.size != 1 else ''}" + (f" ({names})" if names else ""))
    report.add('<p class="caption">Maps per bin (most frequent classes of the target cell): '
               + html.escape("; ".join(parts)) + "</p>")
    count = sum(b.size for b in a.bins)
    if count < MIN_AGGATT_MAPS:
        key = grid_kind(setting)
        report.note(f"small sample: {count} maps of the target cell, so {sum(b.empty for b in a.bins)} of the "
                    f"{len(a.bins)} bins are empty and the others hold few maps; the 2 % bins need ≥ {MIN_AGGATT_MAPS} "
                    f"maps (one per grid): ask for [grids] {key} = {MIN_AGGATT_MAPS} or more.")


def _correlation_tables(report: _Report, results: pd.DataFrame) -> None:
    report.heading(2, "Grad-CAM (final) vs S-IntGrad / S-IxG (input) on GridPG: the Tables 1–2 analogue", "correlation")
    table = correlation.reference_table(results)
    if table.empty:
        report.note("needs GridPG rows for grad_cam at the final layer and int_grad / input_x_grad at the input: skipped.")
        return
    shown = table.copy()
    shown.columns = ["Orig" if c == 0 else f"K={c}" for c in shown.columns]
    long = pd.concat([correlation.reference_correlations(results, m) for m in pd.unique(results["model"])
                      if ((results["model"] == m) & (results["setting"] == correlation.SETTING)).any()], ignore_index=True)
    pairs = {key: group["pairs"].tolist() for key, group in long.groupby(["method", "model"], sort=False)}
    shown["n instances"] = [_span(pairs.get(key, [])) for key in table.index]
    shown.index = pd.MultiIndex.from_tuples([(f"S-{plots.method_display(m)}", model) for m, model in shown.index])
    report.table(shown, digits=2)
    _small_rho_note(report, long["pairs"].tolist(), _grid_n(report, results))
    report.figure("correlation_reference", lambda: plots.reference_correlation_figure(table), "Tables 1-2 analogue")
    report.how("reference")


def cost_section(run_dir: Path) -> str:
    """HTML of the cost section: ``run_dir/costs.parquet`` as a table when present (PAPER.md §7).

    This is the hook for the cost analysis: whatever writes ``costs.parquet`` (one row per measured
    item, any columns) appears here on the next ``attreval report``.
    """
    path = Path(run_dir) / COSTS_FILE
    head = '<h2 id="costs">Computational cost</h2>'
    if not path.exists():
        return head + f'<p class="note">no {COSTS_FILE} in this run directory: cost section empty.</p>'
    try:
        costs = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        return head + f'<p class="note">{html.escape(COSTS_FILE)} unreadable ({html.escape(str(err))}).</p>'
    return head + costs.to_html(float_format=lambda v: f"{v:.4g}", na_rep="–", border=0, index=False)
