"""The cpu backend: fused C++ kernels for CPU tensors (csrc/cpu/, built as s2s_fast._cpu), forward and backward,
float32 and float64: additive attention (one query per row or many), for which torch has no fused kernel; the
LSTM and GRU layers, whose backward is faster than torch's CPU RNN backward (one matrix product each for the input
and weight gradients over all steps); and the cells (a layer's single step) and linear, whose products go through
oneDNN on x86 CPUs that are not Intel's, where torch's own (MKL's) float32 GEMM runs at under half its rate
(``products_library``, csrc/cpu/products.h); and dropout, whose mask it makes from a hash of each element's index
and a per-call seed instead of torch's per-element draws (csrc/cpu/dropout.h); and the decoders' choices of the
next tokens without writing the log-probabilities: greedy's (log_softmax_max) and beam search's (beam_candidates);
and the teacher-forced attentional LSTM and GRU decoders (lstm_attention_decoder, gru_attention_decoder), one op
each, whose backward sums the steps' weight and attention gradients without autograd's per-step sums.

Available on CPU tensors when the library was built (every install with a C++ compiler builds it). Auto tries it
first on a CPU (the cells and linear only where its products go through oneDNN and the call is large enough:
s2s_fast.backends.CPU_ONEDNN_FROM_WORK, or CPU_ONEDNN_FROM_WORK_WITHOUT_AVX512 on a CPU without AVX-512; the cells
also at inference while its products run in bfloat16: CPU_BF16_INFERENCE_PREFERS_CPU); dot attention and LSTM
projections go to the aten or reference backend. See s2s_fast.backends for the protocol (``unavailable_reason``,
``OPS``, ``LIMITS``).
"""

from __future__ import annotations

import torch

from . import (additive_attention, beam_candidates, dropout, gru_attention_decoder, gru_cell, gru_layer, linear,
               log_softmax_max, lstm_attention_decoder, lstm_cell, lstm_layer)
from .compiled import MISSING_REASON, extension_module

OPS = {
    "additive_attention": additive_attention.additive_attention,
    "lstm_layer": lstm_layer.lstm_layer,
    "gru_layer": gru_layer.gru_layer,
    "lstm_cell": lstm_cell.lstm_cell,
    "gru_cell": gru_cell.gru_cell,
    "linear": linear.linear,
    "dropout": dropout.dropout,
    "log_softmax_max": log_softmax_max.log_softmax_max,
    "beam_candidates": beam_candidates.beam_candidates,
    "lstm_attention_decoder": lstm_attention_decoder.lstm_attention_decoder,
    "gru_attention_decoder": gru_attention_decoder.gru_attention_decoder,
}
LIMITS = {
    "additive_attention": additive_attention.additive_attention_limit,
    "lstm_layer": lstm_layer.lstm_layer_limit,
    "gru_layer": gru_layer.gru_layer_limit,
    "lstm_cell": lstm_cell.lstm_cell_limit,
    "gru_cell": gru_cell.gru_cell_limit,
    "linear": linear.linear_limit,
    "dropout": dropout.dropout_limit,
    "log_softmax_max": log_softmax_max.log_softmax_max_limit,
    "beam_candidates": beam_candidates.beam_candidates_limit,
    "lstm_attention_decoder": lstm_attention_decoder.lstm_attention_decoder_limit,
    "gru_attention_decoder": gru_attention_decoder.gru_attention_decoder_limit,
}

if extension_module is not None:
    additive_attention.register()
    lstm_layer.register()
    gru_layer.register()
    linear.register()
    dropout.register()
    log_softmax_max.register()
    beam_candidates.register()
    lstm_attention_decoder.register()
    gru_attention_decoder.register()

# The library of the kernels' float32 products, "onednn" or "aten", as csrc/cpu/products.h chose it at load time;
# kept here so that auto can read it under torch.compile (use_products changes both).
_products = torch.ops.s2s_fast.cpu_products() if extension_module is not None else "aten"


def products_library() -> str:
    """"onednn" or "aten": the library through which the cpu kernels run their float32 matrix products."""
    return _products


def use_products(library: str) -> str:
    """Run the cpu kernels' float32 products through ``library`` ("onednn" or "aten") from now on, in the whole
    process; returns the library chosen before. Raises RuntimeError for another name, or "onednn" without it."""
    global _products
    if extension_module is None:
        raise RuntimeError(MISSING_REASON)
    before = _products
    _products = torch.ops.s2s_fast.cpu_products(library)
    return before


def bf16_products() -> bool:
    """Whether the cpu kernels' float32 products that go through oneDNN run in bfloat16 now (operands rounded to
    bfloat16, sums in float32, results rounded to bfloat16): where torch's switch for float32 products on oneDNN asks
    for it (``torch.set_float32_matmul_precision("medium")`` or ``torch.backends.mkldnn.matmul.fp32_precision =
    "bf16"``) on a CPU with bfloat16 products in hardware (AVX512-BF16 or AMX-BF16), or as force_bf16_products set it.
    See csrc/cpu/products.h."""
    return extension_module is not None and torch.ops.s2s_fast.cpu_bf16_products()


def force_bf16_products(force: str) -> None:
    """Run the cpu kernels' float32 products through oneDNN in bfloat16 "always" (on any x86 CPU with AVX-512 BW, VL
    and DQ, emulated where AVX512-BF16 is missing), "never", or as torch's switch says ("torch", the default), in the
    whole process. Raises RuntimeError for another word, or "always" where oneDNN cannot."""
    if extension_module is None:
        raise RuntimeError(MISSING_REASON)
    torch.ops.s2s_fast.cpu_bf16_products(force)


def clear_kept_weights() -> int:
    """Drop the packed bfloat16 weights the cpu kernels keep across inference calls (csrc/cpu/products.h's
    KeptWeights), returning how many there were. A weight is known again by its storage, shape, version and a sample
    of 64 of its values, so an update in place is seen; call this after changing a weight through an alias with a
    version of its own (``.data``, numpy, DLPack) in a way that might miss that sample, or to free their memory."""
    if extension_module is None:
        return 0
    return int(torch.ops.s2s_fast.cpu_clear_kept_weights())


def keep_weights(keep: bool | None = None) -> bool:
    """Whether the cpu kernels' inference calls keep their packed bfloat16 weights for the next (on by default), after
    setting it when ``keep`` is given; turning it off drops what they kept (clear_kept_weights)."""
    if extension_module is None:
        return False
    return bool(torch.ops.s2s_fast.cpu_keep_weights(keep))


def unavailable_reason(device: torch.device) -> str | None:
    """None for CPU tensors when the library is built; otherwise why not (and how to build it)."""
    if MISSING_REASON is not None:
        return MISSING_REASON
    if device.type != "cpu":
        return f"the cpu backend runs on CPU tensors only, not {device.type}"
    return None
