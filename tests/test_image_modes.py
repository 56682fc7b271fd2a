"""Images are read as what they are (docs/reliability.md, *Integrity*): 16-bit images keep their range instead of
turning white, modes whose range is unknown are refused in one line, a folder's symbolic-link loop is refused
instead of relabelling its images, and an image over the pixel limit is one line saying how to raise it."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from attreval.data.folders import image_folder_dataset, open_image

PIXEL_LIMIT_ENV = "ATTREVAL_MAX_IMAGE_PIXELS"


def test_a_16_bit_png_keeps_its_range(tmp_path):
    """Before: PIL's convert("RGB") clipped every 16-bit value above 255, so the image came out all white."""
    ramp = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    rgb = np.asarray(open_image(tmp_path / "deep.png"))
    assert rgb.shape == (64, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    assert np.abs(rgb[..., 0].astype(float) - ramp / 257.0).max() <= 0.5 + 1e-9  # 65535 ↦ 255, 0 ↦ 0, linear
    assert rgb.min() == 0 and rgb.max() == 255 and len(np.unique(rgb)) == 256


@pytest.mark.parametrize("mode", ["P", "LA", "RGBA", "CMYK", "1", "L"])
def test_8_bit_modes_convert_as_pillow_does(tmp_path, mode):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"x.{'tif' if mode == 'CMYK' else 'png'}"
    image.save(path)
    with Image.open(path) as again:
        expected = np.asarray(again.convert("RGB"))
    assert np.array_equal(np.asarray(open_image(path)), expected)


def test_images_whose_range_is_unknown_are_one_line(tmp_path):
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"f\.tif, got 32-bit floating-point pixels \(mode F\)"):
        open_image(tmp_path / "f.tif")
    Image.fromarray(np.full((8, 8), 1 << 20, dtype=np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(ValueError, match=r"i\.tif, got a 32-bit integer image with values in \[1048576, 1048576\]"):
        open_image(tmp_path / "i.tif")


def test_an_image_over_the_pixel_limit_is_one_line_saying_how_to_raise_it(tmp_path, monkeypatch):
    """Before: a 196-Mpx image raised Pillow's DecompressionBombError with a traceback."""
    Image.new("1", (14_000, 14_000)).save(tmp_path / "huge.png")  # 196 Mpx, a few kB on disk: read as a header only
    with pytest.raises(ValueError, match=f"got 14000x14000 = 196,000,000 pixels in .*huge.png .*{PIXEL_LIMIT_ENV}=196000000") as caught:
        open_image(tmp_path / "huge.png")
    assert len(str(caught.value).splitlines()) == 1
    Image.new("RGB", (20, 20), "red").save(tmp_path / "small.png")
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "399")
    with pytest.raises(ValueError, match="at most 399 pixels, got 20x20 = 400"):
        open_image(tmp_path / "small.png")
    monkeypatch.setenv(PIXEL_LIMIT_ENV, "0")  # no limit
    assert open_image(tmp_path / "small.png").size == (20, 20)
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own setting is left as it was


def _class_folders(root, names=("a", "b")):
    for i, name in enumerate(names):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(root / name / f"{name}.png")


def test_a_symlink_loop_in_an_image_folder_is_refused(tmp_path):
    """Before: torchvision's walk went round the loop, adding the images again at every depth under one class."""
    _class_folders(tmp_path)
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    with pytest.raises(ValueError, match=r"without symbolic-link loops, got .*a/loop"):
        image_folder_dataset(tmp_path, resize=0, crop=0)


def test_symlinked_folders_without_a_loop_are_followed_in_torchvision_order(tmp_path):
    _class_folders(tmp_path / "data")
    _class_folders(tmp_path / "more", names=("c",))
    os.symlink(tmp_path / "more" / "c", tmp_path / "data" / "b" / "extra")
    (tmp_path / "data" / "a" / "deep" / "er").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "data" / "a" / "deep" / "er" / "z.png")
    from torchvision.datasets import ImageFolder

    ours = image_folder_dataset(tmp_path / "data", resize=0, crop=0)
    theirs = ImageFolder(str(tmp_path / "data"))
    assert ours.samples == theirs.samples and len(ours.samples) == 4
