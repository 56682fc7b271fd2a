"""The rules the analyses, figures and report share (attreval.analysis.conventions): written once, with
nothing keyed on a method's name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from attreval import plots
from attreval.analysis import conventions, correlation, smoothing_curves
from attreval.methods import METHODS
from attreval.summary import median_stats, median_table


def _rows(method, layer, kernel_refs=(0,), setting="gridpg", grids=12, cells=4, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for ref in kernel_refs:
        frames.append(
            pd.DataFrame(
                {
                    "model": "m",
                    "setting": setting,
                    "layer": layer,
                    "method": method,
                    "kernel_ref": ref,
                    "kernel_size": 0 if ref == 0 else max(1, ref // 7),
                    "grid": np.repeat(np.arange(grids), cells),
                    "cell": np.tile(np.arange(cells), grids),
                    "score": rng.random(grids * cells),
                }
            )
        )
    return frames


def test_one_position_and_order_rule_for_figures_report_and_analyses():
    assert plots.position is conventions.position and plots.method_order is conventions.method_order
    assert conventions.position("final", conventions.LAYER_ORDER) == 2
    assert conventions.position("stage3", conventions.LAYER_ORDER) == len(conventions.LAYER_ORDER)
    assert conventions.method_order(["rise", "mine", "grad"]) == ["grad", "rise", "mine"]


def test_smoothed_methods_come_from_the_rows_not_from_names():
    """A run that smooths `grad` (not a paper S-method) gets its curves and Table 1/2 rows: what was smoothed
    is read from the rows with kernel_size > 0."""
    results = pd.concat(
        _rows("grad", "input", (0, 9, 129)) + _rows("grad_cam", "final", seed=1) + _rows("int_grad", "input", seed=2), ignore_index=True
    )
    assert conventions.smoothed_methods(results) == ["grad"]
    assert conventions.smoothed_methods(results, layer="final") == []
    curves = smoothing_curves.smoothing_curves(results, "m")
    assert set(curves.loc[curves["role"] == "curve", "method"]) == {"grad"}
    long = correlation.reference_correlations(results, "m")
    assert long["method"].tolist() == ["grad"] * 3 and long["kernel_ref"].tolist() == [0, 9, 129]


def test_reference_evaluation_follows_a_declared_class_attribute(monkeypatch):
    """The paper's Grad-CAM (final) is declared on its class; the registry decides, and two declaring
    classes are an error rather than a silent pick."""
    assert conventions.reference_evaluation() == ("grad_cam", "final")
    monkeypatch.setattr(type(METHODS.get("layer_cam")), "reference_layer", "middle")
    monkeypatch.setattr(type(METHODS.get("grad_cam")), "reference_layer", "")
    assert conventions.reference_evaluation() == ("layer_cam", "middle")
    monkeypatch.setattr(type(METHODS.get("rise")), "reference_layer", "final", raising=False)
    with pytest.raises(ValueError, match="expected one method class declaring a reference_layer"):
        conventions.reference_evaluation()


def test_one_median_table_ordered_with_counts():
    frames = _rows("grad_cam", "final") + _rows("grad", "input", setting="difull") + _rows("grad", "final")
    results = pd.concat(frames, ignore_index=True)
    medians, counts = median_stats(results)
    assert list(medians.index) == ["grad", "grad_cam"]  # registry order, whatever the rows' order
    assert list(medians.columns) == [("gridpg", "final"), ("difull", "input")]  # settings, then layers, in order
    expected = results[(results.method == "grad") & (results.setting == "difull")]["score"].median()
    assert medians.loc["grad", ("difull", "input")] == pytest.approx(expected)
    assert counts.loc["grad", ("gridpg", "final")] == 48 and np.isnan(counts.loc["grad_cam", ("difull", "input")])
    pd.testing.assert_frame_equal(median_table(results, "m"), medians)
    with pytest.raises(ValueError, match="expected results for model 'x'"):
        median_table(results, "x")


def test_plots_package_reexports_every_figure():
    for name in plots.__all__:
        assert getattr(plots, name) is not None, name
    assert callable(plots.smoothing_cost_figure) and plots.curve_colours(["int_grad", "input_x_grad"]) == {
        "input_x_grad": plots.CURVE_COLOURS[0],
        "int_grad": plots.CURVE_COLOURS[1],
    }
