import os

import pytest
import torch

# Without a CUDA GPU the Triton kernels run through the interpreter, and the CUDA kernels through the CUDA emulation
# (as an H100 would run them); both must be on before s2s_fast is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("S2S_FAST_CUDA_EMULATE", "h100")
# The trainings run in this process (s2s_fast.cli.main) leave its allocator as glibc has it: s2s_fast.allocator would
# keep freed memory for the rest of the session (tests/test_allocator.py checks it in processes of its own).
os.environ.setdefault("S2S_FAST_HOLD_FREED_MEMORY", "0")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    from s2s_fast.cuda import compiled

    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_kernels = pytest.mark.skip(reason=f"needs a CUDA GPU or the CUDA emulation: {compiled.MISSING_REASON}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
        elif "cuda_kernels" in item.keywords and compiled.MISSING_REASON is not None:
            item.add_marker(skip_kernels)


@pytest.fixture(autouse=True, scope="session")
def _float32_without_tf32_in_cudnn():
    """The suite compares every backend with the reference in IEEE float32. The reference's float32 products follow
    torch's matmul TF32 switch (off by default); cuDNN's RNNs follow cuDNN's own (on by default), which the aten
    backend keeps, as torch.nn.LSTM does: the first GPU run (2026-12-04) found aten's float32 layers 5e-4 off with it
    on. So the suite turns cuDNN's off."""
    cudnn = torch.backends.cudnn
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, benchmark_limit=cudnn.benchmark_limit,
                     deterministic=cudnn.deterministic, allow_tf32=False):
        yield


@pytest.fixture(autouse=True)
def _seed_and_reset_backend(monkeypatch):
    import s2s_fast
    from s2s_fast import backends

    torch.manual_seed(0)
    # Auto's CPU routing depends on the CPU's vendor (backends.CPU_ATEN_FASTER_TRAINING_OFF_INTEL) and on the cpu
    # backend's product library, chosen by vendor (backends.CPU_ONEDNN_FROM_WORK); the suite routes as on an Intel CPU
    # wherever it runs, and tests/test_cpu_backend.py checks both. (The cpu kernels themselves keep the library the
    # machine chose; tests/test_cpu_backend.py runs them through each.)
    monkeypatch.setattr(backends, "cpu_vendor", lambda: "GenuineIntel")
    monkeypatch.setattr(backends, "cpu_has_avx512", lambda: True)  # CPU_ONEDNN_FROM_WORK's table, not the AVX2 one
    monkeypatch.setattr(s2s_fast.cpu, "products_library", lambda: "aten")
    yield
    s2s_fast.set_backend(None)


@pytest.fixture
def bf16_products():
    """The cpu kernels' float32 products in bfloat16 on any CPU that can run them (csrc/cpu/products.h), every
    product however small; restored afterwards."""
    from s2s_fast import cpu as cpu_backend

    try:
        cpu_backend.force_bf16_products("always")
    except RuntimeError as error:
        pytest.skip(str(error))
    work, bf16_work = torch.ops.s2s_fast.cpu_onednn_from_work(), torch.ops.s2s_fast.cpu_bf16_from_work()
    torch.ops.s2s_fast.cpu_onednn_from_work(0)
    torch.ops.s2s_fast.cpu_bf16_from_work(0)
    yield
    cpu_backend.force_bf16_products("torch")
    torch.ops.s2s_fast.cpu_onednn_from_work(work)
    torch.ops.s2s_fast.cpu_bf16_from_work(bf16_work)
