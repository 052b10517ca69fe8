"""Public ops. Each validates its inputs once, here, then dispatches to a backend (see :mod:`s2s_fast.backends`).

Every op accepts ``backend=None | "auto" | "cuda" | "triton" | "cpu" | "aten" | "reference"``. Floating inputs of
one call share one dtype (float16, bfloat16, float32 or float64) and one device. Under autocast, floating inputs other
than float64 are first cast to the autocast dtype where torch's autocast casts the op's torch counterpart (on CUDA
every op; on a CPU all but the cells and the GRU layer, see _AUTOCAST_KEEPS). Bad tensor arguments raise InputError
(a ValueError) or InputTypeError (a TypeError), both also RuntimeErrors as torch's own errors for the same mistakes are.
"""

from __future__ import annotations

import functools
import numbers
from typing import Sequence

import torch

from . import backends, transforms
from .reference.additive_attention import one_query_per_row
from .reference.time_loop import with_empty_rows, without_padding

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class InputError(ValueError, RuntimeError):
    """A tensor argument of the wrong shape, size, device or values. A ValueError naming the argument; also a
    RuntimeError, the class torch reports those mistakes with, so code that catches torch.nn's errors catches it."""


class InputTypeError(TypeError, ValueError, RuntimeError):
    """A tensor argument of the wrong dtype, or not a tensor. A TypeError naming the argument; also a ValueError and
    a RuntimeError, as torch.nn.LSTM / GRU (ValueError) and torch's cells (RuntimeError) report a wrong dtype."""


def _format_shape(shape: Sequence[int]) -> str:
    """A shape as the error messages write it: [2, 3, 4]."""
    return "[" + ", ".join(str(size) for size in shape) + "]"


def _require_tensor(op: str, name: str, value, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, torch.Tensor):
        what = "a tensor or None" if optional else "a tensor"
        raise InputTypeError(f"{op}: {name} must be {what}, got {type(value).__name__}")


def _require_shape(op: str, name: str, t: torch.Tensor | None, expected: Sequence, meaning: str) -> None:
    if t is not None and tuple(t.shape) != tuple(expected):
        raise InputError(f"{op}: {name} must have shape {meaning} = {_format_shape(expected)}, "
                         f"got {_format_shape(t.shape)}")


def _require_dim(op: str, name: str, t: torch.Tensor, dims: Sequence[int], meaning: str) -> None:
    if t.dim() not in dims:
        raise InputError(f"{op}: {name} must be {meaning}, got a {t.dim()}-d tensor of shape "
                         f"{_format_shape(t.shape)}")


def _float_tensors(op: str, named: dict) -> tuple[torch.dtype, torch.device]:
    """Check floating tensors (None skipped) share one supported dtype and one device; return them."""
    first_name = first = dtype = device = None
    for name, t in named.items():
        if t is None:
            continue
        if first is None:
            first_name, first, dtype, device = name, t, t.dtype, t.device
            if dtype not in FLOAT_DTYPES:
                raise InputTypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {dtype}")
            continue
        if t.dtype != dtype:
            if t.dtype not in FLOAT_DTYPES:
                raise InputTypeError(f"{op}: {name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
            raise InputTypeError(f"{op}: {name} has dtype {t.dtype} but {first_name} has {dtype}; "
                                 "all floating inputs must share one dtype")
        if t.device != device:
            raise InputError(f"{op}: {name} is on {t.device} but {first_name} is on {device}; "
                             "all inputs must be on one device")
    return dtype, device


def _has_autocast(device_type: str) -> bool:
    try:
        return torch.amp.is_autocast_available(device_type)
    except RuntimeError:  # a device type this torch does not know
        return False


# Device types with autocast, asked once here: torch 2.11's Dynamo cannot trace torch.amp.is_autocast_available (a
# graph break inside every op under torch.compile), and the answer depends on the device type alone. Eager calls on
# another device type (a privateuse1 backend named after import) ask torch.
_AUTOCAST_DEVICE_TYPES = frozenset(
    t for t in ("cpu", "cuda", "xpu", "mps", "hpu", "mtia", "maia", "xla", torch._C._get_privateuse1_backend_name())
    if _has_autocast(t))


# Ops whose torch counterparts torch's autocast leaves in their inputs' dtype on a device type: under
# torch.autocast("cpu") torch.nn.GRU, GRUCell and LSTMCell return float32 while torch.nn.LSTM and Linear return the
# autocast dtype (torch 2.13); on CUDA it casts all of them. The drop-ins return what torch's do. (Torch's run their
# products in the autocast dtype inside, by accident of autocast reaching the ops they call; these run in float32
# throughout, s2s_fast.functional._call.) Their inputs of several dtypes under autocast (a state that came out of an
# autocast product, bfloat16, beside a float32 input) meet in the widest, as torch's type promotion has them.
_AUTOCAST_KEEPS = {"cpu": frozenset({"lstm_cell", "gru_cell", "gru_layer"})}


def _autocast(op: str, tensors: tuple) -> tuple:
    """Cast floating tensors to the autocast dtype when autocast is on for their device and casts ``op`` there, as
    torch's autocast casts them: float64 stays float64, and a device without autocast (meta) is left alone. An op
    autocast leaves in its dtype there (_AUTOCAST_KEEPS) gets its float16/bfloat16/float32 inputs in the widest of
    theirs."""
    for first in tensors:
        if isinstance(first, torch.Tensor):
            break
    else:
        return tensors
    device_type = first.device.type
    if device_type in _AUTOCAST_DEVICE_TYPES:
        if not torch.is_autocast_enabled(device_type):
            return tensors
    elif torch.compiler.is_compiling() or not _has_autocast(device_type) or not torch.is_autocast_enabled(device_type):
        return tensors
    castable = [isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64 for t in tensors]
    if op in _AUTOCAST_KEEPS.get(device_type, ()):
        dtypes = {t.dtype for t, cast in zip(tensors, castable) if cast}
        if len(dtypes) < 2:
            return tensors
        dtype = functools.reduce(torch.promote_types, dtypes)
    else:
        dtype = torch.get_autocast_dtype(device_type)
    return tuple(t.to(dtype) if cast else t for t, cast in zip(tensors, castable))


def _check_mask(op: str, mask, batch: int, keys: int, device: torch.device) -> None:
    _require_tensor(op, "mask", mask, optional=True)
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise InputTypeError(f"{op}: mask must be a bool tensor (True = attend), got {mask.dtype}")
    _require_shape(op, "mask", mask, (batch, keys), "[B, Tk]")
    if mask.device != device:
        raise InputError(f"{op}: mask is on {mask.device} but the other inputs are on {device}")


# Integer dtypes whose min and max torch has no kernels for: lengths of these are read as int64.
WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def integer_dtype(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` holds integers, as lengths and token ids must (not bool, floating or complex)."""
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _check_lengths(op: str, lengths, batch: int, steps: int, device: torch.device):
    """Validate per-row lengths and return them as int64 on ``device`` (None stays None)."""
    _require_tensor(op, "lengths", lengths, optional=True)
    if lengths is None:
        return None
    if not integer_dtype(lengths.dtype):
        raise InputTypeError(f"{op}: lengths must be an integer tensor, got {lengths.dtype}")
    _require_shape(op, "lengths", lengths, (batch,), "[B]")
    if lengths.is_meta:  # no values to check, and none to copy to a device that holds values
        if device.type != "meta":
            raise InputError(f"{op}: lengths is on the meta device, which holds no values, but the inputs are on "
                             f"{device}")
        return lengths.to(dtype=torch.int64)
    if lengths.dtype in WIDE_UNSIGNED:  # torch's min and max have no kernels for these
        lengths = lengths.to(torch.int64)
    if device.type == "cpu" and lengths.device.type != "cpu":
        # The CPU kernels read them on the host: the copy waits for them anyway, so the check runs there too, with
        # its message (a device-side assert would leave the GPU's context unusable).
        lengths = lengths.to("cpu")
    if batch and lengths.device.type == "cpu" and not torch.compiler.is_compiling():
        low, high = int(lengths.min()), int(lengths.max())
        if low < 0 or high > steps:
            raise InputError(f"{op}: lengths must lie in [0, T] = [0, {steps}], got min {low} and max {high}")
    elif batch:
        # On a GPU the check runs there: no host sync, and it works inside CUDA-graph capture. A row out of
        # range stops the next synchronising call with this message (a device-side assert). Under torch.compile
        # the same assert is an op of the graph (a host check would need the values while tracing), and its message
        # leaves T out: formatting a traced size would pin it (a recompile for every new length).
        bound = "T" if torch.compiler.is_compiling() else f"T = {steps}"
        torch._assert_async(((lengths >= 0) & (lengths <= steps)).all(), f"{op}: lengths must lie in [0, {bound}]")
    # Non-blocking only onto a device: a copy from a GPU into CPU memory could still be on its way when the CPU
    # kernels read it.
    return lengths.to(device=device, dtype=torch.int64, non_blocking=device.type != "cpu")


def _check_cell(op: str, gates: int, input, hx, weight_ih, weight_hh, bias_ih, bias_hh, cx=None, weight_hr=None) -> None:
    """Cell shapes; with a projection weight_hr [P, H] (LSTM), hx and weight_hh's columns have P, cx has H. The
    messages' meanings are formatted only when a check fails (these checks run on every decoder step)."""
    names = dict(input=input, hx=hx, cx=cx, weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih,
                 bias_hh=bias_hh, weight_hr=weight_hr)
    for name, value in names.items():
        if not isinstance(value, torch.Tensor):
            _require_tensor(op, name, value, optional=name in ("bias_ih", "bias_hh", "weight_hr")
                            or (name == "cx" and gates == 3))
    _float_tensors(op, names)
    _require_dim(op, "input", input, (2,), "[B, I] (2-d)")
    if weight_hr is None:
        _require_dim(op, "weight_hh", weight_hh, (2,), f"[{gates}H, H] (2-d)")
        hidden = output = weight_hh.shape[1]
    else:
        _require_dim(op, "weight_hr", weight_hr, (2,), "[P, H] (2-d)")
        output, hidden = weight_hr.shape
        if not 0 < output < hidden:
            raise InputError(f"{op}: weight_hr must be [P, H] with 0 < P < H, got {_format_shape(weight_hr.shape)}")
    batch, input_size = input.shape
    rows = gates * hidden
    if (weight_hh.shape == (rows, output) and weight_ih.shape == (rows, input_size) and hx.shape == (batch, output)
            and (bias_ih is None or bias_ih.shape == (rows,)) and (bias_hh is None or bias_hh.shape == (rows,))
            and (cx is None or cx.shape == (batch, hidden))):
        return
    if weight_hr is None:
        hh_meaning, hx_meaning = f"[{gates}H, H] with H = {hidden}", "[B, H] (B from input, H from weight_hh)"
    else:
        hh_meaning, hx_meaning = f"[{gates}H, P] (H, P from weight_hr)", "[B, P] (B from input, P from weight_hr)"
    _require_shape(op, "weight_hh", weight_hh, (rows, output), hh_meaning)
    _require_shape(op, "weight_ih", weight_ih, (rows, input_size), f"[{gates}H, I] (I from input)")
    _require_shape(op, "bias_ih", bias_ih, (rows,), f"[{gates}H]")
    _require_shape(op, "bias_hh", bias_hh, (rows,), f"[{gates}H]")
    _require_shape(op, "hx", hx, (batch, output), hx_meaning)
    _require_shape(op, "cx", cx, (batch, hidden), "[B, H] (B from input, H from weight_hh)")


def _refuse_jit_trace(op: str) -> None:
    """torch.jit.trace records one call's path through Python: the backend chosen for its sizes, branches on the
    lengths' values (whether a row has padding), a layer's steps unrolled for one T. Replayed on other inputs that
    record runs on silently or fails on its own list sizes, so the ops refuse to be recorded."""
    if not torch.compiler.is_compiling() and torch.jit.is_tracing():
        raise NotImplementedError(
            f"s2s_fast.functional.{op}: torch.jit.trace cannot record s2s_fast's ops (it would freeze the backend "
            "and the paths chosen for this call's sizes and lengths); use torch.compile or torch.export, which trace "
            "them whole")


def _dispatch(op: str, device: torch.device, args: tuple, backend: str | None):
    _refuse_jit_trace(op)
    _, impl = backends.resolve(op, device, args, backend)
    return _call(op, device, impl, args)


def _call(op: str, device: torch.device, impl, args: tuple):
    """impl(*args); an op autocast leaves in its dtype there (_AUTOCAST_KEEPS) runs with autocast off, so that the
    products inside it (a C++ kernel's too) stay in that dtype, as inside torch's own op."""
    if op in _AUTOCAST_KEEPS.get(device.type, ()) and torch.is_autocast_enabled(device.type):
        with torch.autocast(device.type, enabled=False):
            return impl(*args)
    return impl(*args)


def _dispatch_layer(op: str, args: tuple, lengths, backend: str | None):
    """_dispatch for lstm_layer and gru_layer (args[0] the input, then the states; ``lengths`` the one among args): a
    backend whose layer would read them gets the padding and the initial state of a row of length 0 as zeros, and
    such a row its state as given back as its final one (reference.time_loop.without_padding), so that what a caller
    leaves there (NaN included) never reaches a gradient (see backends.LAYERS_NEVER_READ_PADDING)."""
    _refuse_jit_trace(op)
    device = args[0].device
    name, impl = backends.resolve(op, device, args, backend)
    if lengths is None or name in backends.LAYERS_NEVER_READ_PADDING or backends.runs_reference_layer(op, impl):
        return _call(op, device, impl, args)
    states = 2 if op == "lstm_layer" else 1  # hx (and an LSTM's cx): args[1:1 + states]
    given = args[1:1 + states]
    input, run_states = without_padding(args[0], given, lengths)
    output, *finals = _call(op, device, impl, (input, *run_states, *args[1 + states:]))
    return (output, *with_empty_rows(tuple(finals), given, lengths))


def _dispatch_attention(op: str, args: tuple, backend: str | None):
    """_dispatch for an attention op (args[0] the query): the backend gets a [B, D] query as [B, 1, D]."""
    return one_query_per_row(lambda *call: _dispatch(op, args[0].device, call, backend), *args)


def lstm_cell(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, backend=None):
    """One LSTM step with torch.nn.LSTMCell's gate order (i, f, g, o).

    Args:
        input: [B, I]. hx, cx: [B, H]. weight_ih: [4H, I]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.
        backend: backend name; None follows the current selection (see s2s_fast.backends).

    Returns:
        (hy [B, H], cy [B, H]).
    """
    args = _autocast("lstm_cell", (input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh))
    input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh = args
    _check_cell("lstm_cell", 4, input, hx, weight_ih, weight_hh, bias_ih, bias_hh, cx=cx)
    return _dispatch("lstm_cell", input.device, args, backend)


def gru_cell(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, backend=None):
    """One GRU step with torch.nn.GRUCell's gate order (r, z, n).

    Args:
        input: [B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.
        backend: backend name; None follows the current selection.

    Returns:
        hy [B, H].
    """
    args = _autocast("gru_cell", (input, hx, weight_ih, weight_hh, bias_ih, bias_hh))
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh = args
    _check_cell("gru_cell", 3, input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    return _dispatch("gru_cell", input.device, args, backend)


def _check_layer(op: str, gates: int, input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse,
                 cx=None, weight_hr=None):
    _require_tensor(op, "input", input)
    _require_dim(op, "input", input, (3,), "[T, B, I] (3-d, time-major)")
    if not isinstance(reverse, bool):
        raise TypeError(f"{op}: reverse must be a bool, got {type(reverse).__name__}")
    step_input = input[0] if input.shape[0] else input.new_zeros(input.shape[1:])
    _check_cell(op, gates, step_input, hx, weight_ih, weight_hh, bias_ih, bias_hh, cx=cx, weight_hr=weight_hr)
    return _check_lengths(op, lengths, input.shape[1], input.shape[0], input.device)


def lstm_layer(input, hx, cx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False,
               weight_hr=None, *, backend=None):
    """One LSTM layer, one direction, over a padded time-major sequence.

    Row b runs steps 0..lengths[b]-1 (reverse: lengths[b]-1..0); its output is zero past its end and its final
    state is taken after its last valid step (the initial state when its length is 0). With a projection
    (torch.nn.LSTM's proj_size P > 0), each step's hidden state is weight_hr @ (o * tanh(c)), of size P.

    Args:
        input: [T, B, I]. hx: [B, H] ([B, P] with weight_hr), cx: [B, H] initial state. weight_ih: [4H, I].
        weight_hh: [4H, H] ([4H, P] with weight_hr). bias_ih, bias_hh: [4H] or None.
        lengths: integer [B] in [0, T], on any device, or None (all T).
        reverse: run from each row's last valid step back to step 0.
        weight_hr: [P, H] projection with 0 < P < H, or None.
        backend: backend name; None follows the current selection.

    Returns:
        (output [T, B, H] ([T, B, P] with weight_hr), hy like hx, cy [B, H]).
    """
    input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = _autocast(
        "lstm_layer", (input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr))
    lengths = _check_layer("lstm_layer", 4, input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse,
                           cx=cx, weight_hr=weight_hr)
    args = (input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, weight_hr)
    return _dispatch_layer("lstm_layer", args, lengths, backend)


def gru_layer(input, hx, weight_ih, weight_hh, bias_ih=None, bias_hh=None, lengths=None, reverse=False, *,
              backend=None):
    """One GRU layer, one direction, over a padded time-major sequence (lengths as in lstm_layer).

    Args:
        input: [T, B, I]. hx: [B, H]. weight_ih: [3H, I]. weight_hh: [3H, H]. bias_ih, bias_hh: [3H] or None.
        lengths: integer [B] in [0, T] or None. reverse: run backwards. backend: backend name or None.

    Returns:
        (output [T, B, H], hy [B, H]).
    """
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh = _autocast(
        "gru_layer", (input, hx, weight_ih, weight_hh, bias_ih, bias_hh))
    lengths = _check_layer("gru_layer", 3, input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse)
    args = (input, hx, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse)
    return _dispatch_layer("gru_layer", args, lengths, backend)


def _check_attention(op: str, query, keys, values, mask, query_name: str, key_name: str, extra: dict) -> None:
    for name, value in ((query_name, query), (key_name, keys), ("values", values), *extra.items()):
        _require_tensor(op, name, value)
    _, device = _float_tensors(op, {query_name: query, key_name: keys, "values": values, **extra})
    _require_dim(op, query_name, query, (2, 3), "[B, D] (one query per row) or [B, Tq, D] (3-d)")
    _require_dim(op, key_name, keys, (3,), "[B, Tk, D] (3-d)")
    _require_dim(op, "values", values, (3,), "[B, Tk, Dv] (3-d)")
    batch, key_len, width = keys.shape
    if query.shape[0] != batch or query.shape[-1] != width:
        expected = "[B, D]" if query.dim() == 2 else "[B, Tq, D]"
        raise InputError(f"{op}: {query_name} must have shape {expected} with B = {batch} and D = {width} "
                         f"(from {key_name} {_format_shape(keys.shape)}), got {_format_shape(query.shape)}")
    if values.shape[:2] != (batch, key_len):
        raise InputError(f"{op}: values must have shape [B, Tk, Dv] with B = {batch} and Tk = {key_len} "
                         f"(from {key_name}), got {_format_shape(values.shape)}")
    _check_mask(op, mask, batch, key_len, device)


def additive_attention(query_proj, key_proj, v, values, mask=None, *, backend=None):
    """Additive (Bahdanau) attention over projected queries and keys.

    scores[b, q, k] = sum_a v[a] * tanh(query_proj[b, q, a] + key_proj[b, k, a]); weights = softmax over k of the
    scores, with masked keys left out; context = weights @ values. A row with no valid key gives all-zero weights
    and a zero context. The keys and values of masked keys must be finite: the cpu and cuda backends never read
    them, but the reference and triton multiply them by a zero weight (0 * NaN is NaN), and a NaN or inf there
    spreads to the context and to every gradient. Zeroing them in every call would cost the reference 5 % of a g2p
    training step; s2s_fast's Seq2Seq keeps its encoder's padding at zero.

    Args:
        query_proj: [B, A] (one query per row, a decoder step) or [B, Tq, A].
        key_proj: [B, Tk, A]. v: [A]. values: [B, Tk, Dv].
        mask: bool [B, Tk], True = attend, or None (all keys).
        backend: backend name; None follows the current selection.

    Returns:
        (context [B, Dv] or [B, Tq, Dv], weights [B, Tk] or [B, Tq, Tk]).
    """
    op = "additive_attention"
    query_proj, key_proj, v, values = _autocast(op, (query_proj, key_proj, v, values))
    _check_attention(op, query_proj, key_proj, values, mask, "query_proj", "key_proj", {"v": v})
    _require_shape(op, "v", v, (key_proj.shape[-1],), "[A] (A from key_proj)")
    return _dispatch_attention(op, (query_proj, key_proj, v, values, mask), backend)


def dot_attention(query, keys, values, mask=None, *, backend=None):
    """Dot-product (Luong) attention: scores[b, q, k] = query[b, q] . keys[b, k], masked softmax, weighted sum.

    Luong's "dot" score passes the encoder states as keys; his "general" score passes keys projected by W_a
    (see s2s_fast.nn.LuongAttention). Masking and empty rows as in additive_attention.

    Args:
        query: [B, D] or [B, Tq, D]. keys: [B, Tk, D]. values: [B, Tk, Dv]. mask: bool [B, Tk] or None.
        backend: backend name; None follows the current selection.

    Returns:
        (context [B, Dv] or [B, Tq, Dv], weights [B, Tk] or [B, Tq, Tk]).
    """
    op = "dot_attention"
    query, keys, values = _autocast(op, (query, keys, values))
    _check_attention(op, query, keys, values, mask, "query", "keys", {})
    return _dispatch_attention(op, (query, keys, values, mask), backend)


def lstm_attention_decoder(input, hx, cx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v,
                           values, mask, combine_weight, dropout_mask=None, *, backend=None):
    """A teacher-forced attentional LSTM decoder over a whole target sequence: one LSTM layer with input feeding
    (Luong et al. 2015) and additive attention (Bahdanau et al.), the training forward of s2s_fast.models.Seq2Seq.

    For t = 0 .. T-1, from h_{-1} = hx, c_{-1} = cx, feed_{-1} = feed:
        h_t, c_t = lstm_cell([input_t; feed_{t-1}], h_{t-1}, c_{t-1}, weight_ih, weight_hh, bias_ih, bias_hh)
        context_t, weights_t = additive_attention(h_t @ query_weight^T, key_proj, v, values, mask)
        feed_t = output_t = tanh([h_t; context_t] @ combine_weight^T) * dropout_mask_t (1 without a mask)
    Backends without a fused implementation (all but cpu) run these ops step by step, each on that backend (auto:
    each op's auto choice).

    Args:
        input: [T, B, E] (time-major; the embedded previous tokens). hx, cx: [B, H] initial state. feed: [B, H]
        initial attentional state. weight_ih: [4H, E + H]. weight_hh: [4H, H]. bias_ih, bias_hh: [4H] or None.
        query_weight: [A, H]. key_proj: [B, S, A] (the keys projected once). v: [A]. values: [B, S, Dv].
        mask: bool [B, S], True = attend, or None. combine_weight: [H, H + Dv].
        dropout_mask: [T, B, H] multiplying each step's attentional state (0 or 1 / (1 - p) for dropout), or None.
        backend: backend name; None follows the current selection.

    Returns:
        (output [T, B, H], hy [B, H], cy [B, H], weights [T, B, S]).
    """
    op = "lstm_attention_decoder"
    (input, hx, cx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values, combine_weight,
     dropout_mask) = _autocast(op, (input, hx, cx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj,
                                v, values, combine_weight, dropout_mask))
    device = _check_attention_decoder(
        op, 4, dict(input=input, hx=hx, cx=cx, feed=feed, weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih,
                    bias_hh=bias_hh, query_weight=query_weight, key_proj=key_proj, v=v, values=values,
                    combine_weight=combine_weight, dropout_mask=dropout_mask), mask)
    args = (input, hx, cx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values, mask,
            combine_weight, dropout_mask)
    return _dispatch(op, device, args, backend)


def gru_attention_decoder(input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values,
                          mask, combine_weight, dropout_mask=None, *, backend=None):
    """lstm_attention_decoder with a GRU cell (torch.nn.GRUCell's gate order r, z, n): for t = 0 .. T-1,
        h_t = gru_cell([input_t; feed_{t-1}], h_{t-1}, weight_ih, weight_hh, bias_ih, bias_hh)
    then the same attention, combination and dropout mask. weight_ih: [3H, E + H]. weight_hh: [3H, H]. bias_ih,
    bias_hh: [3H] or None. The other arguments as lstm_attention_decoder's.

    Returns:
        (output [T, B, H], hy [B, H], weights [T, B, S]).
    """
    op = "gru_attention_decoder"
    (input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values, combine_weight,
     dropout_mask) = _autocast(op, (input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v,
                                values, combine_weight, dropout_mask))
    device = _check_attention_decoder(
        op, 3, dict(input=input, hx=hx, feed=feed, weight_ih=weight_ih, weight_hh=weight_hh, bias_ih=bias_ih,
                    bias_hh=bias_hh, query_weight=query_weight, key_proj=key_proj, v=v, values=values,
                    combine_weight=combine_weight, dropout_mask=dropout_mask), mask)
    args = (input, hx, feed, weight_ih, weight_hh, bias_ih, bias_hh, query_weight, key_proj, v, values, mask,
            combine_weight, dropout_mask)
    return _dispatch(op, device, args, backend)


def _check_attention_decoder(op: str, gates: int, named: dict, mask) -> torch.device:
    """The attentional decoders' argument checks (``gates``: 4 for the LSTM, 3 for the GRU; ``named``: every
    floating argument by name, cx only for the LSTM); returns the device."""
    for name, value in named.items():
        _require_tensor(op, name, value, optional=name in ("bias_ih", "bias_hh", "dropout_mask"))
    _, device = _float_tensors(op, named)
    input, hx, key_proj, values = named["input"], named["hx"], named["key_proj"], named["values"]
    _require_dim(op, "input", input, (3,), "[T, B, E] (3-d, time-major)")
    _require_dim(op, "hx", hx, (2,), "[B, H] (2-d)")
    _require_dim(op, "key_proj", key_proj, (3,), "[B, S, A] (3-d)")
    _require_dim(op, "values", values, (3,), "[B, S, Dv] (3-d)")
    steps, batch, embed = input.shape
    hidden = hx.shape[1]
    keys, attn = key_proj.shape[1:]
    value_size = values.shape[2]
    rows, g = gates * hidden, f"{gates}H"
    expected = {
        "hx": ((batch, hidden), "[B, H] (B from input)"),
        "cx": ((batch, hidden), "[B, H] (B from input, H from hx)"),
        "feed": ((batch, hidden), "[B, H] (B from input, H from hx)"),
        "weight_ih": ((rows, embed + hidden), f"[{g}, E + H] (E from input, H from hx)"),
        "weight_hh": ((rows, hidden), f"[{g}, H] (H from hx)"),
        "bias_ih": ((rows,), f"[{g}]"), "bias_hh": ((rows,), f"[{g}]"),
        "query_weight": ((attn, hidden), "[A, H] (A from key_proj, H from hx)"),
        "key_proj": ((batch, keys, attn), "[B, S, A] (B from input)"),
        "v": ((attn,), "[A] (A from key_proj)"),
        "values": ((batch, keys, value_size), "[B, S, Dv] (B from input, S from key_proj)"),
        "combine_weight": ((hidden, hidden + value_size), "[H, H + Dv] (H from hx, Dv from values)"),
        "dropout_mask": ((steps, batch, hidden), "[T, B, H] (T, B from input, H from hx)"),
    }
    for name, tensor in named.items():
        if name in expected:
            _require_shape(op, name, tensor, *expected[name])
    _check_mask(op, mask, batch, keys, device)
    return device


def linear(input, weight, bias=None, *, backend=None):
    """input @ weight^T + bias, as torch.nn.functional.linear: the projections of the Seq2Seq model (the output layer
    over the vocabulary, the input-feeding combination, the attention's query and key projections).

    Torch's own linear serves it (the reference backend) except on the cpu backend, which runs the products, forward
    and backward, through oneDNN where torch's float32 GEMM (MKL) is slow: x86 CPUs that are not Intel's.

    Args:
        input: [..., K] (at least 1-d). weight: [N, K]. bias: [N] or None.
        backend: backend name; None follows the current selection.

    Returns:
        [..., N].
    """
    op = "linear"
    input, weight, bias = _autocast(op, (input, weight, bias))
    _require_tensor(op, "input", input)
    _require_tensor(op, "weight", weight)
    _require_tensor(op, "bias", bias, optional=True)
    _float_tensors(op, {"input": input, "weight": weight, "bias": bias})
    _require_dim(op, "weight", weight, (2,), "[N, K] (2-d)")
    if input.dim() == 0 or input.shape[-1] != weight.shape[1]:
        raise InputError(f"{op}: input must be [..., K] with K = {weight.shape[1]} (from weight [N, K]), got "
                         f"shape {_format_shape(input.shape)}")
    _require_shape(op, "bias", bias, (weight.shape[0],), "[N] (N from weight)")
    return _dispatch(op, input.device, (input, weight, bias), backend)


def dropout(input, p=0.5, training=True, *, backend=None):
    """Dropout as torch.nn.functional.dropout: in training, each element zeroed with probability p and the others
    scaled by 1 / (1 - p); outside training (or with p = 0) the input itself.

    The cpu backend makes the mask from a hash of each element's index and a seed drawn from torch's generator (so
    torch.manual_seed repeats it), several times as fast as torch's CPU dropout, whose mask draws cost about 12 ns an
    element; its masks are not torch's for the same seed. Elsewhere torch's own dropout serves it.

    Args:
        input: a floating tensor of any shape. p: the probability of zeroing, in [0, 1]. training: apply it or not.
        backend: backend name; None follows the current selection.

    Returns:
        A tensor of input's shape and dtype (on the cpu backend contiguous, whatever input's strides).
    """
    op = "dropout"
    _require_tensor(op, "input", input)
    if isinstance(p, torch.Tensor) and p.dim() == 0 and not p.dtype.is_complex and p.dtype != torch.bool:
        p = p.item()
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: p must be a number in [0, 1], got {p!r}")
    if not isinstance(training, bool):
        raise TypeError(f"{op}: training must be a bool, got {type(training).__name__}")
    # The edge cases, once for every backend, as torch's dropout takes them: an integer tensor passes where nothing
    # is dropped (torch.nn.Dropout in eval mode), and is refused where something would be.
    if not training or p == 0.0:
        return input
    _float_tensors(op, {"input": input})
    if p == 1.0:
        return input * 0.0  # zero, with NaN for NaN and infinite inputs
    return _dispatch(op, input.device, (input, float(p), training), backend)


def log_softmax_max(logits, banned=None, *, backend=None):
    """Each row's most probable token and its log-probability: torch.log_softmax(logits, -1).max(-1), with a
    non-finite log-probability made -inf (a row holding NaN or +inf, or only -inf, gives -inf), the token ``banned``
    counting as -inf (its probability stays in the normalisation, as when log_softmax's output is masked), and the
    first index among equal maxima (so a row whose best is -inf gives token 0; the cpu backend compares the logits,
    so where rounding makes two log-probabilities equal it takes the larger logit). Greedy decoding's choice of each
    next token. Computed in at least float32 (low-precision logits are upcast). Not differentiable: logits that record a
    gradient are refused.

    The cpu backend reads each row twice (its maximum, then its sum of exponentials) without writing the [B, V]
    log-probabilities; elsewhere torch's log_softmax and max serve it.

    Args:
        logits: [B, V] with V >= 1. banned: a token id in [0, V) never chosen, or None.
        backend: backend name; None follows the current selection.

    Returns:
        (log_prob [B] in float32, or float64 for float64 logits; token [B] int64).
    """
    op = "log_softmax_max"
    logits, banned = _decoding_logits(op, logits, banned)
    return _dispatch(op, logits.device, (logits, banned), backend)


def beam_candidates(logits, scores, count, banned=None, *, backend=None):
    """Beam search's ranking of one-token extensions: with K beams per input, beam k of input b extended by token v
    scores ``scores[b, k] + log_softmax(logits[b*K + k])[v]`` in float64 (log-probabilities as
    :func:`log_softmax_max` takes them: non-finite ones -inf, the token ``banned`` -inf), and each input gets its
    ``count`` best, as ``totals.view(B, K*V).topk(count)`` does (NaN above every number; equal totals in no
    guaranteed order on the reference, by index on the cpu backend). Computed in at least float32. Not
    differentiable: logits that record a gradient are refused.

    The cpu backend normalises each row in two reads and scans each input's totals once, keeping the best in a heap,
    without writing the log-probabilities or the totals; elsewhere torch's log_softmax, addition and topk serve it.

    Args:
        logits: [B*K, V] with V >= 1, rows grouped by input. scores: float64 [B, K], the beams' scores so far.
        count: extensions kept per input, in [1, K*V]. banned: a token id in [0, V) no extension takes, or None.
        backend: backend name; None follows the current selection.

    Returns:
        (totals float64 [B, count], best first; index int64 [B, count], the flat k * V + v of each).
    """
    op = "beam_candidates"
    logits, banned = _decoding_logits(op, logits, banned)
    if not isinstance(scores, torch.Tensor) or scores.dtype != torch.float64 or scores.dim() != 2:
        raise InputTypeError(f"{op}: scores must be a float64 [B, K] tensor, got "
                             f"{getattr(scores, 'dtype', type(scores).__name__)} of shape "
                             f"{_format_shape(getattr(scores, 'shape', ()))}")
    _refuse_gradient(op, "scores", scores)
    if scores.device != logits.device:
        raise InputError(f"{op}: scores is on {scores.device} but logits on {logits.device}")
    rows = scores.shape[0] * scores.shape[1]
    if logits.shape[0] != rows:
        raise InputError(f"{op}: logits must have shape [B * K, V] = [{rows}, V] (B, K from scores "
                         f"{_format_shape(scores.shape)}), got {_format_shape(logits.shape)}")
    candidates = scores.shape[1] * logits.shape[1]
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or not 1 <= count <= candidates:
        raise ValueError(f"{op}: count must be an integer in [1, K * V] = [1, {candidates}], got {count!r}")
    return _dispatch(op, logits.device, (logits, scores, int(count), banned), backend)


def _refuse_gradient(op: str, name: str, tensor: torch.Tensor) -> None:
    """Raise for an argument of a decoding op that records a gradient: those ops are not differentiable."""
    if tensor.requires_grad and torch.is_grad_enabled():
        raise InputError(f"{op}: not differentiable (a decoding op); call it under torch.no_grad() or on "
                         f"{name}.detach()")


def _decoding_logits(op: str, logits, banned):
    """Check the logits [B, V] and banned token of a decoding op; returns (logits in at least float32, banned)."""
    _require_tensor(op, "logits", logits)
    _float_tensors(op, {"logits": logits})
    _require_dim(op, "logits", logits, (2,), "[B, V] (2-d)")
    vocab = logits.shape[1]
    if vocab == 0:
        raise InputError(f"{op}: logits must have at least one column (V >= 1), got shape "
                         f"{_format_shape(logits.shape)}")
    if banned is not None and (isinstance(banned, bool) or not isinstance(banned, numbers.Integral)
                               or not 0 <= banned < vocab):
        raise ValueError(f"{op}: banned must be None or a token id in [0, {vocab}), got {banned!r}")
    _refuse_gradient(op, "logits", logits)
    return logits.to(torch.promote_types(logits.dtype, torch.float32)), None if banned is None else int(banned)
