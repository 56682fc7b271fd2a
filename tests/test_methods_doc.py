"""docs/methods.md and the README are what the registry says, and the method added there works as written."""

import re
from pathlib import Path

import pytest
import torch

import attreval
from attreval.methods import base
from attreval.methods.catalogue import BEGIN, DOCUMENTS, END, method_table
from attreval.settings import SETTINGS
from tiny_models import tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_method_tables_are_generated_from_the_registry(document):
    text = (ROOT / document).read_text()
    block = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    assert block.strip() == method_table().strip(), f"run: python -m attreval.methods.catalogue  (to refresh {document})"
    assert all(f"| `{name}` |" in block for name in attreval.METHODS.names())


@pytest.fixture(scope="module")
def gradient_shap():
    """The Gradient SHAP class of docs/methods.md, executed as written (its register call captured, so the
    registry of the other tests is untouched)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/methods.md").read_text(), re.S)
    code = next(block for block in blocks if "class GradientSHAP" in block)
    registered = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "register", lambda name, preset: registered.setdefault(name, preset))
        exec(compile(code, "docs/methods.md", "exec"), {})
    return registered["gradient_shap"]


def test_the_documented_method_works_in_every_setting(gradient_shap):
    model, g = tiny_model("vgg", seed=1), torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=g)
    labels = torch.stack([torch.randperm(10, generator=g)[:4] for _ in range(3)])
    method = type(gradient_shap)(**type(gradient_shap).test_preset)
    for setting in SETTINGS.names():
        targets = labels if setting == "gridpg" else labels[:, [0, 3]]
        maps = attreval.attribute(model, images, targets, method, setting=setting)
        alone = attreval.attribute(model, images[1:2], targets[1:2], method, setting=setting)
        assert maps.shape == (3, targets.shape[1], 32, 32) and torch.isfinite(maps).all()
        assert maps.abs().sum() > 0
        torch.testing.assert_close(maps[1:2], alone, rtol=1e-4, atol=1e-6)  # batch == each example
        if setting == "difull":  # nothing outside a head's cell can reach it: exactly zero there
            assert maps[:, 0, :, 16:].abs().max() == 0 and maps[:, 0, 16:, :].abs().max() == 0
            assert maps[:, 1, :16, :].abs().max() == 0 and maps[:, 1, :, :16].abs().max() == 0


def test_gradient_shap_with_a_zero_baseline_approaches_integrated_gradients(gradient_shap):
    """σ = 0: every baseline is 0, so the method is a Monte-Carlo estimate of IntGrad's path integral."""
    model, g = tiny_model("resnet", seed=2), torch.Generator().manual_seed(1)
    images = torch.randn(1, 3, 32, 32, generator=g)
    targets = torch.tensor([[3]])
    shap = attreval.attribute(model, images, targets, type(gradient_shap)(num_samples=256, baseline_std=0.0), chunk_size=64)
    ig = attreval.attribute(model, images, targets, "int_grad", n_steps=64)
    rel = (shap - ig).norm() / ig.norm()
    assert rel < 0.1, rel
