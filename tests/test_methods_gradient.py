"""Analytic and equivalence checks of the backpropagation methods (PAPER.md §4.1, §9.2, §9.5)."""

import pytest
import torch
from torch import nn

import attreval
from attreval import METHODS, StagedModel
from attreval.methods.base import Task
from attreval.methods.gradient import (
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    guided_relus,
    integration_points,
)
from attreval.settings import SETTINGS
from attreval.tail import FunctionTail
from tiny_models import tiny_model

C, H, W, K = 2, 3, 3, 4


def make_task(forward, inputs, classes, heads=None, chunk_size=16):
    classes = torch.as_tensor(classes).view(inputs.shape[0], -1)
    heads = torch.zeros(classes.shape[1], dtype=torch.long) if heads is None else torch.as_tensor(heads)
    return Task(tail=forward, inputs=inputs, heads=heads, classes=classes, chunk_size=chunk_size)


def one_head(f):
    """``(N, C, h, w) → (N, 1, K)`` from a function returning ``(N, K)``."""
    return lambda x: f(x)[:, None]


def global_hooks():
    from torch.nn.modules import module as mod

    return len(mod._global_forward_hooks) + len(mod._global_forward_pre_hooks) + len(mod._global_backward_hooks)


# --------------------------------------------------------------------------------------------------
# Quadrature rules


@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann_trapezoid", "riemann_middle"])
def test_integration_rules_integrate_constants_and_lines(rule):
    alphas, weights = integration_points(20, rule)
    assert alphas.min() >= 0 and alphas.max() <= 1
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close((weights * alphas).sum(), torch.tensor(0.5, dtype=torch.float64))


def test_gauss_legendre_is_exact_up_to_degree_2n_minus_1():
    alphas, weights = integration_points(5)
    for degree in range(10):
        assert abs(float((weights * alphas**degree).sum()) - 1 / (degree + 1)) < 1e-14


def test_unknown_rule_and_bad_steps_are_rejected():
    with pytest.raises(ValueError, match="expected an integration rule"):
        IntegratedGradients(rule="simpson")
    with pytest.raises(ValueError, match="positive integer n_steps"):
        IntegratedGradients(n_steps=0)


# --------------------------------------------------------------------------------------------------
# Grad, IxG, IntGrad on functions with known gradients


def test_gradient_of_a_linear_model_is_its_weights():
    torch.manual_seed(0)
    fc = nn.Linear(C * H * W, K).double()
    staged = StagedModel(stages=(("flat", nn.Flatten()),), cell_head=fc, grid_head=fc)
    x, targets = torch.randn(2, C, H, W, dtype=torch.float64), torch.tensor([[1, 3], [0, 2]])
    signed = attreval.attribute(staged, x, targets, "grad", n=1, absolute=False)
    absolute = attreval.attribute(staged, x, targets, "grad", n=1)
    weights = fc.weight.detach().view(K, C, H, W)
    expected = weights[targets]  # (B, T, C, H, W)
    torch.testing.assert_close(signed, expected.sum(2).float())
    torch.testing.assert_close(absolute, expected.abs().sum(2).float())
    ixg = attreval.attribute(staged, x, targets, "input_x_grad", n=1)
    torch.testing.assert_close(ixg, (expected * x[:, None]).sum(2).float())


def cubic_forward(x):
    """``f_k(x) = (v_k·x)³ + (u_k·x)² + b_k``: the IntGrad integrand is a quadratic in α."""
    g = torch.Generator().manual_seed(3)
    v, u = torch.randn(2, K, x[0].numel(), generator=g, dtype=x.dtype)
    flat = x.flatten(1)
    return ((flat @ v.T) ** 3 + (flat @ u.T) ** 2 + torch.arange(K, dtype=x.dtype))[:, None]


def test_int_grad_completeness_is_exact_for_a_polynomial_model():
    x = torch.randn(3, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.5
    task = make_task(cubic_forward, x, [[0, 2], [1, 3], [3, 3]], chunk_size=128)
    expected = (cubic_forward(x) - cubic_forward(torch.zeros_like(x)))[:, 0].gather(1, task.classes)
    for n_steps in (2, 20):  # Gauss–Legendre with S nodes is exact for integrands of degree < 2S
        maps = IntegratedGradients(n_steps=n_steps)(task)
        torch.testing.assert_close(maps.double().sum(dim=(-2, -1)), expected, rtol=1e-5, atol=1e-5)
    trapezoid = IntegratedGradients(n_steps=20, rule="riemann_trapezoid")(task).double().sum(dim=(-2, -1))
    assert not torch.allclose(trapezoid, expected, rtol=1e-7, atol=0)  # not exact, ...
    torch.testing.assert_close(trapezoid, expected, rtol=1e-2, atol=1e-2)  # ... but close


def test_int_grad_completeness_is_approximate_on_a_relu_net():
    model = tiny_model("resnet")
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1, 7], [4, 2]])
    maps = attreval.attribute(model, x, targets, "int_grad", n=1, n_steps=32, chunk_size=128)
    with torch.no_grad():
        diff = (model(x) - model(torch.zeros_like(x))).gather(1, targets)
    error = (maps.sum(dim=(-2, -1)) - diff).abs()
    assert (error <= 0.05 * diff.abs().max()).all(), (error, diff)


def bias_free_relu_net():
    torch.manual_seed(4)
    return (
        nn.Sequential(
            nn.Conv2d(C, 4, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3),
            nn.Conv2d(4, 6, 1, bias=False),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6, K, bias=False),
        )
        .double()
        .eval()
    )


# The trapezoid rule is left out: its node α = 0 evaluates the gradient at the zero input, where every ReLU
# of a bias-free net is at its kink (gradient 0), so the identity needs nodes in (0, 1].
@pytest.mark.parametrize("rule", ["gauss_legendre", "riemann_middle"])
def test_int_grad_equals_ixg_on_a_positively_homogeneous_net(rule):
    net = bias_free_relu_net()
    x = torch.randn(3, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    task = make_task(one_head(net), x, [[0, 1, 2], [3, 2, 1], [0, 0, 3]], heads=[0, 0, 0], chunk_size=7)
    torch.testing.assert_close(IntegratedGradients(n_steps=5, rule=rule)(task), InputXGradient()(task))


def test_int_grad_baseline_shifts_the_path():
    net = bias_free_relu_net()
    x = torch.randn(2, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    task = make_task(one_head(net), x, [[1], [2]])
    maps = IntegratedGradients(n_steps=20, baseline=0.3)(task).double().sum(dim=(-2, -1))
    with torch.no_grad():
        expected = (net(x) - net(torch.full_like(x, 0.3))).gather(1, task.classes)
    torch.testing.assert_close(maps, expected, rtol=2e-2, atol=2e-2)


# --------------------------------------------------------------------------------------------------
# Guided Backprop


def test_guided_backprop_by_hand_on_a_one_hidden_layer_net():
    torch.manual_seed(6)
    w1, w2 = torch.randn(5, C * H * W, dtype=torch.float64), torch.randn(K, 5, dtype=torch.float64)
    relu = nn.ReLU(inplace=True)
    forward = FunctionTail(one_head(lambda x: relu(x.flatten(1) @ w1.T) @ w2.T), modules=[relu])
    x = torch.randn(4, C, H, W, dtype=torch.float64)
    task = make_task(forward, x, [[0, 3], [1, 1], [2, 0], [3, 2]])
    active = (x.flatten(1) @ w1.T > 0).double()  # (B, 5)
    back = w2[task.classes].clamp(min=0) * active[:, None]  # (B, T, 5): positive gradients, open units
    expected = (back @ w1).view(4, 2, C, H, W).abs().sum(2)
    torch.testing.assert_close(GuidedBackprop()(task), expected.float())


def test_guided_backprop_with_a_relu_module_used_twice():
    torch.manual_seed(7)
    w1, w2, v = torch.randn(6, C * H * W), torch.randn(6, 6), torch.randn(K, 6)
    relu = nn.ReLU()
    forward = FunctionTail(one_head(lambda x: relu(relu(x.flatten(1) @ w1.T) @ w2.T) @ v.T), modules=[relu])
    x = torch.randn(2, C, H, W)
    task = make_task(forward, x, [[1], [2]])
    h1 = x.flatten(1) @ w1.T
    h2 = h1.clamp(min=0) @ w2.T
    g2 = v[task.classes[:, 0]].clamp(min=0) * (h2 > 0)
    g1 = (g2 @ w2).clamp(min=0) * (h1 > 0)
    torch.testing.assert_close(GuidedBackprop()(task)[:, 0], (g1 @ w1).view(2, C, H, W).abs().sum(1))


def test_guided_backprop_is_abs_grad_without_relus():
    torch.manual_seed(8)
    net = nn.Sequential(nn.Conv2d(C, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * H * W, K)).eval()
    task = make_task(FunctionTail(one_head(net), modules=[net]), torch.randn(2, C, H, W), [[0, 1], [2, 3]])
    torch.testing.assert_close(GuidedBackprop()(task), METHODS.get("grad")(task))


def test_guided_backprop_refuses_a_tail_without_modules_in_one_line():
    # a plain callable names no modules: Guided Backprop would hook nothing and silently be Grad
    net = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 4), nn.ReLU(), nn.Linear(4, K)).eval()
    task = make_task(one_head(net), torch.randn(2, C, H, W), [[0], [1]])
    with pytest.raises(
        ValueError, match=r"^expected a tail that names the modules it runs .* for Guided Backprop, got a FunctionTail [^\n]*$"
    ):
        GuidedBackprop()(task)


def test_guided_backprop_leaves_model_inputs_and_hooks_untouched():
    model = tiny_model("resnet")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, targets = torch.randn(1, 3, 32, 32), torch.tensor([[1, 2, 3, 4]])
    x0 = x.clone()
    before = attreval.attribute(model, x, targets, "grad")
    attreval.attribute(model, x, targets, "guided_backprop")
    assert global_hooks() == 0 and all(not m._forward_hooks for m in model.modules())
    assert torch.equal(x, x0) and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    torch.testing.assert_close(attreval.attribute(model, x, targets, "grad"), before, rtol=0, atol=0)


def test_guided_relus_removes_its_hook_when_the_forward_raises():
    relu = nn.ReLU()

    def broken(x):
        relu(x)
        raise RuntimeError("boom")

    task = make_task(FunctionTail(broken, modules=[relu]), torch.randn(1, C, H, W), [[0]])
    with pytest.raises(RuntimeError, match="boom"):
        GuidedBackprop()(task)
    assert global_hooks() == 0 and not relu._forward_hooks
    with pytest.raises(KeyError):
        with guided_relus([relu]):
            assert len(relu._forward_hooks) == 1
            raise KeyError("x")
    assert global_hooks() == 0 and not relu._forward_hooks


def test_guided_backprop_hooks_only_the_explained_networks_relus():
    torch.manual_seed(9)
    w = torch.randn(5, C * H * W)
    inside, outside = nn.ReLU(), nn.ReLU()
    x = torch.randn(2, C, H, W)
    with guided_relus([inside]):  # a ReLU of another model, run meanwhile, keeps its plain backward
        leaf = x.flatten(1).requires_grad_(True)
        (grad,) = torch.autograd.grad((outside(leaf @ w.T) * -1.0).sum(), leaf)
    expected = -((x.flatten(1) @ w.T) > 0).float() @ w
    torch.testing.assert_close(grad, expected)


def test_guided_backprop_of_two_models_alternately_equals_each_alone():
    a, b = tiny_model("vgg", seed=3), tiny_model("resnet", seed=4)
    x, targets = torch.randn(1, 3, 32, 32), torch.tensor([[1, 2, 3, 4]])
    alone_a = attreval.attribute(a, x, targets, "guided_backprop", layer="middle")
    alone_b = attreval.attribute(b, x, targets, "guided_backprop", layer="middle")
    for _ in range(2):
        torch.testing.assert_close(attreval.attribute(a, x, targets, "guided_backprop", layer="middle"), alone_a, rtol=0, atol=0)
        torch.testing.assert_close(attreval.attribute(b, x, targets, "guided_backprop", layer="middle"), alone_b, rtol=0, atol=0)
    assert not torch.equal(alone_a, attreval.attribute(a, x, targets, "grad", layer="middle"))  # the guide acts


# --------------------------------------------------------------------------------------------------
# The settings' guarantees and the exact identities of PAPER.md §9.2, §9.5


@pytest.mark.parametrize("name", ["grad", "guided_backprop", "input_x_grad", "int_grad"])
def test_difull_input_maps_are_exactly_zero_outside_the_head_cell(name, tiny):
    _, model = tiny
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    options = {"n_steps": 3} if name == "int_grad" else {}
    maps = attreval.attribute(model, x, torch.tensor([[3, 5]]), name, setting="difull", n=2, **options)
    masks = attreval.GridSpec(2, 16, 16).cell_masks(32, 32)
    for column, head in enumerate((0, 3)):
        assert maps[0, column][~masks[head]].eq(0).all()
        assert maps[0, column][masks[head]].abs().sum() > 0


@pytest.mark.parametrize("setting", SETTINGS.names())
def test_int_grad_equals_ixg_at_the_resnet_final_layer(setting):
    model = tiny_model("resnet")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    targets = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]) if setting == "gridpg" else torch.tensor([[1, 2], [3, 3]])
    ig = attreval.attribute(model, x, targets, "int_grad", setting=setting, layer="final")
    ixg = attreval.attribute(model, x, targets, "input_x_grad", setting=setting, layer="final")
    torch.testing.assert_close(ig, ixg, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The two gradient routes (one forward per row and one backward per target, or one pass per pair)


@pytest.mark.parametrize("setting", SETTINGS.names())
@pytest.mark.parametrize("layer", ["input", "middle"])
@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_example_gradients_equal_one_backward_per_row_and_target(setting, layer, chunk_size):
    from attreval.api import build_task
    from attreval.methods.base import example_gradients, pick
    from attreval.settings import make_setting

    s = make_setting(setting, tiny_model("resnet"), 2)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    classes = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [9, 0, 1, 2]])[:, : (4 if setting == "gridpg" else 2)]
    task = build_task(s, x, classes, layer, s.target_heads(classes.shape[1]), chunk_size)
    grads, logits = example_gradients(task, task.inputs, torch.arange(3))
    for b in range(3):
        for t in range(classes.shape[1]):  # the authors' pattern: one (image, target) per backward
            leaf = task.inputs[b : b + 1].clone().requires_grad_(True)
            y = pick(task.tail(leaf), task.heads[t : t + 1], classes[b, t : t + 1])
            (expected,) = torch.autograd.grad(y.sum(), leaf)
            torch.testing.assert_close(grads[b, t], expected[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(logits[b, t], y[0].detach(), rtol=1e-5, atol=1e-6)
