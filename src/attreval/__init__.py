"""attreval: fair, faithful and fast evaluation of image attribution methods.

Implements the evaluation system of Rao, Böhle & Schiele, "Towards Better Understanding Attribution
Methods" (CVPR 2022; arXiv 2303.11884): GridPG / DiFull / DiPart settings, ML-Att, the localization
score, AggAtt, smoothing, correlation and cost analyses.
"""

from attreval.api import attribute
from attreval.evaluation import default_config_dict, evaluate
from attreval.grid import GridSpec
from attreval.methods import METHODS, FunctionMethod, Method, Task
from attreval.methods.custom import captum_method
from attreval.metric import localization_parts, localization_score
from attreval.models.splitters import split_model
from attreval.models.staged import StagedModel
from attreval.runs.reader import Run, load_run
from attreval.settings import SETTINGS, DiFull, DiPart, GridPG, make_setting
from attreval.version import __version__

__all__ = [
    "__version__",
    "attribute",
    "evaluate",
    "default_config_dict",
    "GridSpec",
    "METHODS",
    "Method",
    "Task",
    "FunctionMethod",
    "captum_method",
    "localization_score",
    "localization_parts",
    "StagedModel",
    "split_model",
    "SETTINGS",
    "GridPG",
    "DiFull",
    "DiPart",
    "make_setting",
    "Run",
    "load_run",
]
