"""CIFAR-10 from the "python version" batches folder (``cifar-10-batches-py``), read from local disk only.

Each batch file is a pickled dict with ``b"data"`` (uint8 ``(N, 3072)``, channel-major 3x32x32 rows) and
``b"labels"`` (N ints). The training split is ``data_batch_1`` … ``data_batch_5``, the test split ``test_batch``.

A pickle can call any importable function while it loads (``os.system`` included), so a batch file is read
with :class:`BatchUnpickler`, which resolves only the globals a CIFAR batch needs to rebuild its numpy
array (see :data:`ALLOWED_GLOBALS`); any other reference is refused before anything is called.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "SPLIT_FILES", "load_cifar10", "cifar10_dataset"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# The usual per-channel statistics of the CIFAR-10 training images in [0, 1].
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


#: The only globals a batch may reference: numpy's array, scalar and dtype reconstruction (``_reconstruct`` up to
#: pickle protocol 4, ``_frombuffer`` at 5; module names of numpy < 2 and ≥ 2) and ``_codecs.encode``, which
#: Python 3 pickles use for bytes at protocols < 3. None of them runs code or touches files.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),  # labels as numpy integers
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class BatchUnpickler(pickle.Unpickler):
    """Loads dicts, lists, bytes, str, numbers and numpy arrays; any other global is an ``UnpicklingError``."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"a reference to {module}.{name}, which a CIFAR-10 batch does not hold (refused: loading it could run code)"
            )
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise ValueError(f"expected CIFAR-10 batch file {str(path)!r}, got no such file")
    try:
        with path.open("rb") as handle:
            batch = BatchUnpickler(handle, encoding="bytes").load()
        if not isinstance(batch, dict):
            raise TypeError(f"a pickled {type(batch).__name__}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"expected a CIFAR-10 batch (a pickled dict of bytes, lists and numpy arrays) in {str(path)!r}, "
            f"got {str(error).splitlines()[0] if str(error) else 'an unreadable pickle'}"
        ) from None
    except (OSError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise ValueError(f"expected a pickled dict with b'data' and b'labels' in {str(path)!r}, got {error!r}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise ValueError(f"expected data (N, 3072) and N labels in {str(path)!r}, got {data.shape} and {labels.shape}")
    return data, labels


def load_cifar10(root: str | os.PathLike, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Load raw CIFAR-10 images and labels.

    Args:
        root: the ``cifar-10-batches-py`` directory.
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000 images).

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)`` in ``0..9``.

    Raises:
        ValueError: unknown split, missing directory or batch file (named), or a malformed batch.
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"expected split in {sorted(SPLIT_FILES)}, got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"expected a CIFAR-10 python-batches directory, got missing path {str(root)!r}")
    batches = [_read_batch(root / name) for name in SPLIT_FILES[split]]
    images = np.concatenate([data for data, _ in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([labels for _, labels in batches])
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise ValueError(f"expected labels in 0..9, got range {labels.min()}..{labels.max()} in {str(root)!r}")
    return images, labels


def cifar10_dataset(root: str | os.PathLike, split: str = "test") -> TensorDataset:
    """CIFAR-10 as a normalised tensor dataset.

    Returns:
        ``TensorDataset(images float32 (N, 3, 32, 32), labels int64 (N,))`` with images
        ``(x / 255 - CIFAR10_MEAN) / CIFAR10_STD`` per channel.
    """
    images, labels = load_cifar10(root, split)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    tensor = (torch.from_numpy(images).float() / 255.0 - mean) / std
    return TensorDataset(tensor, torch.from_numpy(labels))
