"""RISE peak memory against the number of masks: one fresh subprocess per M, its peak resident memory
(``resource.getrusage(...).ru_maxrss``) above the same process's peak just before the call.

The model is deliberately tiny (two convolutions, global pooling, a linear layer) so that the masks, not the
network, dominate: one 448² grid, GridPG at the input, the paper's s = 6 and p1 = 0.1, chunk size 16.

    PYTHONPATH=src python benchmarks/rise_memory.py [--masks 250,500,1000,2000,4000] [--side 448]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys


def child(masks: int, side: int) -> None:
    import torch
    from torch import nn

    import attreval

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=4, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=4, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    ).eval()
    images = torch.randn(1, 3, side, side)
    targets = torch.tensor([[1]])
    attreval.attribute(model, images, targets, "rise", num_masks=8, chunk_size=16)  # warm up: imports, allocator
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    maps = attreval.attribute(model, images, targets, "rise", num_masks=masks, chunk_size=16)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"masks": masks, "peak_mib": after / 1024, "delta_mib": (after - before) / 1024, "map_sum": float(maps.sum())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", default="250,500,1000,2000,4000")
    parser.add_argument("--side", type=int, default=448)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.side)
        return
    rows = []
    for masks in (int(m) for m in args.masks.split(",")):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(masks), "--side", str(args.side)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"RISE peak memory, one {args.side}² grid, tiny model ({platform.machine()}, torch threads 1)")
    print("| masks | peak RSS (MiB) | growth during the call (MiB) |")
    print("|---:|---:|---:|")
    for row in rows:
        print(f"| {row['masks']} | {row['peak_mib']:.0f} | {row['delta_mib']:.0f} |")


if __name__ == "__main__":
    main()
