"""`attreval bench --peers`: the peer adapters reproduce attreval's maps where the definitions agree, a
missing peer is skipped with its reason, and the CLI runs end to end (no timing asserted)."""

import json

import pytest
import torch

import attreval
from attreval.bench.peers import PEERS, PeerCall, PeerNet, agreement, compare_peers
from attreval.bench.peers.captum_peer import Captum
from attreval.cli import main
from attreval.methods import resolve_method
from attreval.settings import make_setting
from tiny_models import tiny_model

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]
# TinyResNet takes any cell size, TinyVGG's fully connected head 16-px cells
SIDES = {"resnet": 64, "vgg": 32}


def _case(kind, side=None):
    model, side = tiny_model(kind), side or SIDES[kind]
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # GridPG's outputs' most likely classes: CAMs that are not all zero
        top = PeerNet(make_setting("gridpg", model, 2).staged)(images).topk(4, dim=1).indices
    return model, images, top


def _peer_maps(peer_name, kind, name, side=None, **options):
    model, images, classes = _case(kind, side)
    method = resolve_method(name, **options)
    layer = "final" if method.family == "activation" else "input"
    net = PeerNet(make_setting("gridpg", model, 2).staged)
    call = PeerCall(net, net.layer(layer), layer, method, chunk_size=16)
    adapter = PEERS.get(peer_name)().adapter(name)
    theirs = torch.stack([adapter(call, images, classes[:, t]) for t in range(classes.shape[1])], 1)
    ours = attreval.attribute(model, images, classes, method, setting="gridpg", layer=layer, n=2)
    return theirs, ours, call, tuple(images.shape[-2:])


@pytest.mark.parametrize("kind", ["resnet", "vgg"])
@pytest.mark.parametrize(
    "name,options",
    [
        ("grad", {}),
        ("input_x_grad", {}),
        ("int_grad", {"n_steps": 5}),
        # K = s dividing the side: both libraries run the same tiling windows
        ("occlusion", {"input_kernel_size": 8, "input_stride": 8}),
    ],
)
def test_captum_adapter_reproduces_attreval(kind, name, options):
    pytest.importorskip("captum")
    theirs, ours, call, _ = _peer_maps("captum", kind, name, **options)
    assert ours.abs().amax() > 0  # a comparison of zeros would prove nothing
    # Occlusion's maps are logit differences: float32 rounding of the logits themselves (attreval recomputes
    # only each window's receptive-field cone, summed in another order) bounds their agreement
    model, images, _ = _case(kind, None)
    rounding = 1e-6 * PeerNet(make_setting("gridpg", model, 2).staged)(images).abs().amax().item()
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5 * ours.abs().amax().item() + rounding)
    rel, pearson = agreement(theirs, ours)
    assert rel < 1e-4 and pearson > 0.9999


def test_captum_occlusion_with_overhanging_windows_differs_only_at_the_border():
    pytest.importorskip("captum")
    theirs, ours, call, shape = _peer_maps("captum", "resnet", "occlusion", side=32, input_kernel_size=8, input_stride=4)
    # 32 px, K 8, s 4: attreval's windows start at -4, 0, …, 28 (9 per axis), Captum's at 0, …, 24 (7)
    assert "49 windows vs attreval's 81" in Captum().note("occlusion", call, shape)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # covered by the same windows in both
    torch.testing.assert_close(theirs[inner], ours[inner], rtol=1e-4, atol=1e-5 * ours.abs().amax().item())
    assert (theirs - ours).abs().amax() > 1e-3 * ours.abs().amax()  # the border windows Captum leaves out


@pytest.mark.parametrize(
    "peer,name",
    [
        ("zennit", "grad"),
        ("zennit", "guided_backprop"),
        ("captum", "guided_backprop"),
        ("captum", "grad_cam"),
        ("torchcam", "grad_cam"),
        ("torchcam", "layer_cam"),
        ("pytorch_grad_cam", "grad_cam"),
        ("pytorch_grad_cam", "layer_cam"),
    ],
)
def test_other_adapters_reproduce_attreval_where_the_definitions_agree(peer, name):
    pytest.importorskip(PEERS.get(peer).package)
    theirs, ours, _, _ = _peer_maps(peer, "resnet", name)
    assert ours.abs().amax() > 0
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5 * ours.abs().amax().item())


def test_torchcam_grad_cam_pp_departs_from_the_definition_and_says_so():
    pytest.importorskip("torchcam")
    theirs, ours, _, _ = _peer_maps("torchcam", "resnet", "grad_cam_pp")
    rel, _ = agreement(theirs, ours)
    assert rel > 0.1  # α undivided (torchcam 0.5.0): a different map, not rounding
    assert "never divided" in PEERS.get("torchcam").notes["grad_cam_pp"]


def test_agreement_reference_values():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert agreement(a, a) == (0.0, pytest.approx(1.0))
    rel, r = agreement(2 * a, a)
    assert rel == pytest.approx(1.0) and r == pytest.approx(1.0)
    assert agreement(-a, a)[1] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="expected peer maps of shape"):
        agreement(a[..., :1], a)


def test_missing_peer_is_skipped_with_its_reason(monkeypatch):
    monkeypatch.setattr(Captum, "package", "attreval_no_such_library")
    model, images, classes = _case("resnet")
    labels = torch.cat([classes, classes], 1)
    rows = compare_peers(model, images, labels, 2, ["grad"], {}, 16, peers=["captum"], repeat=1)
    assert rows == [
        {"peer": "Captum", "method": "–", "status": "skipped: attreval_no_such_library not installed (pip install 'attreval[peers]')"}
    ]


def test_bench_peers_cli_end_to_end(tmp_path):
    pytest.importorskip("captum")
    out = tmp_path / "peers"
    argv = ["bench", "--model", "fashion_resnet", "--grids", "1", "--methods", "grad_cam,rise", "--peers", "captum", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "peers.json").read_text())
    rows = {(r["method"], r["peer"]): r for r in report["rows"]}
    assert set(rows) == {("grad_cam", "Captum")}  # no peer has RISE
    for r in rows.values():
        assert r["status"] == "ok" and r["max_rel_diff"] < 1e-5 and r["pearson"] > 0.9999
        assert r["ratio_all_targets"] > 0 and r["ratio_one_target"] > 0
    assert report["meta"]["threads"] == torch.get_num_threads()
    assert "| grad_cam | Captum (LayerGradCam) | final |" in (out / "peers.md").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--peers", "captun"], "unknown peer 'captun'"),
        (["--peers", "captum", "--methods", "rise"], "expected a method the peers share with attreval, got rise"),
        (["--peers", "--threads", "-1"], "expected --threads ≥ 0"),
    ],
)
def test_bench_peers_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    assert main(["bench", "--model", "fashion_resnet", "--grids", "1", "--out", str(tmp_path / "p"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_pytorch_grad_cam_grad_cam_pp_differs_by_its_epsilon_only(monkeypatch):
    """The note's claim: the ε = 1e-6 in pytorch-grad-cam's α denominator makes its Grad-CAM++ differ; the
    same formula without ε gives attreval's maps (with small gradients, as in a tiny random model)."""
    pytest.importorskip("pytorch_grad_cam")
    import numpy as np
    from pytorch_grad_cam.grad_cam_plusplus import GradCAMPlusPlus

    theirs, ours, _, _ = _peer_maps("pytorch_grad_cam", "resnet", "grad_cam_pp")
    assert agreement(theirs, ours)[0] > 0.01

    def without_epsilon(self, input_tensor, target_layers, targets, activations, grads):
        g2, sums = grads**2, activations.sum(axis=(2, 3))[:, :, None, None]
        denominator = 2 * g2 + sums * g2 * grads
        alpha = np.where(denominator != 0, g2 / np.where(denominator != 0, denominator, 1), 0)
        return (np.maximum(grads, 0) * alpha).sum(axis=(2, 3))

    monkeypatch.setattr(GradCAMPlusPlus, "get_cam_weights", without_epsilon)
    theirs, ours, _, _ = _peer_maps("pytorch_grad_cam", "resnet", "grad_cam_pp")
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5 * ours.abs().amax().item())
