"""``attreval bench --peers``: run :func:`~attreval.bench.peers.compare.compare_peers` and write its tables."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from attreval.bench.peers.base import PEERS
from attreval.bench.peers.compare import compare_peers, peers_markdown
from attreval.methods import METHODS


def run_peers(
    spec: str,
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    n: int,
    names: list[str],
    options: dict[str, dict[str, Any]],
    chunk_size: int,
    meta: dict[str, Any],
    out: Path,
) -> int:
    """Compare the peers in ``spec`` (``all`` or comma-separated registry names) on ``names`` (only those some
    chosen peer has; with every method named, the others are left out silently) and write ``peers.md`` and
    ``peers.json`` under ``out``."""
    peers = PEERS.names() if spec == "all" else spec.split(",")
    chosen = [PEERS.get(p)() for p in peers]  # unknown names: one line with the choices
    for name in names:
        METHODS.get(name)
    shared = [m for m in names if any(peer.adapter(m) for peer in chosen)]
    if not shared:
        raise ValueError(f"expected a method the peers share with attreval, got {', '.join(names)}")
    with warnings.catch_warnings():  # the peers warn about hooks and inputs without gradients on every call
        warnings.simplefilter("ignore")
        rows = compare_peers(model, images, labels, n, shared, options, chunk_size, peers)
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = f"{meta}\n\n{peers_markdown(rows)}\n"
    (out / "peers.md").write_text(text)
    print(text)
    return 0
