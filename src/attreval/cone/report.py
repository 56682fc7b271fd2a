"""Whether Occlusion's tails ran on the receptive-field cone, collected per unit of a run (issue 24 §1).

A tail's cone is described in one short line (:func:`describe`):

* ``"cone"``: every stage recomputes only each window's region (the head may run in full: global pooling);
* ``"partial: full passes from <stage>:<op>"``: a global operation in the body (a squeeze-excitation gate,
  pooling inside a block) or a module without a rule makes every later operation run on full copies;
* ``"full passes (<module>)"``: the tail's first module keeps no region, so the plain materialised copies run.

``with recording() as notes:`` collects the lines of every occluder built inside it (the run wraps each unit);
outside a recording :func:`note` does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_notes: ContextVar[list[str] | None] = ContextVar("cone_notes", default=None)


@contextmanager
def recording() -> Iterator[list[str]]:
    """Collect the description of every occluder built in the block (in order, repeats included)."""
    notes: list[str] = []
    token = _notes.set(notes)
    try:
        yield notes
    finally:
        _notes.reset(token)


def describe(occluder: Any, stages: list[tuple[str, Any]]) -> str:
    """The line for a :class:`~attreval.cone.occluder.ConeOccluder` whose plan runs ``stages`` (name, module),
    then possibly a head."""
    plan = occluder.plan
    if not plan.incremental:
        rules = plan.rule.rules
        first = stages[0][1] if stages else (rules[0].module if rules else None)
        return f"full passes ({type(first).__name__}{'' if stages else ', the head'})"
    for (name, _), rule in zip(stages, plan.rule.rules):
        full = rule.full_rules()
        if full:
            where = getattr(full[0], "node", None) or type(full[0].module).__name__
            return f"partial: full passes from {name}:{where}"
    return "cone"


def note(occluder: Any, stages: list[tuple[str, Any]]) -> None:
    """Record ``describe(occluder, stages)`` in the current recording, if any."""
    notes = _notes.get()
    if notes is not None:
        notes.append(describe(occluder, stages))


def summary(notes: list[str]) -> str | None:
    """The distinct lines of a recording, joined (None when no occluder was built: not an Occlusion unit)."""
    return "; ".join(dict.fromkeys(notes)) or None
