import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)

from tiny_models import tiny_model  # noqa: E402


@pytest.fixture(scope="session", params=["vgg", "resnet"])
def tiny(request):
    """A tiny random-weight model of each family, in eval mode."""
    return request.param, tiny_model(request.param)
