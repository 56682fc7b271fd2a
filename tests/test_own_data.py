"""Your own data and model from the CLI (issue 14): the new-user walkthrough end to end, and its errors.

A generated ImageFolder of four classes of tiny PNGs, a random-weight torchvision ResNet18 saved as a state
dict, and a config in another folder that points at both with relative paths; `selection` of images is
`any` because a random model classifies nothing confidently. Every bad input must end in one line, exit
code 2, before any unit runs, and leave no run directory behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import attreval
from attreval.cli import main
from attreval.runs.store import COLUMNS

pytestmark = pytest.mark.slow  # end-to-end runs / zoo / training: left out of `make test-fast`

CLASSES = ("cat", "dog", "fox", "owl")  # sorted: ImageFolder's class indices 0..3
SIDE = 32  # cells of 32 px: 64-px grids, a 2×2 final layer in ResNet18

CONFIG = """
seed = 3
[data]
kind = "imagefolder"
root = "../data/pictures"
resize = {side}
crop = {side}
[[models]]
name = "resnet18"
weights = "../weights/resnet18_random.pt"
num_classes = {classes}
[grids]
n = 2
gridpg = 2
disconnected = 2
images = "{images}"
[evaluation]
settings = ["gridpg", "difull"]
layers = ["input", "final"]
methods = ["grad", "grad_cam"]
smooth_methods = []
batch_size = 2
"""


def config_text(images: str = "any", classes: int = len(CLASSES), **replace: str) -> str:
    text = CONFIG.format(side=SIDE, classes=classes, images=images)
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """``data/pictures/<class>/*.png``, ``weights/resnet18_random.pt`` and an empty ``elsewhere/`` to run from."""
    from torchvision.models import resnet18

    root = tmp_path_factory.mktemp("project")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        folder = root / "data" / "pictures" / name
        folder.mkdir(parents=True)
        for i in range(3):  # 3 per class: a DiFull grid needs two of its corner class
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # resized and cropped to 32×32
            pixels[..., c % 3] = 40 * c + 60
            Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "weights").mkdir()
    torch.manual_seed(0)
    torch.save(resnet18(num_classes=len(CLASSES)).state_dict(), root / "weights" / "resnet18_random.pt")
    (root / "elsewhere").mkdir()
    return root


@pytest.fixture()
def in_elsewhere(project, monkeypatch):
    """Run from a working directory that is neither the config's folder nor the data's."""
    monkeypatch.chdir(project / "elsewhere")
    return project


def write_config(project: Path, text: str, name: str = "run.toml") -> Path:
    folder = project / "configs"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def walkthrough(project, tmp_path_factory):
    """The whole walkthrough once: `attreval run` (with its report) from another working directory."""
    out = tmp_path_factory.mktemp("runs") / "own"
    config = write_config(project, config_text())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project / "elsewhere")
        rc = main(["run", "../configs/run.toml", "--out", str(out), "-q"])  # the config path itself relative too
    assert rc == 0
    return out, config


def test_walkthrough_runs_and_results_carry_class_names(walkthrough, project):
    out, _ = walkthrough
    table = pd.read_parquet(out / "results.parquet")
    assert list(table.columns) == COLUMNS  # the columns of every run: the embedded default's plus class_name
    assert set(table["model"]) == {"resnet18"} and set(table["setting"]) == {"gridpg", "difull"}
    assert len(table) == 2 * 4 * 2 * 2 + 2 * 2 * 2 * 2  # GridPG: grids × cells × layers × methods; DiFull: corners
    assert set(table["class_name"]) <= set(CLASSES)
    assert (table["class_name"] == [CLASSES[label] for label in table["label"]]).all()
    assert table["score"].between(0, 1).all()
    grids = torch.load(out / "grids" / "resnet18__gridpg.pt", weights_only=True)
    assert grids["class_names"] == list(CLASSES)


def test_load_run_reads_back_the_same_run(walkthrough, project):
    out, _ = walkthrough
    run = attreval.load_run(out)
    pd.testing.assert_frame_equal(run.results, pd.read_parquet(out / "results.parquet"))
    pd.testing.assert_frame_equal(run.costs, pd.read_parquet(out / "costs.parquet"))
    assert len(run.costs) == len(run.units()) == 8
    # the resolved config: relative paths made absolute against the config file's folder
    assert run.config.data.root == str(project / "data" / "pictures")
    assert run.config.models[0].weights == str(project / "weights" / "resnet18_random.pt")
    assert run.config.grids.images == "any" and run.config == attreval.config.load_config(project / "configs" / "run.toml")
    assert run.class_names() == CLASSES
    grids = run.grids("resnet18", "difull")
    assert grids.images.shape == (2, 3, 2 * SIDE, 2 * SIDE) and grids.repeat_corners
    assert torch.equal(grids.labels[:, 0], grids.labels[:, 3])
    maps = run.maps("resnet18", "gridpg", "final", "grad_cam")
    assert isinstance(maps, np.memmap) and maps.shape == (2, 4, 2, 2)
    assert run.meta["seed"] == 3


def test_native_scores_of_the_walkthrough(walkthrough):
    """DiFull gradients of head h are zero outside cell h: at the native 2×2 final layer they score 1
    exactly (or 0 with no positive mass), whatever the upsampled score."""
    out, _ = walkthrough
    native = attreval.load_run(out).native_scores("resnet18", "difull", "final", "grad")
    assert len(native) == 4 and set(native["native"]) <= {0.0, 1.0}
    assert ((native["native"] == 1) | (native["total"] == 0)).all()


def test_report_shows_class_names_and_sample_sizes(walkthrough):
    out, _ = walkthrough
    page = (out / "report.html").read_text()
    assert "] n=8<" in page  # GridPG: 2 grids × 4 cells per unit (median tables: median [interval] n maps)
    assert "Maps per bin" in page and any(f"{name} ×" in page for name in CLASSES)
    assert "small sample" in page and "[grids] gridpg = 50 or more" in page and "[grids] disconnected = 50 or more" in page
    assert "Below the input it is not" in page


# -- errors: one line, exit 2, before any unit, nothing left behind ------------------------------------------


def _fails_cleanly(capfd, config: Path, out: Path, says: tuple[str, ...]) -> str:
    rc = main(["run", str(config), "--out", str(out), "-q", "--no-report"])
    err = capfd.readouterr().err
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("attreval: error: ") and "Traceback" not in err, err
    assert all(s in err for s in says), err
    assert not out.exists()  # no run directory, not even a partial one
    return err


@pytest.mark.parametrize("classes", [10, 1000])
def test_num_classes_mismatch_shows_the_size_mismatch(in_elsewhere, tmp_path, capfd, classes):
    config = write_config(in_elsewhere, config_text(classes=classes), "mismatch.toml")
    _fails_cleanly(
        capfd,
        config,
        tmp_path / "out",
        (
            f"expected weights for 'resnet18' with {classes} classes in {in_elsewhere / 'weights' / 'resnet18_random.pt'}",
            "size mismatch for fc.weight",
            "[4, 512]",
            f"[{classes}, 512]",
            "set num_classes = 4",
        ),
    )


@pytest.mark.parametrize(
    "rule, removed",
    [
        ("correct-and-confident", ("misclassified", "below confidence")),
        ("confident", ("below confidence",)),
    ],
)
def test_too_few_classes_say_which_rule_removed_how_many(in_elsewhere, tmp_path, capfd, rule, removed):
    config = write_config(in_elsewhere, config_text(rule), f"{rule}.toml")
    err = _fails_cleanly(
        capfd,
        config,
        tmp_path / "out",
        (
            "expected at least 4 classes with confident images for 2×2 grids",
            f'[grids] images = "{rule}" (confidence ≥ 0.99) kept',
            "of 12 images",
            *removed,
        ),
    )
    numbers = [int(word) for word in err.replace(",", " ").replace(":", " ").split() if word.isdigit()]
    assert 12 in numbers
    if rule == "confident":
        assert "misclassified" not in err


def test_relative_path_errors_show_the_absolute_path(in_elsewhere, tmp_path, capfd):
    config = write_config(in_elsewhere, config_text(**{"../data/pictures": "../data/nowhere"}), "nowhere.toml")
    _fails_cleanly(capfd, config, tmp_path / "out", ("expected an image directory", str(in_elsewhere / "data" / "nowhere")))
    config = write_config(in_elsewhere, config_text(**{"resnet18_random.pt": "absent.pt"}), "absent.toml")
    _fails_cleanly(capfd, config, tmp_path / "out", ("expected the weights of 'resnet18'", str(in_elsewhere / "weights" / "absent.pt")))


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n", "truncated"])
def test_an_unreadable_image_is_named(in_elsewhere, tmp_path, capfd, content):
    import shutil

    data = tmp_path / "pictures"
    shutil.copytree(in_elsewhere / "data" / "pictures", data)
    bad = data / "dog" / "bad.png"
    if content == "truncated":
        whole = (data / "dog" / "0.png").read_bytes()
        bad.write_bytes(whole[: len(whole) // 2])
    else:
        bad.write_bytes(content)
    config = write_config(in_elsewhere, config_text(**{"../data/pictures": str(data)}), "bad_image.toml")
    _fails_cleanly(capfd, config, tmp_path / "out", ("expected a readable image at", str(bad)))


@pytest.mark.parametrize(
    "change, says",
    [
        ({"crop = 32": "crop = 32\nchannels = 2"}, ("expected [data] channels 1 (grey) or 3 (RGB), got 2",)),
        (
            {"crop = 32": "crop = 32\nmean = [0.5, 0.5]\nstd = [0.2, 0.2]"},
            ("expected 1 or 3 values (channels = 3) for [data] mean, got 2",),
        ),
        ({"crop = 32": "crop = 32\nmean = [0.5]"}, ("expected [data] mean and std together, got only mean",)),
        ({"crop = 32": "crop = 32\nstd = [0.0]\nmean = [0.5]"}, ("expected positive [data] std",)),
        ({"crop = 32": "crop = 32\nchannels = 1"}, ("expected [data] mean and std for channels = 1",)),
        (
            {'kind = "imagefolder"': 'kind = "cifar10"', "crop = 32": "crop = 32\nmean = [0.5]\nstd = [0.2]"},
            ("expected [data] mean only with kind imagefolder or flat", "got kind 'cifar10'"),
        ),
        ({'images = "any"': 'images = "anny"'}, ("unknown value for [grids] images 'anny'", "did you mean 'any'")),
        ({"crop = 32": "crop = 32\nchannels = 1\nnormalize = false"}, ("expected images the model can take", "(1, 32, 32)")),
    ],
)
def test_preprocessing_and_rule_errors(in_elsewhere, tmp_path, capfd, change, says):
    config = write_config(in_elsewhere, config_text(**change), "bad_keys.toml")
    _fails_cleanly(capfd, config, tmp_path / "out", says)


def test_stored_config_is_the_resolved_one(walkthrough, project):
    out, _ = walkthrough
    stored = json.loads((out / "config.json").read_text())
    assert stored["data"]["root"] == str(project / "data" / "pictures") and stored["grids"]["images"] == "any"
