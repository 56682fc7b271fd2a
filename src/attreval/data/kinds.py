"""The kinds of labelled image dataset a run can read (``[data] kind``), one registry entry each.

A kind is a loader ``(DataRequest) → Dataset`` of ``(image (C, H, W) float32, label)`` registered in
:data:`DATASETS`, like the other extension points (settings, methods, splitters); its class names, where the data
has them, are the dataset's ``classes`` (:func:`class_names`). Adding a kind = one loader plus one
``DATASETS.register`` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch.utils.data import Dataset, Subset

from attreval.registry import Registry


@dataclass(frozen=True)
class DataRequest:
    """What a run's ``[data]`` table asks of a loader: ``root`` folder (``""``: the kind's default, if it has one),
    ``split``, a ``labels_file`` (flat folders), and the image folders' preprocessing (``resize``, ``crop`` and the
    keyword arguments ``preprocessing``: channels, normalize, mean, std)."""

    root: str = ""
    split: str = "test"
    labels_file: str = ""
    resize: int = 256
    crop: int = 224
    preprocessing: dict = field(default_factory=dict)

    def require_root(self, kind: str) -> str:
        if not self.root:
            raise ValueError(f"expected [data] root (a folder) for data kind '{kind}', got none")
        return self.root


Loader = Callable[[DataRequest], Dataset]
DATASETS: Registry[Loader] = Registry("data kind")


def class_names(dataset: Dataset) -> tuple[str, ...]:
    """The class names of a dataset, index = label: its ``classes`` attribute (torchvision's name; a
    :class:`~torch.utils.data.Subset` asks its dataset), or ``()`` when it has none (a flat folder's labels
    file holds indices only)."""
    while not hasattr(dataset, "classes") and isinstance(dataset, Subset):
        dataset = dataset.dataset
    return tuple(str(c) for c in getattr(dataset, "classes", ()))


@DATASETS.register("fashion_mnist")
def _fashion_mnist(request: DataRequest) -> Dataset:
    from attreval.data.fashion_mnist import CLASS_NAMES, fashion_mnist_dataset  # reads files only when asked

    dataset = fashion_mnist_dataset(request.split, request.root or None)
    setattr(dataset, "classes", list(CLASS_NAMES))  # noqa: B010 - Dataset declares no classes attribute
    return dataset


@DATASETS.register("cifar10")
def _cifar10(request: DataRequest) -> Dataset:
    from attreval.data.cifar10 import CIFAR10_CLASSES, cifar10_dataset

    dataset = cifar10_dataset(request.require_root("cifar10"), request.split)
    setattr(dataset, "classes", list(CIFAR10_CLASSES))  # noqa: B010
    return dataset


@DATASETS.register("imagefolder")
def _image_folder(request: DataRequest) -> Dataset:
    from attreval.data.folders import image_folder_dataset  # PIL and torchvision transforms only when asked

    return image_folder_dataset(request.require_root("imagefolder"), request.resize, request.crop, **request.preprocessing)


@DATASETS.register("flat")
def _flat(request: DataRequest) -> Dataset:
    from attreval.data.folders import labeled_folder_dataset

    root = request.require_root("flat")
    if not request.labels_file:
        raise ValueError("expected [data] labels_file for data kind 'flat', got none")
    return labeled_folder_dataset(root, request.labels_file, request.resize, request.crop, **request.preprocessing)
