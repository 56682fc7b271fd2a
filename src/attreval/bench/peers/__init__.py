"""Other libraries' implementations of attreval's methods, timed and compared side by side (``attreval bench
--peers``). One adapter module per library; importing this package registers every adapter in
:data:`PEERS` (the libraries themselves are imported only when an adapter runs)."""

from attreval.bench.peers import captum_peer, gradcam_peer, torchcam_peer, zennit_peer  # noqa: F401  (registers the peers)
from attreval.bench.peers.base import PEERS, Peer, PeerCall, PeerNet, channel_sum
from attreval.bench.peers.compare import agreement, compare_peers, peers_markdown

__all__ = ["PEERS", "Peer", "PeerCall", "PeerNet", "agreement", "channel_sum", "compare_peers", "peers_markdown"]
