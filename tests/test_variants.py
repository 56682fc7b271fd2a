"""Method variants ([variants.NAME]) in the run config, and the SmoothGrad noise sweep (PAPER.md §6.3)."""

import json

import pandas as pd
import pytest

from attreval import plots
from attreval.analysis.smoothgrad_sweep import smoothgrad_points, smoothgrad_sweep, sweep_table
from attreval.cli import main
from attreval.config import load_config, parse_config
from attreval.runs.plan import plan_units
from tiny_models import tiny_run_config

pytestmark = pytest.mark.slow  # end-to-end runs / zoo / training: left out of `make test-fast`

BASE = {"models": [{"name": "fashion_resnet"}]}
SG = {"method": "smoothgrad", "base": "input_x_grad", "noise_level": 0.2}


def with_(**sections):
    return {**BASE, **sections}


def test_variants_parse_resolve_and_restrict():
    config = parse_config(
        with_(
            methods={"smoothgrad": {"num_samples": 3}},
            variants={"sg_ixg_20": {**SG, "layers": ["input"], "settings": ["gridpg"]}},
            evaluation={"layers": ["input", "final"], "settings": ["gridpg", "difull"]},
        )
    )
    assert config.method_names()[-1] == "sg_ixg_20" and "smoothgrad" in config.method_names()
    # variant options go on top of [methods.smoothgrad]
    assert config.method_options("sg_ixg_20") == ("smoothgrad", {"num_samples": 3, "base": "input_x_grad", "noise_level": 0.2})
    units = [u for u in plan_units(config) if u.method == "sg_ixg_20"]
    assert [(u.setting, u.layer) for u in units] == [("gridpg", "input")]
    assert json.loads(json.dumps(config.to_dict()))["variants"]["sg_ixg_20"]["options"]["noise_level"] == 0.2


@pytest.mark.parametrize(
    "variants, message",
    [
        ({"grad": {"method": "grad"}}, "not a registered method, got 'grad'"),
        ({"v": {"method": "smothgrad"}}, "unknown method in [variants.v] 'smothgrad' (did you mean 'smoothgrad'?)"),
        ({"v": {"method": "smoothgrad", "noise": 0.1}}, "unknown option 'noise' for SmoothGrad (did you mean 'noise_level'?)"),
        ({"v": {"method": "smoothgrad", "base": "input_x_gradd"}}, "(did you mean 'input_x_grad'?)"),
        ({"v": {"noise_level": 0.1}}, 'expected a method = "…" or callable = "file.py:object" key in [variants.v]'),
        ({"v": {**SG, "layers": ["inptu"]}}, "(did you mean 'input'?)"),
        ({"v": {**SG, "settings": "gridpg"}}, "expected a list for [variants.v] settings"),
        ({"Bad-Name": SG}, "expected a snake_case variant name"),
    ],
)
def test_variant_errors_are_one_line(variants, message):
    with pytest.raises(ValueError) as err:
        parse_config(with_(variants=variants))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_variant_in_methods_list_has_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'sg_ixg_20'"):
        parse_config(with_(variants={"sg_ixg_20": SG}, evaluation={"methods": ["sg_ixg_2"]}))


def test_embedded_default_has_the_input_layer_sweep():
    config = load_config(None)
    points = smoothgrad_points(config.to_dict())
    assert sorted(points["noise_level"]) == [0.05, 0.1, 0.2, 0.3] and set(points["base"]) == {"input_x_grad"}
    assert all(v.layers == ("input",) for v in config.variants.values())


TINY = tiny_run_config(
    1,
    """
[evaluation]
settings = ["gridpg", "difull"]
layers = ["input", "final"]
methods = ["input_x_grad", "smoothgrad", "sg_ixg_30"]
smooth_methods = ["input_x_grad"]
kernel_sizes = [129]
[methods.smoothgrad]
base = "input_x_grad"
num_samples = 3
[variants.sg_ixg_30]
method = "smoothgrad"
noise_level = 0.3
layers = ["input"]
""",
)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    (root / "tiny.toml").write_text(TINY)
    assert main(["run", str(root / "tiny.toml"), "--out", str(root / "out"), "-q", "--no-report"]) == 0
    return root


def test_run_names_rows_by_variant_and_resumes(sweep_run):
    out = sweep_run / "out"
    table = pd.read_parquet(out / "results.parquet")
    assert set(table.loc[table.method == "sg_ixg_30", "layer"]) == {"input"}
    assert set(table.loc[table.method == "smoothgrad", "layer"]) == {"input", "final"}
    costs = pd.read_parquet(out / "costs.parquet")
    sg = costs[(costs.method == "sg_ixg_30") & (costs.setting == "gridpg")]
    assert sg["backward_passes"].tolist() == [3 * 4]  # num_samples × T (inherited from [methods.smoothgrad])
    assert sg["forward_passes"].tolist() == [3]  # one forward per sample serves all T targets
    # a resume of the same config is accepted (nothing left to do); an older config.json without variants too
    assert main(["run", str(sweep_run / "tiny.toml"), "--out", str(out), "-q", "--resume", "--no-report"]) == 0
    stored = json.loads((out / "config.json").read_text())
    changed = TINY.replace("noise_level = 0.3", "noise_level = 0.2")
    (sweep_run / "changed.toml").write_text(changed)
    assert main(["run", str(sweep_run / "changed.toml"), "--out", str(out), "-q", "--resume", "--no-report"]) == 2
    assert stored["variants"]["sg_ixg_30"]["method"] == "smoothgrad"


def test_sweep_analysis_figure_and_report(sweep_run):
    out = sweep_run / "out"
    table = pd.read_parquet(out / "results.parquet")
    config = json.loads((out / "config.json").read_text())
    sweep = smoothgrad_sweep(table, config, "fashion_resnet")
    input_rows = sweep[(sweep.layer == "input") & (sweep.setting == "gridpg")]
    assert set(input_rows.role) == {"smoothgrad", "smoothed", "unsmoothed"}
    sg = input_rows[input_rows.role == "smoothgrad"].set_index("noise_level")
    assert list(sg.index) == [0.1, 0.3] and sg["best"].sum() == 1
    assert sg.loc[sg["best"], "median"].iloc[0] == sg["median"].max()
    expected = table[(table.method == "sg_ixg_30") & (table.setting == "gridpg") & (table.layer == "input")]["score"].median()
    assert sg.loc[0.3, "median"] == pytest.approx(expected)
    smoothed = table[(table.method == "input_x_grad") & (table.kernel_ref == 129) & (table.setting == "gridpg") & (table.layer == "input")]
    assert input_rows.loc[input_rows.role == "smoothed", "median"].iloc[0] == pytest.approx(smoothed["score"].median())
    # the final layer has only the 10 % point (the variant is input-only)
    assert len(sweep[(sweep.layer == "final") & (sweep.role == "smoothgrad")]) == 2
    assert not sweep_table(sweep).empty
    fig = plots.smoothgrad_sweep_figure(sweep, "sweep", n=2)
    plots.save(fig, out / "sweep.png")
    assert main(["report", str(out)]) == 0
    assert "SmoothGrad noise sweep" in (out / "report.html").read_text()
    assert (out / "report" / "fashion_resnet__smoothgrad_sweep.png").exists()


def test_sweep_is_empty_without_smoothgrad():
    results = pd.DataFrame(
        {
            "model": ["m"],
            "setting": ["gridpg"],
            "layer": ["input"],
            "method": ["grad"],
            "kernel_size": [0],
            "kernel_ref": [0],
            "score": [0.5],
        }
    )
    assert smoothgrad_sweep(results, {"methods": {}, "variants": {}}, "m").empty
    with pytest.raises(ValueError, match="expected SmoothGrad sweep rows"):
        plots.smoothgrad_sweep_figure(smoothgrad_sweep(results, {}, "m"))
