import pytest

from attreval.config import load_config, parse_config
from attreval.smoothing import scaled_kernel_size as scaled_kernel

BASE = {"models": [{"name": "fashion_resnet"}]}


def with_(**sections):
    raw = {**BASE}
    raw.update(sections)
    return raw


def test_embedded_default_parses():
    config = load_config(None)
    assert [m.key for m in config.models] == ["fashion_vgg", "fashion_resnet"]
    assert config.grids.n == 2 and "occlusion" in config.methods
    assert len(config.method_names()) >= 12


@pytest.mark.parametrize(
    "raw, message",
    [
        (with_(grids={"gridpgg": 3}), "unknown key 'gridpgg' in [grids] (did you mean 'gridpg'?)"),
        (with_(evaluation={"settings": ["difful"]}), "unknown setting 'difful' (did you mean 'difull'?)"),
        (with_(evaluation={"methods": ["gradcam"]}), "unknown method 'gradcam' (did you mean 'grad_cam'?)"),
        (with_(methods={"occlusion": {"kernel": 3}}), "unknown option 'kernel'"),
        (with_(methods={"occlussion": {}}), "did you mean 'occlusion'"),
        (with_(grids={"n": 0}), "expected a positive [grids] n, got 0"),
        (with_(grids={"n": "2"}), "expected int for [grids] n, got str"),
        (with_(evaluation={"batch_size": -1}), "expected a positive [evaluation] batch_size"),
        (with_(grids={"confidence": 1.5}), "confidence in [0, 1]"),
        (with_(seeed=1), "unknown key 'seeed' (did you mean 'seed'?)"),
        ({"models": []}, "expected at least one [[models]]"),
        (with_(data={"kind": "imagenett"}), "did you mean 'imagefolder'"),
        (with_(evaluation={"heads": "corner"}), "did you mean 'corners'"),
        ({"models": [{"name": "a"}, {"name": "a"}]}, "expected distinct model names"),
    ],
)
def test_config_errors_are_one_line_with_did_you_mean(raw, message):
    with pytest.raises(ValueError) as err:
        parse_config(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[grids\nn = 2")
    with pytest.raises(ValueError, match="expected valid TOML"):
        load_config(bad)
    with pytest.raises(ValueError, match="found nothing at"):
        load_config(tmp_path / "missing.toml")


def test_shipped_paper_configs_parse():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].joinpath("configs").glob("*.toml")):
        config = load_config(path)
        assert config.models, path


def test_kernel_scaling_rule_keeps_odd_fractions():
    assert [scaled_kernel(k, 448, 448) for k in (9, 17, 33, 65, 129, 257)] == [9, 17, 33, 65, 129, 257]
    assert scaled_kernel(129, 56, 448) == 17  # PAPER.md §6.1: K = 17 on 56² ≈ K = 129 on 448²
    assert all(scaled_kernel(k, 10, 448) % 2 == 1 for k in range(1, 300))


# -- the config reference, the own-data keys, relative paths ------------------------------------------------


def test_docs_config_md_is_the_generated_reference():
    """docs/config.md is generated from the dataclasses: regenerate it with `attreval list config > docs/config.md`."""
    from pathlib import Path

    from attreval.config import config_reference

    checked_in = Path(__file__).parents[1].joinpath("docs", "config.md").read_text()
    assert checked_in == config_reference(), "docs/config.md is stale: run `attreval list config > docs/config.md`"


def test_every_config_key_has_a_meaning_and_is_in_the_reference():
    import dataclasses

    from attreval.config import config_reference, reference_fields

    text = config_reference()
    fields = reference_fields()
    assert len(fields) >= 35
    for section, f in fields:
        doc = f.metadata.get("doc", "")
        assert len(doc) > 15 and (doc[0].isupper() or doc[0] == "`"), (section, f.name)
        assert doc in text, (section, f.name)
        default = f.default if f.default_factory is dataclasses.MISSING else None
        if isinstance(default, (int, float, str)) and not isinstance(default, bool) and f.name != "options":
            assert f"| `{f.name}` |" in text


def test_list_config_prints_the_reference(capsys):
    from attreval.cli import main
    from attreval.config import config_reference

    assert main(["list", "config"]) == 0
    assert capsys.readouterr().out == config_reference()


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "c.toml").write_text(
        '[data]\nkind = "flat"\nroot = "../images"\nlabels_file = "labels.txt"\n'
        '[[models]]\nname = "resnet18"\nweights = "~/w.pt"\n[[models]]\nname = "fashion_vgg"\n'
    )
    monkeypatch.chdir(tmp_path / "configs")
    config = load_config("c.toml")
    assert config.data.root == str(tmp_path / "images") and config.data.labels_file == str(folder / "labels.txt")
    from pathlib import Path

    assert config.models[0].weights == str(Path.home() / "w.pt") and config.models[1].weights == ""
    assert load_config(None).data.root == ""  # the embedded default: no paths


def test_config_json_round_trip():
    import json
    from pathlib import Path

    from attreval.config import config_from_json

    for config in [load_config(None), *(load_config(p) for p in sorted(Path(__file__).parents[1].joinpath("configs").glob("*.toml")))]:
        assert config_from_json(json.loads(json.dumps(config.to_dict()))) == config
    partial = config_from_json({"grids": {"n": 3}, "unknown": 1})
    assert partial.grids.n == 3 and partial.grids.images == "correct-and-confident" and partial.models == ()


def test_imagenet_config_states_the_paper_preprocessing():
    from pathlib import Path

    from attreval.data.folders import IMAGENET_MEAN, IMAGENET_STD

    config = load_config(Path(__file__).parents[1] / "configs" / "imagenet.toml")
    d = config.data
    assert (d.resize, d.crop, d.channels, d.normalize, d.mean, d.std) == (256, 224, 3, True, IMAGENET_MEAN, IMAGENET_STD)
    assert config.grids.images == "correct-and-confident"
    assert d.root.endswith("/data/imagenet/val") and Path(d.root).is_absolute()


@pytest.mark.parametrize(
    "raw, message",
    [
        (with_(grids={"images": "confidnet"}), "did you mean 'confident'"),
        (with_(data={"kind": "imagefolder", "mean": ["a"]}), "expected a list of float for [data] mean"),
        (with_(data={"kind": "imagefolder", "channels": 4}), "expected [data] channels 1 (grey) or 3 (RGB), got 4"),
        (with_(data={"kind": "imagefolder", "resize": -1}), "expected a non-negative [data] resize"),
        (
            with_(data={"kind": "imagefolder", "normalize": False, "mean": [0.5], "std": [0.5]}),
            "expected no [data] mean/std with normalize = false",
        ),
        (with_(data={"channels": 1}), "expected [data] channels only with kind imagefolder or flat"),
    ],
)
def test_own_data_key_errors_are_one_line(raw, message):
    with pytest.raises(ValueError) as err:
        parse_config(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_embedded_default_behaviour_is_unchanged():
    config = load_config(None)
    assert config.grids.images == "correct-and-confident" and config.grids.selection == "per_model"
    assert (config.data.kind, config.data.channels, config.data.mean, config.data.normalize) == ("fashion_mnist", 3, (), True)
