"""Readers of IDX (Fashion-MNIST), CIFAR-10 python batches and ImageNet-style folders, on real and tiny fake data."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from attreval.data import cifar10, fashion_mnist, folders
from attreval.data.idx import read_idx, write_idx

# ----------------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    out = read_idx(path)
    assert out.dtype == array.dtype and out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, array)


def test_idx_header_matches_mnist_layout(tmp_path):
    write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(raw[4:8], "big") == 3 and len(raw) == 16 + 3 * 784


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated_file_fails_clearly(tmp_path, suffix):
    full = tmp_path / "full"
    write_idx(full, np.zeros((4, 28, 28), np.uint8))
    path = tmp_path / f"cut{suffix}"
    data = full.read_bytes()[:-10]
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(ValueError, match=r"expected 3136 data bytes .*got 3126.*truncated"):
        read_idx(path)


def test_idx_other_corruptions(tmp_path):
    with pytest.raises(ValueError, match="missing path"):
        read_idx(tmp_path / "nope.gz")
    (tmp_path / "magic").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="readable IDX"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "type").write_bytes(bytes([0, 0, 0x42, 1, 0, 0, 0, 0]))
    with pytest.raises(ValueError, match="type code"):
        read_idx(tmp_path / "type")


# ----------------------------------------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="module")
def embedded():
    return fashion_mnist.load_fashion_mnist("test")


def test_embedded_test_split_is_complete_and_balanced(embedded):
    images, labels = embedded
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [1000] * 10
    assert len(fashion_mnist.CLASS_NAMES) == 10 and fashion_mnist.CLASS_NAMES[0] == "T-shirt/top"
    assert (fashion_mnist.EMBEDDED_DIR / "LICENSE").is_file()


def test_preprocess_pads_with_background_and_normalises(embedded):
    images = embedded[0][:50]
    x = fashion_mnist.preprocess(images)
    assert x.shape == (50, 1, 32, 32) and x.dtype == torch.float32
    background = -fashion_mnist.MEAN / fashion_mnist.STD
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.allclose(x[:, 0, border], torch.tensor(background))
    inner = torch.from_numpy(images).float() / 255
    assert torch.allclose(x[:, 0, 2:30, 2:30], (inner - fashion_mnist.MEAN) / fashion_mnist.STD, atol=1e-6)


def test_normalisation_constants_fit_the_data(embedded):
    # The constants come from the training split; the test split's padded statistics agree to ~1e-3.
    padded = np.pad(embedded[0], ((0, 0), (2, 2), (2, 2))) / 255.0
    assert abs(padded.mean() - fashion_mnist.MEAN) < 0.005 and abs(padded.std() - fashion_mnist.STD) < 0.005
    dataset = fashion_mnist.fashion_mnist_dataset("test")
    images, labels = dataset.tensors
    assert images.shape == (10_000, 1, 32, 32) and labels.dtype == torch.int64
    assert abs(images.mean().item()) < 0.02 and abs(images.std().item() - 1) < 0.02


def test_fashion_mnist_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="expected split"):
        fashion_mnist.load_fashion_mnist("val")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\[\.gz\]"):
        fashion_mnist.load_fashion_mnist("train", tmp_path)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "absent")
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_fashion_mnist("train")


def test_fashion_mnist_from_directory_plain_and_gz(tmp_path, embedded):
    write_idx(tmp_path / "train-images-idx3-ubyte", embedded[0][:7])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", embedded[1][:7].astype(np.uint8))
    images, labels = fashion_mnist.load_fashion_mnist("train", tmp_path)
    np.testing.assert_array_equal(images, embedded[0][:7])
    np.testing.assert_array_equal(labels, embedded[1][:7])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", embedded[1][:6].astype(np.uint8))
    with pytest.raises(ValueError, match="expected 7 labels"):
        fashion_mnist.load_fashion_mnist("train", tmp_path)


# ------------------------------------------------------------------------------------------------- CIFAR-10


def _write_batch(path, images, labels):
    with open(path, "wb") as handle:
        pickle.dump({b"data": images.reshape(len(images), -1), b"labels": list(labels), b"batch_label": b"x"}, handle)


@pytest.fixture()
def cifar_dir(tmp_path):
    rng = np.random.default_rng(0)
    for name in cifar10.SPLIT_FILES["train"] + cifar10.SPLIT_FILES["test"]:
        _write_batch(tmp_path / name, rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 3))
    return tmp_path


def test_cifar10_reader(cifar_dir):
    images = np.zeros((2, 3, 32, 32), np.uint8)
    images[1, 2, 5, 7] = 255  # blue channel of image 1 at row 5, col 7: checks the channel-major reshape
    _write_batch(cifar_dir / "test_batch", images, [3, 9])
    raw, labels = cifar10.load_cifar10(cifar_dir, "test")
    assert raw.shape == (2, 3, 32, 32) and raw[1, 2, 5, 7] == 255 and raw.sum() == 255
    assert labels.tolist() == [3, 9] and labels.dtype == np.int64
    x, y = cifar10.cifar10_dataset(cifar_dir, "test").tensors
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    mean, std = torch.tensor(cifar10.CIFAR10_MEAN), torch.tensor(cifar10.CIFAR10_STD)
    assert torch.allclose(x[0, :, 0, 0], -mean / std)
    assert torch.isclose(x[1, 2, 5, 7], (1 - mean[2]) / std[2])
    assert len(cifar10.cifar10_dataset(cifar_dir, "train")) == 15


def test_cifar10_errors_name_the_file(cifar_dir, tmp_path):
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="data_batch_3"):
        cifar10.load_cifar10(cifar_dir, "train")
    (cifar_dir / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch"):
        cifar10.load_cifar10(cifar_dir, "test")
    with pytest.raises(ValueError, match="missing path"):
        cifar10.load_cifar10(tmp_path / "absent")
    with pytest.raises(ValueError, match="expected split"):
        cifar10.load_cifar10(cifar_dir, "val")


# -------------------------------------------------------------------------------------------------- folders

COLOURS = {"a.png": (255, 0, 0), "b.png": (0, 255, 0), "c.jpg": (0, 0, 255)}


def _png(path, colour, size=(40, 30)):
    Image.new("RGB", size, colour).save(path)


def _expected(colour):
    mean, std = torch.tensor(folders.IMAGENET_MEAN), torch.tensor(folders.IMAGENET_STD)
    return (torch.tensor(colour) / 255 - mean) / std


def test_image_folder_dataset(tmp_path):
    for cls, colour in [("cat", (255, 0, 0)), ("dog", (0, 0, 255))]:
        (tmp_path / cls).mkdir()
        for i in range(2):
            _png(tmp_path / cls / f"{i}.png", colour)
    dataset = folders.image_folder_dataset(tmp_path, resize=16, crop=12)
    assert len(dataset) == 4 and dataset.classes == ["cat", "dog"]
    image, label = dataset[3]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32 and label == 1
    assert torch.allclose(image[:, 6, 6], _expected((0, 0, 255)), atol=0.02)


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="missing path"):
        folders.image_folder_dataset(tmp_path / "absent")
    with pytest.raises(ValueError, match="class folders"):
        folders.image_folder_dataset(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="class folders"):
        folders.image_folder_dataset(tmp_path)


@pytest.fixture()
def flat_dir(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name, colour in COLOURS.items():
        _png(root / name, colour)
    (root / "notes.txt").write_text("not an image")
    return root


def test_labels_file_one_label_per_line_in_sorted_order(flat_dir, tmp_path):
    (tmp_path / "labels.txt").write_text("5\n7\n\n9\n")
    dataset = folders.labeled_folder_dataset(flat_dir, tmp_path / "labels.txt", resize=20, crop=16)
    assert dataset.files == ["a.png", "b.png", "c.jpg"] and dataset.labels == [5, 7, 9]
    image, label = dataset[1]
    assert image.shape == (3, 16, 16) and label == 7
    assert torch.allclose(image[:, 8, 8], _expected(COLOURS["b.png"]), atol=0.02)


def test_labels_file_filename_label_pairs(flat_dir, tmp_path):
    (tmp_path / "labels.txt").write_text("c.jpg 2\na.png 0\n")
    dataset = folders.labeled_folder_dataset(flat_dir, tmp_path / "labels.txt")
    assert dataset.files == ["c.jpg", "a.png"] and dataset.labels == [2, 0]
    image, label = dataset[0]
    assert image.shape == (3, 224, 224) and label == 2
    assert torch.allclose(image[:, 100, 100], _expected(COLOURS["c.jpg"]), atol=0.05)  # JPEG is lossy


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("1\n2\n", "expected 3 labels .* got 2"),
        ("", "empty file"),
        ("a.png x\n", "integer labels"),
        ("a.png 1\n2\n", "'<filename> <label>'"),
        ("1\nb.png 2\n3\n", "'<label>'"),
        ("zzz.png 1\n", "1 missing, e.g. 'zzz.png'"),
    ],
)
def test_labels_file_errors(flat_dir, tmp_path, content, match):
    (tmp_path / "labels.txt").write_text(content)
    with pytest.raises(ValueError, match=match):
        folders.labeled_folder_dataset(flat_dir, tmp_path / "labels.txt")


def test_flat_folder_missing_things(flat_dir, tmp_path):
    with pytest.raises(ValueError, match="labels file, got missing path"):
        folders.labeled_folder_dataset(flat_dir, tmp_path / "absent.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="image files .* got none"):
        folders.labeled_folder_dataset(tmp_path / "empty", tmp_path / "absent.txt")
    with pytest.raises(ValueError, match="missing path"):
        folders.labeled_folder_dataset(tmp_path / "absent", tmp_path / "absent.txt")


# ----------------------------------------------------------------------------------- preprocessing, classes


def test_folder_transform_defaults_are_the_paper_imagenet_transform(tmp_path):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8))
    reference = folders.imagenet_transform(32, 24)(image)
    assert torch.equal(folders.folder_transform(32, 24)(image), reference)
    explicit = folders.folder_transform(32, 24, 3, True, folders.IMAGENET_MEAN, folders.IMAGENET_STD)(image)
    assert torch.equal(explicit, reference)


def test_folder_transform_grey_raw_and_custom_statistics():
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    raw = folders.folder_transform(0, 0, 3, normalize=False)(image)
    assert torch.allclose(raw, torch.from_numpy(pixels).permute(2, 0, 1).float() / 255)  # no resize, no crop, [0, 1]
    grey = folders.folder_transform(0, 0, 1, mean=(0.5,), std=(0.25,))(image)
    luma = np.asarray(image.convert("L"), dtype=np.float32) / 255
    assert grey.shape == (1, 16, 16) and torch.allclose(grey[0], (torch.from_numpy(luma) - 0.5) / 0.25)
    one_for_all = folders.folder_transform(0, 0, 3, mean=(0.5,), std=(0.5,))(image)
    assert torch.allclose(one_for_all, raw * 2 - 1, atol=1e-6)
    with pytest.raises(ValueError, match="expected channels 1 or 3, got 2"):
        folders.folder_transform(channels=2)


@pytest.mark.parametrize("content, says", [(b"", "an empty file"), (b"not an image at all", "UnidentifiedImageError")])
def test_unreadable_images_raise_one_line_naming_the_file(tmp_path, content, says):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        _png(tmp_path / cls / "0.png", (10, 20, 30))
    (tmp_path / "b" / "1.png").write_bytes(content)
    dataset = folders.image_folder_dataset(tmp_path, resize=8, crop=8)
    assert dataset[0][0].shape == (3, 8, 8)
    with pytest.raises(ValueError) as err:
        dataset[2]
    message = str(err.value)
    assert str((tmp_path / "b" / "1.png").absolute()) in message and says in message and "\n" not in message


def test_class_names_of_every_kind(tmp_path, cifar_dir):
    from attreval.data import class_names, load_dataset
    from attreval.data.cifar10 import CIFAR10_CLASSES

    for cls in ("zebra", "ant"):
        (tmp_path / "f" / cls).mkdir(parents=True)
        _png(tmp_path / "f" / cls / "0.png", (1, 2, 3))
    assert class_names(load_dataset("imagefolder", str(tmp_path / "f"), resize=8, crop=8)) == ("ant", "zebra")
    assert class_names(load_dataset("imagefolder", str(tmp_path / "f"), resize=8, crop=8, limit=1)) == ("ant", "zebra")
    assert class_names(load_dataset("fashion_mnist", limit=5)) == fashion_mnist.CLASS_NAMES
    assert class_names(load_dataset("cifar10", str(cifar_dir))) == CIFAR10_CLASSES
    assert class_names(torch.utils.data.TensorDataset(torch.zeros(1))) == ()


def test_image_rules_select_and_account():
    """A fixed linear 'model' whose logits are given per image: each rule keeps what it says, and counts what it removed."""
    from attreval.data.grids import select_images

    logits = torch.tensor([[9.0, 0.0], [0.0, 9.0], [0.2, 0.0], [0.0, 0.2]])  # image i's logits
    labels = torch.tensor([0, 0, 0, 0])  # 0: right & confident, 1: wrong & confident in class 1, 2: right & unsure, 3: wrong & unsure
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2, bias=False)).eval()
    model[1].weight.data = torch.eye(2)
    kept, summary = select_images([model], logits, labels, 0.9, "correct-and-confident")
    assert kept.tolist() == [0] and "kept 1 of 4 images of 1 of 1 classes: 2 misclassified, 1 below confidence" in summary
    kept, summary = select_images([model], logits, labels, 0.5, "confident")  # p(label) ≥ 0.5: images 0 and 2 (0.55)
    assert kept.tolist() == [0, 2] and summary.endswith("2 below confidence")
    kept, summary = select_images([model], logits, labels, 0.0, "confident")
    assert kept.tolist() == [0, 1, 2, 3]  # confidence 0 switches the filter off, right or wrong
    kept, summary = select_images([model], logits, labels, 0.99, "any")
    assert kept.tolist() == [0, 1, 2, 3] and summary == '[grids] images = "any" kept 4 of 4 images of 1 of 1 classes'
    with pytest.raises(ValueError, match="expected labels in 0..1"):  # "any" still checks what the model outputs
        select_images([model], logits, torch.tensor([0, 0, 0, 5]), 0.0, "any", batch_size=2)
