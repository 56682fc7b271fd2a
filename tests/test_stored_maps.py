"""Stored maps are the maps that were scored (docs/reliability.md, *Integrity*): every score of
``results.parquet`` is recomputed from ``maps/UNIT.npy`` to within 1e-5, smoothed variants included, and each
unit's file is float16 only where float16 gives those scores back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attreval.cli import main
from attreval.metric import localization_parts, score_from_parts
from attreval.runs.mapfile import MapWriter, float16_keeps_scores
from attreval.runs.reader import load_run, map_columns, unit_rows
from attreval.smoothing import smooth_maps
from tiny_models import tiny_run_config

BODY = """
[evaluation]
settings = ["gridpg", "difull"]
layers = ["input", "final"]
methods = ["grad", "int_grad", "rise", "score_cam"]
smooth_methods = ["int_grad"]
kernel_sizes = [9, 65]
batch_size = 2
[methods.rise]
num_masks = 48
[methods.int_grad]
n_steps = 4
"""


def recomputed_scores(run, unit, kernel_ref: int) -> tuple[np.ndarray, np.ndarray]:
    """(stored, recomputed) scores of ``unit`` at ``kernel_ref``: the parquet's and those of its map file."""
    rows = unit_rows(run.results, unit.model, unit.setting, unit.layer, unit.method, kernel_ref)
    cells, kernel = map_columns(rows), int(rows["kernel_size"].iloc[0])
    grids = run.grids(unit.model, unit.setting)
    maps = torch.from_numpy(np.array(run.maps(unit.model, unit.setting, unit.layer, unit.method), dtype=np.float32))
    maps = smooth_maps(maps, kernel) if kernel else maps
    size = tuple(grids.images.shape[-2:])
    scores = score_from_parts(*localization_parts(maps, grids.spec.n, torch.tensor(cells).expand(len(maps), -1), size)).numpy()
    return rows["score"].to_numpy(), scores[rows["grid"].to_numpy(), [cells.index(c) for c in rows["cell"]]]


@pytest.mark.slow
def test_every_stored_map_reproduces_its_scores(tmp_path):
    """Before: maps were float16 unless they overflowed; RISE and Score-CAM maps of a tiny scale lost their
    scores there (0.43 on the default run)."""
    (tmp_path / "c.toml").write_text(tiny_run_config(3, BODY))
    assert main(["run", str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"), "-q", "--no-report"]) == 0
    run = load_run(tmp_path / "run")
    worst, units, dtypes = 0.0, run.units(), set()
    for unit in units:
        dtypes.add(run.maps(unit.model, unit.setting, unit.layer, unit.method).dtype)
        for ref in sorted(set(run.results[run.results["method"] == unit.method]["kernel_ref"])):
            stored, again = recomputed_scores(run, unit, int(ref))
            worst = max(worst, float(np.abs(stored - again).max()))
    assert len(units) == 2 * 2 * 4 and worst <= 1e-5, worst
    assert dtypes <= {np.dtype(np.float16), np.dtype(np.float32)}


def _parts_of(n: int = 2, size=(8, 8)):
    def parts_of(m: torch.Tensor):
        return [localization_parts(m, n, torch.zeros(len(m), m.shape[1], dtype=torch.long), size)]

    return parts_of


def test_tiny_maps_are_stored_as_float32_and_ordinary_ones_as_float16(tmp_path):
    parts_of = _parts_of()
    tiny = torch.full((2, 1, 4, 4), 1e-9)  # float16 flushes it to zero: its scores would become 0
    tiny[:, :, :2, :2] = 3e-8
    ordinary = torch.zeros(2, 1, 4, 4)
    ordinary[:, :, :2, :2] = 1.0
    assert not float16_keeps_scores(tiny, parts_of, parts_of(tiny))
    assert float16_keeps_scores(ordinary, parts_of, parts_of(ordinary))
    with MapWriter(tmp_path / "o.npy", 4) as writer:
        writer.write(0, ordinary.numpy(), lambda: float16_keeps_scores(ordinary, parts_of, parts_of(ordinary)))
        writer.write(2, tiny.numpy(), lambda: float16_keeps_scores(tiny, parts_of, parts_of(tiny)))  # widens the file
        writer.commit()
    stored = torch.from_numpy(np.load(tmp_path / "o.npy").astype(np.float32))
    assert np.load(tmp_path / "o.npy").dtype == np.float32
    again, scored = parts_of(stored), parts_of(torch.cat([ordinary.half().float(), tiny]))
    assert torch.equal(score_from_parts(*again[0]), score_from_parts(*scored[0]))
