"""``attreval bench``: the parser, the loop over units, and the Markdown / JSON it writes."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

from attreval.bench.timing import PassTimes
from attreval.bench.unit import bench_unit, random_grids
from attreval.methods import METHODS
from attreval.settings import SETTINGS

log = logging.getLogger(__name__)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The bench table in Markdown."""
    head = "| setting | layer | method | s / grid | fwd / grid | bwd / grid | limit ratio | overhead ms / grid | ref s / grid | speed-up | max Δscore |"
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        ref = r.get("reference_seconds_per_grid")
        lines.append(
            f"| {r['setting']} | {r['layer']} | {r['method']} | {r['seconds_per_grid']:.4f} | {r['forward_passes']:.0f} | "
            f"{r['backward_passes']:.0f} | {r['limit_ratio']:.2f} | {1000 * r['overhead_seconds_per_grid']:.2f} | "
            + (f"{ref:.4f} | {r['speedup']:.1f}× | {r['max_score_diff']:.1e} |" if ref is not None else "– | – | – |")
        )
    partial = [f"{r['setting']} {r['layer']}: {r['cone']}" for r in rows if r.get("cone") not in (None, "cone")]
    if partial:
        lines.append("\nOcclusion without the full receptive-field cone: " + "; ".join(partial))
    return "\n".join(lines)


def method_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per method: limit ratios at the input (per setting), the worst over all units with its
    overhead, the GridPG input passes, and (with the reference) the speed-up range and largest Δscore."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = (
        "| method | limit ratio, input (GridPG / DiFull / DiPart) | worst limit ratio (unit, overhead ms / grid) | "
        "s / grid, all units | speed-up vs reference (min–max) | of it from fewer passes (min–max) | max Δscore |"
    )
    lines = [head, "|" + "---|" * 7]
    for name in methods:
        mine = [r for r in rows if r["method"] == name]
        at_input = {r["setting"]: r["limit_ratio"] for r in mine if r["layer"] == "input"}
        inputs = " / ".join(f"{at_input[s]:.2f}" if s in at_input else "–" for s in SETTINGS.names())
        worst = max(mine, key=lambda r: r["limit_ratio"] or 0)
        worst_text = f"{worst['limit_ratio']:.2f} ({worst['setting']} {worst['layer']}, {1000 * worst['overhead_seconds_per_grid']:.1f})"
        total = sum(r["seconds_per_grid"] for r in mine)
        if "speedup" in mine[0]:
            speed, passes = [r["speedup"] for r in mine], [r["pass_speedup"] or 0 for r in mine]
            extra = (
                f"{min(speed):.1f}–{max(speed):.1f}× | {min(passes):.1f}–{max(passes):.1f}× | "
                f"{max(r['max_score_diff'] for r in mine):.1e} |"
            )
        else:
            extra = "– | – | – |"
        lines.append(f"| {name} | {inputs} | {worst_text} | {total:.3f} | {extra}")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ours = sum(r["seconds_per_grid"] for r in rows)
    out = {"seconds_per_grid_total": ours, "worst_limit_ratio": max(r["limit_ratio"] or 0 for r in rows)}
    if rows and "reference_seconds_per_grid" in rows[0]:
        ref = sum(r["reference_seconds_per_grid"] for r in rows)
        limits = sum(r["limit_seconds_per_grid"] for r in rows)
        ref_limits = sum(r["limit_seconds_per_grid"] * (r["pass_speedup"] or 0) for r in rows)
        out.update(
            reference_seconds_per_grid_total=ref,
            protocol_speedup=ref / ours,
            protocol_pass_speedup=ref_limits / limits,  # what fewer passes alone would give
            max_score_diff=max(r["max_score_diff"] for r in rows),
        )
    return out


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="fashion_vgg", help="built-in name (shipped weights) or torchvision name")
    p.add_argument("--weights", default="", help="state-dict file (torchvision models: random weights if omitted)")
    p.add_argument("--num-classes", type=int, default=1000, help="classes of a torchvision model")
    p.add_argument("--cell", type=int, default=32, help="cell side in pixels")
    p.add_argument("-n", type=int, default=2, help="grid size")
    p.add_argument("--grids", type=int, default=8, help="grids per measurement (one batch of the run and of the reference pattern)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--settings", default=",".join(SETTINGS.names()), help="comma-separated settings")
    p.add_argument("--layers", default="input,middle,final", help="comma-separated layers (input, middle, final or stage names)")
    p.add_argument("--methods", default="all", help="comma-separated registry names, or all")
    p.add_argument("--chunk-size", type=int, default=64, help="most inputs per forward pass (also the largest batch timed for the limit)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE", help="override a preset, e.g. rise.num_masks=200")
    p.add_argument("--no-reference", action="store_true", help="skip the reference pass pattern")
    p.add_argument(
        "--peers",
        nargs="?",
        const="all",
        default=None,
        metavar="PEER,…",
        help="instead of the units: time and compare the methods other libraries share with attreval "
        "(captum, zennit, torchcam, pytorch_grad_cam, or all), GridPG, CAMs at the final layer; writes peers.md/json",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="bench", help="directory for bench.md and bench.json")


def parse_options(items: list[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        try:
            key, value = item.split("=", 1)
            method, field = key.split(".", 1)
        except ValueError:
            raise ValueError(f"expected --option METHOD.KEY=VALUE, got '{item}'") from None
        options.setdefault(method, {})[field] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    return options


def run_from_args(args: argparse.Namespace) -> int:
    from attreval.runs.runtime import faithful_numerics, resolve_device

    device = resolve_device(args.device)
    with faithful_numerics(device):  # TF32 off: the reference comparison checks methods, not arithmetic
        return _bench(args, device)


def _bench(args: argparse.Namespace, device: torch.device) -> int:
    from attreval.models.loading import load_for_timing
    from attreval.runs.runtime import device_name

    for flag, value in (("--grids", args.grids), ("--cell", args.cell), ("-n", args.n), ("--chunk-size", args.chunk_size)):
        if value < 1:
            raise ValueError(f"expected a positive integer for {flag}, got {value}")
    if args.threads < 0:
        raise ValueError(f"expected --threads ≥ 0 (0: torch's default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_for_timing(args.model, args.weights, args.num_classes).to(device)
    images, labels = random_grids(model, args.n, args.cell, args.grids, 0, device)
    names = METHODS.names() if args.methods == "all" else args.methods.split(",")
    options = parse_options(args.option)
    out = Path(args.out)
    meta = {
        "model": args.model,
        "cell": args.cell,
        "n": args.n,
        "grids": args.grids,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "chunk_size": args.chunk_size,
    }
    if args.peers is not None:
        from attreval.bench.peers.cli import run_peers

        return run_peers(args.peers, model, images, labels, args.n, names, options, args.chunk_size, meta, out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    rates: dict[tuple[str, str, bool], dict[str, PassTimes]] = {}  # bench_unit's cache of pass rates per (setting, layer, image)
    for setting in args.settings.split(","):
        for layer in args.layers.split(","):
            for name in names:
                row = bench_unit(
                    model,
                    setting,
                    layer,
                    name,
                    images,
                    labels,
                    args.n,
                    args.chunk_size,
                    options.get(name, {}),
                    not args.no_reference,
                    rates,
                    warm_ups=1 if rows else 3,
                )
                log.info("%s", row)
                rows.append(row)
                (out / "partial.json").write_text(json.dumps(rows))  # survives a timeout
    (out / "bench.json").write_text(json.dumps({"meta": meta, "summary": summary(rows), "rows": rows}, indent=2))
    text = f"{meta}\n\n{method_markdown(rows)}\n\n{markdown(rows)}\n\n{json.dumps(summary(rows), indent=2)}\n"
    (out / "bench.md").write_text(text)
    print(text)
    return 0
