"""Where a method comes from: the built-in registry, an installed plugin, or your own file.

Three doors lead to one kind of object, a :class:`~attreval.methods.base.Method`:

* a **name**: a built-in (:data:`~attreval.methods.base.METHODS`) or an installed plugin, i.e. an entry point of
  the group ``attreval.methods`` (``pip install my-method`` makes ``my_method`` usable in any config);
* a **spec** ``"path/to/file.py:object"`` or ``"package.module:object"`` (``[variants.NAME] callable = …``);
* an **object** handed over in Python (``attreval.evaluate(..., methods={"mine": fn})``).

The object behind a plugin or a spec may be a :class:`Method` instance (used as it is, options replace its
fields), a :class:`Method` subclass (built with the options as its fields) or a plain function in Captum's
convention ``fn(forward, inputs, targets, **options) -> maps`` (:class:`~attreval.methods.custom.FunctionMethod`).

Plugins are found without importing them; a plugin is imported only when a run, a config or ``attreval list``
names it, so a broken plugin fails in one line naming it and never breaks a run that does not use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
from collections.abc import Callable
from functools import cache
from importlib import metadata
from typing import Any

from attreval.methods.base import METHODS, Method
from attreval.methods.custom import FunctionMethod
from attreval.registry import did_you_mean, unknown_name_error
from attreval.validation import first_line

#: The entry-point group of method plugins: ``[project.entry-points."attreval.methods"] my_method = "pkg.mod:obj"``.
ENTRY_POINT_GROUP = "attreval.methods"
#: Prefix of the callable specs that :func:`attreval.evaluate` records for methods handed over in memory.
MEMORY = "memory:"


def plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    """The installed plugins by name (not imported), built-in names excluded (a built-in always wins)."""
    found: dict[str, metadata.EntryPoint] = {}
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if point.name not in METHODS:
            found.setdefault(point.name, point)
    return found


def method_names() -> list[str]:
    """Every name a config may use: the built-ins in registry order, then the installed plugins, sorted."""
    return METHODS.names() + sorted(plugin_entry_points())


def is_method_name(name: str) -> bool:
    return name in METHODS or name in plugin_entry_points()


def find_method(name: str) -> Method:
    """The method registered or installed as ``name`` (a plugin is imported on first use, then cached)."""
    if not isinstance(name, str):
        raise TypeError(f"expected a method name (str), got {type(name).__name__}")
    if name in METHODS:
        return METHODS.get(name)
    points = plugin_entry_points()
    if name not in points:
        raise unknown_name_error("method", name, method_names())
    return _load_plugin(name, points[name].value)


@cache
def _load_plugin(name: str, value: str) -> Method:
    point = plugin_entry_points().get(name)
    dist = f" from {point.dist.name} {point.dist.version}" if point is not None and point.dist is not None else ""
    try:
        obj = point.load() if point is not None else None
        return as_method(obj, name=name)
    except Exception as err:  # a plugin's import may raise anything; it is reported, in one line
        raise ValueError(f"plugin method '{name}' ({value}{dist}) failed to load: {type(err).__name__}: {first_line(err)}") from None


def as_method(obj: Any, name: str = "custom", **options: Any) -> Method:
    """A :class:`Method` from a method instance, a method class or a plain function; ``options`` replace the
    instance's fields, build the class, or become the function's keyword arguments."""
    if isinstance(obj, type) and issubclass(obj, Method):
        if not dataclasses.is_dataclass(obj):
            raise TypeError(f"expected a Method subclass that is a dataclass, got {obj.__qualname__}")
        fields = {f.name for f in dataclasses.fields(obj) if f.init}
        _check_options(obj.__qualname__, options, fields)
        return obj(**options)
    if isinstance(obj, Method):
        return obj.configured(**options)
    if callable(obj):
        return FunctionMethod(obj, name=name).configured(**options)
    raise TypeError(f"expected a Method, a Method subclass or a function (forward, inputs, targets) -> maps, got {type(obj).__name__}")


def _check_options(owner: str, options: dict[str, Any], fields: set[str]) -> None:
    unknown = sorted(set(options) - fields)
    if unknown:
        hint = did_you_mean(unknown[0], sorted(fields))
        raise ValueError(f"unknown option '{unknown[0]}' for {owner}{hint}; expected one of: {', '.join(sorted(fields)) or 'none'}")


def load_spec(spec: str) -> Any:
    """The object named by ``"path/file.py:object"`` (an absolute path, or relative to the working directory)
    or ``"package.module:object"``; imports the user's code, failing in one line."""
    if spec.startswith(MEMORY):
        raise ValueError(f"expected a method handed to attreval.evaluate(methods=…) for {spec!r}, got none (it lived in another process)")
    where = spec.rpartition(":")[0]
    try:  # a file is imported again only when it changed (a run resolves its methods once per unit)
        stat = os.stat(where) if where.endswith(".py") else None
        stamp = (stat.st_mtime_ns, stat.st_size) if stat is not None else None
    except OSError:
        stamp = None
    return _import_spec(spec, stamp)


@cache
def _import_spec(spec: str, stamp: tuple[int, int] | None) -> Any:
    from attreval.models.factory import resolve_factory

    return resolve_factory(spec, what="callable")


def memory_spec(obj: Any) -> str:
    """What :func:`attreval.evaluate` records in ``config.json`` for a method handed over in memory: its
    qualified name and a hash of its source (or, for a method object, of its fields), so that ``--resume``
    refuses a changed method."""
    target = type(obj) if isinstance(obj, Method) else obj
    qualname = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        text = qualname
    if isinstance(obj, Method):
        text += repr(obj)
    return f"{MEMORY}{qualname}#{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def resolve(method: str | Method | Callable[..., Any], **options: Any) -> Method:
    """A method object from a name (built-in or plugin), a method object or class, or a plain callable;
    ``options`` replace fields of its preset (or become a function's keyword arguments). A string with a colon is
    a spec (``"file.py:object"``, ``"package.module:object"``): names never hold one."""
    if isinstance(method, str) and ":" in method:
        return as_method(load_spec(method), name=method.rsplit(":", 1)[1], **options)
    if isinstance(method, str):
        return find_method(method).configured(**options)
    return as_method(method, name=getattr(method, "__name__", "custom"), **options)
