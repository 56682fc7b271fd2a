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
