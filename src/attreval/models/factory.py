"""Models built by the user's own code: ``architecture = "package.module:function"`` or
``"path/to/file.py:function"`` in a config's ``[[models]]`` table.

The function is called with no arguments (or ``num_classes=K`` when the config gives ``num_classes``) and
returns an ``nn.Module`` (split automatically, like any torchvision/timm model) or an
:class:`~attreval.models.staged.StagedModel` (used as it is). A ``weights`` file, if given, is loaded into a
returned ``nn.Module`` with ``torch.load(weights_only=True)``; a factory returning a StagedModel loads its
own weights. The function runs the user's code: name only code you trust, as with any Python import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from attreval.models.staged import StagedModel, StagedModule
from attreval.validation import first_line


def resolve_factory(spec: str, base: Path | None = None, what: str = "architecture") -> Callable[..., object]:
    """The function (or callable object) named by ``"module:function"`` or ``"file.py:function"`` (a file relative
    to ``base``); ``what`` names the config key in errors (``architecture``, ``callable``)."""
    if not isinstance(spec, str) or spec.count(":") < 1 or not spec.rsplit(":", 1)[1]:
        raise ValueError(f'expected {what} = "package.module:function" or "path/file.py:function", got {spec!r}')
    where, function = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where).expanduser()
        path = path if path.is_absolute() or base is None else base / path
        path = path.resolve()
        if not path.is_file():
            raise ValueError(f"expected the {what} file {path}, found no file there")
        module_spec = importlib.util.spec_from_file_location(f"attreval_user_{path.stem}", path)
        if module_spec is None or module_spec.loader is None:
            raise ValueError(f"expected a Python file for the {what}, got {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        try:
            module_spec.loader.exec_module(module)
        except SystemExit as err:
            raise ValueError(f"expected {path} to import, got a call to sys.exit({err.code!r})") from None
        except Exception as err:
            raise ValueError(f"expected {path} to import, got {type(err).__name__}: {first_line(err)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except SystemExit as err:
            raise ValueError(
                f"expected an importable module '{where}' for architecture {spec!r}, got a call to sys.exit({err.code!r})"
            ) from None
        except Exception as err:
            raise ValueError(
                f"expected an importable module '{where}' for {what} {spec!r}, got {type(err).__name__}: {first_line(err)}"
            ) from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ValueError(f"expected a function '{function}' in {where}, found {'nothing' if fn is None else type(fn).__name__}")
    return fn


def build_from_factory(spec: str, num_classes: int = 0, base: Path | None = None) -> nn.Module:
    """Call the factory; a StagedModel comes back wrapped as a :class:`StagedModule` (an ``nn.Module``)."""
    fn = resolve_factory(spec, base)
    try:
        built = fn(num_classes=num_classes) if num_classes else fn()
    except SystemExit as err:  # the run would otherwise end with the factory's exit code, nothing done
        raise ValueError(f"expected {spec} to build a model, got a call to sys.exit({err.code!r})") from None
    except Exception as err:
        raise ValueError(f"expected {spec} to build a model, got {type(err).__name__}: {first_line(err)}") from None
    if isinstance(built, StagedModel):
        return StagedModule(built)
    if not isinstance(built, nn.Module):
        raise ValueError(f"expected {spec} to return an nn.Module or attreval.StagedModel, got {type(built).__name__}")
    return built
