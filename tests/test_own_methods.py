"""A method from outside the package: a file named in a config, an installed plugin, an object in memory."""

import gc
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import attreval
from attreval.cli import main
from attreval.config import load_config
from attreval.methods import resolve_method
from attreval.methods.custom import FunctionMethod
from attreval.methods.sources import _load_plugin, plugin_entry_points

METHODS_FILE = '''
from dataclasses import dataclass

import torch

from attreval import Method
from attreval.methods.base import example_gradients


def abs_grad(forward, inputs, targets):
    """|dy/dx| summed over channels: the built-in grad, written as a plain function."""
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(forward(x).gather(1, targets[:, None]).sum(), x)
    return g.abs().sum(1)


abs_grad.difull_exact = True


def scaled(forward, inputs, targets, factor=1.0):
    return factor * inputs.abs().sum(1) + 0 * targets[:, None, None]


@dataclass(frozen=True)
class Power(Method):
    display = "Power"
    family = "backprop"
    exponent: float = 1.0

    def __call__(self, task):
        grads, _ = example_gradients(task, task.inputs, torch.arange(task.batch))
        return grads.abs().pow(self.exponent).sum(2).float()
'''

CONFIG = """
[data]
kind = "fashion_mnist"
limit = 400
[[models]]
name = "fashion_resnet"
[grids]
gridpg = 2
disconnected = 2
[evaluation]
methods = ["grad", "mine", "power"]
smooth_methods = []
batch_size = 2
[variants.mine]
callable = "methods/mine.py:abs_grad"
[variants.power]
callable = "methods/mine.py:Power"
exponent = 2.0
layers = ["input"]
"""


@pytest.fixture
def project(tmp_path):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "mine.py").write_text(METHODS_FILE)
    (tmp_path / "c.toml").write_text(CONFIG)
    return tmp_path


def test_a_callable_variant_resolves_relative_to_the_config_and_builds_its_method(project):
    config = load_config(project / "c.toml")
    assert config.variants["mine"].callable == f"{project / 'methods' / 'mine.py'}:abs_grad"
    mine, power = config.method("mine"), config.method("power")
    assert isinstance(mine, FunctionMethod) and mine.claims_difull_exact
    assert type(power).__name__ == "Power" and power.exponent == 2.0
    assert config.method_names() == ["grad", "mine", "power"]


@pytest.mark.parametrize(
    "table, message",
    [
        ('method = "grad"\ncallable = "methods/mine.py:abs_grad"', "either method or callable"),
        ('callable = "methods/none.py:abs_grad"', "expected the callable file"),
        ('callable = "methods/mine.py:missing"', "expected a function 'missing'"),
        ('callable = "methods/mine.py:Power"\nexponant = 2', "did you mean 'exponent'"),
        ('callable = "memory:x.y#1"', "memory: is set by attreval.evaluate"),
        ('callable = "no_such_package_xyz:fn"', "expected an importable module"),
    ],
)
def test_bad_callable_variants_fail_in_one_line(project, table, message):
    (project / "bad.toml").write_text(CONFIG.split("[variants.mine]")[0] + "[variants.mine]\n" + table + "\n")
    with pytest.raises(ValueError, match=message) as err:
        load_config(project / "bad.toml")
    assert "\n" not in str(err.value)


def scaled(forward, inputs, targets, factor=1.0):
    return factor * inputs.abs().sum(1)


def test_function_options_become_keyword_arguments():
    method = resolve_method(scaled, factor=3.0)
    assert dict(method.options) == {"factor": 3.0}
    x = torch.rand(2, 1, 8, 8)
    task = attreval.Task(lambda v: v.mean((2, 3))[:, None].expand(-1, 1, 2), x, torch.tensor([0]), torch.tensor([[1], [0]]))
    torch.testing.assert_close(method(task)[:, 0], 3.0 * x.abs().sum(1))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    (root / "methods").mkdir()
    (root / "methods" / "mine.py").write_text(METHODS_FILE)
    (root / "c.toml").write_text(CONFIG)
    assert main(["run", str(root / "c.toml"), "--out", str(root / "out"), "-q", "--no-report"]) == 0
    return root, attreval.load_run(root / "out")


@pytest.mark.slow
def test_a_file_method_runs_through_attreval_run_and_equals_the_builtin_grad(cli_run):
    _, run = cli_run
    r = run.results
    units = r.groupby(["setting", "layer"])["method"].apply(set).to_dict()
    assert len(units) == 9 and all({"grad", "mine"} <= methods for methods in units.values())
    assert all(("power" in m) == (layer == "input") for (_, layer), m in units.items())  # layers = ["input"]
    grad, mine = r[r.method == "grad"].reset_index(drop=True), r[r.method == "mine"].reset_index(drop=True)
    assert (grad[["setting", "layer", "grid", "cell"]] == mine[["setting", "layer", "grid", "cell"]]).all().all()
    assert (grad["score"].to_numpy() == mine["score"].to_numpy()).all()  # exactly the built-in's scores
    assert run.maps("fashion_resnet", "difull", "input", "mine").shape[0] == 2  # stored like every unit
    stats = run.statistics
    assert {"mine", "power"} <= set(stats["method"]) and (stats["ci_low"] <= stats["ci_high"]).all()
    versus = run.compare("mine")
    assert (versus.loc[versus["other"] == "grad", "verdict"] == "no difference").all()


@pytest.mark.slow
def test_resume_refuses_an_edited_method_file(cli_run, capsys):
    root, _ = cli_run
    argv = ["run", str(root / "c.toml"), "--out", str(root / "out"), "--resume", "-q", "--no-report"]
    assert main(argv) == 0  # unchanged: resumes (nothing to do)
    (root / "methods" / "mine.py").write_text(METHODS_FILE + "\n# edited\n")
    try:
        assert main(argv) == 2
        assert "variants[mine].callable" in capsys.readouterr().err
    finally:
        (root / "methods" / "mine.py").write_text(METHODS_FILE)


@pytest.mark.slow
def test_evaluate_with_an_in_memory_model_and_method_equals_the_cli(cli_run):
    root, cli = cli_run
    sys.path.insert(0, str(root / "methods"))
    try:
        import mine  # the same file the config names
    finally:
        sys.path.remove(str(root / "methods"))
    from attreval.models.zoo import load_default_model

    config = load_config(root / "c.toml")
    model = load_default_model("fashion_resnet")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    raw = {
        "data": {"kind": "fashion_mnist", "limit": 400},
        "models": [{"name": "fashion_resnet"}],
        "grids": {"gridpg": 2, "disconnected": 2},
        "evaluation": {"methods": ["grad", "power"], "smooth_methods": [], "batch_size": 2},
        "variants": {"power": {**{"callable": config.variants["power"].callable}, "exponent": 2.0, "layers": ["input"]}},
    }
    run = attreval.evaluate(raw, methods={"mine": mine.abs_grad}, models={"fashion_resnet": model}, progress=False)
    columns = ["model", "setting", "layer", "method", "grid", "cell", "score"]
    key = ["setting", "layer", "method", "grid", "cell"]
    ours = run.results[columns].sort_values(key).reset_index(drop=True)
    theirs = cli.results[columns].sort_values(key).reset_index(drop=True)
    assert ours.equals(theirs)
    assert run.config.variants["mine"].callable.startswith("memory:")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    root_dir = run.root
    assert root_dir.is_dir() and (root_dir / "statistics.parquet").exists()
    del run
    gc.collect()
    assert not root_dir.exists()  # out=None: the temporary directory lives as long as the Run


def test_evaluate_refuses_bad_objects_in_one_line():
    with pytest.raises(TypeError, match="expected a Method, a Method subclass or a function"):
        attreval.evaluate(None, methods={"mine": 3}, progress=False)
    with pytest.raises(ValueError, match="snake_case method name"):
        attreval.evaluate(None, methods={"My Method": lambda f, x, t: x}, progress=False)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    with pytest.raises(ValueError, match="eval mode"):
        attreval.evaluate(None, models={"fashion_vgg": model.train()}, progress=False)


# -- installed plugins ---------------------------------------------------------------------------------


def install_plugin(site: Path, entry_points: dict[str, str], module: str) -> None:
    """A distribution in ``site`` as pip would leave it: the module and a dist-info with its entry points."""
    site.mkdir(exist_ok=True)
    (site / "my_attr_plugin.py").write_text(textwrap.dedent(module))
    info = site / "my_attr_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-attr-plugin\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[attreval.methods]\n{lines}\n")


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    install_plugin(site, {"my_saliency": "my_attr_plugin:abs_grad", "my_broken": "my_attr_plugin_missing:fn"}, METHODS_FILE)
    monkeypatch.syspath_prepend(str(site))
    _load_plugin.cache_clear()
    yield site
    _load_plugin.cache_clear()
    sys.modules.pop("my_attr_plugin", None)


def test_an_installed_plugin_is_listed_and_runs_by_name(plugin_site, capsys):
    assert set(plugin_entry_points()) >= {"my_saliency", "my_broken"}
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "my_saliency" in out and "plugin my_attr_plugin:abs_grad" in out
    broken = next(line for line in out.splitlines() if line.startswith("my_broken"))
    assert "plugin method 'my_broken' (my_attr_plugin_missing:fn from my-attr-plugin 1.0) failed to load: ModuleNotFoundError" in broken
    model = attreval.split_model(__import__("attreval.models.zoo", fromlist=["x"]).load_default_model("fashion_resnet"))
    images, targets = torch.rand(2, 1, 64, 64), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    torch.testing.assert_close(
        attreval.attribute(model, images, targets, "my_saliency", setting="dipart", layer="middle"),
        attreval.attribute(model, images, targets, "grad", setting="dipart", layer="middle"),
    )


def test_a_broken_plugin_fails_in_one_line_only_where_it_is_used(plugin_site, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[[models]]\nname = "fashion_resnet"\n[evaluation]\nmethods = ["grad", "my_saliency"]\n')
    assert load_config(good).method_names() == ["grad", "my_saliency"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nname = "fashion_resnet"\n[methods.my_broken]\n')
    with pytest.raises(ValueError, match=r"plugin method 'my_broken' .* failed to load") as err:
        load_config(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="did you mean 'my_saliency'"):
        resolve_method("my_salency")


def test_the_cli_lists_plugins_from_a_fresh_process(tmp_path):
    site = tmp_path / "site"
    install_plugin(site, {"my_saliency": "my_attr_plugin:abs_grad"}, METHODS_FILE)
    env = {"PYTHONPATH": f"{site}:{Path(attreval.__file__).parents[1]}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "attreval", "list", "methods"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and "my_saliency" in out.stdout


def test_costs_separate_the_methods_time_from_the_runs_own():
    """``costs.parquet``: ``seconds`` is the method computing its maps (a method that sleeps 50 ms per call shows
    at least that, per call), ``overhead_seconds`` the run's own time in the unit (scoring, writing), recorded
    apart so a method's cost does not include how many smoothing variants the run scores."""
    calls = []

    def sleepy(forward, inputs, targets):
        calls.append(1)
        time.sleep(0.05)
        return inputs.abs().sum(1)

    raw = {
        "data": {"kind": "fashion_mnist", "limit": 200},
        "models": [{"name": "fashion_resnet"}],
        "grids": {"gridpg": 2, "disconnected": 2},
        "evaluation": {"settings": ["gridpg"], "layers": ["input"], "methods": ["grad"], "smooth_methods": ["grad"], "batch_size": 2},
    }
    run = attreval.evaluate(raw, methods={"sleepy": sleepy}, progress=False)
    row = run.costs.set_index("method").loc["sleepy"]
    assert row["seconds"] >= 0.05 * len(calls) > 0
    assert 0 < row["overhead_seconds"] < row["seconds"]  # scoring and writing: milliseconds, not the method's sleep
    grad = run.costs.set_index("method").loc["grad"]  # 7 variants scored (6 smoothing kernels): in the overhead only
    assert grad["overhead_seconds"] > 0 and grad["seconds"] > 0
    assert row["seconds_per_grid"] == pytest.approx(row["seconds"] / row["grids"])
