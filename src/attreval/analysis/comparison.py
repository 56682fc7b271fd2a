"""One method against the others, from a run's paired comparisons (``attreval compare``, ``Run.compare``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from attreval.analysis.statistics import ALPHA, GROUP


def select(table: pd.DataFrame, where: dict[str, Any]) -> pd.DataFrame:
    """Rows of ``table`` whose columns equal the non-``None`` values of ``where``; a value the table does not
    hold is a one-line error naming the values it does."""
    for column, value in where.items():
        if value is None or column not in table.columns:
            continue
        if not (table[column] == value).any():
            found = ", ".join(map(str, pd.unique(table[column])))
            raise ValueError(f"expected {column} one of: {found}, got {value!r}")
        table = table[table[column] == value]
    return table


def method_versus_others(comparisons: pd.DataFrame, method: str, alpha: float = ALPHA) -> pd.DataFrame:
    """``method`` against every other method it was compared with, oriented so that ``median_difference`` is
    ``method − other`` (positive: ``method`` localizes better). ``verdict`` is ``better`` / ``worse`` when the
    Holm-corrected p-value is below ``alpha``, else ``no difference``."""
    names = pd.unique(pd.concat([comparisons["method_a"], comparisons["method_b"]]))
    if method not in names:
        raise ValueError(f"expected a method of the run, one of: {', '.join(map(str, names))}, got {method!r}")
    mine = comparisons[(comparisons["method_a"] == method) | (comparisons["method_b"] == method)]
    flip = mine["method_b"] == method
    out = mine[GROUP].copy()
    out["method"] = method
    out["other"] = mine["method_b"].where(~flip, mine["method_a"])
    out["n"] = mine["n"]
    out["median"] = mine["median_a"].where(~flip, mine["median_b"])
    out["median_other"] = mine["median_b"].where(~flip, mine["median_a"])
    out["median_difference"] = mine["median_difference"].where(~flip, -mine["median_difference"]) + 0.0  # no -0.0
    out["p_value"], out["p_holm"] = mine["p_value"], mine["p_holm"]
    significant = out["p_holm"] < alpha
    out["verdict"] = "no difference"
    out.loc[significant & (out["median_difference"] > 0), "verdict"] = "better"
    out.loc[significant & (out["median_difference"] < 0), "verdict"] = "worse"
    out.loc[significant & (out["median_difference"] == 0), "verdict"] = "differs"
    return out.reset_index(drop=True)
