"""Reliability of `attreval run` (docs/reliability.md): SIGKILL at several points then `--resume`, torchrun
sharding, determinism, and a catalogue of bad input that must end in one clean line and exit code 2.

The real processes (killed runs, torchrun) all start at once in one module fixture, while the reference runs
go in-process, so the interpreter start-ups (~10 s each on a loaded 2-core machine) overlap.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import attreval
from attreval.cli import main
from tiny_models import tiny_run_config

pytestmark = pytest.mark.slow  # end-to-end runs / zoo / training: left out of `make test-fast`

# 2 settings × 2 layers × 3 methods = 12 cheap units (tens of ms each), so a kill can land mid-run.
RUN = tiny_run_config(
    5,
    """
[evaluation]
settings = ["gridpg", "difull"]
layers = ["input", "final"]
methods = ["grad", "int_grad", "grad_cam"]
smooth_methods = ["int_grad"]
kernel_sizes = [65]
batch_size = 2
[methods.int_grad]
n_steps = 8
""",
)
UNITS = 12
KEY = ["model", "setting", "layer", "method", "kernel_size", "grid", "cell", "head"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _parts(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}


# When to SIGKILL: as soon as the run directory exists (grids being built, no unit finished), after the
# first finished unit, and half-way.
KILL_POINTS: dict[str, Callable[[Path], bool]] = {
    "before_first_unit": lambda out: (out / "config.json").exists(),
    "after_first_unit": lambda out: len(_parts(out)) >= 1,
    "mid_run": lambda out: len(_parts(out)) >= UNITS // 2,
}


@dataclass
class Killed:
    """A real `attreval run` process and what its directory held when it was killed."""

    proc: subprocess.Popen
    out: Path
    alive_at_kill: bool = False
    parts_at_kill: dict[Path, int] = field(default_factory=dict)
    maps_at_kill: dict[Path, int] = field(default_factory=dict)


def _cli(config: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(config), "--out", str(out), "-q", "--no-report", *extra]


def _kill_at_points(killed: dict[str, Killed], deadline: float) -> None:
    pending = dict(killed)
    while pending and time.monotonic() < deadline:
        for point, k in list(pending.items()):
            if k.proc.poll() is not None:  # finished (or failed) before the kill point: reported by the test
                del pending[point]
            elif KILL_POINTS[point](k.out):
                k.proc.send_signal(signal.SIGKILL)
                k.proc.wait()
                k.alive_at_kill = True
                k.parts_at_kill = _parts(k.out)
                done = {p.stem for p in k.parts_at_kill}
                k.maps_at_kill = {p: p.stat().st_mtime_ns for p in (k.out / "maps").glob("*.npy") if p.stem in done}
                del pending[point]
        time.sleep(0.003)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, one_thread):
    """Start the killed runs and the torchrun run, do the in-process reference runs meanwhile."""
    root = tmp_path_factory.mktemp("reliability")
    config = root / "run.toml"
    config.write_text(RUN)
    killed = {
        point: Killed(
            subprocess.Popen(
                [sys.executable, "-m", "attreval", *_cli(config, root / point)],
                cwd=root,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            root / point,
        )
        for point in KILL_POINTS
    }
    torchrun = Path(sys.executable).with_name("torchrun")
    log = root / "torchrun.log"
    dist = None
    if torchrun.exists():  # --standalone: a free port of its own, so concurrent test sessions do not collide
        with log.open("w") as handle:
            dist = subprocess.Popen(
                [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "attreval", *_cli(config, root / "torchrun")],
                cwd=root,
                env=ENV,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
    monitor = threading.Thread(target=_kill_at_points, args=(killed, time.monotonic() + 300), daemon=True)
    monitor.start()
    try:
        assert main(_cli(config, root / "reference")) == 0
        assert main(_cli(config, root / "again")) == 0
        monitor.join(timeout=300)
        if dist is not None:
            dist.wait(timeout=300)
        yield {"root": root, "config": config, "killed": killed, "torchrun": dist, "torchrun_log": log}
    finally:
        for proc in [k.proc for k in killed.values()] + [dist]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _assert_same_run(out: Path, reference: Path) -> pd.DataFrame:
    """Same results table (exactly), no duplicated rows, the same maps byte for byte, no temporary files."""
    table = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(table, pd.read_parquet(reference / "results.parquet"))
    assert not table.duplicated(KEY).any()
    assert sorted(p.name for p in (out / "parts").iterdir()) == sorted(p.name for p in (reference / "parts").iterdir())
    for ref in (reference / "maps").glob("*.npy"):
        assert (out / "maps" / ref.name).read_bytes() == ref.read_bytes(), ref.name
    assert not list(out.rglob("*.tmp"))
    return table


# -- kill and resume -------------------------------------------------------------------------------------


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_run_resumes_to_the_uninterrupted_result(campaign, point, one_thread):
    k: Killed = campaign["killed"][point]
    assert k.alive_at_kill, f"the run finished (rc={k.proc.returncode}) before the kill point {point}: make its units slower"
    assert k.proc.returncode == -signal.SIGKILL
    done = len(k.parts_at_kill)
    assert (done == 0) if point == "before_first_unit" else (1 <= done < UNITS), f"{done} units finished at {point}"
    assert (k.out / "config.json").exists() and not (k.out / "results.parquet").exists()
    # A kill in the middle of an atomic write leaves a temporary file (whole files are renamed in): fake one.
    (k.out / "parts").mkdir(exist_ok=True)
    (k.out / "parts" / ".fashion_resnet__difull__final__grad.parquet.99999.tmp").write_bytes(b"half")
    assert main(_cli(campaign["config"], k.out, "--resume")) == 0
    _assert_same_run(k.out, campaign["root"] / "reference")
    # Finished units were not recomputed: their part and maps files are the ones written before the kill.
    assert {p: p.stat().st_mtime_ns for p in k.parts_at_kill} == k.parts_at_kill
    assert {p: p.stat().st_mtime_ns for p in k.maps_at_kill} == k.maps_at_kill


def test_kill_after_the_last_unit_before_the_merge(campaign, tmp_path, one_thread):
    """The window between the last part and results.parquet is too short to hit with a real kill: rebuild
    its state (every part, no results table nor meta.json) from a finished run instead."""
    out = tmp_path / "run"
    shutil.copytree(campaign["root"] / "reference", out)
    for name in ("results.parquet", "meta.json", "costs.parquet"):
        (out / name).unlink(missing_ok=True)
    parts = _parts(out)
    assert main(_cli(campaign["config"], out, "--resume")) == 0
    _assert_same_run(out, campaign["root"] / "reference")
    assert _parts(out) == parts


# -- torchrun ------------------------------------------------------------------------------------------------


def test_torchrun_two_processes_give_the_single_process_table(campaign):
    proc, log = campaign["torchrun"], campaign["torchrun_log"]
    if proc is None:
        pytest.skip(f"no torchrun next to {sys.executable}")
    text = log.read_text()
    if proc.returncode != 0 and any(s in text for s in ("EADDRINUSE", "Address already in use", "RendezvousConnectionError")):
        pytest.skip(f"torchrun could not start its rendezvous here: {text.strip().splitlines()[-1]}")
    assert proc.returncode == 0, text[-3000:]
    out = campaign["root"] / "torchrun"
    table = _assert_same_run(out, campaign["root"] / "reference")
    assert len(table) == len(pd.read_parquet(campaign["root"] / "reference" / "results.parquet"))
    meta = pd.read_json(out / "meta.json", typ="series")
    assert meta["processes"] == 2
    ranks = {pd.read_json(p, typ="series")["rank"] for p in (out / "timings").glob("*.json")}
    assert ranks == {0, 1}  # both processes computed units


# -- determinism ---------------------------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_runs(campaign):
    root = campaign["root"]
    _assert_same_run(root / "again", root / "reference")
    for kind in ("gridpg", "disconnected"):
        a, b = (torch.load(root / d / "grids" / f"fashion_resnet__{kind}.pt", weights_only=True) for d in ("again", "reference"))
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["sources"], b["sources"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_config_and_seed_give_identical_runs_on_cuda(tmp_path):
    """cuDNN's default kernels are not bit-reproducible; `run` switches deterministic algorithms on for CUDA."""
    (tmp_path / "c.toml").write_text(RUN)
    before = torch.are_deterministic_algorithms_enabled()
    for name in ("a", "b"):
        assert main(_cli(tmp_path / "c.toml", tmp_path / name, "--device", "cuda")) == 0
    _assert_same_run(tmp_path / "b", tmp_path / "a")
    assert torch.are_deterministic_algorithms_enabled() == before  # restored


def test_meta_records_seed_and_versions(campaign):
    import json

    meta = json.loads((campaign["root"] / "reference" / "meta.json").read_text())
    assert meta["seed"] == 5 and meta["torch"] == torch.__version__ and meta["attreval"] == attreval.__version__
    assert {"python", "platform", "device", "git_revision", "threads"} <= set(meta)


# -- bad input -----------------------------------------------------------------------------------------------

WEIGHTS = Path(attreval.__file__).parent / "weights"
SMALL = """
seed = 1
[data]
limit = 300
{data}
[[models]]
name = "fashion_resnet"
{model}
[grids]
n = 2
gridpg = 2
disconnected = 2
[evaluation]
settings = ["gridpg"]
layers = ["input"]
methods = ["grad"]
smooth_methods = []
batch_size = 2
"""


def small(data: str = "", model: str = "") -> str:
    """A one-unit config with extra ``[data]`` and ``[[models]]`` lines."""
    return SMALL.format(data=data, model=model)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Weights and image folders that the bad-input cases point at."""
    from PIL import Image
    from torchvision.models import resnet18

    from attreval.models.zoo import cifar_vgg11

    root = tmp_path_factory.mktemp("assets")
    (root / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    state = torch.load(WEIGHTS / "fashion_resnet.pt", weights_only=True)
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    torch.save(state, root / "nan.pt")
    torch.manual_seed(0)
    torch.save(resnet18(num_classes=10).state_dict(), root / "resnet18.pt")  # RGB: Fashion-MNIST is grey
    torch.save(cifar_vgg11().state_dict(), root / "cifar_vgg11.pt")  # its FC classifier takes 32-px images only
    (root / "empty").mkdir()
    for c in range(3):
        (root / "classes" / f"c{c}").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (40 * i, 80 * c, 0)).save(root / "classes" / f"c{c}" / f"{i}.png")
    (root / "flat").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(root / "flat" / f"{i}.png")
    (root / "labels.txt").write_text("0.png 1\n1.png 2\n2.png 12\n")
    (root / "a_file").write_text("not a directory")
    return root


@dataclass(frozen=True)
class Case:
    """A bad input: the config text (or None: no config file), extra CLI arguments, words the message must hold."""

    config: str | None
    says: tuple[str, ...]
    args: tuple[str, ...] = ()
    out: str = "out"  # --out, relative to the case's folder, or "{assets}/…"


CASES: dict[str, Case] = {
    # weights
    "missing_weights": Case(small(model='weights = "/nonexistent/w.pt"'), ("expected weights for 'fashion_resnet'", "no such file")),
    "corrupt_weights": Case(small(model='weights = "{assets}/random.pt"'), ("expected a torch state-dict file", "unreadable")),
    "weights_of_another_architecture": Case(
        small(model=f'weights = "{WEIGHTS}/fashion_vgg.pt"'), ("expected weights for 'fashion_resnet'", "missing keys")
    ),
    "torchvision_model_without_weights": Case(
        small().replace('"fashion_resnet"', '"resnet18"'), ("expected a local weights file", "got none")
    ),
    # names
    "unknown_model": Case(
        small().replace('"fashion_resnet"', '"fashion_resnett"'), ("unknown model 'fashion_resnett'", "did you mean 'fashion_resnet'")
    ),
    "unknown_method": Case(small().replace('["grad"]', '["gradd"]'), ("unknown method 'gradd'", "did you mean 'grad'")),
    "unknown_setting": Case(small().replace('["gridpg"]', '["gridgp"]'), ("unknown setting 'gridgp'", "did you mean 'gridpg'")),
    "unknown_layer_alias": Case(small().replace('["input"]', '["midle"]'), ("unknown layer", "'midle'", "did you mean 'middle'")),
    "unknown_layer_of_the_model": Case(small().replace('["input"]', '["layer9"]'), ("unknown layer", "'layer9'", "expected one of: input")),
    "unknown_method_option": Case(
        small() + "[methods.grad]\nabs_value = true\n", ("unknown option 'abs_value'", "did you mean 'absolute'")
    ),
    # config file
    "unknown_config_key": Case(small().replace("seed = 1", "sed = 1"), ("unknown key 'sed'", "did you mean 'seed'")),
    "bad_toml": Case("seed = [\n", ("expected valid TOML", "syntax error")),
    "missing_config_file": Case(None, ("expected a config file", "found nothing")),
    "wrong_type": Case(small().replace("n = 2", 'n = "2"'), ("expected int for [grids] n", "got str")),
    "grid_size_zero": Case(small().replace("n = 2", "n = 0"), ("expected a positive [grids] n", "got 0")),
    "batch_size_zero": Case(small().replace("batch_size = 2", "batch_size = 0"), ("expected a positive [evaluation] batch_size", "got 0")),
    "confidence_above_one": Case(small().replace("n = 2", "n = 2\nconfidence = 1.5"), ("expected [grids] confidence in [0, 1]", "got 1.5")),
    # data
    "data_folder_missing": Case(
        small(data='kind = "imagefolder"\nroot = "{assets}/nowhere"'), ("expected an image directory", "missing path")
    ),
    "data_folder_empty": Case(
        small(data='kind = "imagefolder"\nroot = "{assets}/empty"'), ("expected class folders of images", "class folder")
    ),
    "labels_file_missing": Case(
        small(data='kind = "flat"\nroot = "{assets}/flat"\nlabels_file = "{assets}/nolabels.txt"'),
        ("expected a labels file", "missing path"),
    ),
    "labels_beyond_the_model_outputs": Case(
        small(
            data='kind = "flat"\nroot = "{assets}/flat"\nlabels_file = "{assets}/labels.txt"\nresize = 32\ncrop = 32',
            model='weights = "{assets}/cifar_vgg11.pt"',
        ).replace('"fashion_resnet"', '"cifar_vgg11"'),
        ("expected labels in 0..9", "got labels in 1..12"),
    ),
    "images_with_wrong_channels": Case(
        small(model='weights = "{assets}/resnet18.pt"\nnum_classes = 10').replace('"fashion_resnet"', '"resnet18"'),
        ("expected images the model can take", "(1, 32, 32)", "3 channels"),
    ),
    "images_of_the_wrong_size": Case(
        small(
            data='kind = "imagefolder"\nroot = "{assets}/classes"\nresize = 64\ncrop = 64', model='weights = "{assets}/cifar_vgg11.pt"'
        ).replace('"fashion_resnet"', '"cifar_vgg11"'),
        ("expected images the model can take", "(3, 64, 64)", "shapes cannot be multiplied"),
    ),
    "non_finite_model_outputs": Case(small(model='weights = "{assets}/nan.pt"'), ("expected finite model outputs", "NaN/inf")),
    # grids
    "grid_cells_exceed_classes": Case(small().replace("n = 2", "n = 4"), ("expected at least 16 classes", "for 4×4 grids")),
    "too_few_confident_images": Case(small().replace("gridpg = 2", "gridpg = 100000"), ("expected 100000 2×2 grids", "got only")),
    "no_confident_image": Case(
        small().replace("n = 2", "n = 2\nconfidence = 1.0"), ("expected at least 4 classes with confident images", "got")
    ),
    # output directory and device
    "output_under_a_file": Case(small(), ("expected a writable output directory", "Not a directory"), out="{assets}/a_file/out"),
    "output_under_proc": Case(small(), ("expected a writable output directory",), out="/proc/attreval-out"),
    "output_is_a_file": Case(small(), ("expected an empty or new output directory", "got the file"), out="{assets}/a_file"),
    "unknown_device": Case(small(), ("expected a device like cpu", "got 'tpu'"), args=("--device", "tpu")),
    "cuda_without_cuda": Case(small(), ("expected a CUDA device", "torch finds none"), args=("--device", "cuda")),
    "meta_device": Case(small(), ("expected a device like cpu, cuda, cuda:0, mps or auto", "got 'meta'"), args=("--device", "meta")),
    "mps_without_mps": Case(small(), ("expected an Apple MPS device", "torch finds none"), args=("--device", "mps")),
    # grid counts and sizes that cannot give a table
    "grid_size_one": Case(small().replace("n = 2", "n = 1"), ("expected [grids] n ≥ 2", "got 1")),
    "no_gridpg_grids_for_gridpg": Case(
        small().replace("gridpg = 2", "gridpg = 0"), ("expected a positive [grids] gridpg with the gridpg setting", "got 0")
    ),
    "no_disconnected_grids_for_difull": Case(
        small().replace("disconnected = 2", "disconnected = 0").replace('settings = ["gridpg"]', 'settings = ["difull"]'),
        ("expected a positive [grids] disconnected with the difull/dipart settings", "got 0"),
    ),
    # silently wrong before: duplicated rows, an empty table
    "method_listed_twice": Case(small().replace('["grad"]', '["grad", "grad"]'), ("expected each of [evaluation] methods once", "'grad'")),
    "layer_listed_twice": Case(
        small().replace('["input"]', '["input", "input"]'), ("expected each of [evaluation] layers once", "'input'")
    ),
    "no_methods": Case(small().replace('["grad"]', "[]"), ("expected at least one name in [evaluation] methods", "got []")),
    "no_settings": Case(small().replace('["gridpg"]', "[]"), ("expected at least one name in [evaluation] settings", "got []")),
    # names that become file names
    "label_escaping_the_run_directory": Case(
        small(model='label = "../../escaped"'), ("expected a model label of letters", "'../../escaped'")
    ),
    "label_with_the_unit_separator": Case(small(model='label = "a__b"'), ("no '__'", "'a__b'")),
    "hidden_label": Case(small(model='label = ".hidden"'), ("no leading '.'", "'.hidden'")),
}


def _assert_one_line_error(capfd, rc: int, says: tuple[str, ...], caught: list) -> str:
    err = capfd.readouterr().err
    # What Python would print on stderr outside pytest (its default filters hide these categories).
    shown = [
        w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning))
    ]
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("attreval: error: ") and err.endswith("\n"), err
    assert "Traceback" not in err and not shown, (err, [str(w.message) for w in shown])
    assert all(s in err for s in says), err
    return err


def _main_recording_warnings(args: list[str]) -> tuple[int, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(args)
    return rc, caught


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(name, assets, tmp_path, capfd, one_thread):
    case = CASES[name]
    if name == "cuda_without_cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if name == "mps_without_mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    config = tmp_path / "bad.toml"
    if case.config is not None:
        config.write_text(case.config.replace("{assets}", str(assets)))
    out = Path(case.out.replace("{assets}", str(assets))) if case.out != "out" else tmp_path / "out"
    before = sorted(assets.rglob("*"))
    rc, caught = _main_recording_warnings(_cli(config, out, *case.args))
    _assert_one_line_error(capfd, rc, case.says, caught)
    assert not (tmp_path / "out").exists()  # no run directory, not even an empty one
    assert sorted(assets.rglob("*")) == before


def _snapshot(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize(
    "resume, change, says",
    [
        (True, {"seed = 5": "seed = 6"}, ("expected --resume with the config of", "differs in: seed")),
        (True, {"n_steps = 8": "n_steps = 9"}, ("got a different config", "differs in: methods")),
        (False, {}, ("expected an empty output directory", "pass --resume")),
    ],
)
def test_an_existing_run_is_refused_and_left_untouched(campaign, tmp_path, capfd, resume, change, says):
    reference = campaign["root"] / "reference"
    text = RUN
    for old, new in change.items():
        text = text.replace(old, new)
    (tmp_path / "c.toml").write_text(text)
    before = _snapshot(reference)
    rc, caught = _main_recording_warnings(_cli(tmp_path / "c.toml", reference, *(["--resume"] if resume else [])))
    _assert_one_line_error(capfd, rc, says, caught)
    assert _snapshot(reference) == before


def test_resume_into_a_directory_that_is_no_run_is_refused_and_left_untouched(tmp_path, capfd):
    """Without config.json a non-empty folder is not ours: --resume must neither adopt nor (on failure) delete it."""
    folder = tmp_path / "my_files"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    (tmp_path / "c.toml").write_text(small())
    rc, caught = _main_recording_warnings(_cli(tmp_path / "c.toml", folder, "--resume"))
    _assert_one_line_error(capfd, rc, ("expected an empty or new output directory", "non-empty directory"), caught)
    assert _snapshot(folder) == {"thesis.tex": (folder / "thesis.tex").stat().st_mtime_ns}


def test_a_given_empty_output_directory_stays_empty_after_a_failure(assets, tmp_path, capfd, one_thread):
    out = tmp_path / "empty_out"
    out.mkdir()
    (tmp_path / "c.toml").write_text(CASES["non_finite_model_outputs"].config.replace("{assets}", str(assets)))
    rc, caught = _main_recording_warnings(_cli(tmp_path / "c.toml", out))
    _assert_one_line_error(capfd, rc, ("expected finite model outputs",), caught)
    assert out.is_dir() and not any(out.iterdir())


def test_images_of_mismatched_sizes_in_one_dataset():
    """Not reachable from a config (folders are resized and centre-cropped to one size; IDX and CIFAR-10
    files hold one size): the library call that would receive such a dataset says so in one line."""
    from torch.utils.data import Dataset

    from attreval.data import build_grid_dataset

    class Mixed(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(1, 32 if i < 2 else 28, 32), i

    with pytest.raises(ValueError, match=r"expected every image of shape \(1, 32, 32\), got \(1, 28, 32\) at index 2"):
        build_grid_dataset(Mixed(), [], 1, 1)


def test_bad_input_through_a_real_process(assets, tmp_path):
    """The same contract from a real `python -m attreval` process (interpreter, warnings and all); one kind only,
    as each process costs an interpreter start-up: a late one (after model loading, in the first forward pass)."""
    case = CASES["images_with_wrong_channels"]
    (tmp_path / "bad.toml").write_text(case.config.replace("{assets}", str(assets)))
    proc = subprocess.run(
        [sys.executable, "-m", "attreval", *_cli(tmp_path / "bad.toml", tmp_path / "out")],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = proc.stderr
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("attreval: error: ") and "Traceback" not in err, err
    assert all(s in err for s in case.says), err
    assert not (tmp_path / "out").exists()
