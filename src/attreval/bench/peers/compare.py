"""attreval next to its peers: the same model, grids, targets and presets, timed side by side.

For each method and each registered peer that has it (GridPG; CAMs at the ``final`` layer, every other
method at the input), three calls are timed interleaved in the same process and threads, the median of
``repeat`` (≥ 3) rounds after a warm-up round (calls over ``BUDGET`` seconds count their warm-up):

* attreval's one call for all T targets of a grid (``attreval.attribute``);
* attreval for the first target alone;
* the peer, called once per target (its API takes one class per example), each call reduced to attreval's
  convention (:mod:`attreval.bench.peers.base`).

**ratio, T targets** = peer's T calls ÷ attreval's one call (plain use on the bench's grids); **ratio,
one target** = peer's mean call ÷ attreval's one-target call (the same work on both sides). Agreement of the
peer's maps with attreval's, worst over maps: the largest |peer − attreval| ÷ max |attreval| and the
smallest Pearson correlation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from attreval.bench.peers.base import PEERS, Adapter, PeerCall, PeerNet
from attreval.bench.timing import BUDGET, timed
from attreval.methods import resolve_method
from attreval.settings import make_setting


def agreement(theirs: Tensor, ours: Tensor) -> tuple[float, float]:
    """Worst over maps of ``(G, T, h, w)`` pairs: max |theirs − ours| ÷ max |ours| and the smallest Pearson r
    (NaN where every map is constant on both sides).

    >>> a = torch.arange(8.).reshape(1, 2, 2, 2); rel, r = agreement(2 * a, a); rel, round(r, 6)
    (1.0, 1.0)
    """
    t, o = theirs.flatten(2).double(), ours.flatten(2).double()
    if t.shape != o.shape:
        raise ValueError(f"expected peer maps of shape {tuple(ours.shape)}, got {tuple(theirs.shape)}")
    scale = o.abs().amax(-1).clamp(min=1e-30)
    rel = ((t - o).abs().amax(-1) / scale).max().item()
    tc, oc = t - t.mean(-1, keepdim=True), o - o.mean(-1, keepdim=True)
    tn, on = tc.norm(dim=-1), oc.norm(dim=-1)
    varying = (tn > 0) | (on > 0)  # a map constant on both sides has no correlation: left out
    if not varying.any():
        return rel, float("nan")
    r = (tc * oc).sum(-1) / (tn * on).clamp(min=1e-300)
    return rel, r[varying].min().item()


def compare_peers(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    n: int,
    names: list[str],
    options: dict[str, dict[str, Any]],
    chunk_size: int,
    peers: list[str] | None = None,
    repeat: int = 3,
) -> list[dict[str, Any]]:
    """One row per (method, peer) for ``images (G, C, nH, nW)`` with cell labels ``(G, n²)``; a peer that is
    not installed gives one row with ``status`` saying why, and no numbers."""
    from attreval.api import attribute

    setting = make_setting("gridpg", model, n)
    classes = labels[:, list(setting.evaluated_cells())]
    net = PeerNet(setting.staged).to(images.device)
    rows: list[dict[str, Any]] = []
    chosen = [(name, PEERS.get(name)()) for name in (peers if peers is not None else PEERS.names())]
    for _, peer in chosen:
        reason = peer.missing()
        if reason:
            rows.append({"peer": peer.display, "method": "–", "status": f"skipped: {reason}"})
    for name in names:
        method = resolve_method(name, **options.get(name, {}))
        layer = "final" if method.family == "activation" else "input"
        call = PeerCall(net, net.layer(layer), layer, method, chunk_size)

        def ours(targets: Tensor = classes, method: Any = method, layer: str = layer) -> Tensor:
            return attribute(model, images, targets, method, setting="gridpg", layer=layer, n=n, chunk_size=chunk_size)

        for _, peer in chosen:
            adapter = peer.adapter(name) if not peer.missing() else None
            if adapter is None:
                continue

            def peer_maps(adapter: Adapter = adapter, call: PeerCall = call) -> Tensor:  # a def: mypy cannot type a lambda with defaults
                return torch.stack([adapter(call, images, classes[:, t]) for t in range(classes.shape[1])], 1)

            calls: dict[str, Callable[[], Tensor]] = {"all": ours, "one": lambda: ours(classes[:, :1]), "peer": peer_maps}
            times: dict[str, list[float]] = {key: [] for key in calls}
            maps: dict[str, Tensor] = {}
            rounds = 0
            while rounds == 0 or min(map(len, times.values())) < repeat:  # interleaved: the load falls on all alike
                for key, fn in calls.items():
                    seconds, maps[key] = timed(fn, images.device)
                    # round 0 warms up; a call over BUDGET seconds pays a negligible start-up, so it counts
                    if rounds or seconds > BUDGET:
                        times[key].append(seconds)
                rounds += 1
            rel, pearson = agreement(maps["peer"], maps["all"])
            median = {k: statistics.median(v) for k, v in times.items()}
            targets = classes.shape[1]
            rows.append(
                {
                    "peer": peer.display,
                    "method": name,
                    "peer_class": peer.methods[name],
                    "layer": layer,
                    "status": "ok",
                    "seconds": median["all"],
                    "seconds_one_target": median["one"],
                    "peer_seconds": median["peer"],
                    "ratio_all_targets": median["peer"] / median["all"],
                    "ratio_one_target": median["peer"] / targets / median["one"],
                    "max_rel_diff": rel,
                    "pearson": pearson,
                    "notes": peer.note(name, call, (images.shape[-2], images.shape[-1])),
                }
            )
    return rows


def peers_markdown(rows: list[dict[str, Any]]) -> str:
    """The peers table in Markdown (skipped peers as lines of their own)."""
    head = (
        "| method | peer (class) | layer | attreval s (T targets) | peer s (T calls) | ratio, T targets | "
        "ratio, one target | max rel. diff | Pearson r | notes |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| – | {r['peer']} | – | – | – | – | – | – | – | {r['status']} |")
            continue
        lines.append(
            f"| {r['method']} | {r['peer']} ({r['peer_class']}) | {r['layer']} | {r['seconds']:.3f} | {r['peer_seconds']:.3f} | "
            f"{r['ratio_all_targets']:.2f}× | {r['ratio_one_target']:.2f}× | {r['max_rel_diff']:.1e} | {_r(r['pearson'])} | {r['notes']} |"
        )
    return "\n".join(lines)


def _r(value: float) -> str:
    return "n/a (constant maps)" if math.isnan(value) else f"{value:.4f}"
