import os

import pytest
import torch

# Without a CUDA GPU the Triton kernels run through the interpreter, which must be on before they are defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_reset_backend():
    import s2s_fast

    torch.manual_seed(0)
    yield
    s2s_fast.set_backend(None)
