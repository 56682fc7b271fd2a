"""Tables computed from a results table."""

from __future__ import annotations

import pandas as pd

from attreval.analysis.conventions import LAYER_ORDER, SETTING_ORDER, method_order, position


def median_stats(rows: pd.DataFrame, value: str = "score") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Median and count of ``value`` per method (rows, registry order) × (setting, layer) (columns, setting
    then layer order): the one median table, printed by ``attreval run`` and shown (with n) by the report."""
    stats = rows.pivot_table(index="method", columns=["setting", "layer"], values=value, aggfunc=["median", "count"])
    columns = sorted(stats["median"].columns, key=lambda c: (position(c[0], SETTING_ORDER), position(c[1], LAYER_ORDER), c))
    index, columns = method_order(stats["median"].index), pd.MultiIndex.from_tuples(columns, names=["setting", "layer"])
    return tuple(stats[part].reindex(index=index, columns=columns) for part in ("median", "count"))


def median_table(results: pd.DataFrame, model: str, kernel_size: int = 0) -> pd.DataFrame:
    """Median localization per method (rows) × setting/layer (columns) for one model, unsmoothed by default."""
    rows = results[(results["model"] == model) & (results["kernel_size"] == kernel_size)]
    if rows.empty:
        raise ValueError(f"expected results for model '{model}', got none (models: {sorted(results['model'].unique())})")
    return median_stats(rows)[0]
