"""The HTML report of a run directory, from a synthetic run written with the store's own API.

The browser test opens the report in headless Chromium (skipped when ``/usr/bin/chromium`` is absent)
and checks that every figure loaded and the console stayed clean.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import attreval
from attreval.analysis import aggatt as agg
from attreval.analysis import aggatt_run
from attreval.data.grids import GridDataset
from attreval.grid import GridSpec
from attreval.metric import localization_parts, score_from_parts
from attreval.report import write_report
from attreval.runs.store import COLUMNS, RunStore, Unit
from attreval.smoothing import scaled_kernel_size, smooth_maps

pytestmark = pytest.mark.slow  # end-to-end runs and the report: left out of `make test-fast`

CHROMIUM = Path("/usr/bin/chromium")
N, CELL, CHANNELS = 2, 8, 1
SIDES = {"input": 16, "middle": 8, "final": 4}
KERNEL_REFS = (9, 17, 33, 65, 129, 257)
SMOOTHED = ("int_grad", "input_x_grad")
CLASS_NAMES = tuple(f"class{c}_name" for c in range(10))


def _maps(
    rng: np.random.Generator, grids: int, cells: list[int], side: int, strength: float, noise: float, disconnected: bool
) -> torch.Tensor:
    """``(G, T, side, side)`` signed maps: a blob of per-grid random strength in each target cell plus noise
    (zero outside the cell when ``disconnected``, as a gradient in DiFull)."""
    h = side // N
    out = rng.normal(0.0, noise, size=(grids, len(cells), side, side)).astype(np.float32)
    for t, cell in enumerate(cells):
        r, c = divmod(cell, N)
        weight = rng.uniform(0, strength, size=(grids, 1, 1))
        out[:, t, r * h : (r + 1) * h, c * h : (c + 1) * h] += weight * rng.uniform(0.5, 1, size=(grids, h, h))
        if disconnected:
            keep = np.zeros((side, side), bool)
            keep[r * h : (r + 1) * h, c * h : (c + 1) * h] = True
            out[:, t] *= keep
    return torch.from_numpy(out)


def _rows(unit: Unit, maps: torch.Tensor, cells: list[int], labels: torch.Tensor, size) -> pd.DataFrame:
    g, t = maps.shape[:2]
    cell_tensor = torch.tensor(cells).expand(g, -1)
    variants = [(0, 0)]
    if unit.method in SMOOTHED:
        variants += [(scaled_kernel_size(k, maps.shape[-1], 448), k) for k in KERNEL_REFS]
    frames = []
    for kernel, ref in variants:
        inside, total = localization_parts(maps if kernel == 0 else smooth_maps(maps, kernel), N, cell_tensor, size)
        frames.append(
            pd.DataFrame(
                {
                    "model": unit.model,
                    "setting": unit.setting,
                    "layer": unit.layer,
                    "stage": unit.layer,
                    "method": unit.method,
                    "kernel_size": kernel,
                    "kernel_ref": ref,
                    "grid": np.repeat(np.arange(g), t),
                    "cell": np.tile(cells, g),
                    "head": np.tile(cells if unit.setting != "gridpg" else [0] * t, g),
                    "label": labels[:, cells].reshape(-1).numpy(),
                    "class_name": [CLASS_NAMES[c] for c in labels[:, cells].reshape(-1).tolist()],
                    "score": score_from_parts(inside, total).reshape(-1).numpy(),
                    "inside": inside.reshape(-1).numpy(),
                    "total": total.reshape(-1).numpy(),
                }
            )[COLUMNS]
        )
    return pd.concat(frames, ignore_index=True)


def make_synthetic_run(
    root: Path,
    *,
    settings=("gridpg", "difull"),
    models=("toy_vgg",),
    methods=("grad", "int_grad", "input_x_grad", "grad_cam"),
    layers=("input", "final"),
    skip=(),
    no_maps=(),
    grids=(50, 50),
) -> RunStore:
    """A small run directory: 16×16 grids of 8×8 cells (n=2), maps at 16/8/4 px, smoothed rows for
    int_grad/input_x_grad, written with :class:`RunStore`. ``skip``: (setting, layer, method) units left
    out; ``no_maps``: units whose maps are not stored."""
    store, rng = RunStore(root), np.random.default_rng(0)
    spec = GridSpec(N, CELL, CELL)
    (root / "grids").mkdir(parents=True, exist_ok=True)
    for model in models:
        for kind, count in zip(("gridpg", "disconnected"), grids, strict=False):
            gen = torch.Generator().manual_seed(len(kind))
            labels = torch.stack([torch.randperm(10, generator=gen)[: N * N] for _ in range(count)])
            images = torch.randn(count, CHANNELS, N * CELL, N * CELL, generator=gen)
            grid_set = GridDataset(images, labels, labels.clone(), spec, kind != "gridpg", 0, CLASS_NAMES)
            store.save_grids(store.grid_path(model, kind), grid_set, {})  # recorded: a run's readers refuse unrecorded files
    units = []
    for model in models:
        for setting in settings:
            count = grids[0] if setting == "gridpg" else grids[1]
            cells = list(range(N * N)) if setting == "gridpg" else [0, N * N - 1]
            labels = GridDataset.load(store.grid_path(model, "gridpg" if setting == "gridpg" else "disconnected")).labels
            for layer in layers:
                for i, method in enumerate(methods):
                    if (setting, layer, method) in skip:
                        continue
                    unit = Unit(model, setting, layer, method)
                    disconnected = setting == "difull" and method == "grad"
                    maps = _maps(rng, count, cells, SIDES[layer], 1.0 + i, 0.3 + 0.2 * i, disconnected)
                    rows = _rows(unit, maps, cells, labels, (N * CELL, N * CELL))
                    store.write_unit(unit, rows, None if (setting, layer, method) in no_maps else maps.numpy())
                    units.append(unit)
    store.merge(units)
    store.write_json("config.json", {"seed": 0, "grids": {"n": N}, "evaluation": {"settings": list(settings)}})
    store.write_json(
        "meta.json", {"attreval": "0.1.0", "torch": torch.__version__, "device": "cpu", "seed": 0, "seconds": 1.5, "python": "3.x"}
    )
    return store


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[RunStore, Path]:
    store = make_synthetic_run(tmp_path_factory.mktemp("run"))
    return store, write_report(store.root, dpi=60)


def _images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_report_has_every_figure_and_table(full_run):
    store, out = full_run
    page = out.read_text()
    assert out == store.root / "report.html"
    images = _images(page)
    expected = {"toy_vgg__boxplots.png", "toy_vgg__smoothing.png", "toy_vgg__correlation.png", "correlation_reference.png"}
    expected |= {
        f"toy_vgg__{s}__{lay}__{kind}.png" for s in ("gridpg", "difull") for lay in ("input", "final") for kind in ("aggatt", "examples")
    }
    assert {Path(src).name for src in images} == expected
    for src in images:  # relative links to existing PNG files
        assert not src.startswith(("/", "file:", "data:"))
        path = store.root / src
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (store.root / "report").iterdir()) == sorted(expected)
    # tables: metadata, medians per method × setting/layer, correlations, Tables 1–2 analogue, cost hook
    for text in (
        "Run metadata",
        torch.__version__,
        "Median localization score",
        "Grad-CAM",
        "IntGrad",
        "GridPG",
        "DiFull",
        "Spearman",
        "S-IntGrad",
        "S-IxG",
        "Orig",
        "K=129",
        "Computational cost",
        "costs.parquet",
        "How to read",
    ):
        assert text in page, text
    # metadata, medians, correlation matrix, Tables 1–2 analogue
    assert page.count("<table") >= 4


def test_median_table_matches_results(full_run):
    store, out = full_run
    results = store.results()
    page = out.read_text()
    rows = results[
        (results["method"] == "grad_cam") & (results["setting"] == "difull") & (results["layer"] == "final") & (results["kernel_size"] == 0)
    ]
    assert f"{rows['score'].median():.3f}" in page


def test_median_tables_show_intervals_tiers_and_grids_needed(full_run):
    store, out = full_run
    page = out.read_text()
    stats = attreval.load_run(store.root).statistics
    row = stats[
        (stats["method"] == "grad_cam") & (stats["setting"] == "difull") & (stats["layer"] == "final") & (stats["kernel_ref"] == 0)
    ].iloc[0]
    assert f"{row['median']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] n={int(row['n'])}" in page
    assert row["ci_low"] <= row["median"] <= row["ci_high"]
    assert "Which differences are real: tiers" in page and "How many grids" in page


def test_partial_run_skips_with_notes(tmp_path):
    make_synthetic_run(
        tmp_path,
        settings=("difull",),
        methods=("grad", "grad_cam"),
        layers=("input", "final"),
        skip={("difull", "final", "grad")},
        no_maps={("difull", "input", "grad_cam")},
    )
    (tmp_path / "meta.json").unlink()
    out = write_report(tmp_path)
    page = out.read_text()
    assert "meta.json missing" in page
    assert "no GridPG results for this model: correlations skipped" in page
    assert "no smoothed rows" in page
    assert "expected stored maps" in page  # the method without maps is named in a note
    assert "needs GridPG rows" in page
    for src in _images(page):
        assert (tmp_path / src).exists()


def test_no_global_matplotlib_state():
    """Figures use the object API: no backend switch, no pyplot (house style: no import-time side effects)."""
    import attreval.plots
    import attreval.report

    files = [f for package in (attreval.plots, attreval.report) for f in Path(package.__file__).parent.glob("*.py")]
    assert len(files) >= 10  # both are packages of several modules: every one is read
    for path in files:
        source = path.read_text()
        assert not re.search(r"matplotlib\.use\(|import matplotlib\.pyplot|from matplotlib import pyplot", source), path


def test_cost_hook_renders_costs_parquet(tmp_path):
    store = make_synthetic_run(tmp_path, settings=("gridpg",), methods=("grad",), layers=("input",))
    costs = pd.DataFrame({"method": ["grad"], "seconds": [0.25]})
    store._write(tmp_path / "costs.parquet", lambda p: costs.to_parquet(p))  # recorded, as a run writes it
    page = write_report(store.root).read_text()
    assert "Computational cost" in page and "0.25" in page


def test_aggatt_from_run_uses_stored_scores_and_columns(full_run):
    store, _ = full_run
    results = store.results()
    a = aggatt_run.aggatt_from_run(store, "toy_vgg", "difull", "input", "grad", cell=3, results=results)
    rows = results[
        (results["setting"] == "difull")
        & (results["layer"] == "input")
        & (results["method"] == "grad")
        & (results["kernel_size"] == 0)
        & (results["cell"] == 3)
    ].sort_values("grid")
    np.testing.assert_array_equal(a.scores, rows["score"].to_numpy(np.float32))
    assert (a.scores == 1).all()  # disconnected grad: every score is exactly 1, so order is by inside mass
    assert np.all(np.diff(a.inside[a.order]) <= 0)
    maps = store.maps("toy_vgg", "difull", "input", "grad")[:, 1]  # cell 3 is column 1 (heads 0, 3)
    recomputed = agg.aggatt(maps, 2, 3)
    np.testing.assert_allclose(recomputed.maps, a.maps, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expected a cell among"):
        aggatt_run.aggatt_from_run(store, "toy_vgg", "difull", "input", "grad", cell=1, results=results)


def test_report_shows_sample_sizes_class_names_and_the_hidden_layer_note(full_run):
    store, out = full_run
    page = out.read_text()
    results = store.results()
    gridpg = results[
        (results["setting"] == "gridpg") & (results["method"] == "grad") & (results["layer"] == "input") & (results["kernel_size"] == 0)
    ]
    assert re.search(rf"{gridpg['score'].median():.3f} \[[0-9.]+, [0-9.]+\] n={len(gridpg)}<", page)  # median tables: interval, n maps
    assert "Each ρ is over n=200 paired instances" in page  # 50 grids × 4 cells
    assert re.search(r"n instances</th>", page) and "n=200" in page
    assert "0–2%: 1 map (class" in page and "Maps per bin" in page  # 50 maps: the 2 % bins hold one map each
    assert "small sample" not in page  # 50 grids are enough for every statistic shown
    assert "Below the input it is not" in page and "upsampling leak or real leakage" in page


def test_native_scores_tell_the_upsampling_leak_from_leakage(full_run):
    """The synthetic DiFull `grad` maps are exactly zero outside their cell: upsampled from 4×4 they score below 1,
    at the native resolution exactly 1; the noisy maps of the other methods leak at both resolutions."""
    from attreval.runs.reader import Run

    store, out = full_run
    run = Run(store.root)
    native = run.native_scores("toy_vgg", "difull", "final", "grad")
    assert len(native) == 100 and (native["native"] == 1).all()
    assert native["score"].median() < 0.95
    assert f"{native['score'].median():.3f} (n=100)" in out.read_text()
    leaky = run.native_scores("toy_vgg", "difull", "final", "grad_cam")
    assert (leaky["native"] < 1).mean() > 0.9
    maps = store.maps("toy_vgg", "difull", "final", "grad_cam").astype(np.float32)
    column = [0, 3].index(int(leaky["cell"].iloc[0]))
    by_hand = localization_parts(torch.from_numpy(maps[:1, column : column + 1]), N, torch.tensor([[leaky["cell"].iloc[0]]]))
    assert leaky["native"].iloc[0] == pytest.approx(float(score_from_parts(*by_hand)), abs=1e-6)


def test_small_runs_get_sample_size_notes(tmp_path):
    store = make_synthetic_run(
        tmp_path, settings=("gridpg", "difull"), methods=("grad", "grad_cam"), layers=("input", "final"), grids=(5, 6)
    )
    page = write_report(store.root, dpi=40).read_text()
    assert "small sample: 5 maps of the target cell" in page and "ask for [grids] gridpg = 50 or more" in page
    assert "small sample: 6 maps" in page and "[grids] disconnected = 50 or more" in page
    assert "ρ over as few as 20 instances" in page and "[grids] gridpg = 8 or more" in page
    assert "] n=20<" in page and "] n=12<" in page  # GridPG 5 grids × 4 cells; DiFull 6 grids × 2 corners


def test_report_and_aggatt_read_through_load_run(full_run):
    """AggAtt takes a Run (its grids come from GridDataset, not a raw file read): examples carry the target
    cell's class name, and the per-bin class counts never exceed the bin's maps."""
    import attreval.report
    from attreval.runs.reader import load_run

    # No file is read but through the reader: no loader call in AggAtt or in any module of the report.
    package = Path(attreval.report.__file__).parent
    for path in [Path(agg.__file__), Path(aggatt_run.__file__), *package.glob("*.py")]:
        source = path.read_text()
        assert not re.search(r"torch\.load|np\.load|read_parquet|read_json|\bopen\(|read_text|read_bytes", source), path
    store, _ = full_run
    run = load_run(store.root)
    a = aggatt_run.aggatt_from_run(run, "toy_vgg", "gridpg", "input", "grad")
    ex = aggatt_run.examples_from_run(run, a, "toy_vgg", "gridpg", "input", "grad")
    labels = run.grids("toy_vgg", "gridpg").labels
    assert ex.classes == tuple(f"class{int(labels[g, 0])}_name" for g in ex.grids)
    classes = aggatt_run.bin_classes(run, a, "toy_vgg", "gridpg")
    assert [sum(c for _, c in top) <= b.size for top, b in zip(classes, a.bins, strict=True)] == [True] * 6


def _chromium(args: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
    ]
    return subprocess.run(
        [str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, "HOME": str(profile)}
    )


def _browser_check(report: Path, profile: Path) -> tuple[int, int, list[str]]:
    """Open the report, return (images, broken images, console error lines) from the dumped DOM and log."""
    run = _chromium(["--enable-logging=stderr", "--v=0", "--dump-dom", report.resolve().as_uri()], profile)
    assert run.returncode == 0, run.stderr[-2000:]
    body = re.search(r"<body[^>]*>", run.stdout)
    assert body, "no <body> in the dumped DOM"
    images = re.search(r'data-images="(\d+)"', body.group(0))
    broken = re.search(r'data-broken-images="(\d+)"', body.group(0))
    assert images and broken, f"the report's load script did not run: {body.group(0)}"
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]  # the report logs nothing when healthy
    return int(images.group(1)), int(broken.group(1)), console


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)")
def test_report_in_headless_chromium(full_run, tmp_path):
    store, out = full_run
    expected = len(_images(out.read_text()))
    images, broken, console = _browser_check(out, tmp_path / "profile")
    assert (images, broken) == (expected, 0)
    assert console == []
    dom = _chromium(["--dump-dom", out.resolve().as_uri()], tmp_path / "profile").stdout
    for text in (
        "] n=200",  # median tables: median [interval] n maps
        "Each ρ is over n=200 paired instances",
        "Maps per bin",
        "class",
        "Below the input it is not",
        "upsampling leak or real leakage",
    ):
        assert text in dom, text  # rendered, not only in the source
    shot = store.root / "report_screenshot.png"
    run = _chromium([f"--screenshot={shot}", "--window-size=1400,4000", out.resolve().as_uri()], tmp_path / "profile")
    assert run.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG"
    keep = os.environ.get("ATTREVAL_SCREENSHOT_DIR")
    if keep:
        shutil.copytree(store.root, Path(keep), dirs_exist_ok=True)

    # The check is meaningful: a deleted figure is reported as broken and logged on the console.
    broken_copy = tmp_path / "broken_run"
    shutil.copytree(store.root, broken_copy, ignore=shutil.ignore_patterns("maps", "parts", "grids"))
    victim = broken_copy / _images(out.read_text())[0]
    victim.unlink()
    images, broken, console = _browser_check(broken_copy / "report.html", tmp_path / "profile2")
    assert (images, broken) == (expected, 1)
    assert len(console) == 1 and victim.name in console[0]
