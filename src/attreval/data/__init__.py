"""Labelled image datasets (Fashion-MNIST, CIFAR-10, image folders) and grid datasets."""

from __future__ import annotations

from torch.utils.data import Dataset, Subset, TensorDataset

from attreval.data.grids import GridDataset, build_grid_dataset

__all__ = ["GridDataset", "build_grid_dataset", "class_names", "load_dataset"]


def load_dataset(
    kind: str,
    root: str = "",
    split: str = "test",
    labels_file: str = "",
    resize: int = 256,
    crop: int = 224,
    limit: int = 0,
    channels: int = 3,
    normalize: bool = True,
    mean: tuple[float, ...] = (),
    std: tuple[float, ...] = (),
) -> Dataset:
    """A dataset of ``(image (C, H, W) float32, label)`` as named in a run config's ``[data]``;
    ``limit > 0`` keeps only its first ``limit`` images. ``resize``, ``crop``, ``channels``, ``normalize``,
    ``mean`` and ``std`` are the image folders' preprocessing (:func:`attreval.data.folders.folder_transform`).
    The class names, where the data has them, are :func:`class_names` of the result."""
    preprocessing = {"channels": channels, "normalize": normalize, "mean": tuple(mean), "std": tuple(std)}
    dataset = _load(kind, root, split, labels_file, resize, crop, preprocessing)
    names = class_names(dataset)
    if limit and limit < len(dataset):  # type: ignore[arg-type]  # map-style datasets have a length
        if isinstance(dataset, TensorDataset):
            dataset = TensorDataset(*(t[:limit] for t in dataset.tensors))
        else:
            dataset = Subset(dataset, range(limit))
        setattr(dataset, "classes", list(names))  # noqa: B010 - Dataset declares no classes attribute
    return dataset


def class_names(dataset: Dataset) -> tuple[str, ...]:
    """The class names of a dataset, index = label: its ``classes`` attribute (torchvision's name; a
    :class:`~torch.utils.data.Subset` asks its dataset), or ``()`` when it has none (a flat folder's labels
    file holds indices only)."""
    while not hasattr(dataset, "classes") and isinstance(dataset, Subset):
        dataset = dataset.dataset
    return tuple(str(c) for c in getattr(dataset, "classes", ()))


def _load(kind: str, root: str, split: str, labels_file: str, resize: int, crop: int, preprocessing: dict) -> Dataset:
    if kind == "fashion_mnist":
        from attreval.data.fashion_mnist import CLASS_NAMES, fashion_mnist_dataset

        dataset = fashion_mnist_dataset(split, root or None)
        setattr(dataset, "classes", list(CLASS_NAMES))  # noqa: B010
        return dataset
    if not root:
        raise ValueError(f"expected [data] root (a folder) for data kind '{kind}', got none")
    if kind == "cifar10":
        from attreval.data.cifar10 import CIFAR10_CLASSES, cifar10_dataset

        dataset = cifar10_dataset(root, split)
        setattr(dataset, "classes", list(CIFAR10_CLASSES))  # noqa: B010
        return dataset
    from attreval.data import folders

    if kind == "imagefolder":
        return folders.image_folder_dataset(root, resize, crop, **preprocessing)
    if kind == "flat":
        if not labels_file:
            raise ValueError("expected [data] labels_file for data kind 'flat', got none")
        return folders.labeled_folder_dataset(root, labels_file, resize, crop, **preprocessing)
    raise ValueError(f"expected data kind fashion_mnist, cifar10, imagefolder or flat, got '{kind}'")
