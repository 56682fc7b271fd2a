"""The method contract, as checks anyone can run on their own method: ``attreval check-method NAME``.

Every built-in method passes these in the test suite; a method from a plugin, a file or a notebook gets the same
guarantees checked by :func:`check_method`, on the two shipped models (``fashion_vgg``: VGG-style with a fully
connected classifier; ``fashion_resnet``: ResNet-style with global pooling) and two 2×2 grids of real
Fashion-MNIST images, in every setting and at every layer:

* ``maps``: shape ``(B, T, h, w)`` at the layer's resolution, float32, finite, not all zero;
* ``batch``: the maps of a batch equal those of each example alone;
* ``targets``: all T targets at once equal one target at a time;
* ``deterministic``: the same call twice gives the same maps (same seed for stochastic methods);
* ``unchanged``: the caller's model (parameters and buffers), images and targets are left as they were;
* ``hooks``: no hook is left on the model, also after the method raised (targets out of range);
* ``difull_exact`` (for methods that claim it): zero outside what each head can depend on (``tail.regions``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor, nn

from attreval.methods.base import Method
from attreval.validation import first_line

LAYERS = ("input", "middle", "final")
RTOL, ATOL = 1e-3, 1e-4  # atol relative to the largest value of the maps compared (float32 sums in another order)


@dataclass(frozen=True)
class Check:
    """One property on one model, setting and layer: ``passed`` (``None`` = not applicable) and what was seen."""

    check: str
    model: str
    setting: str
    layer: str
    passed: bool | None
    detail: str = ""


@cache
def contract_case(model_name: str) -> tuple[nn.Module, Tensor, Tensor]:
    """A shipped model (eval mode) and two 2×2 grids ``(2, 1, 64, 64)`` of real images with their labels ``(2, 4)``."""
    from attreval.data import build_grid_dataset, load_dataset
    from attreval.models.zoo import load_default_model

    model = load_default_model(model_name)
    grids = build_grid_dataset(load_dataset("fashion_mnist", limit=200), [model], 2, 2, rule="any", seed=0)
    return model, grids.images.clone(), grids.labels.clone()


def hook_count(model: nn.Module) -> int:
    """Forward, pre-forward and backward hooks on ``model``'s modules, plus the process-wide ones."""
    from torch.nn.modules import module as registry

    count = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    count += sum(len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())
    return count + len(registry._global_forward_hooks) + len(registry._global_forward_pre_hooks) + len(registry._global_backward_hooks)


def close(a: Tensor, b: Tensor) -> str:
    """``""`` when ``a`` and ``b`` agree to the contract's tolerance, else what differs."""
    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-12)
    gap = (a - b).abs().max().item()
    return "" if torch.allclose(a, b, rtol=RTOL, atol=ATOL * scale) else f"max |difference| {gap:.3g} (max |value| {scale:.3g})"


def check_case(method: Method, model_name: str, setting: str, layer: str, only: Sequence[str] = ()) -> list[Check]:
    """Every property of :mod:`this module <attreval.methods.contract>` for one model, setting and layer
    (``only``: just these checks, after ``maps``)."""
    from attreval.api import attribute
    from attreval.settings import make_setting

    model, images, labels = contract_case(model_name)
    spec = make_setting(setting, model, 2)
    cells = list(spec.evaluated_cells())  # the protocol's cells and the head explaining each (PAPER.md §1)
    heads, targets = list(spec.heads_for(cells)), labels[:, cells]
    where = (model_name, setting, layer)

    def call(x: Tensor, t: Tensor, h: Sequence[int] = heads) -> Tensor:
        return attribute(model, x, t, method, setting=setting, layer=layer, n=2, heads=h, chunk_size=64)

    if method.needs:  # what the method needs of the tail (Method.needs): a transformer, a CNN's modules…
        try:
            method.check_tail(spec.tail(layer, spec.default_heads()))
        except ValueError as err:
            return [Check("applies", *where, None, first_line(err))]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = (images.clone(), targets.clone())
    try:
        maps = call(images, targets)
    except Exception as err:  # the user's method may raise anything: the check reports it
        return [Check("maps", *where, False, f"raised {type(err).__name__}: {first_line(err)}")]
    checks = [Check("maps", *where, *_maps_ok(maps, spec.activations(images, layer).shape[-2:], targets.shape[1]))]
    if not checks[0].passed:
        return checks
    if only:
        return checks + ([_exact(maps, spec, layer, heads, where)] if "difull_exact" in only and method.claims_difull_exact else [])
    batch = [close(call(images[b : b + 1], targets[b : b + 1]), maps[b : b + 1]) for b in range(len(images))]
    checks.append(Check("batch", *where, not any(batch), next((d for d in batch if d), "")))
    one = [close(call(images, targets[:, t : t + 1], [heads[t]]), maps[:, t : t + 1]) for t in range(targets.shape[1])]
    checks.append(Check("targets", *where, not any(one), next((d for d in one if d), "")))
    again = call(images, targets)
    checks.append(
        Check(
            "deterministic", *where, torch.equal(again, maps), "" if torch.equal(again, maps) else close(again, maps) or "not bit-identical"
        )
    )
    same = (
        torch.equal(images, before[0])
        and torch.equal(targets, before[1])
        and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    )
    checks.append(Check("unchanged", *where, same and not model.training, "" if same else "the model's state or the inputs changed"))
    checks.append(_hooks_after_error(call, model, images, targets, where))
    if method.claims_difull_exact:
        checks.append(_exact(maps, spec, layer, heads, where))
    return checks


def _maps_ok(maps: object, size: Iterable[int], targets: int) -> tuple[bool, str]:
    if not isinstance(maps, Tensor):
        return False, f"returned {type(maps).__name__}"
    expected = (2, targets, *size)
    if tuple(maps.shape) != expected or maps.dtype != torch.float32:
        return False, f"expected float32 maps {expected}, got {maps.dtype} {tuple(maps.shape)}"
    if not torch.isfinite(maps).all():
        return False, "NaN or inf in the maps"
    if not maps.abs().sum() > 0:
        return False, "all maps are zero"
    return True, ""


def _hooks_after_error(call, model: nn.Module, images: Tensor, targets: Tensor, where: tuple[str, str, str]) -> Check:
    left = hook_count(model)
    try:
        call(images, targets + 1000)  # no model here has 1000 classes: the method must raise
        raised = ""
    except Exception as err:
        raised = type(err).__name__
    after = hook_count(model)
    ok = left == 0 and after == 0
    detail = (
        f"{left} hooks left after a call, {after} after an exception" if not ok else ("" if raised else "no error for targets out of range")
    )
    return Check("hooks", *where, ok, detail)


def _exact(maps: Tensor, spec, layer: str, heads: Sequence[int], where: tuple[str, str, str]) -> Check:
    """Exact zeros outside the region each target's head can depend on (``tail.regions``)."""
    unique = tuple(dict.fromkeys(heads))
    regions = spec.tail(layer, unique).regions(tuple(maps.shape[-2:]))
    if regions is None:
        return Check("difull_exact", *where, None, "this tail has no regions (every head sees the whole map)")
    outside = ~regions[[unique.index(h) for h in heads]].to(maps.device)  # (T, h, w)
    worst = max((maps[:, t][:, outside[t]].abs().max().item() if outside[t].any() else 0.0) for t in range(maps.shape[1]))
    return Check("difull_exact", *where, worst == 0.0, "" if worst == 0.0 else f"max |map| outside the head's region {worst:.3g}")


def check_method(
    method: Method,
    *,
    models: Sequence[str] = ("fashion_vgg", "fashion_resnet"),
    settings: Sequence[str] | None = None,
    layers: Sequence[str] = LAYERS,
) -> list[Check]:
    """Every check of the contract for ``method`` on ``models`` × ``settings`` (default: every registered
    setting) × ``layers``."""
    from attreval.settings import SETTINGS

    return [c for m in models for s in (settings or SETTINGS.names()) for layer in layers for c in check_case(method, m, s, layer)]


# -- attreval check-method ---------------------------------------------------------------------------


def configure_parser(parser) -> None:
    parser.add_argument("method", help='a method name (built-in or plugin), or your own: "file.py:object" or "package.module:object"')
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a method option (TOML value), repeatable")
    parser.add_argument("--model", action="append", choices=["fashion_vgg", "fashion_resnet"], help="check on this model only (repeatable)")
    parser.add_argument("--setting", action="append", help="check in this setting only (repeatable; default: every setting)")
    parser.add_argument("--layer", action="append", choices=list(LAYERS), help="check at this layer only (repeatable)")
    parser.add_argument("--full", action="store_true", help="a built-in's paper preset instead of its cheaper test preset")


def run_from_args(args) -> int:
    """Print one line per model × setting × layer with the failed checks; exit 2 when any check failed."""
    import tomllib

    from attreval.methods.base import METHODS
    from attreval.methods.sources import resolve

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected --option KEY=VALUE, got {item!r}")
        options[key.strip()] = tomllib.loads(f"v = {value}")["v"] if value.strip() else ""
    preset = {} if args.full or args.method not in METHODS else dict(type(METHODS.get(args.method)).test_preset)
    method = resolve(args.method, **{**preset, **options})
    checks = check_method(
        method, models=args.model or ("fashion_vgg", "fashion_resnet"), settings=args.setting, layers=args.layer or LAYERS
    )
    return report(checks)


def report(checks: Sequence[Check]) -> int:
    """Print the checks grouped by case; ``2`` when any failed, else ``0``."""
    cases: dict[tuple[str, str, str], list[Check]] = {}
    for c in checks:
        cases.setdefault((c.model, c.setting, c.layer), []).append(c)
    failed = 0
    for (model, setting, layer), found in cases.items():
        bad = [c for c in found if c.passed is False]
        skipped = [c for c in found if c.passed is None]
        failed += len(bad)
        status = "FAIL" if bad else "ok  "
        text = "; ".join(f"{c.check}: {c.detail}" for c in bad) or ", ".join(c.check for c in found if c.passed)
        text += "".join(f" ({c.check} not applicable: {c.detail})" for c in skipped)
        print(f"{status} {model:15s} {setting:7s} {layer:7s} {text}")
    print(f"{sum(c.passed is True for c in checks)} checks passed, {failed} failed, {sum(c.passed is None for c in checks)} not applicable")
    return 2 if failed else 0
