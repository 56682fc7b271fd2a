"""``attreval bench``: every method × layer × setting against its pass-count limit and the reference pattern.

For each unit the bench measures the wall time per grid image and counts the forward and backward
passes per grid image (:class:`~attreval.analysis.cost.PassCounter`). The **limit** is the time the same
number of plain passes of the same networks take, each at its best batch size, timed in the same run
(:func:`pass_limit`): every row at its network's forward rate — the network from the layer with all
explained heads, with one head only (a separable tail's ``rows``, DiFull: one block), or from the image (Score-CAM);
with or without a recorded graph — and every backward at the backward rate of its network (gradient
methods on GridPG/DiPart run one forward and one backward per target). The **limit ratio** is
measured ÷ limit (1.0 = no overhead beyond the passes themselves); the overhead is measured − limit.

The **reference pattern** is the authors' pass pattern (PAPER.md Appendix A, :func:`reference_pattern`):
batches of 8 grids (Occlusion and RISE: one grid), one target (GridPG) or head (DiFull/DiPart) at a time,
per-target backward, per-channel CAM forwards, IntGrad ``internal_batch_size=1`` (one step of the batch per
forward), the backbone once per head. It runs through the same method code, so both produce the same
maps; the scores are checked equal (|Δ| ≤ 1e-4) and the speed-up is reported.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from attreval.analysis.cost import PassCounter
from attreval.api import build_task
from attreval.methods import METHODS, resolve_method
from attreval.methods.base import Task
from attreval.metric import localization_score
from attreval.settings import SETTINGS, make_setting
from attreval.tail import Tail

log = logging.getLogger(__name__)
BATCHES = (1, 4, 16, 64, 256)
BUDGET = 2.0  # seconds: units shorter than this are timed as the best of several runs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int = 1, budget: float = 0.0) -> tuple[float, Any]:
    """Best wall time of at least ``repeat`` calls (after the caller's warm-up) and the last result.

    With ``budget`` > 0 it keeps calling (up to 5 times) while the calls so far took less than ``budget``
    seconds: the best of several runs resists the bursts of load of a shared machine.
    """
    best, out, spent, calls = float("inf"), None, 0.0, 0
    while calls < repeat or (spent < budget and calls < 5):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        took = time.perf_counter() - start
        best, spent, calls = min(best, took), spent + took, calls + 1
    return best, out


@dataclass(frozen=True)
class PassTimes:
    """Seconds per row of one network at its best batch size: a forward without autograd, a forward that
    records the graph, and the backward of that graph to the input."""

    forward: float
    graph_forward: float
    backward: float


def per_row_times(explained: Callable[[Tensor], Tensor], inputs: Tensor, max_batch: int) -> PassTimes:
    """:class:`PassTimes` of ``explained(x (N, …)) → (N,)``: the logits a method explains (one head and
    class per row), each time the best over batch sizes 1–``max_batch``."""
    device = inputs.device
    best = [float("inf")] * 3
    for batch in [b for b in BATCHES if b <= max_batch]:
        x = inputs[:1].expand(batch, *inputs.shape[1:]).contiguous()

        def fwd() -> Tensor:
            with torch.no_grad():
                return explained(x)

        def graph() -> tuple[Tensor, Tensor]:
            leaf = x.detach().requires_grad_(True)
            return leaf, explained(leaf).sum()

        def bwd() -> float:  # a fresh graph each time; only the backward is timed
            leaf, y = graph()
            return timed(lambda: torch.autograd.grad(y, leaf), device)[0]

        fwd(), bwd()  # warm-up
        times = (timed(fwd, device, 2)[0], timed(graph, device, 2)[0], min(bwd(), bwd()))
        best = [min(b, t / batch) for b, t in zip(best, times)]
    return PassTimes(*best)


def pass_rates(task: Task, max_batch: int, image: bool) -> dict[str, PassTimes]:
    """Per-row pass times of the task's networks: all heads from the layer (``forward``), one head from
    the layer (``head``, where the tail is ``separable``) and, if ``image``, all heads from the image
    (``image``, Score-CAM's passes)."""
    head, cls = task.heads[:1], task.classes[:1, 0]
    one = lambda out: out[:, 0].gather(1, cls.expand(out.shape[0])[:, None])[:, 0]
    tail = task.tail
    rates = {"forward": per_row_times(lambda x: one(tail(x)[:, head]), task.inputs, max_batch)}
    if image:
        whole = tail.whole()
        rates["image"] = per_row_times(lambda x: one(whole(x)[:, head]), task.image, max_batch)
    if tail.separable:
        rows = lambda x: tail.rows(x, head.expand(x.shape[0]))[:, None]
        rates["head"] = per_row_times(lambda x: one(rows(x)), task.inputs, max_batch)
    return rates


def pass_limit(counter: PassCounter, rates: dict[str, PassTimes]) -> float:
    """Seconds the counted passes take as plain passes of their networks at their best batch sizes: each
    row at its network's forward rate (with or without a recorded graph), each backward at the backward
    rate of the network whose graph it runs back through (one head's where gradients went through
    a separable tail's ``rows``, DiFull)."""
    full, head = rates["forward"], rates.get("head", rates["forward"])
    image = rates["image"].forward if "image" in rates else 0.0
    full_graph = counter.graph_rows - counter.head_graph_rows
    full_plain = counter.forward_rows - counter.image_rows - counter.head_rows - full_graph
    head_plain = counter.head_rows - counter.head_graph_rows
    backward = head.backward if counter.head_graph_rows else full.backward
    return (full_plain * full.forward + full_graph * full.graph_forward + head_plain * head.forward
            + counter.head_graph_rows * head.graph_forward + counter.image_rows * image + counter.backward_rows * backward)


def scores_of(maps: Tensor, n: int, heads: tuple[int, ...], size: tuple[int, int]) -> Tensor:
    cells = torch.tensor(heads).expand(maps.shape[0], -1)
    return localization_score(maps, n, cells, size)


def bench_unit(model: nn.Module, setting_name: str, layer: str, name: str, images: Tensor, labels: Tensor,
               n: int, chunk_size: int, options: dict, reference: bool, rates: dict | None = None,
               warm_ups: int = 1) -> dict[str, Any]:
    """Measure one (setting, layer, method) on ``images (G, C, nH, nW)`` with cell labels ``(G, n²)``.

    ``rates`` caches the plain per-row pass times (:func:`pass_rates`) per (setting, layer) across methods.
    ``warm_ups`` untimed calls come first (the first unit of a process pays for thread-pool and allocator
    start-up: measured 1.4× its later time on the CPU, so the bench gives it 3)."""
    rates = {} if rates is None else rates
    device, grids = images.device, images.shape[0]
    setting = make_setting(setting_name, model, n)
    heads = setting.evaluated_cells()
    task_heads = setting.heads_for(heads)
    classes = labels[:, list(heads)]
    method = resolve_method(name, **options)
    task = build_task(setting, images, classes, layer, task_heads, chunk_size)
    for _ in range(warm_ups):  # also fills caches such as RISE masks
        method(task)
    counter = PassCounter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, maps = timed(lambda: method(counter.instrument(task)), device)
    if seconds < BUDGET:  # short units: the best of a few runs (counted once)
        seconds = min(seconds, timed(lambda: method(task), device, budget=BUDGET)[0])
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    key = (setting_name, layer, counter.image_rows > 0)
    if key not in rates:
        rates[key] = pass_rates(task, chunk_size, image=counter.image_rows > 0)
    limit = pass_limit(counter, rates[key])
    row = {
        "setting": setting_name, "layer": layer, "method": name, "seconds_per_grid": seconds / grids,
        **counter.per_grid(grids), "limit_seconds_per_grid": limit / grids, "limit_ratio": seconds / limit if limit else None,
        "overhead_seconds_per_grid": (seconds - limit) / grids,  # time beyond the passes: map arithmetic, calls
        "peak_memory_mb": peak,
    }
    if reference:
        counters: list[PassCounter] = []

        def run_reference() -> Tensor:
            counters.append(PassCounter())
            return reference_maps(method, name, setting, images, classes, layer, task_heads, counters[-1])

        ref_seconds, ref_maps = timed(run_reference, device, budget=BUDGET)
        size = tuple(images.shape[-2:])
        diff = (scores_of(ref_maps, n, heads, size) - scores_of(maps, n, heads, size)).abs().max().item()
        # the reference's tasks explain one head: on DiFull that is one block, charged at one head's rates
        one_head = {**rates[key], "forward": rates[key]["head"]} if "head" in rates[key] else rates[key]
        ref_limit = pass_limit(counters[-1], one_head)
        row.update(
            reference_seconds_per_grid=ref_seconds / grids, speedup=ref_seconds / seconds, max_score_diff=diff,
            reference_forward_passes=counters[-1].forward_rows / grids, reference_backward_passes=counters[-1].backward_rows / grids,
            pass_speedup=ref_limit / limit if limit else None,  # the part of the speed-up that fewer passes explain
        )
    return row


REFERENCE_BATCH = 8  # the paper script's batch size (PAPER.md Appendix A)
PER_IMAGE = ("occlusion", "rise")  # max_imgs_bs = 1 in the paper's code
RISE_BATCH = 2  # masked inputs per forward in the authors' RISE code


def reference_pattern(name: str, method) -> tuple[int, int]:
    """(grids per call, inputs per forward) of the authors' pattern for a method (PAPER.md Appendix A, §4).

    Batches of 8 grids, 8 inputs per forward (one CAM channel or one IntGrad step of the 8 grids: Captum's
    ``perturbations_per_eval = 1``, ``internal_batch_size = 1``); Occlusion and RISE one grid at a time, with
    8 windows per forward (the code's batch of 8 perturbed inputs) or **2** masked inputs per forward (the
    authors' RISE code); SmoothGrad all noisy copies of the 8 grids at once (Captum's NoiseTunnel default).

    >>> reference_pattern("rise", resolve_method("rise")), reference_pattern("occlusion", resolve_method("occlusion"))
    ((1, 2), (1, 8))
    """
    grids = 1 if name in PER_IMAGE else REFERENCE_BATCH
    if name == "rise":
        return grids, RISE_BATCH
    return grids, REFERENCE_BATCH * getattr(method, "num_samples", 1)


def reference_maps(method, name: str, setting, images: Tensor, classes: Tensor, layer: str, heads: tuple[int, ...],
                   counter: PassCounter | None = None) -> Tensor:
    """The authors' pass pattern: one target column (GridPG) or head (DiFull/DiPart) per call, per-target
    backward, and the batch sizes of :func:`reference_pattern`; every DiFull Occlusion window runs (no
    ``head_regions``). Same method code, so the same maps. ``counter`` (optional) counts the passes."""
    grids, per_forward = reference_pattern(name, method)

    def task(part: slice, t: int, head: int) -> Task:
        one = build_task(setting, images[part], classes[part, t:t + 1], layer, (head,), chunk_size=per_forward)
        one = dataclasses.replace(one, tail=EveryWindow(one.tail))
        return counter.instrument(one) if counter is not None else one

    batches = []
    for start in range(0, images.shape[0], grids):
        part = slice(start, start + grids)
        columns = [method(task(part, t, head)) for t, head in enumerate(heads)]
        batches.append(torch.cat(columns, dim=1))
    return torch.cat(batches)


class EveryWindow(Tail):
    """``inner`` without its ``regions``: the authors' DiFull Occlusion runs every window through the head."""

    def __init__(self, inner: Tail):
        self.inner, self.heads, self.modules, self.separable = inner, inner.heads, inner.modules, inner.separable

    def __call__(self, x: Tensor) -> Tensor:
        return self.inner(x)

    def rows(self, x: Tensor, index: Tensor) -> Tensor:
        return self.inner.rows(x, index)

    def whole(self) -> Tail:
        return self.inner.whole()


def random_grids(model: nn.Module, n: int, cell: int, grids: int, seed: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Random normalised grids and distinct random cell labels (timing needs no real images)."""
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(grids, first_conv.in_channels, n * cell, n * cell, generator=g)
    with torch.no_grad():
        classes = model(images[:1, :, :cell, :cell].to(device)).shape[-1]
    labels = torch.stack([torch.randperm(classes, generator=g)[: n * n] for _ in range(grids)])
    return images.to(device), labels.to(device)


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
    return "\n".join(lines)


def method_markdown(rows: list[dict[str, Any]]) -> str:
    """One line per method: limit ratios at the input (per setting), the worst over all units with its
    overhead, the GridPG input passes, and (with the reference) the speed-up range and largest Δscore."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    head = ("| method | limit ratio, input (GridPG / DiFull / DiPart) | worst limit ratio (unit, overhead ms / grid) | "
            "s / grid, all units | speed-up vs reference (min–max) | of it from fewer passes (min–max) | max Δscore |")
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
            extra = (f"{min(speed):.1f}–{max(speed):.1f}× | {min(passes):.1f}–{max(passes):.1f}× | "
                     f"{max(r['max_score_diff'] for r in mine):.1e} |")
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
        out.update(reference_seconds_per_grid_total=ref, protocol_speedup=ref / ours,
                   protocol_pass_speedup=ref_limits / limits,  # what fewer passes alone would give
                   max_score_diff=max(r["max_score_diff"] for r in rows))
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
    from attreval.run import faithful_numerics, resolve_device

    device = resolve_device(args.device)
    with faithful_numerics(device):  # TF32 off: the reference comparison checks methods, not arithmetic
        return _bench(args, device)


def _bench(args: argparse.Namespace, device: torch.device) -> int:
    from attreval.models.loading import load_model
    from attreval.run import device_name

    for flag, value in (("--grids", args.grids), ("--cell", args.cell), ("-n", args.n), ("--chunk-size", args.chunk_size)):
        if value < 1:
            raise ValueError(f"expected a positive integer for {flag}, got {value}")
    if args.weights or args.model in builtin_models():
        model = load_model(args.model, args.weights, args.num_classes)
    else:
        import torchvision

        if args.model not in torchvision.models.list_models():
            raise ValueError(f"expected a built-in model ({', '.join(builtin_models())}) or a torchvision model name, got '{args.model}'")
        model = torchvision.models.get_model(args.model, weights=None, num_classes=args.num_classes).eval()
    model = model.to(device)
    images, labels = random_grids(model, args.n, args.cell, args.grids, 0, device)
    names = METHODS.names() if args.methods == "all" else args.methods.split(",")
    options = parse_options(args.option)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, rates = [], {}
    for setting in args.settings.split(","):
        for layer in args.layers.split(","):
            for name in names:
                row = bench_unit(model, setting, layer, name, images, labels, args.n, args.chunk_size, options.get(name, {}),
                                 not args.no_reference, rates, warm_ups=1 if rows else 3)
                log.info("%s", row)
                rows.append(row)
                (out / "partial.json").write_text(json.dumps(rows))  # survives a timeout
    meta = {"model": args.model, "cell": args.cell, "n": args.n, "grids": args.grids, "device": str(device),
            "device_name": device_name(device),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "chunk_size": args.chunk_size}
    (out / "bench.json").write_text(json.dumps({"meta": meta, "summary": summary(rows), "rows": rows}, indent=2))
    text = f"{meta}\n\n{method_markdown(rows)}\n\n{markdown(rows)}\n\n{json.dumps(summary(rows), indent=2)}\n"
    (out / "bench.md").write_text(text)
    print(text)
    return 0


def builtin_models() -> list[str]:
    """Names of the project's own models (shipped weights)."""
    from attreval.models.zoo import MODELS

    return MODELS.names()
