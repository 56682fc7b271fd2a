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

Preprocessing (:func:`folder_transform`): ``Resize → CenterCrop → grey or RGB → ToTensor → Normalize``, each
configurable (``[data]`` resize, crop, channels, normalize, mean, std); the defaults are the paper's ImageNet
protocol (:func:`imagenet_transform`).

**Unreadable images fail, they are not skipped**: an empty, truncated or non-image file with an image
extension raises one ``ValueError`` naming its absolute path, when it is decoded (in a run: while images
are selected, before any unit). Skipping would silently change which images, and so which grids, a run
uses; a named file is quick to delete or repair.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import datasets, transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_transform",
    "folder_transform",
    "open_image",
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


def folder_transform(
    resize: int = 256, crop: int = 224, channels: int = 3, normalize: bool = True, mean: tuple[float, ...] = (), std: tuple[float, ...] = ()
) -> transforms.Compose:
    """RGB PIL image → float32 ``(channels, crop, crop)``: grey first when ``channels = 1`` (PIL's ``L``) →
    ``Resize(resize)`` (shorter side; 0 = none) → ``CenterCrop(crop)`` (0 = none) → ``ToTensor`` ([0, 1]) →
    ``Normalize(mean, std)`` unless ``normalize`` is false. Empty ``mean``/``std``: ImageNet's (RGB only);
    a single value applies to every channel. The defaults are :func:`imagenet_transform` exactly.
    """
    if channels not in (1, 3):
        raise ValueError(f"expected channels 1 or 3, got {channels}")
    mean, std = tuple(mean) or IMAGENET_MEAN, tuple(std) or IMAGENET_STD
    if normalize and not (len(mean) in (1, channels) and len(std) in (1, channels)):
        raise ValueError(f"expected 1 or {channels} values of mean and std for {channels} channels, got {len(mean)} and {len(std)}")
    steps = [_Grey()] if channels == 1 else []
    steps += [transforms.Resize(resize)] if resize else []
    steps += [transforms.CenterCrop(crop)] if crop else []
    steps.append(transforms.ToTensor())
    if normalize:
        steps.append(transforms.Normalize(mean * (channels // len(mean)), std * (channels // len(std))))
    return transforms.Compose(steps)


class _Grey:
    """PIL image → grey (``L``, ITU-R 601 luma); a class, not a lambda, so the transform pickles."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("L")


#: Environment variable: the most pixels an image may have (default Pillow's limit, 89,478,485; 0 = none).
PIXEL_LIMIT_ENV = "ATTREVAL_MAX_IMAGE_PIXELS"
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class _Refused(ValueError):
    """An image :func:`open_image` refuses on purpose (its message already names the file)."""


def pixel_limit() -> int:
    """The pixel limit of :func:`open_image` (:data:`PIXEL_LIMIT_ENV`, else Pillow's default; 0 = none)."""
    value = os.environ.get(PIXEL_LIMIT_ENV, "")
    try:
        return int(value) if value else int(Image.MAX_IMAGE_PIXELS or 0)
    except ValueError:
        raise ValueError(f"expected an integer number of pixels in {PIXEL_LIMIT_ENV}, got {value!r}") from None


def open_image(path: str | os.PathLike) -> Image.Image:
    """The decoded RGB image at ``path`` (8 bits per channel), read as what it is: 16-bit and 32-bit integer
    grey images are scaled from their real range (0…65535) to 0…255 instead of clipped (PIL's ``convert``
    turns them all white), a floating-point image (mode ``F``, range unknown) is refused, every other mode is
    converted by Pillow. An image over :func:`pixel_limit` pixels (a decompression bomb, or a huge scan) is
    refused before it is decoded, saying how to raise the limit. An empty, truncated or unreadable file raises
    one ``ValueError`` naming it."""
    limit, pillows = pixel_limit(), Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # our own limit below, which users can raise (Pillow's raises a traceback)
        with Image.open(path) as image:
            width, height = image.size
            if limit and width * height > limit:
                raise _Refused(
                    f"expected images of at most {limit:,} pixels, got {width}x{height} = {width * height:,} pixels in "
                    f"{os.path.abspath(path)} (a guard against decompression bombs); to read it, raise the limit: "
                    f"{PIXEL_LIMIT_ENV}={width * height} (0 = no limit)"
                )
            return _as_rgb(image, path)  # decodes now: a truncated file fails here, named
    except _Refused:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        what = "an empty file" if size == 0 else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        raise ValueError(f"expected a readable image at {os.path.abspath(path)}, got {what}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillows


def _as_rgb(image: Image.Image, path: str | os.PathLike) -> Image.Image:
    """``image`` as 8-bit RGB with its real range kept (see :func:`open_image`)."""
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        pixels = np.asarray(image).astype(np.int64)
        low, high = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
        if low < 0 or high > 65535:
            raise _Refused(
                f"expected 8- or 16-bit pixel values in {os.path.abspath(path)}, got a 32-bit integer image with values in "
                f"[{low}, {high}]; save it as an 8- or 16-bit image"
            )
        grey = np.round(pixels * (255.0 / 65535.0)).astype(np.uint8)  # 16-bit: 65535 is white
        return Image.fromarray(grey).convert("RGB")
    if image.mode == "F":
        raise _Refused(
            f"expected an 8- or 16-bit image at {os.path.abspath(path)}, got 32-bit floating-point pixels (mode F) "
            "whose range is unknown; save it as an 8- or 16-bit image"
        )
    return image.convert("RGB")


def _check_dir(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"expected an image directory, got missing path {os.path.abspath(root)!r}")
    return root


def image_folder_dataset(root: str | os.PathLike, resize: int = 256, crop: int = 224, **preprocessing) -> datasets.ImageFolder:
    """Class-folder dataset; items are ``(float32 (C, crop, crop), int label)``; ``.classes`` are the folder names.

    ``preprocessing``: ``channels``, ``normalize``, ``mean``, ``std`` of :func:`folder_transform`.

    Raises:
        ValueError: missing directory, no class folders, or a class folder without images; an unreadable
            image when it is read (:func:`open_image`).
    """
    root = _check_dir(root)
    try:
        return _ImageFolder(str(root), transform=folder_transform(resize, crop, **preprocessing), loader=open_image)
    except FileNotFoundError as error:  # torchvision's "no class folders" / "no valid files" errors
        raise ValueError(f"expected class folders of images in {os.path.abspath(root)!r}, got: {error}") from None


class _ImageFolder(datasets.ImageFolder):
    """``ImageFolder`` whose walk follows symbolic links but refuses a link loop (one line naming the link),
    where torchvision's walk goes round the loop and adds every image again at each depth."""

    @staticmethod
    def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        check = is_valid_file or (lambda path: datasets.folder.has_file_allowed_extension(path, extensions))
        samples, found = [], set()
        for name in sorted(class_to_idx):
            folder = os.path.join(directory, name)
            if not os.path.isdir(folder):
                continue
            for where, files in sorted(_walk(folder)):
                for file in sorted(files):
                    path = os.path.join(where, file)
                    if check(path):
                        samples.append((path, class_to_idx[name]))
                        found.add(name)
        empty = sorted(set(class_to_idx) - found)
        if empty and not allow_empty:
            raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}")
        return samples


def _walk(top: str, ancestors: tuple[tuple[int, int], ...] = ()) -> list[tuple[str, list[str]]]:
    """``(folder, file names)`` of ``top`` and below, following links; a link to a folder above (a loop) is a ``ValueError``."""
    info = os.stat(top)
    here = (info.st_dev, info.st_ino)
    if here in ancestors:
        raise ValueError(f"expected a folder tree without symbolic-link loops, got {top} -> {os.path.realpath(top)}, a folder above it")
    files, found = [], []
    with os.scandir(top) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir():  # follows links
                found += _walk(entry.path, (*ancestors, here))
            elif entry.is_file():
                files.append(entry.name)
    return [(top, files), *found]


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
        raise ValueError(f"expected a labels file, got missing path {os.path.abspath(path)!r}")
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
        return self.transform(open_image(self.root / self.files[index])), self.labels[index]


def labeled_folder_dataset(
    root: str | os.PathLike, labels_file: str | os.PathLike, resize: int = 256, crop: int = 224, **preprocessing
) -> LabeledImageFolder:
    """Flat image folder plus labels file (either format of the module docstring).

    Raises:
        ValueError: missing or image-less directory, or any labels-file problem of :func:`read_labels_file`.
    """
    root = _check_dir(root)
    files = _image_files(root)
    if not files:
        raise ValueError(f"expected image files ({', '.join(IMG_EXTENSIONS)}) in {os.path.abspath(root)!r}, got none")
    names, labels = read_labels_file(labels_file, files)
    return LabeledImageFolder(root, names, labels, folder_transform(resize, crop, **preprocessing))
