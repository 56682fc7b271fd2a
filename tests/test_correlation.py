"""Spearman correlation of per-instance scores (PAPER.md §6.2), against scipy; pairing; smoothing curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attreval.analysis.correlation import (
    method_layer_correlations,
    rankdata,
    reference_correlations,
    reference_table,
    score_table,
    spearman,
)
from attreval.analysis.smoothing_curves import smoothing_curves


def test_rankdata_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    for size in (0, 1, 2, 7, 100, 1000):
        x = rng.integers(0, max(1, size // 5), size).astype(float)  # many ties
        np.testing.assert_array_equal(rankdata(x), stats.rankdata(x, method="average"))


def test_spearman_matches_scipy_on_random_data_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(30):
        size = int(rng.integers(3, 400))
        x = np.round(rng.random(size), int(rng.integers(1, 3)))  # rounded: ties
        y = np.round(0.5 * x + rng.random(size) * rng.random(), 1)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    # exact-1 scores as in DiFull: heavy ties at the top
    x = np.r_[np.ones(50), rng.random(50)]
    y = np.r_[np.ones(30), rng.random(70)]
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_drops_nan_pairs_and_handles_degenerate_input():
    rng = np.random.default_rng(2)
    x, y = rng.random(50), rng.random(50)
    x[[3, 9]], y[[9, 20]] = np.nan, np.nan
    keep = np.isfinite(x) & np.isfinite(y)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x[keep], y[keep]).statistic, abs=1e-12)
    assert np.isnan(spearman(np.ones(10), rng.random(10)))  # constant: undefined
    assert np.isnan(spearman(np.array([1.0]), np.array([2.0])))
    with pytest.raises(ValueError, match="expected two 1-D arrays"):
        spearman(np.ones(3), np.ones(4))


def _results(rng, grids: int = 40, cells: int = 4) -> pd.DataFrame:
    """A GridPG table: grad (input, final), grad_cam (final), int_grad (input; kernel_refs 0, 9, 129)."""
    base = rng.random((grids, cells))
    frames = []

    def add(method, layer, scores, kernel_ref=0, kernel_size=0, setting="gridpg"):
        frames.append(
            pd.DataFrame(
                {
                    "model": "m",
                    "setting": setting,
                    "layer": layer,
                    "method": method,
                    "kernel_size": kernel_size,
                    "kernel_ref": kernel_ref,
                    "grid": np.repeat(np.arange(grids), cells),
                    "cell": np.tile(np.arange(cells), grids),
                    "score": scores.reshape(-1),
                }
            )
        )

    add("grad", "input", rng.random((grids, cells)))
    add("grad", "final", np.round(base + 0.3 * rng.random((grids, cells)), 1))
    add("grad_cam", "final", base)
    add("int_grad", "input", rng.random((grids, cells)))
    add("int_grad", "input", base + 0.5 * rng.random((grids, cells)), kernel_ref=9, kernel_size=1)
    add("int_grad", "input", base, kernel_ref=129, kernel_size=19)
    add("grad", "input", rng.random((grids, cells)), setting="difull")
    return pd.concat(frames, ignore_index=True)


def test_matrix_pairs_rows_on_grid_and_cell():
    rng = np.random.default_rng(3)
    results = _results(rng)
    shuffled = results.sample(frac=1.0, random_state=0)  # row order must not matter
    matrix = method_layer_correlations(shuffled, "m")
    assert list(matrix.columns) == [
        ("grad", "input", 0),
        ("int_grad", "input", 0),
        ("grad", "final", 0),
        ("grad_cam", "final", 0),
    ]  # by layer, then registry order
    a = results[(results.method == "grad") & (results.layer == "final") & (results.setting == "gridpg")]
    b = results[(results.method == "grad_cam") & (results.layer == "final")]
    assert matrix.loc[("grad", "final", 0), ("grad_cam", "final", 0)] == pytest.approx(
        stats.spearmanr(a["score"], b["score"]).statistic, abs=1e-12
    )
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    np.testing.assert_allclose(matrix.to_numpy(), matrix.to_numpy().T)


def test_matrix_is_pairwise_complete_when_rows_are_missing():
    rng = np.random.default_rng(4)
    results = _results(rng)
    drop = (results.method == "grad_cam") & (results.grid < 5)
    matrix = method_layer_correlations(results[~drop], "m")
    table = score_table(results[~drop], "m")
    x, y = table[("grad", "final", 0)], table[("grad_cam", "final", 0)]
    keep = x.notna() & y.notna()
    assert keep.sum() == len(x) - 20
    assert matrix.loc[("grad", "final", 0), ("grad_cam", "final", 0)] == pytest.approx(
        stats.spearmanr(x[keep], y[keep]).statistic, abs=1e-12
    )


def test_duplicate_rows_are_an_error():
    results = _results(np.random.default_rng(5))
    with pytest.raises(ValueError, match="expected one score per"):
        score_table(pd.concat([results, results.iloc[:3]]), "m")
    with pytest.raises(ValueError, match="expected gridpg results for model 'x'"):
        score_table(results, "x")


def test_reference_correlations_table_1_analogue():
    results = _results(np.random.default_rng(6))
    long = reference_correlations(results, "m")
    assert long["kernel_ref"].tolist() == [0, 9, 129] and set(long["method"]) == {"int_grad"}
    assert long["pairs"].tolist() == [160, 160, 160]
    assert long.loc[long.kernel_ref == 129, "rho"].item() == pytest.approx(1.0)  # same scores as Grad-CAM
    ref = results[(results.method == "grad_cam")]["score"].to_numpy()
    orig = results[(results.method == "int_grad") & (results.kernel_ref == 0)]["score"].to_numpy()
    assert long.loc[long.kernel_ref == 0, "rho"].item() == pytest.approx(stats.spearmanr(ref, orig).statistic)
    wide = reference_table(results)
    assert list(wide.columns) == [0, 9, 129] and list(wide.index) == [("int_grad", "m")]
    no_ref = results[results.method != "grad_cam"]
    assert reference_correlations(no_ref, "m").empty and reference_table(no_ref).empty


def test_smoothing_curves_medians_and_references():
    results = _results(np.random.default_rng(7))
    sg = results[(results.method == "grad") & (results.layer == "input") & (results.setting == "gridpg")].assign(method="smoothgrad")
    curves = smoothing_curves(pd.concat([results, sg]), "m")
    curve = curves[curves.role == "curve"]
    assert curve[["setting", "layer", "method"]].drop_duplicates().values.tolist() == [["gridpg", "input", "int_grad"]]
    assert curve["kernel_ref"].tolist() == [0, 9, 129] and curve["kernel_size"].tolist() == [0, 1, 19]
    expected = results[(results.method == "int_grad") & (results.kernel_ref == 9)]["score"]
    row = curve[curve.kernel_ref == 9].iloc[0]
    assert row["median"] == pytest.approx(expected.median()) and row["count"] == 160
    assert row["q25"] == pytest.approx(expected.quantile(0.25))
    ref = curves[curves.role == "reference"].iloc[0]
    assert (ref["method"], ref["layer"]) == ("grad_cam", "final")
    assert ref["median"] == pytest.approx(results[results.method == "grad_cam"]["score"].median())
    assert curves[curves.role == "smoothgrad"]["median"].item() == pytest.approx(sg["score"].median())
    assert smoothing_curves(results[results.kernel_size == 0], "m").empty
