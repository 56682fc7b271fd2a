"""ImageNet-style image loading from local folders (PAPER.md §1.1 preprocessing).

Two layouts:

* **class folders** (:func:`image_folder_dataset`): ``root/<class>/<image>``, as ``torchvision.datasets.ImageFolder``;
  labels are the indices of the sorted class-folder names.
* **flat folder + labels file** (:func:`labeled_folder_dataset`): ``root/<image>`` and a text file in one of two
  formats, detected from its first non-empty line:

  - ``<filename> <label>`` per line (filenames relative to ``root``; may contain spaces, the label is the last
    token; images of ``root`` not listed are ignored);
  - ``<label>`` per line, one per image of ``root`` in sorted filename order (the layout of the ImageNet
    validation ground-truth file; the count must match).

  Labels are integer class indices **of the model** (0..999 for torchvision ImageNet models); the ILSVRC
  ground-truth file numbers classes differently and has to be mapped first.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_transform",
    "image_folder_dataset",
    "LabeledImageFolder",
    "read_labels_file",
    "labeled_folder_dataset",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def imagenet_transform(resize: int = 256, crop: int = 224) -> transforms.Compose:
    """``Resize(resize) → CenterCrop(crop) → ToTensor → Normalize(ImageNet mean/std)``: PIL image → float32 ``(3, crop, crop)``."""
    return transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(crop),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def _check_dir(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"expected an image directory, got missing path {str(root)!r}")
    return root


def image_folder_dataset(root: str | os.PathLike, resize: int = 256, crop: int = 224) -> datasets.ImageFolder:
    """Class-folder dataset; items are ``(float32 (3, crop, crop), int label)``.

    Raises:
        ValueError: missing directory, no class folders, or a class folder without images.
    """
    root = _check_dir(root)
    try:
        return datasets.ImageFolder(str(root), transform=imagenet_transform(resize, crop))
    except FileNotFoundError as error:  # torchvision's "no class folders" / "no valid files" errors
        raise ValueError(f"expected class folders of images in {str(root)!r}, got: {error}") from None


def _image_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_file() and p.name.lower().endswith(IMG_EXTENSIONS))


def read_labels_file(path: str | os.PathLike, files: list[str]) -> tuple[list[str], list[int]]:
    """Parse a labels file against the sorted image filenames ``files`` (formats in the module docstring).

    Returns:
        ``(filenames, labels)`` of equal length, in file order.

    Raises:
        ValueError: missing file, no labels, non-integer labels, mixed formats, unknown filenames, or (one label
            per line) a label count different from the image count.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"expected a labels file, got missing path {str(path)!r}")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"expected one label per line in {str(path)!r}, got an empty file")
    paired = len(lines[0].rsplit(maxsplit=1)) == 2
    rows = [line.rsplit(maxsplit=1) if paired else ["", line] for line in lines]
    if any(len(row) != 2 or (not paired and " " in row[1]) for row in rows):
        raise ValueError(f"expected every line of {str(path)!r} as '{'<filename> <label>' if paired else '<label>'}'")
    try:
        labels = [int(label) for _, label in rows]
    except ValueError as error:
        raise ValueError(f"expected integer labels in {str(path)!r}, got {error}") from None
    if not paired:
        if len(labels) != len(files):
            raise ValueError(f"expected {len(files)} labels (one per image) in {str(path)!r}, got {len(labels)}")
        return list(files), labels
    known = set(files)
    missing = [name for name, _ in rows if name not in known]
    if missing:
        raise ValueError(f"expected images listed in {str(path)!r} to exist, got {len(missing)} missing, e.g. {missing[0]!r}")
    return [name for name, _ in rows], labels


class LabeledImageFolder(Dataset):
    """A flat folder of images with explicit labels; items are ``(float32 (3, crop, crop), int label)``.

    Args:
        root: image directory.
        files: filenames relative to ``root``.
        labels: one class index per file.
        transform: PIL image → tensor.
    """

    def __init__(self, root: Path, files: list[str], labels: list[int], transform) -> None:
        self.root, self.files, self.labels, self.transform = root, files, labels, transform
        self.targets = labels  # ImageFolder's attribute name, for code that reads labels without decoding images

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.root / self.files[index]) as image:
            return self.transform(image.convert("RGB")), self.labels[index]


def labeled_folder_dataset(
    root: str | os.PathLike, labels_file: str | os.PathLike, resize: int = 256, crop: int = 224
) -> LabeledImageFolder:
    """Flat image folder plus labels file (either format of the module docstring).

    Raises:
        ValueError: missing or image-less directory, or any labels-file problem of :func:`read_labels_file`.
    """
    root = _check_dir(root)
    files = _image_files(root)
    if not files:
        raise ValueError(f"expected image files ({', '.join(IMG_EXTENSIONS)}) in {str(root)!r}, got none")
    names, labels = read_labels_file(labels_file, files)
    return LabeledImageFolder(root, names, labels, imagenet_transform(resize, crop))
