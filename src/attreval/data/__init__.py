"""Labelled image datasets (the kinds of :data:`DATASETS`: Fashion-MNIST, CIFAR-10, image folders) and grid datasets."""

from __future__ import annotations

from torch.utils.data import Dataset, Subset, TensorDataset

from attreval.data.grids import GridDataset, build_grid_dataset
from attreval.data.kinds import DATASETS, DataRequest, class_names

__all__ = ["DATASETS", "DataRequest", "GridDataset", "build_grid_dataset", "class_names", "load_dataset"]


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
    """A dataset of ``(image (C, H, W) float32, label)`` as named in a run config's ``[data]`` (``kind``: a name
    in :data:`DATASETS`); ``limit > 0`` keeps only its first ``limit`` images. ``resize``, ``crop``, ``channels``, ``normalize``,
    ``mean`` and ``std`` are the image folders' preprocessing (:func:`attreval.data.folders.folder_transform`).
    The class names, where the data has them, are :func:`class_names` of the result."""
    preprocessing = {"channels": channels, "normalize": normalize, "mean": tuple(mean), "std": tuple(std)}
    dataset = DATASETS.get(kind)(DataRequest(root, split, labels_file, resize, crop, preprocessing))
    names = class_names(dataset)
    if limit and limit < len(dataset):  # type: ignore[arg-type]  # map-style datasets have a length
        if isinstance(dataset, TensorDataset):
            dataset = TensorDataset(*(t[:limit] for t in dataset.tensors))
        else:
            dataset = Subset(dataset, range(limit))
        setattr(dataset, "classes", list(names))  # noqa: B010 - Dataset declares no classes attribute
    return dataset
