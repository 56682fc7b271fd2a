"""Figures of a run, with matplotlib's object API only (no pyplot, no ``matplotlib.use``: nothing global
changes on import or call). Every function returns a :class:`~matplotlib.figure.Figure`; :func:`save`
writes it as PNG atomically. Display normalisation (colour scales, grey images) happens only here.

One module per figure kind: :mod:`~attreval.plots.boxplots` (§1.5), :mod:`~attreval.plots.aggatt`
(§3.6–3.7), :mod:`~attreval.plots.smoothing` (§6.1, §6.3), :mod:`~attreval.plots.correlation` (§6.2),
:mod:`~attreval.plots.cost` (§7); what they share is :mod:`~attreval.plots.style`. Everything is
re-exported here: ``from attreval import plots; plots.aggatt_figure(...)``.
"""

from attreval.plots.aggatt import Panel, aggatt_examples_figure, aggatt_figure, image_grid
from attreval.plots.boxplots import localization_boxplots
from attreval.plots.correlation import correlation_heatmap, reference_correlation_figure
from attreval.plots.cost import COST_METRICS, cost_figure, smoothing_cost_figure
from attreval.plots.smoothing import smoothgrad_sweep_figure, smoothing_curves_figure
from attreval.plots.style import (
    CURVE_COLOURS,
    FAMILIES,
    LAYER_COLOURS,
    LAYER_ORDER,
    OTHER_COLOURS,
    RDWHGN,
    SETTING_ORDER,
    TARGET_EDGE,
    curve_colours,
    evaluation_label,
    infer_n,
    layer_colour,
    method_display,
    method_family,
    method_order,
    new_figure,
    ordered,
    position,
    save,
    setting_display,
)

__all__ = [
    "COST_METRICS",
    "CURVE_COLOURS",
    "FAMILIES",
    "LAYER_COLOURS",
    "LAYER_ORDER",
    "OTHER_COLOURS",
    "RDWHGN",
    "SETTING_ORDER",
    "TARGET_EDGE",
    "Panel",
    "aggatt_examples_figure",
    "aggatt_figure",
    "correlation_heatmap",
    "cost_figure",
    "curve_colours",
    "evaluation_label",
    "image_grid",
    "infer_n",
    "layer_colour",
    "localization_boxplots",
    "method_display",
    "method_family",
    "method_order",
    "new_figure",
    "ordered",
    "position",
    "reference_correlation_figure",
    "save",
    "setting_display",
    "smoothgrad_sweep_figure",
    "smoothing_cost_figure",
    "smoothing_curves_figure",
]
