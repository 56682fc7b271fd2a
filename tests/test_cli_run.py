"""End-to-end tests of `attreval run` on tiny configs (seconds), resume, and CLI errors."""

import json

import pandas as pd
import pytest

from attreval.cli import main
from attreval.runs.store import COLUMNS
from tiny_models import tiny_run_config

pytestmark = pytest.mark.slow  # end-to-end runs / zoo / training: left out of `make test-fast`

TINY = tiny_run_config(
    3,
    """
[evaluation]
settings = ["gridpg", "difull"]
layers = ["input", "final"]
methods = ["grad", "int_grad", "grad_cam"]
smooth_methods = ["int_grad"]
kernel_sizes = [65, 257]
batch_size = 2
[methods.int_grad]
n_steps = 4
""",
    limit=600,
    gridpg=3,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    config = root / "tiny.toml"
    config.write_text(TINY)
    out = root / "out"
    assert main(["run", str(config), "--out", str(out), "-q", "--no-report"]) == 0
    return config, out


def test_run_writes_a_complete_run_directory(tiny_run):
    _, out = tiny_run
    table = pd.read_parquet(out / "results.parquet")
    assert list(table.columns) == COLUMNS
    # gridpg: 3 grids × 4 cells; difull: 2 grids × 2 corner heads; × 2 layers; int_grad has 1 + 2 kernels
    per_layer = {"grad": 1, "int_grad": 3, "grad_cam": 1}
    expected = sum((3 * 4 + 2 * 2) * 2 * k for k in per_layer.values())
    assert len(table) == expected
    assert table["score"].between(0, 1).all() and not table.isna().any().any()
    assert set(table.loc[table.setting == "difull", "cell"]) == {0, 3}
    # DiFull input-layer gradients are exactly zero outside the head's cell: L = 1 (PAPER.md §9.2)
    difull = table[(table.setting == "difull") & (table.layer == "input") & (table.method == "grad")]
    assert (difull["score"] == 1.0).all()
    meta = json.loads((out / "meta.json").read_text())
    assert {"torch", "attreval", "seed", "device", "git_revision"} <= set(meta) and meta["seed"] == 3
    maps = __import__("numpy").load(out / "maps" / "fashion_resnet__gridpg__input__grad.npy", mmap_mode="r")
    assert maps.shape == (3, 4, 64, 64)


def test_resume_recomputes_nothing_finished(tiny_run, tmp_path, capsys):
    config, out = tiny_run
    parts = sorted((out / "parts").glob("*.parquet"))
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    victim = parts[0]
    victim.unlink()  # as if the run had been killed before this unit finished
    before = pd.read_parquet(out / "results.parquet")
    assert main(["run", str(config), "--out", str(out), "-q", "--no-report", "--resume"]) == 0
    assert all(p.stat().st_mtime_ns == stamps[p] for p in parts if p != victim)
    assert victim.exists()
    after = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(before, after)


def test_run_into_existing_run_without_resume_is_refused(tiny_run, capsys):
    config, out = tiny_run
    assert main(["run", str(config), "--out", str(out), "-q", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "pass --resume" in err and err.count("\n") == 1


def test_resume_with_another_config_is_refused(tiny_run, tmp_path, capsys):
    config, out = tiny_run
    other = tmp_path / "other.toml"
    other.write_text(TINY.replace("seed = 3", "seed = 4"))
    assert main(["run", str(other), "--out", str(out), "-q", "--no-report", "--resume"]) == 2
    assert "differs in: seed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, message",
    [
        (TINY.replace('"grad_cam"', '"gradcam"'), "did you mean 'grad_cam'"),
        (TINY.replace("gridpg = 3", "gridpgg = 3"), "did you mean 'gridpg'"),
        (TINY.replace("fashion_resnet", "resnet19"), "did you mean"),
    ],
)
def test_config_typos_exit_2_with_one_line(tmp_path, capsys, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "-q", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o" / "results.parquet").exists()


def test_cuda_requested_without_cuda_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    path = tmp_path / "c.toml"
    path.write_text(TINY)
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--device", "cuda", "-q", "--no-report"]) == 2
    assert "torch finds none" in capsys.readouterr().err


def test_list_names_every_method(capsys):
    from attreval import METHODS

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS.names())
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in METHODS.names():  # what each method needs of the tail (Method.needs), as declared
        assert f"needs={','.join(sorted(METHODS.get(name).needs)) or '-'} " in lines[name]
