"""Cost figures (PAPER.md §7) and the pass counts of a tiny real run against each method's theory."""

import numpy as np
import pandas as pd
import pytest
import torch

from attreval import plots
from attreval.analysis.cost_summary import smoothing_vs_smoothgrad, time_smoothing
from attreval.analysis.smoothgrad_sweep import smoothgrad_points
from attreval.cli import main
from attreval.data import GridDataset
from attreval.methods.perturbation import patch_intervals
from attreval.models.loading import load_model
from attreval.runs.store import RunStore
from attreval.settings import make_setting
from tiny_models import tiny_run_config

pytestmark = pytest.mark.slow  # end-to-end runs / zoo / training: left out of `make test-fast`


def difull_windows(side: int, kernel: int, stride: int) -> int:
    """Occlusion windows that meet the top-left or the bottom-right cell of a 2×2 map of ``side`` pixels:
    DiFull runs only those, each through its own head's block."""
    half = side // 2
    meets = lambda lo, hi: sum(1 for a, b in patch_intervals(side, kernel, stride) if a < hi and b > lo)
    return meets(0, half) ** 2 + meets(half, side) ** 2


def synthetic_costs() -> pd.DataFrame:
    rows = []
    for s_i, setting in enumerate(["gridpg", "difull"]):
        for l_i, layer in enumerate(["input", "final"]):
            for m_i, method in enumerate(["grad", "input_x_grad", "rise", "sg_05"]):
                fwd, bwd = 10.0**m_i + l_i, (2.0**m_i if method != "rise" else 0.0)
                rows.append(
                    {
                        "model": "m",
                        "setting": setting,
                        "layer": layer,
                        "method": method,
                        "seconds": 0.1 * (1 + m_i + l_i + s_i),
                        "grids": 4,
                        "forward_passes": fwd,
                        "backward_passes": bwd,
                        "image_passes": 0.0,
                        "rank": 0,
                    }
                )
    costs = pd.DataFrame(rows)
    costs["seconds_per_grid"] = costs["seconds"] / costs["grids"]
    return costs


def bar_heights(ax) -> list[float]:
    return sorted(p.get_height() for p in ax.patches)


def test_cost_figure_draws_the_table_values(tmp_path):
    costs = synthetic_costs()
    fig = plots.cost_figure(costs, "m")
    axes = np.array(fig.axes).reshape(2, 2)
    for j, setting in enumerate(["gridpg", "difull"]):
        here = costs[costs.setting == setting]
        assert bar_heights(axes[0, j]) == pytest.approx(sorted(here["seconds_per_grid"]))
        assert bar_heights(axes[1, j]) == pytest.approx(sorted(here["forward_passes"] + here["backward_passes"]))
        assert axes[0, j].get_yscale() == axes[1, j].get_yscale() == "log"
    assert plots.save(fig, tmp_path / "costs.png").stat().st_size > 0
    with pytest.raises(ValueError, match="expected cost rows for model 'x'"):
        plots.cost_figure(costs, "x")


def test_smoothing_vs_smoothgrad_summary_and_figure(tmp_path):
    costs = synthetic_costs()
    points = smoothgrad_points(
        {"methods": {}, "variants": {"sg_05": {"method": "smoothgrad", "options": {"base": "input_x_grad", "noise_level": 0.05}}}}
    )
    summary = smoothing_vs_smoothgrad(costs, points, {("m", "gridpg", "input", "input_x_grad"): 0.5})
    one = summary[(summary.setting == "gridpg") & (summary.layer == "input")].set_index("kind")
    base = costs[(costs.setting == "gridpg") & (costs.layer == "input") & (costs.method == "input_x_grad")].iloc[0]
    sg = costs[(costs.setting == "gridpg") & (costs.layer == "input") & (costs.method == "sg_05")].iloc[0]
    assert one.loc["smoothed", "passes_per_grid"] == one.loc["base", "passes_per_grid"] == base.forward_passes + base.backward_passes
    assert one.loc["smoothed", "seconds_per_grid"] == pytest.approx(base.seconds_per_grid + 0.5)
    assert one.loc["smoothgrad", "passes_per_grid"] == sg.forward_passes + sg.backward_passes
    fig = plots.smoothing_cost_figure(summary, "m")
    widths = sorted(p.get_width() for p in fig.axes[1].patches)
    assert widths == pytest.approx(sorted(summary["passes_per_grid"]))
    plots.save(fig, tmp_path / "smoothing_cost.png")
    assert 0 < time_smoothing((2, 4, 64, 64), 19) < 1


TINY = tiny_run_config(
    2,
    """
[evaluation]
settings = ["gridpg", "difull"]
layers = ["input", "final"]
methods = ["grad", "int_grad", "rise", "occlusion", "ablation_cam", "score_cam", "smoothgrad"]
smooth_methods = []
store_maps = false
chunk_size = 16
[methods.int_grad]
n_steps = 3
[methods.rise]
num_masks = 7
[methods.occlusion]
input_kernel_size = 8
input_stride = 4
hidden_kernel_size = 3
hidden_stride = 1
[methods.smoothgrad]
base = "grad"
num_samples = 2
""",
)


def test_recorded_passes_match_each_methods_theory(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "tiny.toml"), "--out", str(out), "-q", "--no-report"]) == 0
    costs = pd.read_parquet(out / "costs.parquet").set_index(["setting", "layer", "method"])
    assert (costs["grids"] == 2).all() and len(costs) == 2 * 2 * 7
    model = load_model("fashion_resnet", "", 0, ("input", "final"))
    store = RunStore(out)
    for setting, targets in (("gridpg", 4), ("difull", 2)):  # GridPG: all 4 cells; DiFull: the 2 corner heads
        grids = GridDataset.load(store.grid_path("fashion_resnet", "gridpg" if setting == "gridpg" else "disconnected"))
        for layer, (kernel, stride) in (("input", (8, 4)), ("final", (3, 1))):
            with torch.no_grad():
                channels, side = make_setting(setting, model, 2).activations(grids.images[:1], layer).shape[1:3]
            windows = len(patch_intervals(side, kernel, stride)) ** 2
            shared = 1 if setting == "gridpg" else targets  # GridPG: one forward for all targets; DiFull: one per head
            theory = {  # (forward, backward, image) rows per grid
                "grad": (shared, targets, 0),  # one backward per target
                "int_grad": (shared * 3, targets * 3, 0),
                "smoothgrad": (2 * shared, 2 * targets, 0),  # num_samples × the base's rows
                "rise": (7, 0, 0),  # one row per mask, every target from it
                "occlusion": (windows + 1, 0, 0),  # every window + the unperturbed input
                "occlusion_difull": (difull_windows(side, kernel, stride) + targets, 0, 0),  # per head: its windows + clean
                "ablation_cam": (channels + 1, 0, 0),  # one row per ablated channel + the original
                "score_cam": (channels, 0, channels),  # one masked image per channel, from the image
            }
            theory["occlusion"] = theory.pop("occlusion_difull") if setting == "difull" else theory["occlusion"]
            theory.pop("occlusion_difull", None)
            for method, expected in theory.items():
                row = costs.loc[(setting, layer, method)]
                got = (row["forward_passes"], row["backward_passes"], row["image_passes"])
                assert got == expected, (setting, layer, method, got, expected)
