"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT licence, (c) Zalando SE) from IDX files.

The 10,000-image test split ships inside the package (``attreval/data/fashion_mnist/``), so the default models
can be evaluated without any download. The 60,000-image training split is read from a local directory, by default
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from attreval.data.idx import read_idx

__all__ = [
    "CLASS_NAMES",
    "MEAN",
    "STD",
    "PAD",
    "EMBEDDED_DIR",
    "SYSTEM_DIR",
    "load_fashion_mnist",
    "preprocess",
    "fashion_mnist_dataset",
]

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Pixel statistics of the 60,000 training images after zero-padding 28->32 and scaling to [0, 1], computed once
# with float64: ``x = np.pad(train_images, ((0, 0), (2, 2), (2, 2))) / 255; x.mean(), x.std()`` (population std).
# (Unpadded 28x28 images give 0.2860 / 0.3530.)
MEAN: float = 0.2190
STD: float = 0.3318
PAD: int = 2  # 28 + 2 * PAD = 32, the cell size of the CIFAR-10 models

EMBEDDED_DIR = Path(__file__).resolve().parent / "fashion_mnist"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_PREFIX = {"train": "train", "test": "t10k"}


def _find(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise ValueError(f"expected {stem}[.gz] in {str(directory)!r}, got no such file")


def _default_root(split: str) -> Path:
    if split == "test":
        return EMBEDDED_DIR
    if not SYSTEM_DIR.is_dir():
        raise ValueError(
            f"expected the Fashion-MNIST training split in {SYSTEM_DIR}, got no such directory: "
            "run `apt-get install dataset-fashion-mnist` or pass a directory holding the IDX files"
        )
    return SYSTEM_DIR


def load_fashion_mnist(split: str = "test", root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load raw Fashion-MNIST images and labels.

    Args:
        split: ``"test"`` (10,000 images) or ``"train"`` (60,000 images).
        root: directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``. ``None``: the copy embedded in
            the package for ``"test"``, ``/usr/share/datasets/fashion-mnist`` for ``"train"``.

    Returns:
        ``(images, labels)``: uint8 array ``(N, 28, 28)`` and int64 array ``(N,)`` with values in ``0..9``.

    Raises:
        ValueError: unknown split, missing or corrupt files, or images and labels that disagree.
    """
    if split not in _PREFIX:
        raise ValueError(f"expected split in {sorted(_PREFIX)}, got {split!r}")
    directory = Path(root) if root is not None else _default_root(split)
    images = read_idx(_find(directory, f"{_PREFIX[split]}-images-idx3-ubyte"))
    labels = read_idx(_find(directory, f"{_PREFIX[split]}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"expected {len(images)} labels in 0..9, got shape {labels.shape}")
    return images, labels.astype(np.int64)


def preprocess(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Pad, scale and normalise raw Fashion-MNIST images.

    Padding happens in raw pixel space with 0, the background value, so the border is background after
    normalisation too (value ``-MEAN / STD``).

    Args:
        images: uint8 ``(N, 28, 28)``.

    Returns:
        float32 ``(N, 1, 32, 32)``, ``(x / 255 - MEAN) / STD``.
    """
    images = torch.as_tensor(images)
    padded = torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD), value=0)
    return ((padded.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def fashion_mnist_dataset(split: str = "test", root: str | os.PathLike | None = None) -> TensorDataset:
    """Fashion-MNIST as a normalised tensor dataset (see :func:`load_fashion_mnist` for ``split``/``root``).

    Returns:
        ``TensorDataset(images float32 (N, 1, 32, 32), labels int64 (N,))``.
    """
    images, labels = load_fashion_mnist(split, root)
    return TensorDataset(preprocess(images), torch.from_numpy(labels))
