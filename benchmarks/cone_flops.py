"""How far an exact Occlusion can beat full forwards: the FLOPs each side executes, counted, not timed.

Counts (``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products) the work of one full
Occlusion map on a 2×2 grid of 224-px cells (448²), GridPG, random weights, eval mode:

* **Captum**: ``captum.attr.Occlusion`` with the same windows (stride = kernel, so both sides run the same windows);
* **attreval**: ``attreval.attribute(..., "occlusion")`` at ``--chunk`` windows per pass (what the benchmark times),
  and at one window per pass — every window's own receptive-field cone clipped to the map, the least work any exact
  cone computation of these windows can do.

Captum ÷ attreval FLOPs bounds the speed-up an exact method can reach where both run the same kernels at the same
speed per FLOP (measured side by side in ``peers_full_maps.py``): for ConvNeXt-tiny the cone covers the whole map
from stage 3 on (7×7 depthwise convolutions grow it by 6 positions per block), so most FLOPs are paid in full.

    PYTHONPATH=src python benchmarks/cone_flops.py [--models convnext_tiny,timm_resnet18] [--kernel 64] [--chunk 16]
"""

from __future__ import annotations

import argparse

import timm
import torch
import torchvision
from captum.attr import Occlusion
from torch.utils.flop_counter import FlopCounterMode

import attreval


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name[5:], pretrained=False) if name.startswith("timm_") else getattr(torchvision.models, name)()
    return model.eval()


def counted(run) -> float:
    """GFLOPs executed by ``run()``."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="convnext_tiny,timm_resnet18")
    parser.add_argument("--kernel", type=int, default=64, help="window side = stride (the same windows on both sides)")
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k = args.kernel
    windows = (448 // k) ** 2
    print(f"Occlusion {k}/{k} on a 448² grid ({windows} windows), GFLOPs per full map (convolutions + matrix products)")
    print("| model | Captum | attreval, chunk " + str(args.chunk) + " | attreval, one window per pass | Captum ÷ attreval (chunk) | Captum ÷ attreval (bound) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model = build(name)
        x = torch.randn(1, 3, 448, 448)
        target = torch.tensor([[3]])

        def ours(chunk: int, model=model, x=x, target=target):
            return lambda: attreval.attribute(model, x, target, "occlusion", kernel_size=k, stride=k, chunk_size=chunk)

        def theirs(model=model, x=x):
            with torch.no_grad():
                Occlusion(model).attribute(x, sliding_window_shapes=(3, k, k), strides=(3, k, k), baselines=0.0, target=3, perturbations_per_eval=args.chunk)

        attreval.attribute(model, x, target, "grad")  # the one-time shape probe, outside the count
        peer, chunked, tight = counted(theirs), counted(ours(args.chunk)), counted(ours(1))
        print(f"| {name} | {peer:.0f} | {chunked:.0f} | {tight:.0f} | {peer / chunked:.2f}× | {peer / tight:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
