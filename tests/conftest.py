import os

import pytest
import torch

# Without a CUDA GPU the Triton kernels run through the interpreter, and the CUDA kernels through the CUDA emulation
# (as an H100 would run them); both must be on before s2s_fast is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("S2S_FAST_CUDA_EMULATE", "h100")


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
