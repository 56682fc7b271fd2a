"""Integrity, second pass (docs/reliability.md): a run's identity covers the content of every input, so
``--resume`` never mixes two models or two data sets; nothing inside ``--out`` is written through a symbolic
link; manifest records are bound to their path, their run and (for a part) the unit's maps and timing; and
``load_run`` verifies by default.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from attreval.cli import main
from attreval.config import load_config
from attreval.models.zoo import weights_path
from attreval.runs.reader import load_run
from attreval.runs.store import RunStore, Unit
from test_integrity import BODY, _cli, _one_line  # the same small end-to-end config
from tiny_models import tiny_run_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # end-to-end runs

PART = "parts/fashion_resnet__gridpg__input__grad.parquet"
MAPS = ("maps/fashion_resnet__gridpg__input__grad.npy", "maps/fashion_resnet__gridpg__input__grad_cam.npy")
NET = """from attreval.models.zoo import build_model


def build():
    return build_model("fashion_resnet")
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """Finished 4-unit runs whose inputs are files of their own folder: weights ``w.pt``, an architecture file
    ``net.py`` and a copy of the Fashion-MNIST test files (seed 7), and the same config with seed 8."""
    root = tmp_path_factory.mktemp("inputs")
    shutil.copy(weights_path("fashion_resnet"), root / "w.pt")
    (root / "net.py").write_text(NET)
    from attreval.data.fashion_mnist import EMBEDDED_DIR

    shutil.copytree(EMBEDDED_DIR, root / "data", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for seed in (7, 8):
        text = tiny_run_config(seed, BODY).replace(
            'name = "fashion_resnet"', 'name = "fashion_resnet"\nweights = "w.pt"\narchitecture = "net.py:build"'
        )
        text = text.replace("[data]\n", '[data]\nroot = "data"\n')
        (root / f"s{seed}.toml").write_text(text)
        assert main(_cli(root / f"s{seed}.toml", root / f"run{seed}")) == 0
    return root


def _copy(runs: Path, tmp_path: Path) -> Path:
    """A copy of run7 (its inputs stay where its config points: in ``runs``)."""
    shutil.copytree(runs / "run7", tmp_path / "run")
    return tmp_path / "run"


@contextlib.contextmanager
def _changed(path: Path, edit):
    """``edit(path)`` for the duration of the block, then the original back (the module's runs share their inputs)."""
    backup = path.with_name(path.name + ".orig")
    (shutil.copytree if path.is_dir() else shutil.copy2)(path, backup)
    try:
        edit(path)
        yield
    finally:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        backup.rename(path)


def _drop_unit(out: Path) -> None:
    """As a kill after three of the four units: one part (and its record) gone."""
    (out / PART).unlink()
    (out / "manifest" / f"{PART}.json").unlink()


# -- 1. a run's identity covers every input's content ----------------------------------------------------------


def test_input_files_list_weights_architecture_and_labels_file(runs):
    from attreval.runs.identity import input_files, run_identity

    config = load_config(runs / "s7.toml")
    files = input_files(config)
    assert files == {"models[fashion_resnet].weights": runs / "w.pt", "models[fashion_resnet].architecture": runs / "net.py"}
    identity = run_identity(config)
    assert identity["data"]["files"] == len([p for p in (runs / "data").rglob("*") if p.is_file()]) and identity["data"]["sha256"]
    assert run_identity(config) == identity  # deterministic


def _other_weights(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    torch.save({k: (v + 0.01 if v.is_floating_point() else v) for k, v in state.items()}, path)


def _edit_architecture(path: Path) -> None:
    path.write_text(path.read_text().replace('build_model("fashion_resnet")', 'build_model("fashion_resnet")  # edited'))


def _other_data(path: Path) -> None:
    labels = path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8], raw[9] = raw[9], raw[8]  # two labels swapped
    labels.write_bytes(gzip.compress(bytes(raw)))


CHANGES = {
    "weights": ("w.pt", _other_weights, "models[fashion_resnet].weights (other contents)"),
    "architecture": ("net.py", _edit_architecture, "models[fashion_resnet].architecture (other contents)"),
    "data": ("data", _other_data, "the data in"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resume_with_a_changed_input_is_refused_naming_it(runs, tmp_path, capfd, change):
    """Before: exit 0, and the table held rows of both models (or both data sets)."""
    out = _copy(runs, tmp_path)
    _drop_unit(out)
    name, edit, says = CHANGES[change]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".attreval.lock"}
    with _changed(runs / name, edit):
        _one_line(capfd, main(_cli(runs / "s7.toml", out, "--resume")), "changed", says)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".attreval.lock"} == before


def test_resume_with_the_same_inputs_gives_the_uninterrupted_table(runs, tmp_path, capfd):
    out = _copy(runs, tmp_path)
    _drop_unit(out)
    with _changed(runs / "w.pt", os.utime):  # a new modification time, the same bytes: weights are compared by content
        assert main(_cli(runs / "s7.toml", out, "--resume")) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), pd.read_parquet(runs / "run7" / "results.parquet"))
    assert main(["verify", str(out)]) == 0


# -- 2. nothing is written through a symbolic link ---------------------------------------------------------------


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("not attreval's")
    return victim


def test_a_lock_file_link_in_an_empty_out_is_refused_and_its_target_untouched(runs, tmp_path, capfd):
    victim = _victim(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / ".attreval.lock").symlink_to(victim)
    _one_line(capfd, main(_cli(runs / "s7.toml", out)), "symbolic link", ".attreval.lock")
    assert victim.read_text() == "not attreval's" and [p.name for p in out.iterdir()] == [".attreval.lock"]


@pytest.mark.parametrize("entry", [".attreval.lock", "manifest", "parts"])
def test_a_link_inside_a_finished_run_is_refused_on_resume(runs, tmp_path, capfd, entry):
    out = _copy(runs, tmp_path)
    _drop_unit(out)
    victim = _victim(tmp_path)
    if entry == ".attreval.lock":
        (out / entry).unlink(missing_ok=True)
        (out / entry).symlink_to(victim)
    else:  # the folder moved outside, a link left in its place
        shutil.move(out / entry, victim.parent / entry)
        (out / entry).symlink_to(victim.parent / entry)
    before = {p: p.read_bytes() for p in victim.parent.rglob("*") if p.is_file()}
    _one_line(capfd, main(_cli(runs / "s7.toml", out, "--resume")), "symbolic link", entry)
    assert {p: p.read_bytes() for p in victim.parent.rglob("*") if p.is_file()} == before
    assert main(["verify", str(out)]) == 2 and entry in capfd.readouterr().err


def test_a_linked_report_folder_is_refused_and_nothing_outside_is_deleted(runs, tmp_path, capfd):
    """Before: the report wrote its figures through the link and deleted a foreign PNG there."""
    out = _copy(runs, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "holiday.png").write_bytes(b"\x89PNG foreign")
    (out / "report").symlink_to(outside)
    _one_line(capfd, main(["report", str(out)]), "symbolic link", "report")
    assert [p.name for p in outside.iterdir()] == ["holiday.png"]
    with pytest.raises(ValueError, match="symbolic link"):
        load_run(out)


def test_store_writes_refuse_a_linked_folder_inside_the_run(tmp_path):
    store = RunStore(tmp_path / "run")
    (tmp_path / "run").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run" / "timings").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="symbolic link"):
        store.write_json("timings/u.json", {})
    assert not list((tmp_path / "elsewhere").iterdir())


# -- 3. records bound to their file, run and unit; load_run verifies ---------------------------------------------


def test_two_maps_swapped_with_their_records_fail_verify(runs, tmp_path, capfd):
    out = _copy(runs, tmp_path)
    a, b = (out / m for m in MAPS)
    ra, rb = (out / "manifest" / f"{m}.json" for m in MAPS)
    tmp = out / "swap"
    for x, y in ((a, b), (ra, rb)):
        x.rename(tmp)
        y.rename(x)
        tmp.rename(y)
    assert main(["verify", str(out)]) == 2
    err = capfd.readouterr().err
    assert MAPS[0] in err and MAPS[1] in err and "swapped" in err, err
    _one_line(capfd, main(_cli(runs / "s7.toml", out, "--resume")), "swapped")


def test_a_map_deleted_with_its_record_is_named_and_recomputed(runs, tmp_path, capfd):
    out = _copy(runs, tmp_path)
    (out / MAPS[0]).unlink()
    (out / "manifest" / f"{MAPS[0]}.json").unlink()
    assert main(["verify", str(out)]) == 2
    assert MAPS[0] in capfd.readouterr().err
    assert main(_cli(runs / "s7.toml", out, "--resume")) == 0
    assert (out / MAPS[0]).read_bytes() == (runs / "run7" / MAPS[0]).read_bytes()
    assert main(["verify", str(out)]) == 0


def test_a_part_with_its_record_from_another_run_fails_verify(runs, tmp_path, capfd):
    out = _copy(runs, tmp_path)
    shutil.copy(runs / "run8" / PART, out / PART)
    shutil.copy(runs / "run8" / "manifest" / f"{PART}.json", out / "manifest" / f"{PART}.json")
    assert main(["verify", str(out)]) == 2
    assert PART in capfd.readouterr().err
    with pytest.raises(ValueError, match=PART):
        load_run(out)


def test_load_run_names_tampered_tables_and_maps_and_reads_them_with_verify_false(runs, tmp_path):
    """Before: load_run returned tampered scores and damaged maps without a word."""
    out = _copy(runs, tmp_path)
    table = pd.read_parquet(out / "results.parquet")
    table["score"] = 1.0 - table["score"]
    table.to_parquet(out / "results.parquet", index=False)
    with pytest.raises(ValueError, match="results.parquet"):
        _ = load_run(out).results
    assert (load_run(out, verify=False).results["score"] == table["score"]).all()
    shutil.copy(runs / "run7" / "results.parquet", out / "results.parquet")
    data = bytearray((out / MAPS[1]).read_bytes())
    data[-64:] = bytes(b ^ 0xFF for b in data[-64:])  # same size: caught when the maps are read
    (out / MAPS[1]).write_bytes(bytes(data))
    run = load_run(out)
    assert len(run.results) and run.maps(*Path(MAPS[0]).stem.split("__")).shape[0] == 2
    with pytest.raises(ValueError, match=Path(MAPS[1]).name):
        run.maps(*Path(MAPS[1]).stem.split("__"))
    assert load_run(out, verify=False).maps(*Path(MAPS[1]).stem.split("__")).shape[0] == 2


def test_an_unrecorded_file_of_the_layout_is_an_error_for_load_run_and_no_unit(runs, tmp_path, capfd):
    """Before: a stray parts/junk.parquet made Run.units() raise a TypeError."""
    out = _copy(runs, tmp_path)
    shutil.copy(out / PART, out / "parts" / "junk.parquet")
    with pytest.raises(ValueError, match="junk.parquet: no manifest record"):
        load_run(out)
    units = load_run(out, verify=False).units()
    assert len(units) == 4 and all(isinstance(u, Unit) for u in units)
    assert main(["verify", str(out)]) == 2 and "junk.parquet" in capfd.readouterr().err


# -- 5. a documented config parses; a factory's sys.exit is an error -------------------------------------------


def test_a_timm_name_without_a_label_parses(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[models]]\nname = "timm:resnet18"\nweights = "w.pt"\n')
    config = load_config(path)
    assert config.models[0].key == "timm-resnet18"
    from attreval.config.checks import validate

    validate(config)


def test_a_factory_calling_sys_exit_is_one_line_not_exit_0(runs, tmp_path, capfd):
    (tmp_path / "net.py").write_text("import sys\n\n\ndef build():\n    sys.exit(0)\n")
    config = (runs / "s7.toml").read_text().replace('weights = "w.pt"\n', "")
    (tmp_path / "c.toml").write_text(config.replace('root = "data"', f'root = "{runs / "data"}"'))
    _one_line(capfd, main(_cli(tmp_path / "c.toml", tmp_path / "run")), "sys.exit(0)", "net.py:build")
    assert not (tmp_path / "run").exists()


def test_identity_json_is_recorded_and_bound_to_every_record(runs):
    identity = json.loads((runs / "run7" / "identity.json").read_text())
    records = [json.loads(p.read_text()) for p in (runs / "run7" / "manifest").rglob("*.json")]
    assert records and all(r["run"] == identity["fingerprint"] for r in records)
    assert all(
        r["file"] == str(p.relative_to(runs / "run7" / "manifest"))[: -len(".json")]
        for r, p in zip(records, (runs / "run7" / "manifest").rglob("*.json"))
    )
