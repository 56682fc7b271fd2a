"""A run directory and the protocol that fills it.

* :mod:`~attreval.runs.plan`: the units (model × setting × layer × method) and the grids of a run;
* :mod:`~attreval.runs.run`: the unit loop (``attreval run``), :mod:`~attreval.runs.runtime` (device, numerics,
  metadata), :mod:`~attreval.runs.distributed` (torchrun shards), :mod:`~attreval.runs.counting` (passes);
* :mod:`~attreval.runs.store`, :mod:`~attreval.runs.mapfile`, :mod:`~attreval.runs.files`: what a run writes
  and how (atomically); :mod:`~attreval.runs.manifest`, :mod:`~attreval.runs.verify`,
  :mod:`~attreval.runs.identity`, :mod:`~attreval.runs.nofollow`, :mod:`~attreval.runs.lock`,
  :mod:`~attreval.runs.rundir`: integrity (records, inputs, symlinks, one writer, ``--resume``);
* :mod:`~attreval.runs.reader`: ``attreval.load_run``, the one way to read a run back.
"""
