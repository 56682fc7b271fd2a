"""The protocol in-process: :func:`evaluate` runs what ``attreval run`` runs, with methods and models that live in
your Python session, and returns the run as a :class:`~attreval.runs.reader.Run`.

>>> import attreval                                                                   # doctest: +SKIP
>>> def my_method(forward, inputs, targets):                                         # doctest: +SKIP
...     x = inputs.detach().requires_grad_(True)
...     (grad,) = torch.autograd.grad(forward(x).gather(1, targets[:, None]).sum(), x)
...     return (grad * x).sum(1)
>>> config = attreval.default_config_dict()                                           # doctest: +SKIP
>>> config["evaluation"]["methods"] = ["int_grad", "grad_cam"]                        # doctest: +SKIP
>>> run = attreval.evaluate(config, methods={"mine": my_method})                      # doctest: +SKIP
>>> run.compare("mine", setting="gridpg")                                            # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib
import torch
from torch import nn

from attreval.config import ModelConfig, RunConfig, VariantConfig, load_config, parse_config
from attreval.methods.sources import MEMORY, as_method, memory_spec
from attreval.runs.reader import Run, load_run


def default_config_dict() -> dict[str, Any]:
    """The embedded default config (``attreval/configs/default.toml``) as a fresh dict in the config schema, to
    edit and pass to :func:`evaluate`."""
    return tomllib.loads(resources.files("attreval.configs").joinpath("default.toml").read_text())


def as_config(config: str | os.PathLike | Mapping[str, Any] | RunConfig | None) -> RunConfig:
    """A :class:`RunConfig` from a TOML path (relative paths against its folder), a dict in the same schema
    (relative paths against the working directory), a ``RunConfig``, or ``None`` (the embedded default)."""
    if config is None or isinstance(config, RunConfig):
        return load_config() if config is None else config
    if isinstance(config, (str, os.PathLike)):
        return load_config(Path(config))
    if isinstance(config, Mapping):
        return parse_config(copy.deepcopy(dict(config)), Path.cwd())
    raise TypeError(f"expected a config path, a dict, a RunConfig or None, got {type(config).__name__}")


def parameter_digest(model: nn.Module) -> str:
    """sha256 (16 hex digits) of a model's parameters and buffers, by name: what a resumed run compares."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(str((value.dtype, tuple(value.shape))).encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()[:16]


def with_objects(config: RunConfig, methods: Mapping[str, Any], models: Mapping[str, nn.Module]) -> RunConfig:
    """``config`` with a ``memory:`` record for every object handed over: each method becomes a variant (added to
    the evaluated methods unless they are ``["all"]``, which includes every variant), each model a ``[[models]]``
    entry (replacing the config's model of that name). The records name the object and hash its code or
    parameters, so that ``config.json`` documents the run and ``--resume`` refuses a changed object."""
    variants, evaluated = dict(config.variants), list(config.evaluation.methods)
    for name, obj in methods.items():
        _check_name("method", name)
        as_method(obj, name=name)  # fails now, in one line, for an object that is not a method
        variants[name] = VariantConfig("", {}, callable=memory_spec(obj))
        if evaluated != ["all"] and name not in evaluated:
            evaluated.append(name)
    entries = [m for m in config.models if m.key not in models]
    for name, model in models.items():
        _check_name("model", name)
        if not isinstance(model, nn.Module):
            raise TypeError(f"expected an nn.Module or attreval.StagedModel for model '{name}', got {type(model).__name__}")
        kind = f"{type(model).__module__}.{type(model).__qualname__}"
        entries.append(ModelConfig(name=name, architecture=f"{MEMORY}{kind}#{parameter_digest(model)}"))
    evaluation = dataclasses.replace(config.evaluation, methods=tuple(evaluated))
    return dataclasses.replace(config, variants=variants, models=tuple(entries), evaluation=evaluation)


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"expected a snake_case {kind} name (it names result rows and files), got {name!r}")


def evaluate(
    config: str | os.PathLike | Mapping[str, Any] | RunConfig | None = None,
    out: str | os.PathLike | None = None,
    *,
    methods: Mapping[str, Any] | None = None,
    models: Mapping[str, nn.Module] | None = None,
    progress: bool = True,
    resume: bool = False,
    device: str | None = None,
    report: bool = False,
) -> Run:
    """Run the paper's protocol of ``config`` (as ``attreval run`` does) and return the run.

    Args:
        config: a TOML path, a dict in the config schema (:func:`default_config_dict`), a ``RunConfig``, or
            ``None`` for the embedded default.
        out: the run directory; ``None`` = a temporary directory that lives as long as the returned ``Run``.
        methods: name → a method object, a method class or a function ``fn(forward, inputs, targets) -> maps``,
            evaluated next to the config's methods (added to ``[evaluation] methods``).
        models: name → an ``nn.Module`` in eval mode (split automatically) or a ``StagedModule``, evaluated in
            place of (or next to) the config's models; no weights file needed.
        progress: show progress bars. resume, device: as ``attreval run --resume / --device``.
        report: also write the HTML report (``Run.root / "report.html"``).

    Returns:
        The :class:`Run` (``.results``, ``.statistics``, ``.compare(...)``, ``.maps(...)`` …).
    """
    from attreval.models.staged import StagedModel, StagedModule
    from attreval.runs.run import run as run_protocol

    given = {name: StagedModule(m) if isinstance(m, StagedModel) else m for name, m in (models or {}).items()}
    resolved = with_objects(as_config(config), dict(methods or {}), given)
    keep = None
    if out is None:
        keep = tempfile.TemporaryDirectory(prefix="attreval-")
        out = Path(keep.name) / "run"
    run_protocol(resolved, Path(out), resume=resume, device=device, progress=progress, methods=methods, models=given)
    if report:
        from attreval.report import write_report

        write_report(Path(out))
    result = load_run(out)
    result.keepalive = keep  # the temporary directory is removed when the Run is garbage-collected
    return result
