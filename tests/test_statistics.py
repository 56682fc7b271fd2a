"""Bootstrap intervals, paired tests, Holm, tiers and sample size (attreval.analysis.statistics) against
reference computations: a plain loop, scipy, hand-computed values, and coverage on synthetic data."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from attreval.analysis.comparison import method_versus_others
from attreval.analysis.statistics import (
    bootstrap_medians,
    holm,
    median_interval,
    paired_comparisons,
    sample_size,
    tiers,
    unit_statistics,
    wilcoxon_p,
)


def results_table(scores: dict[str, np.ndarray], setting="gridpg", layer="input", kernel_ref=0) -> pd.DataFrame:
    """A results table of one (model, setting, layer) group: ``scores[method]`` is ``(G, T)``."""
    frames = []
    for method, s in scores.items():
        g, t = s.shape
        frames.append(
            pd.DataFrame(
                {
                    "model": "m",
                    "setting": setting,
                    "layer": layer,
                    "method": method,
                    "kernel_size": kernel_ref // 8,
                    "kernel_ref": kernel_ref,
                    "grid": np.repeat(np.arange(g), t),
                    "cell": np.tile(np.arange(t), g),
                    "score": s.reshape(-1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_bootstrap_equals_a_plain_loop_with_the_same_draws():
    rng = np.random.default_rng(1)
    scores = rng.random((23, 4))
    medians = bootstrap_medians(scores, 500, np.random.default_rng(7))
    draws = np.random.default_rng(7).integers(0, 23, size=(500, 23))
    loop = [np.median(np.concatenate([scores[g] for g in row])) for row in draws]
    np.testing.assert_array_equal(medians, loop)


def test_interval_agrees_with_scipy_bootstrap_over_grids():
    """The cluster bootstrap = scipy's percentile bootstrap of the grid indices with the median of their maps."""
    rng = np.random.default_rng(3)
    scores = rng.beta(2, 5, size=(40, 4)) + rng.normal(0, 0.1, size=(40, 1))  # a grid effect: maps of one grid correlate
    median, low, high = median_interval(scores, resamples=20000, rng=np.random.default_rng(0))

    def statistic(index, axis=-1):
        return np.median(scores[index.astype(int)].reshape(*index.shape[:-1], -1), axis=-1)

    ref = stats.bootstrap((np.arange(40),), statistic, n_resamples=20000, method="percentile", random_state=1, vectorized=True)
    assert median == np.median(scores)
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.01)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.01)


def test_interval_covers_the_population_median_about_95_percent_of_the_time():
    """Synthetic runs with a known population: grid effect N(0, 0.1²) plus map noise N(0, 0.2²) on 0.5, so
    every map's score is symmetric around 0.5, the population median."""
    rng = np.random.default_rng(11)
    hits, repeats = 0, 300
    for _ in range(repeats):
        scores = 0.5 + rng.normal(0, 0.1, size=(40, 1)) + rng.normal(0, 0.2, size=(40, 4))
        _, low, high = median_interval(scores, resamples=1000, rng=rng)
        hits += low <= 0.5 <= high
    assert 0.90 <= hits / repeats <= 0.99  # nominal 0.95; 300 repeats: a binomial s.d. of 0.013


def test_resampling_maps_instead_of_grids_would_undercover():
    """Why grids are resampled: with a strong grid effect, an interval over maps treated as independent is too
    narrow. The cluster interval is wider than the naive one on the same data."""
    rng = np.random.default_rng(5)
    scores = 0.5 + rng.normal(0, 0.2, size=(30, 1)) + rng.normal(0, 0.02, size=(30, 4))
    _, low, high = median_interval(scores, resamples=2000, rng=np.random.default_rng(0))
    _, naive_low, naive_high = median_interval(scores.reshape(-1, 1), resamples=2000, rng=np.random.default_rng(0))
    assert (high - low) > 1.4 * (naive_high - naive_low)


def test_unit_statistics_are_seeded_per_unit_not_by_order():
    rng = np.random.default_rng(0)
    table = results_table({"a": rng.random((10, 4)), "b": rng.random((10, 4))})
    one = unit_statistics(table, seed=3, resamples=300)
    reordered = unit_statistics(table.iloc[::-1].reset_index(drop=True), seed=3, resamples=300).sort_values("method")
    pd.testing.assert_frame_equal(one.reset_index(drop=True), reordered.reset_index(drop=True))
    assert not unit_statistics(table, seed=4, resamples=300)["ci_low"].equals(one["ci_low"])
    assert (one["n"] == 40).all() and (one["grids"] == 10).all()
    assert (one["ci_low"] <= one["median"]).all() and (one["median"] <= one["ci_high"]).all()


def test_holm_by_hand():
    # sorted p: 0.01 (×3), 0.03 (×2), 0.04 (×1) → 0.03, 0.06, 0.04 → monotone: 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm(np.array([0.04, 0.01, 0.03])), [0.06, 0.03, 0.06])
    assert np.isnan(holm(np.array([np.nan, 0.2]))[0]) and holm(np.array([np.nan, 0.2]))[1] == pytest.approx(0.2)
    assert holm(np.array([0.9, 0.8]))[0] == 1.0  # capped at 1


def test_wilcoxon_p_is_scipys_and_nan_for_identical_maps():
    rng = np.random.default_rng(2)
    a, b = rng.random(32), rng.random(32)
    assert wilcoxon_p(a, b) == stats.wilcoxon(a, b).pvalue
    assert math.isnan(wilcoxon_p(a, a.copy()))


def test_identical_methods_are_never_different_and_a_uniformly_better_one_is():
    rng = np.random.default_rng(4)
    base = rng.random((16, 4))
    table = results_table({"a": base, "a_copy": base.copy(), "better": np.minimum(base + 0.01 + 0.05 * rng.random((16, 4)), 1.5)})
    pairs = paired_comparisons(table)
    same = pairs[(pairs["method_a"] == "a") & (pairs["method_b"] == "a_copy")].iloc[0]
    assert math.isnan(same["p_value"]) and math.isnan(same["p_holm"]) and same["median_difference"] == 0
    better = pairs[(pairs["method_a"] == "a") & (pairs["method_b"] == "better")].iloc[0]
    assert better["p_holm"] < 1e-6 and better["median_difference"] < 0
    assert better["p_value"] == stats.wilcoxon(table[table.method == "a"]["score"], table[table.method == "better"]["score"]).pvalue
    # Holm within the group: two valid tests, so the smallest p is doubled
    valid = pairs.dropna(subset=["p_value"]).sort_values("p_value")
    assert valid["p_holm"].iloc[0] == pytest.approx(min(1.0, 2 * valid["p_value"].iloc[0]))

    versus = method_versus_others(pairs, "better")
    assert set(versus["other"]) == {"a", "a_copy"} and (versus["verdict"] == "better").all() and (versus["median_difference"] > 0).all()

    stat = unit_statistics(table, resamples=200)
    tier = tiers(stat, pairs).set_index("method")["tier"]
    assert tier["better"] == 1 and tier["a"] == tier["a_copy"] == 2


def test_methods_within_noise_share_the_top_tier():
    rng = np.random.default_rng(8)
    base = rng.random((12, 4))
    table = results_table({"a": base, "b": base + rng.normal(0, 0.01, size=base.shape), "bad": base - 0.3})
    pairs = paired_comparisons(table)
    tier = tiers(unit_statistics(table, resamples=200), pairs).set_index("method")["tier"]
    p_ab = pairs[(pairs["method_a"] == "a") & (pairs["method_b"] == "b")]["p_holm"].iloc[0]
    assert p_ab > 0.05 and tier["a"] == tier["b"] == 1 and tier["bad"] == 2


def test_groups_are_compared_separately_and_pairs_use_common_maps():
    rng = np.random.default_rng(9)
    one = results_table({"a": rng.random((8, 4)), "b": rng.random((8, 4))}, layer="input")
    two = results_table({"a": rng.random((8, 4)), "c": rng.random((8, 4))}, layer="final")
    smoothed = results_table({"a": rng.random((8, 4)), "b": rng.random((8, 4))}, layer="input", kernel_ref=129)
    pairs = paired_comparisons(pd.concat([one, two, smoothed]))
    assert len(pairs) == 3
    assert set(map(tuple, pairs[["layer", "kernel_ref", "method_b"]].values)) == {("input", 0, "b"), ("final", 0, "c"), ("input", 129, "b")}
    assert (pairs["n"] == 32).all() and (pairs["p_holm"] == pairs["p_value"]).all()  # one test per group: Holm changes nothing


def test_sample_size_extrapolates_as_one_over_root_grids():
    stat = pd.DataFrame(
        {
            "model": "m",
            "setting": ["gridpg", "gridpg", "difull"],
            "kernel_ref": 0,
            "grids": [25, 25, 50],
            "ci_low": [0.40, 0.30, 0.99],
            "ci_high": [0.48, 0.34, 1.00],
        }
    )
    size = sample_size(stat).set_index("setting")
    assert size.loc["gridpg", "max_half_width"] == pytest.approx(0.04)
    assert size.loc["gridpg", "grids_for_every_unit"] == 100  # (0.04 / 0.02)² = 4 × the 25 grids
    assert size.loc["gridpg", "grids_for_median_unit"] == math.ceil(25 * (0.03 / 0.02) ** 2)
    assert size.loc["difull", "grids_for_every_unit"] == math.ceil(50 * (0.005 / 0.02) ** 2)
