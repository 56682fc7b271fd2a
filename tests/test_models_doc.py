"""docs/models.md's model table is generated from the splits (attreval.models.splitters.table), so the docs
cannot drift from the code: every row — splitter, stages, middle and final with their map sizes at 224 px
(Inception v3: 299, MaxViT built for 64-px windows: 256), GridPG head — is recomputed here and compared.

To refresh the table after a deliberate change: ``ATTREVAL_UPDATE_DOCS=1 pytest tests/test_models_doc.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attreval.models.splitters.table import MARKER, doc_table, layer_table

pytestmark = pytest.mark.slow  # splits ~35 models at 224 px

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"
SIDES = {"inception_v3": 299, "maxvit": 256}


def models():
    import test_zoo_families
    import test_zoo_models

    for name, *_ in test_zoo_models.ZOO:
        yield name, test_zoo_models.built(name), SIDES.get(name, 224)
    for name, _, _, expect in test_zoo_families.FAMILIES:
        if not expect.startswith("refused"):
            yield name, test_zoo_families.built(name), SIDES.get(name, 224)


def test_models_doc_table_is_the_generated_one():
    expected = layer_table(models())
    text = DOC.read_text()
    if os.environ.get("ATTREVAL_UPDATE_DOCS"):
        before, _, after = text.split(MARKER)
        DOC.write_text(before + MARKER + "\n" + "\n".join(expected) + "\n" + MARKER + after)
        text = DOC.read_text()
    assert doc_table(text) == expected, "\n".join(["docs/models.md's table should be:"] + expected)
