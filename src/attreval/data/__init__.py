"""Labelled image datasets (Fashion-MNIST, CIFAR-10, image folders) and grid datasets."""
from __future__ import annotations

from torch.utils.data import Dataset, Subset, TensorDataset

from attreval.data.grids import GridDataset, build_grid_dataset

__all__ = ["GridDataset", "build_grid_dataset", "load_dataset"]


def load_dataset(
    kind: str, root: str = "", split: str = "test", labels_file: str = "", resize: int = 256, crop: int = 224, limit: int = 0
) -> Dataset:
    """A dataset of ``(image (C, H, W) float32, label)`` as named in a run config's ``[data]``;
    ``limit > 0`` keeps only its first ``limit`` images."""
    dataset = _load(kind, root, split, labels_file, resize, crop)
    if limit and limit < len(dataset):
        if isinstance(dataset, TensorDataset):
            return TensorDataset(*(t[:limit] for t in dataset.tensors))
        return Subset(dataset, range(limit))
    return dataset


def _load(kind: str, root: str, split: str, labels_file: str, resize: int, crop: int) -> Dataset:
    if kind == "fashion_mnist":
        from attreval.data.fashion_mnist import fashion_mnist_dataset

        return fashion_mnist_dataset(split, root or None)
    if not root:
        raise ValueError(f"expected [data] root (a folder) for data kind '{kind}', got none")
    if kind == "cifar10":
        from attreval.data.cifar10 import cifar10_dataset

        return cifar10_dataset(root, split)
    from attreval.data import folders

    if kind == "imagefolder":
        return folders.image_folder_dataset(root, resize, crop)
    if kind == "flat":
        if not labels_file:
            raise ValueError("expected [data] labels_file for data kind 'flat', got none")
        return folders.labeled_folder_dataset(root, labels_file, resize, crop)
    raise ValueError(f"expected data kind fashion_mnist, cifar10, imagefolder or flat, got '{kind}'")
