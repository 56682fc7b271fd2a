"""Per unit of ``attreval run``: the method's time, the run's own time around it, and their ratio.

Runs a config (default: the embedded default) in a fresh temporary directory, timing in the same process

* **method**: building each batch's task and computing its maps (``attreval.runs.run._batch_maps``: the layer's
  activations, the method, the finiteness check);
* **unit**: the whole of ``attreval.runs.run._execute_unit`` (scoring every smoothing variant, writing, hashing and
  renaming maps and tables, the timing record);

and reports per unit ``overhead = unit − method`` and ``overhead / unit``, plus the totals. Times are wall
clock at ``--threads`` torch threads.

    PYTHONPATH=src python benchmarks/run_overhead.py [CONFIG] [--threads 1] [--methods grad,occlusion] [--json out.json]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import pstats
import statistics
import tempfile
import time
from collections import defaultdict

import torch

import attreval.runs.run as run_module
from attreval.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", default=None, help="comma-separated subset of the config's methods")
    parser.add_argument("--json", default=None)
    parser.add_argument("--profile", action="store_true", help="also print where the overhead goes (cProfile of the run: run_overhead.prof)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    if args.methods:
        keep = args.methods.split(",")
        config = dataclasses.replace(
            config, evaluation=dataclasses.replace(config.evaluation, methods=[m for m in config.evaluation.methods if m in keep])
        )
    method_time: dict[str, float] = defaultdict(float)
    unit_time: dict[str, float] = {}
    batch_maps, execute_unit = run_module._batch_maps, run_module._execute_unit

    def timed_batch_maps(unit, *rest, **kw):
        t0 = time.perf_counter()
        try:
            return batch_maps(unit, *rest, **kw)
        finally:
            method_time[unit.key] += time.perf_counter() - t0

    def timed_execute_unit(store, unit, *rest, **kw):
        t0 = time.perf_counter()
        execute_unit(store, unit, *rest, **kw)
        unit_time[unit.key] = time.perf_counter() - t0

    run_module._batch_maps, run_module._execute_unit = timed_batch_maps, timed_execute_unit
    started = time.perf_counter()
    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        if profiler is not None:
            profiler.enable()
        run_module.run(config, os.path.join(tmp, "run"), progress=False)
        if profiler is not None:
            profiler.disable()
    wall = time.perf_counter() - started
    rows = [
        {"unit": key, "unit_s": unit_time[key], "method_s": method_time[key], "overhead_s": unit_time[key] - method_time[key]}
        for key in unit_time
    ]
    total_unit = sum(r["unit_s"] for r in rows)
    total_method = sum(r["method_s"] for r in rows)
    print(f"{len(rows)} units, run wall {wall:.1f} s, torch threads {args.threads}, load {os.getloadavg()[0]:.1f}")
    print("| unit | unit s | method s | overhead s | overhead / unit |")
    print("|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: -r["overhead_s"])[:15]:
        print(f"| {r['unit']} | {r['unit_s']:.3f} | {r['method_s']:.3f} | {r['overhead_s']:.3f} | {r['overhead_s'] / r['unit_s']:.0%} |")
    overhead = total_unit - total_method
    print(f"| **all {len(rows)} units** | {total_unit:.1f} | {total_method:.1f} | {overhead:.1f} | {overhead / total_unit:.0%} |")
    ratios = sorted(r["overhead_s"] / r["unit_s"] for r in rows)
    print(
        f"per unit: median overhead {statistics.median(r['overhead_s'] for r in rows) * 1000:.0f} ms, median overhead / unit "
        f"{statistics.median(ratios):.0%}, {sum(x > 0.25 for x in ratios)} of {len(rows)} units above 25 %"
    )
    print(f"outside units (loading models, grids, merging tables): {wall - total_unit:.1f} s")
    if profiler is not None:
        profiler.dump_stats("run_overhead.prof")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"attreval/(run|store|mapfile|manifest|metric|smoothing)", 30)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "wall": wall, "threads": args.threads, "load": os.getloadavg()[0]}, f, indent=1)


if __name__ == "__main__":
    main()
