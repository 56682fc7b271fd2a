"""Occlusion 16/8 at the input, GridPG on 2×2 grids of 224-px cells: receptive-field cones vs full forwards vs Captum.

Measures, side by side in one process on the same model and image (random weights, eval mode):

(a) **cone**: ``tail.occluder(x)`` of the GridPG tail (:mod:`attreval.cone`), the path ``Occlusion`` takes;
(b) **naive**: the base :class:`attreval.tail.Occluder`, which runs every occluded copy through the tail in
    full: one full forward per window, Occlusion's pass-count limit;
(c) **Captum** ``Occlusion`` (if installed) on the same GridPG network and image, 16-px windows, the same
    number of windows per forward.

A full 448² Occlusion is 57² = 3,249 windows (minutes per grid on a laptop CPU), so (a) and (b) time the same
evenly spread subset of ``--windows`` windows (raster order, border windows included), chunk by chunk,
interleaved (a, b, a, b, …) so that load from other processes hits both alike. Captum cannot run a subset
of its windows (nor a stride above its window), so it runs its own 16/8 windows in raster order and is stopped
after as many windows (each one full forward of the 448² grid wherever it lies, so its time per window is
what matters); its clean forward is included in its time. Also reported: the FLOPs per stage of the
cone vs a full forward (``torch.utils.flop_counter``), i.e. the arithmetic limit of (a), and the largest
difference between (a) and (b) relative to the logits' scale.

    PYTHONPATH=src python benchmarks/occlusion_cone.py [--models resnet18,vgg11] [--windows 64] [--chunk 16]
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from attreval.cone import occluded_patch
from attreval.methods.base import chunks
from attreval.methods.perturbation import interval_masks, window_boxes
from attreval.settings import make_setting
from attreval.tail import Occluder

KERNEL, STRIDE, CELL = 16, 8, 224


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def stage_flops(tail, x: torch.Tensor, boxes: torch.Tensor) -> list[tuple[str, float, float]]:
    """``(stage, cone GFLOPs per window, full GFLOPs per window)`` for every stage of the plan (and the head)."""
    occluder = tail.occluder(x)
    cache = occluder._clean(-1)[1]
    rules = occluder.plan.rule.rules
    names = [name for name, _ in tail.staged.stages[tail.start:]] + ["head"] * (len(rules) - len(tail.staged.stages[tail.start:]))
    value, clean, rows = occluded_patch(x, boxes), x, []
    with torch.no_grad():
        for name, rule, sub in zip(names, rules, cache):
            holder = {}
            cone = flops(lambda: holder.setdefault("v", rule.patch(sub, value)))
            value = holder["v"]
            full = flops(lambda: holder.setdefault("c", rule.module(clean)))
            clean = holder["c"]
            rows.append((name, cone / boxes.shape[0] / 1e9, full / 1e9))
    return rows


def bench_model(name: str, windows: int, chunk: int, captum: bool, seed: int) -> dict:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)().eval()
    setting = make_setting("gridpg", model, 2)
    x = torch.randn(1, 3, 2 * CELL, 2 * CELL)
    tail = setting.tail("input", (0,))
    rows = interval_masks(x.shape[-2], KERNEL, STRIDE, x.device)
    cols = interval_masks(x.shape[-1], KERNEL, STRIDE, x.device)
    boxes = window_boxes(rows, cols)
    subset = torch.linspace(0, boxes.shape[0] - 1, windows).round().long().unique()
    with torch.no_grad():
        t0 = time.perf_counter()
        cone = tail.occluder(x)
        cone._clean(-1)
        prepare = time.perf_counter() - t0
        naive = Occluder(tail, x)
        cone(boxes[subset[:2]]), naive(boxes[subset[:2]])  # warm-up
        times = {"cone": 0.0, "naive": 0.0}
        diff, scale = 0.0, 0.0
        for part in chunks(subset.numel(), chunk):
            b = boxes[subset[part]]
            t0 = time.perf_counter()
            got = cone(b)
            t1 = time.perf_counter()
            ref = naive(b)
            t2 = time.perf_counter()
            times["cone"] += t1 - t0
            times["naive"] += t2 - t1
            diff = max(diff, float((got - ref).abs().max()))
            scale = max(scale, float(ref.abs().max()))
    n = subset.numel()
    result = {
        "model": name, "grid": list(x.shape[-2:]), "windows_total": boxes.shape[0], "windows_timed": n, "chunk": chunk,
        "cone_s_per_window": times["cone"] / n, "naive_s_per_window": times["naive"] / n,
        "cone_prepare_s": prepare, "max_abs_diff_over_logit_scale": diff / scale,
    }
    result["naive_over_cone"] = result["naive_s_per_window"] / result["cone_s_per_window"]
    if captum:
        try:
            from captum.attr import Occlusion as CaptumOcclusion
        except ImportError:
            captum = False
    if captum:
        # Captum runs all its (448 − 16)/8 + 1 = 55² windows in raster order, perturbations_per_eval per forward;
        # it is stopped after as many windows as (a) and (b) timed (each is one full forward wherever it lies)
        calls, limit = [0], 1 + math.ceil(n / chunk)  # its clean forward, then the window batches

        class Enough(Exception):
            pass

        def forward(inp: torch.Tensor) -> torch.Tensor:
            if calls[0] == limit:
                raise Enough
            calls[0] += 1
            return tail(inp)[:, 0]  # the GridPG logits (N, K)

        with torch.no_grad():
            target = int(tail(x)[0, 0].argmax())
            t0 = time.perf_counter()
            try:
                CaptumOcclusion(forward).attribute(x, sliding_window_shapes=(3, KERNEL, KERNEL), strides=(3, STRIDE, STRIDE),
                                                   target=target, perturbations_per_eval=chunk)
            except Enough:
                pass
            seconds = time.perf_counter() - t0
        count = (limit - 1) * chunk
        result.update(captum_windows=count, captum_windows_total=((x.shape[-1] - KERNEL) // STRIDE + 1) ** 2,
                      captum_s_per_window=seconds / count)
        result["captum_over_cone"] = result["captum_s_per_window"] / result["cone_s_per_window"]
    result["stages"] = [
        {"stage": s, "cone_gflops_per_window": c, "full_gflops": f} for s, c, f in stage_flops(tail, x, boxes[subset[:chunk]])
    ]
    cone_total = sum(r["cone_gflops_per_window"] for r in result["stages"])
    full_total = sum(r["full_gflops"] for r in result["stages"])
    result.update(cone_gflops_per_window=cone_total, full_gflops=full_total, flop_ratio=full_total / cone_total)
    return result


def table(results: list[dict]) -> str:
    lines = ["| model | windows timed / total | cone s/window | naive s/window | naive ÷ cone | Captum s/window | Captum ÷ cone | FLOPs full ÷ cone | max diff / logit scale |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cap = (f"{r['captum_s_per_window']:.4f} ({r['captum_windows']} of {r['captum_windows_total']})", f"{r['captum_over_cone']:.2f}×") if "captum_s_per_window" in r else ("–", "–")
        lines.append(f"| {r['model']} | {r['windows_timed']} / {r['windows_total']} | {r['cone_s_per_window']:.4f} | {r['naive_s_per_window']:.4f} | "
                     f"{r['naive_over_cone']:.2f}× | {cap[0]} | {cap[1]} | {r['flop_ratio']:.2f}× | {r['max_abs_diff_over_logit_scale']:.1e} |")
    for r in results:
        lines += ["", f"{r['model']}: GFLOPs per window by stage (cone vs full forward of the 448² grid); clean pass + cache {r['cone_prepare_s']:.2f} s once per grid", "",
                  "| stage | cone | full | full ÷ cone |", "|---|---|---|---|"]
        for s in r["stages"]:
            ratio = s["full_gflops"] / s["cone_gflops_per_window"] if s["cone_gflops_per_window"] else float("inf")
            lines.append(f"| {s['stage']} | {s['cone_gflops_per_window']:.3f} | {s['full_gflops']:.3f} | {ratio:.1f}× |")
        lines.append(f"| **total** | {r['cone_gflops_per_window']:.3f} | {r['full_gflops']:.3f} | {r['flop_ratio']:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,vgg11")
    parser.add_argument("--windows", type=int, default=64, help="windows timed for (a) and (b), evenly spread")
    parser.add_argument("--chunk", type=int, default=16, help="windows per call (Occlusion's chunk_size for one grid)")
    parser.add_argument("--no-captum", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}", flush=True)
    results = []
    for name in args.models.split(","):
        results.append(bench_model(name, args.windows, args.chunk, not args.no_captum, args.seed))
        print(table(results[-1:]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
