"""Integrity of a run directory (docs/reliability.md, *Integrity*): the manifest catches every kind of damaged,
swapped or deleted file in `--resume`, `attreval report` and `attreval verify` with one line naming it; a full
disk is one line and resumes to the same table; a crafted CIFAR-10 batch runs no code; names cannot leave the
run directory; a second process on a locked run directory stops at once; workers die with their launcher.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attreval.cli import main
from attreval.runs.lock import RunLock
from attreval.runs.manifest import Manifest
from attreval.runs.store import RunStore, Unit
from attreval.runs.verify import verify_run
from tiny_models import tiny_run_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # end-to-end runs / zoo / training: left out of `make test-fast`

BODY = """
[evaluation]
settings = ["gridpg", "difull"]
layers = ["input"]
methods = ["grad", "grad_cam"]
smooth_methods = []
batch_size = 2
"""
UNITS = 4
PART = "parts/fashion_resnet__gridpg__input__grad.parquet"
MAPS = "maps/fashion_resnet__difull__input__grad_cam.npy"
TIMING = "timings/fashion_resnet__gridpg__input__grad_cam.json"
GRID = "grids/fashion_resnet__gridpg.pt"
TARGETS = (GRID, PART, MAPS, TIMING, "results.parquet", "costs.parquet", "config.json")


def _cli(config: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(config), "--out", str(out), "-q", "--no-report", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """A finished 4-unit run (seed 7) and one of seed 8 (its grid files are 'another seed's grids')."""
    root = tmp_path_factory.mktemp("integrity")
    for seed in (7, 8):
        (root / f"s{seed}.toml").write_text(tiny_run_config(seed, BODY))
        assert main(_cli(root / f"s{seed}.toml", root / f"run{seed}")) == 0
    return root


def _copy(runs: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(runs / "run7", out)
    return out


def _one_line(capfd, rc: int, *says: str) -> str:
    err = capfd.readouterr().err
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("attreval: error: ") and "Traceback" not in err, err
    assert all(s in err for s in says), err
    return err


def _damage(out: Path, rel: str, kind: str, runs: Path) -> None:
    """Apply one corruption ``kind`` to ``out/rel``."""
    path = out / rel
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif kind == "flipped":  # 64 bytes in the middle, the file keeps its size
        mid = len(data) // 2
        data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
        path.write_bytes(bytes(data))
    elif kind == "valid_but_wrong":  # a well-formed file with other contents
        if rel.endswith(".parquet"):  # results and parts: other scores; costs: other times
            table = pd.read_parquet(path)
            if "score" in table:
                table["score"] = 1.0 - table["score"]
            else:
                table["seconds"] = table["seconds"] * 2
            table.to_parquet(path, index=False)
        elif rel.endswith(".npy"):
            np.save(path, np.load(path) * 2)
        elif rel.endswith(".json"):
            record = json.loads(path.read_text())
            record["seed" if "seed" in record else "seconds"] = 99
            path.write_text(json.dumps(record, indent=2, sort_keys=True))
        else:  # a grid file: the other kind's grids of the same run
            shutil.copy(out / "grids" / "fashion_resnet__disconnected.pt", path)
    elif kind == "other_seed":  # the grid file of the seed-8 run
        shutil.copy(runs / "run8" / rel, path)
    else:
        raise AssertionError(kind)


KINDS = ("truncated", "flipped", "valid_but_wrong")
CASES = [(rel, kind) for rel in TARGETS for kind in KINDS] + [(GRID, "other_seed")]


@pytest.mark.parametrize("rel, kind", CASES, ids=[f"{r.split('/')[-1]}-{k}" for r, k in CASES])
def test_every_damaged_file_is_named_by_verify_resume_and_report(runs, tmp_path, capfd, rel, kind):
    out = _copy(runs, tmp_path)
    _damage(out, rel, kind, runs)
    # attreval verify: exit 2, one line, naming exactly this file
    assert main(["verify", str(out)]) == 2
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 1 and rel in err[0] and err[0].startswith("attreval: bad file: "), err
    # attreval report: what it reads is verified first
    _one_line(capfd, main(["report", str(out)]), rel)
    assert not (out / "report.html").exists()
    # --resume: what it keeps must be intact; what it rebuilds anyway (the merged tables) is rebuilt
    rc = main(_cli(runs / "s7.toml", out, "--resume"))
    if rel in ("results.parquet", "costs.parquet"):
        assert rc == 0
        pd.testing.assert_frame_equal(pd.read_parquet(out / rel), pd.read_parquet(runs / "run7" / rel))
        assert main(["verify", str(out)]) == 0
    else:
        _one_line(capfd, rc, rel)


def test_another_seeds_grid_file_with_its_record_is_refused(runs, tmp_path, capfd):
    """Copying the record along with the grid file does not help: its fingerprint and stored seed are another config's."""
    out = _copy(runs, tmp_path)
    shutil.copy(runs / "run8" / GRID, out / GRID)
    shutil.copy(runs / "run8" / "manifest" / f"{GRID}.json", out / "manifest" / f"{GRID}.json")
    assert main(["verify", str(out)]) == 2
    err = capfd.readouterr().err
    assert "made by another config (differs in: seed)" in err and GRID in err and len(err.splitlines()) == 1, err
    _one_line(capfd, main(_cli(runs / "s7.toml", out, "--resume")), GRID, "seed")
    _one_line(capfd, main(["report", str(out)]), GRID)


@pytest.mark.parametrize("rel", [GRID, PART, MAPS, TIMING])
def test_a_deleted_file_is_named_by_verify_and_recomputed_by_resume(runs, tmp_path, capfd, rel):
    out = _copy(runs, tmp_path)
    (out / rel).unlink()
    assert main(["verify", str(out)]) == 2
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1 and rel in err and "missing" in err, err
    assert main(_cli(runs / "s7.toml", out, "--resume")) == 0
    for name in ("results.parquet", "costs.parquet"):  # costs.parquet is not one row short
        table, reference = pd.read_parquet(out / name), pd.read_parquet(runs / "run7" / name)
        assert len(table) == len(reference)
        if name == "results.parquet":
            pd.testing.assert_frame_equal(table, reference)
    assert (out / rel).read_bytes() == (runs / "run7" / rel).read_bytes() or rel == TIMING  # timings hold seconds
    assert main(["verify", str(out)]) == 0


def test_a_file_renamed_in_but_not_recorded_counts_as_unfinished(runs, tmp_path, capfd):
    """A kill between a part's rename and its record: the unit is computed again on --resume."""
    out = _copy(runs, tmp_path)
    Manifest(out).forget(out / PART)
    before = (out / PART).stat().st_mtime_ns
    assert not RunStore(out).is_done(Unit(*Path(PART).stem.split("__")))
    assert main(["verify", str(out)]) == 2
    assert "no manifest record" in capfd.readouterr().err
    assert main(_cli(runs / "s7.toml", out, "--resume")) == 0
    assert (out / PART).stat().st_mtime_ns != before
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), pd.read_parquet(runs / "run7" / "results.parquet"))
    assert verify_run(out, strict=True) == []


def test_verify_passes_a_finished_run_and_counts_its_files(runs, capfd):
    assert main(["verify", str(runs / "run7")]) == 0
    out = capfd.readouterr().out
    # config, identity, meta, results, costs, statistics, comparisons, 2 grids, and per unit a part, maps and timing
    assert out.startswith(f"ok: {7 + 2 + 3 * UNITS} files")


def test_damaged_part_page_is_named_in_the_merge(runs, tmp_path):
    """The merge reads each part from bytes checked against its record; unrecorded damage names the file too."""
    out = _copy(runs, tmp_path)
    store = RunStore(out)
    unit = Unit(*Path(PART).stem.split("__"))
    data = bytearray((out / PART).read_bytes())
    data[4:200] = bytes(196)  # the first data page
    (out / PART).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"expected {out / PART} to match the sha256"):
        store.merge([unit])
    store.manifest.forget(out / PART)  # unrecorded: the Parquet reader's failure names the file
    with pytest.raises(ValueError, match=f"expected a Parquet part file at {out / PART}, got an unreadable file"):
        store.read_part(unit)


def test_broken_config_json_and_timing_record_are_named(runs, tmp_path, capfd):
    out = _copy(runs, tmp_path)
    store = RunStore(out)
    (out / TIMING).write_text("{not json")
    with pytest.raises(ValueError, match=f"expected JSON in {out / TIMING}, got an unreadable file"):
        store.merge_costs([Unit(*Path(TIMING).stem.split("__"))])
    Manifest(out).forget(out / "config.json")  # unrecorded, so only the JSON parser can tell
    (out / "config.json").write_text('{"seed": ')
    _one_line(capfd, main(_cli(runs / "s7.toml", out, "--resume")), "config.json", "unreadable")


def test_merge_of_an_unfinished_unit_is_an_error_not_a_short_table(runs, tmp_path):
    out = _copy(runs, tmp_path)
    store = RunStore(out)
    units = list(store.units())
    (out / PART).unlink()
    with pytest.raises(ValueError, match=r"got 1 unfinished \(e.g. .*fashion_resnet__gridpg__input__grad.parquet\)"):
        store.merge(units)
    shutil.copy(runs / "run7" / PART, out / PART)
    Manifest(out).forget(out / TIMING)
    (out / TIMING).unlink()  # no record and no file: only the merge can notice
    with pytest.raises(ValueError, match="expected the timing record .*grad_cam.json of the finished unit"):
        store.merge_costs(units)


# -- disk full, read-only ------------------------------------------------------------------------------------


def test_disk_full_while_reserving_maps_is_one_line_and_resumes_to_the_same_table(runs, tmp_path, capfd, monkeypatch):
    (tmp_path / "c.toml").write_text(tiny_run_config(7, BODY))
    out = tmp_path / "out"
    real, calls = os.posix_fallocate, []

    def full_after_two(fd, offset, length):
        calls.append(length)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as the kernel gives it: no file name
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", full_after_two)
    err = _one_line(capfd, main(_cli(tmp_path / "c.toml", out)), "No space left on device (ENOSPC)", str(out / "maps"), "--resume")
    assert len(calls) == 3 and len(list((out / "parts").glob("*.parquet"))) == 2, err
    monkeypatch.setattr(os, "posix_fallocate", real)
    assert main(_cli(tmp_path / "c.toml", out, "--resume")) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), pd.read_parquet(runs / "run7" / "results.parquet"))
    for ref in (runs / "run7" / "maps").glob("*.npy"):
        assert (out / "maps" / ref.name).read_bytes() == ref.read_bytes()
    assert verify_run(out, strict=True) == [] and not list(out.rglob("*.tmp"))


def test_a_file_system_without_fallocate_gets_zeros_written(tmp_path, monkeypatch):
    from attreval.runs.mapfile import MapWriter

    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    maps = np.random.default_rng(0).standard_normal((3, 2, 8, 8)).astype(np.float32)
    with MapWriter(tmp_path / "u.npy", 3) as writer:
        writer.write(0, maps[:2])
        assert os.stat(writer.tmp).st_blocks * 512 >= os.stat(writer.tmp).st_size  # allocated, not sparse
        writer.write(2, maps[2:])
        writer.commit()
    assert np.array_equal(np.load(tmp_path / "u.npy"), maps.astype(np.float16))


@pytest.mark.parametrize("code, says", [(errno.EROFS, "Read-only file system (EROFS)"), (errno.EACCES, "Permission denied (EACCES)")])
def test_read_only_or_forbidden_writes_are_one_line_naming_the_file(tmp_path, capfd, monkeypatch, code, says):
    (tmp_path / "c.toml").write_text(tiny_run_config(7, BODY))
    real = pd.DataFrame.to_parquet

    def refuse(self, path, *a, **k):
        if "parts" in str(path):
            raise OSError(code, os.strerror(code))
        return real(self, path, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", refuse)
    _one_line(capfd, main(_cli(tmp_path / "c.toml", tmp_path / "out")), says, str(tmp_path / "out" / "parts"))


def _tmpfs_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d"], capture_output=True, timeout=30
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _tmpfs_available(), reason="cannot mount a tmpfs in a user namespace here (unshare -Urm)")
def test_a_real_full_tmpfs_is_one_line_not_sigbus_and_resumes(runs, tmp_path):
    """A 192 KiB tmpfs holds the config and grids but not every unit's maps: the run ends with exit 2 and one
    line (before the fix: SIGBUS, exit -7, nothing printed); remounted larger, --resume finishes it."""
    (tmp_path / "c.toml").write_text(tiny_run_config(7, BODY))
    mnt, py, cli = tmp_path / "mnt", sys.executable, f"run {tmp_path / 'c.toml'} --out {tmp_path / 'mnt' / 'out'} -q --no-report"
    mnt.mkdir()
    script = f"""
mount -t tmpfs -o size=192k tmpfs {mnt} || exit 90
OMP_NUM_THREADS=1 {py} -m attreval {cli} 2> {tmp_path / "err1"}; echo $? > {tmp_path / "rc1"}
mount -o remount,size=64m {mnt}
OMP_NUM_THREADS=1 {py} -m attreval {cli} --resume > /dev/null 2> {tmp_path / "err2"}; echo $? > {tmp_path / "rc2"}
cp {mnt}/out/results.parquet {tmp_path}/results.parquet
"""
    proc = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    err = (tmp_path / "err1").read_text()
    assert (tmp_path / "rc1").read_text().strip() == "2", err
    assert len(err.splitlines()) == 1 and "No space left on device (ENOSPC)" in err and str(mnt) in err, err
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "results.parquet"), pd.read_parquet(runs / "run7" / "results.parquet"))


# -- CIFAR-10 batches run no code ------------------------------------------------------------------------------


class _Payload:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("call", ["os.system", "builtins.exec", "subprocess.Popen"])
def test_a_crafted_cifar_batch_runs_no_code(tmp_path, call):
    import builtins

    from attreval.data.cifar10 import load_cifar10

    marker = tmp_path / "pwned"
    func = {"os.system": os.system, "builtins.exec": builtins.exec, "subprocess.Popen": subprocess.Popen}[call]
    arg = {
        "os.system": f"touch {marker}",
        "builtins.exec": f"open({str(marker)!r}, 'w').close()",
        "subprocess.Popen": ["touch", str(marker)],
    }[call]
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"trap": _Payload(func, arg)}
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    with (root / "test_batch").open("wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    with pytest.raises(ValueError) as info:
        load_cifar10(root, "test")
    time.sleep(0.2)  # a Popen payload would need a moment to create the file
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message and "refused" in message and "test_batch" in message, message


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_genuine_cifar_batch_still_loads(tmp_path, protocol):
    from attreval.data.cifar10 import load_cifar10

    rng = np.random.default_rng(0)
    data, labels = rng.integers(0, 256, (3, 3072), dtype=np.uint8), [3, 1, 9]
    root = tmp_path / "b"
    root.mkdir()
    with (root / "test_batch").open("wb") as handle:
        pickle.dump({b"data": data, b"labels": labels, b"filenames": [b"a.png"] * 3, b"batch_label": b"x"}, handle, protocol=protocol)
    images, got = load_cifar10(root, "test")
    assert np.array_equal(images, data.reshape(3, 3, 32, 32)) and got.tolist() == labels


# -- names, lock, launcher -------------------------------------------------------------------------------------


def test_every_store_write_stays_inside_the_run_directory(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(ValueError, match="expected a path inside the run directory"):
        store.write_unit(Unit("../../escaped", "gridpg", "input", "grad"), pd.DataFrame(), None)
    with pytest.raises(ValueError, match="expected a path inside the run directory"):
        store.map_writer(Unit("m", "gridpg", "input", "../../../../x"), 2)
    with pytest.raises(ValueError, match="expected a path inside the run directory"):
        store.write_json("../outside.json", {})
    assert not (tmp_path / "outside.json").exists() and not list(tmp_path.parent.glob("escaped*"))


def test_a_second_process_on_a_locked_run_directory_stops_at_once(runs, tmp_path, capfd):
    out = _copy(runs, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".attreval.lock"}
    (out / "parts" / ".x.parquet.1.tmp").write_bytes(b"another process's file in the middle of a write")
    import attreval.runs.lock

    # attreval.runs.lock loaded from its file alone: no torch import, so the holder starts in a fraction of a second
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"""
import importlib.util, time
spec = importlib.util.spec_from_file_location("lock", {attreval.runs.lock.__file__!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
lock = module.RunLock({str(out)!r}); lock.acquire(); print("held", flush=True); time.sleep(60)
""",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        err = _one_line(capfd, main(_cli(runs / "s7.toml", out, "--resume")), f"pid {holder.pid}", "expected no other attreval process")
        assert time.monotonic() - t0 < 30, err
        assert (out / "parts" / ".x.parquet.1.tmp").exists()  # the holder's temporary file was left alone
        assert {p: p.stat().st_mtime_ns for p in before} == before
    finally:
        holder.kill()
        holder.wait()
    # the OS dropped the lock with the process (killed, no clean-up): the directory can be taken again
    lock = RunLock(out)
    lock.acquire()
    lock.release()


def test_workers_end_when_their_launcher_dies():
    """A 'launcher' forks a 'worker' that calls die_with_parent, then is SIGKILLed: the worker ends too."""
    from attreval.runs.distributed import die_with_parent

    read, write = os.pipe()
    launcher = os.fork()
    if launcher == 0:  # the launcher
        worker = os.fork()
        if worker == 0:  # the worker
            die_with_parent()
            os.write(write, f"{os.getpid()}\n".encode())
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
        os._exit(0)
    os.close(write)
    worker = int(os.fdopen(read).readline())
    os.kill(launcher, signal.SIGKILL)
    os.waitpid(launcher, 0)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive(worker):
        time.sleep(0.05)
    alive = _alive(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the worker outlived its launcher"


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")
