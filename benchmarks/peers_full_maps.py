"""Honest figures (issue 24 §5): attreval vs Captum on full maps, side by side in one process, interleaved.

* **Occlusion, full maps**, GridPG on one 2×2 grid of 224-px cells (448²), random weights, eval mode: attreval's
  ``Occlusion`` (the receptive-field cone; over the traced graph for timm ResNet18 and ConvNeXt-tiny) vs Captum's
  ``Occlusion`` on the same GridPG network (the model on the whole grid), the **same windows** on both sides:
  stride = kernel, so Captum's in-map windows are exactly attreval's (no border overhang either side), and the
  same number of windows per forward (``--chunk``). Each side computes the whole map; the maps are checked equal.
* **One-target Grad and final-layer Grad-CAM**: ``attreval.attribute(model, x, targets, "grad")`` vs Captum
  ``Saliency``; ``attreval.attribute(..., "grad_cam", layer="final")`` vs ``LayerGradCam(model, model.layer4)``,
  torchvision ResNet18 on the 448² grid, one target.
* **RISE peak memory**: ``benchmarks/rise_memory.py`` at 250 and 4,000 masks.

Every pair runs A B, then B A, A B, … (counterbalanced; ``--pairs``, ≥ 3; the one-target calls ``--short-pairs``, 21, with a paired
Wilcoxon signed-rank test), the medians are reported and the ratio is Captum ÷ attreval (above 1: attreval is
faster). The load (``os.getloadavg``) is printed before and after: on a shared machine it
moves both sides alike, but absolute seconds depend on it.

    PYTHONPATH=src python benchmarks/peers_full_maps.py [--pairs 3] [--threads 1] [--occlusion timm_resnet18:64,convnext_tiny:64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import timm
import torch
import torchvision
from captum.attr import LayerGradCam, Occlusion, Saliency
from scipy.stats import wilcoxon

import attreval
from attreval.cone.report import recording, summary

DEVICE = torch.device("cpu")


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name[5:], pretrained=False) if name.startswith("timm_") else getattr(torchvision.models, name)()
    return model.eval().to(DEVICE)


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def pairs(a, b, count: int, warm_up: bool = True, times: list | None = None) -> tuple[float, float, object, object]:
    """Medians of ``count`` interleaved runs of ``a`` and ``b`` (after one warm-up each, unless a run is long enough
    to need none) and their last results; ``times`` (optional) receives the ``(a, b)`` seconds of every pair."""
    ra, rb = (a(), b()) if warm_up else (None, None)
    ta, tb = [], []

    def timed(f):
        sync()
        t0 = time.perf_counter()
        out = f()
        sync()
        return out, time.perf_counter() - t0

    for i in range(count):  # A B, B A, A B, …: neither side always runs second (a warm cache, the allocator's state)
        if i % 2 == 0:
            (ra, sa), (rb, sb) = timed(a), timed(b)
        else:
            (rb, sb), (ra, sa) = timed(b), timed(a)
        ta.append(sa)
        tb.append(sb)
    if times is not None:
        times.extend(zip(ta, tb))
    return statistics.median(ta), statistics.median(tb), ra, rb


def paired(times: list) -> str:
    """The median of the per-pair ratios b/a and a two-sided Wilcoxon signed-rank test of a − b over the pairs."""
    ratios = [b / a for a, b in times]
    p = wilcoxon([a - b for a, b in times]).pvalue
    return f"median pair ratio {statistics.median(ratios):.3f}, Wilcoxon p = {p:.2g} over {len(times)} pairs"


def occlusion(name: str, kernel: int, count: int, chunk: int) -> str:
    model = build(name)
    x = torch.randn(1, 3, 448, 448, device=DEVICE)
    target = 3
    windows = (448 // kernel) ** 2

    def ours():
        with recording() as notes:
            maps = attreval.attribute(
                model, x, torch.tensor([[target]], device=DEVICE), "occlusion", kernel_size=kernel, stride=kernel, chunk_size=chunk
            )
        ours.cone = summary(notes)  # type: ignore[attr-defined]
        return maps[0, 0]

    def theirs():
        with torch.no_grad():
            out = Occlusion(model).attribute(
                x,
                sliding_window_shapes=(3, kernel, kernel),
                strides=(3, kernel, kernel),
                baselines=0.0,
                target=target,
                perturbations_per_eval=chunk,
            )
        return out[0].sum(0) / 3  # Captum spreads each drop over the window's 3 channels; attreval's Σ drop/|P| per pixel

    a, b, ra, rb = pairs(ours, theirs, count, warm_up=False)  # a full map takes many seconds on both sides
    # with stride = kernel every pixel lies in one window: Captum's value is the drop, attreval's drop / K²
    diff = float((ra * kernel * kernel - rb).abs().max() / rb.abs().max())  # type: ignore[operator, union-attr]
    return (
        f"| Occlusion {kernel}/{kernel}, full map ({windows} windows) | {name} | {a:.2f} | {b:.2f} | **{b / a:.2f}×** | "
        f"cone: {ours.cone}; max map difference {diff:.1e} of the scale |"  # type: ignore[attr-defined]
    )


def one_target(count: int) -> list[str]:
    """Short calls: ``count`` pairs each, with the paired test (a claim of one side being faster needs it)."""
    model = build("resnet18")
    x, t = torch.randn(1, 3, 448, 448, device=DEVICE), torch.tensor([[3]], device=DEVICE)
    rows, times = [], []
    a, b, ra, rb = pairs(
        lambda: attreval.attribute(model, x, t, "grad")[0, 0],
        lambda: Saliency(model).attribute(x.clone().requires_grad_(True), target=3, abs=True)[0].sum(0),  # as the bench peer
        count,
        times=times,
    )
    diff = float((ra - rb).abs().max() / rb.abs().max())  # type: ignore[operator, union-attr]
    rows.append(
        f"| Grad, one target | resnet18 | {a:.3f} | {b:.3f} | **{b / a:.2f}×** | {paired(times)}; max map difference {diff:.1e} of the scale |"
    )
    times = []
    a, b, ra, rb = pairs(
        lambda: attreval.attribute(model, x, t, "grad_cam", layer="final")[0, 0],
        lambda: LayerGradCam(model, model.layer4).attribute(x, target=3, relu_attributions=False)[0].sum(0),
        count,
        times=times,
    )
    rows.append(f"| Grad-CAM (final layer), one target | resnet18 | {a:.3f} | {b:.3f} | **{b / a:.2f}×** | {paired(times)}; 14×14 maps |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="interleaved pairs of each full-map Occlusion comparison")
    parser.add_argument("--short-pairs", type=int, default=21, help="interleaved pairs of each one-target comparison")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--occlusion", default="timm_resnet18:64,convnext_tiny:64", help="model:kernel,… (stride = kernel)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: occlusion, one_target, rise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    skip = set(args.skip.split(","))
    card = torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"
    print(f"load before: {os.getloadavg()}; {card}; torch {torch.__version__}, threads {args.threads}, {args.pairs} interleaved pairs")
    print("| what | model | attreval s (median) | Captum s (median) | Captum ÷ attreval | notes |")
    print("|---|---|---:|---:|---:|---|")
    if "one_target" not in skip:
        for row in one_target(args.short_pairs):
            print(row, flush=True)
    if "occlusion" not in skip:
        for item in args.occlusion.split(","):
            name, kernel = item.split(":")
            print(occlusion(name, int(kernel), args.pairs, args.chunk), flush=True)
    print(f"load after: {os.getloadavg()}")
    if "rise" not in skip and DEVICE.type == "cpu":
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rise_memory.py")
        subprocess.run([sys.executable, script, "--masks", "250,1000,4000"], check=True)


if __name__ == "__main__":
    main()
