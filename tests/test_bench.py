"""`attreval bench` runs on a tiny model and counts the passes each method needs (no timing asserted)."""

import json

import pytest

from attreval.cli import main

pytestmark = pytest.mark.slow  # bench runs: left out of `make test-fast`


def test_bench_counts_passes_and_matches_the_reference_pattern(tmp_path):
    out = tmp_path / "bench"
    argv = [
        "bench",
        "--model",
        "fashion_resnet",
        "--grids",
        "2",
        "--settings",
        "gridpg,difull",
        "--layers",
        "input,final",
        "--methods",
        "grad,int_grad,rise,occlusion",
        "--option",
        "rise.num_masks=8",
        "--option",
        "int_grad.n_steps=3",
        "--option",
        "occlusion.input_kernel_size=16",
        "--option",
        "occlusion.input_stride=16",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    rows = {(r["setting"], r["layer"], r["method"]): r for r in report["rows"]}
    targets = {"gridpg": 4, "difull": 2}
    for (setting, layer, method), r in rows.items():
        t = targets[setting]
        f = 1 if setting == "gridpg" else t  # GridPG: one forward serves every target; DiFull: each head its block
        expected = {"grad": (f, t), "int_grad": (3 * f, 3 * t), "rise": (8, 0)}.get(method)
        if method == "occlusion" and layer == "input":
            expected = (4 * 4 + 1, 0)  # 64-px grid, 16-px windows with stride 16: 4 × 4 windows + the clean pass
            if setting == "difull":  # each corner head: the 2 × 2 windows of its cell + its clean pass
                expected = (2 * (2 * 2 + 1), 0)
        if expected:
            assert (r["forward_passes"], r["backward_passes"]) == expected, (setting, layer, method)
        # the reference pattern: one target (head) per call, every window, each target its own forward
        reference = {"grad": (t, t), "int_grad": (3 * t, 3 * t), "rise": (8 * t, 0)}.get(method)
        if method == "occlusion" and layer == "input":
            reference = (t * (4 * 4 + 1), 0)
        if reference:
            assert (r["reference_forward_passes"], r["reference_backward_passes"]) == reference, (setting, layer, method)
        assert r["pass_speedup"] > 0
        assert r["max_score_diff"] <= 1e-4 and r["limit_ratio"] > 0
    assert report["summary"]["protocol_speedup"] > 0
    assert "| gridpg | input | grad |" in (out / "bench.md").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--grids", "0"], "expected a positive integer for --grids, got 0"),
        (["--cell", "0"], "expected a positive integer for --cell, got 0"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--methods", "gradd"], "unknown method 'gradd'"),
        (["--settings", "grid"], "unknown setting 'grid'"),
        (["--option", "rise.num_masks"], "expected --option METHOD.KEY=VALUE, got 'rise.num_masks'"),
    ],
)
def test_bench_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["bench", "--model", "fashion_resnet", "--methods", "grad", "--no-reference", "--out", str(tmp_path / "b"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
