"""``attreval check-method``: the contract a method author can run, and that it catches what it claims to."""

import pytest
import torch

from attreval import METHODS
from attreval.cli import main
from attreval.methods import resolve_method
from attreval.methods.contract import check_case, check_method

ONE = {"models": ("fashion_resnet",), "layers": ("input",)}


def abs_grad(forward, inputs, targets):
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(forward(x).gather(1, targets[:, None]).sum(), x)
    return g.abs().sum(1)


def failed(checks):
    return {c.check for c in checks if c.passed is False}


def test_a_correct_function_passes_every_check_in_every_setting():
    abs_grad.difull_exact = True
    checks = check_method(resolve_method(abs_grad), **ONE)
    assert failed(checks) == set()
    assert {c.check for c in checks} == {"maps", "batch", "targets", "deterministic", "unchanged", "hooks", "difull_exact"}
    assert {c.setting for c in checks} == {"gridpg", "difull", "dipart"}


def batch_normalised(forward, inputs, targets):
    maps = abs_grad(forward, inputs, targets)
    return maps / maps.sum()  # normalised over the batch: each example depends on the others


def in_place(forward, inputs, targets):
    inputs.mul_(2)  # the method gets a clone: the caller's images stay intact…
    return abs_grad(forward, inputs, targets)


def noisy(forward, inputs, targets):
    return abs_grad(forward, inputs, targets) + torch.rand(inputs.shape[0], *inputs.shape[2:])


def uniform(forward, inputs, targets):
    return torch.ones(inputs.shape[0], *inputs.shape[2:]) * forward(inputs).gather(1, targets[:, None])[:, :, None]


uniform.difull_exact = True  # a false claim


def leaves_a_hook(forward, inputs, targets):
    torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    return abs_grad(forward, inputs, targets)


@pytest.mark.parametrize(
    "fn, broken",
    [
        (batch_normalised, {"batch"}),
        (noisy, {"batch", "targets", "deterministic"}),
        (uniform, {"difull_exact"}),
        (leaves_a_hook, {"hooks"}),
    ],
)
def test_each_check_catches_its_violation(fn, broken):
    try:
        checks = check_case(resolve_method(fn), "fashion_resnet", "difull", "input")
    finally:
        from torch.nn.modules import module

        module._global_forward_hooks.clear()
    assert failed(checks) == broken


def test_a_method_that_changes_the_model_fails_unchanged():
    def shrink(forward, inputs, targets):
        from attreval.methods.contract import contract_case

        model = contract_case("fashion_resnet")[0]
        maps = abs_grad(forward, inputs, targets)
        with torch.no_grad():
            model.fc.bias.add_(0.0 if shrink.calls else 1e-3)
        shrink.calls += 1
        return maps

    shrink.calls = 0
    from attreval.methods.contract import contract_case

    model = contract_case("fashion_resnet")[0]
    bias = model.fc.bias.detach().clone()
    try:
        checks = check_case(resolve_method(shrink), "fashion_resnet", "gridpg", "final")
    finally:
        with torch.no_grad():
            model.fc.bias.copy_(bias)
    assert "unchanged" in failed(checks)
    assert in_place  # the in-place function above is harmless: the contract hands methods clones (checked below)
    assert failed(check_case(resolve_method(in_place), "fashion_resnet", "gridpg", "input")) == set()


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).claims_difull_exact])
def test_every_builtin_claim_of_difull_exactness_holds(name):
    """Generated from the registry: the methods whose class claims ``difull_exact`` are exactly zero outside the
    head's region at every layer, on both shipped models."""
    for module in getattr(METHODS.get(name), "requires", ()):
        pytest.importorskip(module)
    options = dict(type(METHODS.get(name)).test_preset)
    if hasattr(METHODS.get(name), "low"):  # LRP-εγ-box: its ImageNet input box has 3 channels, Fashion-MNIST 1
        options.update(low=(-1.0,), high=(3.0,))
    method = resolve_method(name, **options)
    for model in ("fashion_vgg", "fashion_resnet"):
        for layer in ("input", "middle", "final"):
            checks = check_case(method, model, "difull", layer, only=("difull_exact",))
            exact = [c for c in checks if c.check == "difull_exact"]
            assert checks[0].passed and exact and exact[0].passed, (model, layer, checks)


def test_the_cli_reports_and_exits_2_on_a_failure(tmp_path, capsys):
    (tmp_path / "m.py").write_text(
        "import torch\n\ndef bad(forward, inputs, targets):\n    return torch.rand(inputs.shape[0], *inputs.shape[2:])\n"
        "\ndef good(forward, inputs, targets, power=1):\n    return inputs.abs().sum(1) ** power + 0 * forward(inputs)[:, :1, None]\n"
    )
    spec = f"{tmp_path / 'm.py'}"
    assert (
        main(["check-method", f"{spec}:good", "--option", "power=2", "--model", "fashion_vgg", "--layer", "final", "--setting", "dipart"])
        == 0
    )
    out = capsys.readouterr().out
    assert "ok   fashion_vgg     dipart  final" in out and "0 failed" in out
    assert main(["check-method", f"{spec}:bad", "--model", "fashion_vgg", "--layer", "input", "--setting", "gridpg"]) == 2
    out = capsys.readouterr().out
    assert "FAIL" in out and "deterministic" in out
    assert main(["check-method", "grad", "--model", "fashion_vgg", "--layer", "input", "--setting", "difull"]) == 0
    assert "difull_exact" in capsys.readouterr().out
