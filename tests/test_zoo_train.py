"""The project's own models (layout, shapes, shipped weights) and their training (reproducibility, outputs)."""

from __future__ import annotations

import argparse
import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from attreval import train as training
from attreval.data.fashion_mnist import fashion_mnist_dataset, load_fashion_mnist
from attreval.data.idx import write_idx
from attreval.models import zoo

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # end-to-end runs / zoo / training: left out of `make test-fast`

SHIPPED = ["fashion_vgg", "fashion_resnet"]


def _image(name: str, batch: int = 2) -> torch.Tensor:
    channels = 3 if zoo.MODELS.get(name).dataset == "cifar10" else 1
    return torch.randn(batch, channels, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", zoo.model_names())
def test_registry_models_give_logits(name):
    model = zoo.build_model(name).eval()
    with torch.no_grad():
        out = model(_image(name))
    assert out.shape == (2, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="did you mean 'fashion_vgg'"):
        zoo.build_model("fashion_vg")


@pytest.mark.parametrize("name", ["fashion_vgg", "cifar_vgg11"])
def test_vgg_layout_matches_torchvision(name):
    model = zoo.build_model(name)
    assert list(dict(model.named_children())) == ["features", "avgpool", "classifier"]
    assert isinstance(model.avgpool, nn.Identity)
    layers = list(model.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    assert len(convs) == 6 and all(isinstance(layers[i + 1], nn.ReLU) for i in convs)
    assert all(layers[i].kernel_size == (3, 3) and layers[i].padding == (1, 1) for i in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in layers) == 4 and isinstance(layers[-1], nn.MaxPool2d)
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    with torch.no_grad():
        features = model.features(_image(name))
    channels = layers[convs[-1]].out_channels
    assert features.shape == (2, channels, 2, 2) and model.classifier[0].in_features == channels * 2 * 2


def test_vgg_widths_follow_the_cifar_vgg11_config():
    widths = lambda model: [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    assert widths(zoo.build_model("cifar_vgg11")) == [64, 128, 256, 256, 512, 512]
    assert widths(zoo.build_model("fashion_vgg")) == [16, 32, 64, 64, 128, 128]
    bn = zoo.vgg_small(batch_norm=True)
    assert isinstance(bn.features[1], nn.BatchNorm2d) and isinstance(bn.features[2], nn.ReLU)


def test_resnet_layout_matches_torchvision():
    model = zoo.build_model("fashion_resnet").eval()
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "avgpool", "fc"]
    assert list(dict(model.named_children())) == names
    assert isinstance(model.maxpool, nn.Identity) and model.conv1.stride == (1, 1)
    assert all(isinstance(block, BasicBlock) for stage in (model.layer1, model.layer2, model.layer3) for block in stage)
    x = _image("fashion_resnet")
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        shapes = []
        for stage in (model.layer1, model.layer2, model.layer3):
            stem = stage(stem)
            shapes.append(tuple(stem.shape[1:]))
        assert shapes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
        assert torch.allclose(model.fc(model.avgpool(stem).flatten(1)), model(x), atol=1e-6)


# -------------------------------------------------------------------------------------------- shipped weights


@pytest.fixture(scope="module")
def test_subset():
    images, labels = fashion_mnist_dataset("test").tensors
    return images[::10], labels[::10]  # a fixed, class-balanced 1,000-image subset


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_are_accurate(name, test_subset):
    model = zoo.load_default_model(name)
    assert not model.training
    images, labels = test_subset
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.90


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_sidecar_describes_the_weights(name):
    path = zoo.weights_path(name)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"] == name and meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["test_accuracy"] >= 0.90 and meta["test_num_images"] == 10_000


def test_wrong_architecture_gives_one_line_error(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(zoo.build_model("fashion_resnet").state_dict(), path)
    with pytest.raises(ValueError, match="expected weights for 'fashion_vgg'") as info:
        zoo.load_default_model("fashion_vgg", path)
    assert "\n" not in str(info.value) and "unexpected" in str(info.value)
    torch.save(zoo.vgg_small(width=0.5).state_dict(), path)
    with pytest.raises(ValueError, match=r"features.0.weight of shape \(32, 1, 3, 3\) instead of \(16, 1, 3, 3\)"):
        zoo.load_default_model("fashion_vgg", path)


def test_missing_or_corrupt_weights(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        zoo.load_default_model("fashion_vgg", tmp_path / "absent.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ValueError, match="unreadable") as info:
        zoo.load_default_model("fashion_vgg", tmp_path / "bad.pt")
    assert "\n" not in str(info.value)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="state dict"):
        zoo.load_default_model("fashion_vgg", tmp_path / "list.pt")


# -------------------------------------------------------------------------------------------------- training


def test_augment_shifts_and_flips_with_background_fill():
    x = torch.arange(2 * 16.0).view(2, 1, 4, 4)
    fill = torch.tensor([-9.0])
    out = training.augment(x, fill, torch.Generator().manual_seed(0), pad=1)
    again = training.augment(x, fill, torch.Generator().manual_seed(0), pad=1)
    assert out.shape == x.shape and torch.equal(out, again)
    for image, source in zip(out[:, 0], x[:, 0]):
        kept = image[image != -9.0]
        assert len(kept) >= 9 and set(kept.tolist()) <= set(source.flatten().tolist())
    unshifted = training.augment(x, fill, torch.Generator().manual_seed(1), pad=0)
    assert all(torch.equal(u, s) or torch.equal(u, s.flip(-1)) for u, s in zip(unshifted, x))


@pytest.fixture(scope="module")
def tiny_fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    images, labels = load_fashion_mnist("test")
    write_idx(root / "train-images-idx3-ubyte.gz", images[:96])
    write_idx(root / "train-labels-idx1-ubyte.gz", labels[:96].astype(np.uint8))
    write_idx(root / "t10k-images-idx3-ubyte", images[-40:])
    write_idx(root / "t10k-labels-idx1-ubyte", labels[-40:].astype(np.uint8))
    return root


@pytest.mark.parametrize("name", SHIPPED)
def test_training_is_reproducible(name, tiny_fashion, tmp_path):
    def run(seed, out):
        return training.train(name, tiny_fashion, out, epochs=1, batch_size=32, seed=seed, progress=False)

    meta = run(0, tmp_path / "a.pt")
    run(0, tmp_path / "b.pt")
    run(1, tmp_path / "c.pt")
    a, b, c = (torch.load(tmp_path / f"{k}.pt", weights_only=True) for k in "abc")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        initial = zoo.build_model(name).state_dict()  # what train() starts from with seed 0
    assert all(a[key].shape == initial[key].shape for key in a)
    head = "fc.weight" if "fc.weight" in a else "classifier.6.weight"
    assert not torch.equal(a[head], initial[head])  # it trained
    assert meta["test_num_images"] == 40 and meta["train_images"] == 96 and meta["epochs"] == 1
    sidecar = json.loads((tmp_path / "a.json").read_text())
    assert sidecar["sha256"] == hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()
    assert not list(tmp_path.glob("*.tmp"))
    zoo.load_default_model(name, tmp_path / "a.pt")  # round trip through the weights_only loader


def test_cli_arguments_run_training(tiny_fashion, tmp_path):
    parser = training.configure_parser(argparse.ArgumentParser())
    out = tmp_path / "m.pt"
    args = parser.parse_args(
        ["--model", "fashion_resnet", "--data", str(tiny_fashion), "--out", str(out), "--epochs", "1",
         "--batch-size", "48", "--seed", "3", "--no-progress"]
    )  # fmt: skip
    assert training.run_from_args(args) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["seed"] == 3 and meta["batch_size"] == 48 and meta["model"] == "fashion_resnet"
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "alexnet"])


def test_cifar_model_requires_data():
    with pytest.raises(ValueError, match="CIFAR-10 python batches"):
        training.train("cifar_vgg11", None, progress=False)
