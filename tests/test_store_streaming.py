"""Maps streamed to the store batch by batch (`MapWriter`): memory flat in the number of grids, the same
table and maps whatever the batch size, the float16 → float32 switch, and no maps file from a failed or
killed unit."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import attreval.runs.run
from attreval.config import load_config
from attreval.runs import mapfile as store_module
from attreval.runs.mapfile import MapWriter, _save_npy
from attreval.runs.run import run
from attreval.runs.store import RunStore, Unit
from tiny_models import tiny_run_config

pytestmark = pytest.mark.slow  # end-to-end runs / zoo / training: left out of `make test-fast`

GRIDS = 3  # per kind: batch_size 2 gives a full and a partial batch
KEY = ["model", "setting", "layer", "method", "kernel_size", "grid", "cell", "head"]
F16_MAX = float(np.finfo(np.float16).max)


def _config(
    tmp: Path,
    batch_size: int,
    *,
    store_maps: bool = True,
    settings=("gridpg", "difull"),
    layers=("input", "final"),
    methods=("grad", "input_x_grad", "grad_cam"),
):
    body = f"""
[evaluation]
settings = {json.dumps(list(settings))}
layers = {json.dumps(list(layers))}
methods = {json.dumps(list(methods))}
smooth_methods = ["input_x_grad"]
kernel_sizes = [9, 65]
batch_size = {batch_size}
store_maps = {str(store_maps).lower()}
"""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "run.toml").write_text(tiny_run_config(11, body, gridpg=GRIDS, disconnected=GRIDS))
    return load_config(tmp / "run.toml")


@dataclasses.dataclass(frozen=True)
class Wrapped(attreval.Method):
    """A run's method replaced by a test's callable ``task -> maps``."""

    call: Callable

    def __call__(self, task):
        return self.call(task)


def patch_methods(mp: pytest.MonkeyPatch, make: Callable) -> None:
    """Every method of a run replaced by ``make(name, method)``, a callable ``task -> maps``."""
    original = attreval.runs.run.resolve_methods

    def patched(config, in_memory=None):
        return {name: Wrapped(make(name, method)) for name, method in original(config, in_memory).items()}

    mp.setattr(attreval.runs.run, "resolve_methods", patched)


class Spy:
    """Records the batch size of every maps array the run handles: the method's output, what localization and
    smoothing see, what the map writer receives and what reaches the file."""

    def __init__(self, mp: pytest.MonkeyPatch):
        self.method, self.scored, self.smoothed, self.writes, self.rows = [], [], [], [], []
        parts, smooth = attreval.runs.run.localization_parts, attreval.runs.run.smooth_sweep
        write, rows = MapWriter.write, store_module._write_rows

        def resolve_spy(name, method):
            def spied(task):
                maps = method(task)
                self.method.append(len(maps))
                return maps

            return spied

        patch_methods(mp, resolve_spy)
        mp.setattr(attreval.runs.run, "localization_parts", lambda maps, *a: self.scored.append(len(maps)) or parts(maps, *a))
        mp.setattr(attreval.runs.run, "smooth_sweep", lambda maps, *a: self.smoothed.append(len(maps)) or smooth(maps, *a))
        mp.setattr(
            MapWriter,
            "write",
            lambda w, start, batch, *rest: self.writes.append((w.path.stem, start, len(batch))) or write(w, start, batch, *rest),
        )
        mp.setattr(store_module, "_write_rows", lambda path, start, r: self.rows.append(len(r)) or rows(path, start, r))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same config run with batch_size 2 (spied), 64 (one batch) and 2 without stored maps (spied)."""
    root = tmp_path_factory.mktemp("streaming")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        out["spy2"] = Spy(mp)
        out[2] = run(_config(root / "c2", 2), root / "bs2", progress=False)
    out[64] = run(_config(root / "c64", 64), root / "bs64", progress=False)
    with pytest.MonkeyPatch.context() as mp:
        out["spy_nomaps"] = Spy(mp)
        out["nomaps"] = run(_config(root / "cn", 2, store_maps=False), root / "nomaps", progress=False)
    return out


def test_batch_size_changes_neither_table_nor_maps(runs):
    small, large = runs[2].results(), runs[64].results()
    assert len(small) == (GRIDS * 4 + GRIDS * 2) * 2 * (1 + 3 + 1)  # cells × layers × (grad, S-IxG 1 + 2, CAM)
    pd.testing.assert_frame_equal(small.drop(columns=["score", "inside", "total"]), large.drop(columns=["score", "inside", "total"]))
    np.testing.assert_allclose(small["score"], large["score"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(small[["inside", "total"]], large[["inside", "total"]], rtol=1e-5, atol=1e-7)
    assert not small.duplicated(KEY).any()
    units = sorted(p.name for p in (runs[2].root / "maps").glob("*.npy"))
    assert units == sorted(p.name for p in (runs[64].root / "maps").glob("*.npy")) and len(units) == 12
    for name in units:
        a, b = np.load(runs[2].root / "maps" / name), np.load(runs[64].root / "maps" / name)
        # float16 where it gives back the unit's scores, else float32 (attreval.runs.mapfile): batches may choose differently
        assert {a.dtype, b.dtype} <= {np.dtype(np.float16), np.dtype(np.float32)} and a.shape == b.shape and a.shape[0] == GRIDS
        # equal up to one float16 rounding step: the method's batched arithmetic differs in float32's last bits
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=2**-10, atol=1e-7, err_msg=name)
    assert not list(runs[2].root.rglob("*.tmp")) and not list(runs[64].root.rglob("*.tmp"))


def test_no_array_holds_more_than_one_batch_of_maps(runs):
    spy = runs["spy2"]
    units = 12
    assert spy.method == [2, 1] * units  # the method runs once per batch
    assert max(spy.scored) <= 2 and max(spy.smoothed) <= 2 and max(spy.rows) <= 2
    # per batch: every unit once, S-IxG's two kernels more; again from the float16 copy while a unit's file is float16
    assert 2 * (units + 2 * 4) <= len(spy.scored) <= 2 * 2 * (units + 2 * 4)
    by_unit = {}
    for stem, start, size in spy.writes:
        by_unit.setdefault(stem, []).append((start, size))
    assert len(by_unit) == units and all(w == [(0, 2), (2, 1)] for w in by_unit.values())


def test_store_maps_false_writes_no_maps_and_keeps_none(runs):
    spy, table = runs["spy_nomaps"], runs["nomaps"].results()
    assert not list((runs["nomaps"].root / "maps").glob("*")) and spy.writes == [] and spy.rows == []
    assert max(spy.scored) <= 2 and max(spy.smoothed) <= 2
    pd.testing.assert_frame_equal(table, runs[2].results())


def test_writer_switches_to_float32_when_a_batch_does_not_fit(tmp_path):
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((2, 3, 4, 4)).astype(np.float32) for _ in range(3)]
    batches[1][1, 2, 3, 0] = 1e6  # beyond float16
    batches[2] *= 1e-3
    path = tmp_path / "maps" / "u.npy"
    with MapWriter(path, 6) as writer:
        for i, batch in enumerate(batches):
            writer.write(2 * i, batch)
            assert writer.dtype == (np.float16 if i == 0 else np.float32)
        assert not path.exists()
        writer.commit()
    stored = np.load(path)
    assert stored.dtype == np.float32 and stored.shape == (6, 3, 4, 4)
    assert np.array_equal(stored[:2], batches[0].astype(np.float16).astype(np.float32))  # the switch copies exactly
    assert np.array_equal(stored[2:], np.concatenate(batches[1:]))  # from the switch on: float32 values
    assert sorted(p.name for p in path.parent.iterdir()) == ["u.npy"]


def test_writer_float16_file_is_byte_identical_to_a_whole_array_save(tmp_path):
    maps = np.random.default_rng(1).standard_normal((5, 2, 8, 8)).astype(np.float32) * 100
    maps[4, 0, 0, 0] = -65000.0  # still fits
    whole = tmp_path / "whole.npy"
    _save_npy(whole, maps)
    with MapWriter(tmp_path / "streamed.npy", 5) as writer:
        for start in range(0, 5, 2):
            writer.write(start, maps[start : start + 2])
        writer.commit()
    assert (tmp_path / "streamed.npy").read_bytes() == whole.read_bytes()
    assert np.load(whole).dtype == np.float16


def test_writer_rejects_gaps_and_an_incomplete_commit(tmp_path):
    with MapWriter(tmp_path / "u.npy", 4) as writer:
        writer.write(0, np.zeros((2, 1, 2, 2), np.float32))
        with pytest.raises(ValueError, match="expected maps"):
            writer.write(3, np.zeros((1, 1, 2, 2), np.float32))
        with pytest.raises(ValueError, match="expected maps of shape"):
            writer.write(2, np.zeros((2, 1, 3, 3), np.float32))
        with pytest.raises(ValueError, match="all 4 grids"):
            writer.commit()
    assert list(tmp_path.iterdir()) == []  # discarded on leaving the block uncommitted


def test_run_switches_a_unit_to_float32_when_a_later_batch_overflows(tmp_path, monkeypatch):
    seen = []

    def huge_second_batch(name, method):
        def scaled(task):
            maps = method(task).float()
            maps = maps * (1e6 / maps.abs().max()) if len(seen) == 1 else maps  # the second batch: |max| = 10⁶
            seen.append(maps.detach().cpu().numpy().copy())
            return maps

        return scaled

    patch_methods(monkeypatch, huge_second_batch)
    config = _config(tmp_path / "c", 2, settings=("gridpg",), layers=("input",), methods=("grad",))
    store = run(config, tmp_path / "out", progress=False)
    stored = store.maps("fashion_resnet", "gridpg", "input", "grad")
    assert stored.dtype == np.float32 and len(seen) == 2 and np.abs(seen[1]).max() >= F16_MAX
    # the first batch as it was written: float16 if that kept its scores (then widened exactly), else float32
    assert np.array_equal(stored[:2], seen[0].astype(np.float16).astype(np.float32)) or np.array_equal(stored[:2], seen[0])
    assert np.array_equal(stored[2:], seen[1])
    assert store.results()["score"].between(0, 1).all() and not list(store.root.rglob("*.tmp"))


def test_failed_unit_leaves_no_maps_file(tmp_path, monkeypatch):
    calls = []

    def nan_in_second_cam_batch(name, method):
        def failing(task):
            maps = method(task)
            calls.append(name)
            return maps * torch.nan if name == "grad_cam" and calls.count(name) == 2 else maps

        return failing

    patch_methods(monkeypatch, nan_in_second_cam_batch)
    config = _config(tmp_path / "c", 2, settings=("gridpg",), layers=("input",), methods=("grad", "grad_cam"))
    with pytest.raises(ValueError, match="expected finite attribution maps, got NaN/inf from grad_cam"):
        run(config, tmp_path / "out", progress=False)
    store = RunStore(tmp_path / "out")
    done, failed = Unit("fashion_resnet", "gridpg", "input", "grad"), Unit("fashion_resnet", "gridpg", "input", "grad_cam")
    assert store.is_done(done) and store.map_path(done).exists()
    assert not store.is_done(failed) and not store.map_path(failed).exists()
    assert not list(store.root.rglob("*.tmp"))  # the half-written maps were discarded


def test_killed_unit_leaves_only_a_temporary_file(tmp_path):
    unit = Unit("m", "gridpg", "input", "grad")
    script = f"""
import os, signal, numpy as np
from attreval.runs.store import RunStore, Unit
writer = RunStore({str(tmp_path)!r}).map_writer(Unit(*{list(vars(unit).values())!r}), 4)
with writer:
    writer.write(0, np.ones((2, 1, 2, 2), np.float32))
    writer.write(2, np.full((1, 1, 2, 2), 1e6, np.float32))  # a switch to float32 too
    os.kill(os.getpid(), signal.SIGKILL)  # no clean-up code runs
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = RunStore(tmp_path)
    left = [p.name for p in (tmp_path / "maps").iterdir()]
    assert not store.map_path(unit).exists() and len(left) == 1
    assert left[0].startswith(f".{unit.key}.npy.") and left[0].endswith(".tmp")
    store.remove_temporary()
    assert list((tmp_path / "maps").iterdir()) == []


def test_out_of_memory_halves_chunk_size_and_gives_the_same_table(tmp_path, monkeypatch, caplog):
    """A method that runs out of memory above 16 inputs per forward: the unit is retried with chunk_size
    halved (64 → 32 → 16), kept for its later batches, with the same table and pass counts as a run at 16."""
    chunks_seen = []

    def tight(name, method):
        def call(task):
            chunks_seen.append(task.chunk_size)
            if task.chunk_size > 16:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return method(task)

        return call

    config = _config(tmp_path / "a", 2, methods=("int_grad",), layers=("input",))
    expected = run(
        dataclasses.replace(config, evaluation=dataclasses.replace(config.evaluation, chunk_size=16)), tmp_path / "expected", progress=False
    )
    patch_methods(monkeypatch, tight)
    with caplog.at_level("WARNING"):
        got = run(config, tmp_path / "got", progress=False)
    pd.testing.assert_frame_equal(got.results(), expected.results())
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "got" / "costs.parquet")[["forward_passes", "backward_passes"]],
        pd.read_parquet(tmp_path / "expected" / "costs.parquet")[["forward_passes", "backward_passes"]],
    )
    assert chunks_seen == [64, 32, 16, 16] * 2  # per unit: halved twice, kept for its second batch
    assert "out of memory with chunk_size 64; retrying with 32" in caplog.text


def test_out_of_memory_at_chunk_size_one_is_a_one_line_error(tmp_path, monkeypatch):
    patch_methods(
        monkeypatch,
        lambda name, method: (
            lambda task: (_ for _ in ()).throw(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 bytes"))
        ),
    )
    with pytest.raises(ValueError, match=r"to fit in memory with chunk_size 1, got out of memory; lower batch_size"):
        run(_config(tmp_path / "c", 2, methods=("grad",), layers=("input",)), tmp_path / "out", progress=False)


def test_writer_reserves_the_whole_file_before_writing_through_the_map(tmp_path):
    """A sparse maps file turns a full disk into SIGBUS at a page fault; the file is allocated when created."""
    with MapWriter(tmp_path / "u.npy", 64) as writer:
        writer.write(0, np.ones((1, 4, 32, 32), np.float32))
        stat = os.stat(writer.tmp)
        assert stat.st_size > 64 * 4 * 32 * 32 * 2 and stat.st_blocks * 512 >= stat.st_size  # no holes left
