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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests, restored afterwards: the runs of the end-to-end tests and their
    subprocesses (OMP_NUM_THREADS=1) give the same bytes, and many small kernels on a loaded 2-core machine
    run 5–50× slower with two OpenMP threads than with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
