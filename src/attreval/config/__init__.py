"""Run configuration: a TOML file parsed into frozen dataclasses, strictly.

Every unknown key, wrong type or unknown name fails with one line naming what was expected, what was
found and, for names, the closest valid one. The embedded default lives in ``configs/default.toml``.
Relative paths in a config file (``[data] root``, ``labels_file``, ``[[models]] weights``, an architecture's
``file.py``) resolve against
the folder of that file. The meaning of every key is the ``doc`` metadata of its dataclass field, the one
source of the generated reference ``docs/config.md`` (:func:`config_reference`, ``attreval list config``).

Modules: :mod:`~attreval.config.schema` (the dataclasses: what a key means), :mod:`~attreval.config.parse`
(TOML → dataclasses, paths), :mod:`~attreval.config.checks` (cross-field checks),
:mod:`~attreval.config.reference` (the generated reference).
"""

from attreval.config.checks import validate
from attreval.config.parse import config_from_json, load_config, parse_config, resolve_paths
from attreval.config.reference import config_reference, reference_fields
from attreval.config.schema import (
    ALL,
    DATA_KINDS,
    FOLDER_KINDS,
    PAPER_KERNELS,
    VARIANT_KEYS,
    DataConfig,
    EvaluationConfig,
    GridConfig,
    ModelConfig,
    RunConfig,
    VariantConfig,
)

__all__ = [
    "ALL",
    "DATA_KINDS",
    "FOLDER_KINDS",
    "PAPER_KERNELS",
    "VARIANT_KEYS",
    "DataConfig",
    "EvaluationConfig",
    "GridConfig",
    "ModelConfig",
    "RunConfig",
    "VariantConfig",
    "config_from_json",
    "config_reference",
    "load_config",
    "parse_config",
    "reference_fields",
    "resolve_paths",
    "validate",
]
