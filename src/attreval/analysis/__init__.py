"""Analyses of a finished run, as pure functions over arrays and the results table.

* :mod:`attreval.analysis.aggatt`: AggAtt, aggregate maps over score percentile bins (PAPER.md §3);
  :mod:`attreval.analysis.aggatt_run` the AggAtt of a stored unit, read through :class:`attreval.runs.reader.Run`.
* :mod:`attreval.analysis.conventions`: display names, orders and the paper's reference evaluation, shared
  by the analyses, the figures and the report.
* :mod:`attreval.analysis.correlation`: Spearman correlation of per-instance scores (§6.2, Tables 1–2).
* :mod:`attreval.analysis.smoothing_curves`: median score versus smoothing kernel (§6.1, Fig. 5).

Figures live in :mod:`attreval.plots`. Nothing is re-exported here, so that each submodule name stays a
module (``attreval.analysis.aggatt`` is the module, ``aggatt.aggatt`` its main function).
"""
