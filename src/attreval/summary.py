"""Tables computed from a results table."""
from __future__ import annotations

import pandas as pd


def median_table(results: pd.DataFrame, model: str, kernel_size: int = 0) -> pd.DataFrame:
    """Median localization per method (rows) × setting/layer (columns) for one model, unsmoothed by default."""
    rows = results[(results["model"] == model) & (results["kernel_size"] == kernel_size)]
    if rows.empty:
        raise ValueError(f"expected results for model '{model}', got none (models: {sorted(results['model'].unique())})")
    table = rows.pivot_table(index="method", columns=["setting", "layer"], values="score", aggfunc="median", sort=False)
    return table
