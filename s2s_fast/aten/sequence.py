"""One direction of one RNN layer through torch's RNN ops (torch._VF.lstm / gru), shared by lstm_layer and
gru_layer, always in the padded form torch.nn runs for full-length rows (oneDNN on a CPU, cuDNN on a GPU).

Per-row lengths are not run as a packed sequence: torch's CPU kernel for those slices its precomputed input gates
step by step, and the backward of each slice writes a zero tensor of all steps' size (O(T^2) memory traffic, measured
at 15% of a g2p training step). Instead:

- the reverse direction reads each row's valid steps in reverse order (time len - 1 - t at step t, the same index
  putting the outputs back), so both directions run forward from step 0;
- padded steps read zeros (so padding values, NaN included, never enter), their outputs are zeroed, and a row's final
  hidden state is its output at step len - 1 (the initial state when len = 0); reading the input in run order with
  the padding is one row copy (index_select of a padding row for padded steps), and so is putting the output back
  (a gather and masks had cost about 8% of a g2p training step, 2026-12-05);
- an LSTM's final cell state is kept through the padded steps: an extra input feature, 1 on padded steps and 0 on
  valid ones, enters the forget gate with weight +SATURATION and the input gate with -SATURATION, so on a padded
  step f = 1 and i = 0 exactly and c' = 1 * c + 0 * g = c bit for bit, with zero gradient through both gates. On
  valid steps the feature adds exactly 0.
"""

from __future__ import annotations

import torch

from ..reference.time_loop import exact_zero

# Weight of the padding feature in an LSTM's forget (+) and input (-) gates: far past where float sigmoid rounds to
# exactly 1 or 0, small enough that the (discarded) gradient of the feature stays finite.
SATURATION = {torch.float16: 1e4}
DEFAULT_SATURATION = 1e30


def needs_grad(*tensors) -> bool:
    """Whether autograd will record this call (cuDNN then keeps what its backward needs)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def rnn_params(weight_ih, weight_hh, bias_ih, bias_hh, weight_hr=None) -> tuple[list, bool]:
    """torch's flat weight list for one layer direction and whether it has biases (a missing one of the two is
    zero)."""
    params = [weight_ih, weight_hh]
    has_biases = bias_ih is not None or bias_hh is not None
    if has_biases:
        params += [bias_ih if bias_ih is not None else torch.zeros_like(bias_hh),
                   bias_hh if bias_hh is not None else torch.zeros_like(bias_ih)]
    if weight_hr is not None:
        params.append(weight_hr)
    return params, has_biases


def _state_arg(state: tuple):
    """torch's RNN ops take an LSTM's state as a list (h, c), a GRU's as one tensor; each [1, B, *]."""
    return list(state) if len(state) == 2 else state[0]


def _run(rnn, input, state: tuple, params: list, has_biases: bool, train: bool):
    # cuDNN refuses strided states ("rnn: hx is not contiguous", found on the first GPU run); oneDNN takes them.
    states = tuple(s.unsqueeze(0).contiguous() for s in state)
    output, *final = rnn(input, _state_arg(states), params, has_biases, 1, 0.0, train, False, False)
    return output, tuple(f.squeeze(0) for f in final)


def _padding_row_input(input, lstm: bool):
    """input [T, B, I] as rows [T * B + 1, I'] whose last row is what a padded step reads: zeros, and for an LSTM the
    padding feature (see the module docstring) appended as a last column, 0 on every row but that one."""
    steps, batch, width = input.shape
    rows = torch.nn.functional.pad(input.reshape(steps * batch, width), (0, 1 if lstm else 0, 0, 1))
    if lstm:
        rows[-1, -1] = 1  # pad's backward does not read its output: writing it keeps the graph intact
    return rows


def _with_padding_column(weight_ih, dtype):
    """weight_ih with the padding feature's column: -SATURATION into the input gate, +SATURATION into the forget."""
    hidden = weight_ih.shape[0] // 4
    saturation = SATURATION.get(dtype, DEFAULT_SATURATION)
    column = weight_ih.new_zeros(4 * hidden, 1)
    column[:hidden] = -saturation  # input gate
    column[hidden:2 * hidden] = saturation  # forget gate
    return torch.cat([weight_ih, column], dim=1)


def _every_row_full(lengths, steps: int) -> bool:
    """Whether every row runs all ``steps``, asked of CPU lengths only: on a GPU the answer would wait for the device
    (a host sync on every call, and none may happen inside CUDA-graph capture), so there the per-row path runs, which
    is exact for full rows too."""
    return lengths.device.type == "cpu" and bool((lengths == steps).all())


def run_layer(rnn, input: torch.Tensor, state: tuple, params: list, has_biases: bool, lengths,
              reverse: bool) -> tuple[torch.Tensor, tuple]:
    """Run ``rnn`` (torch._VF.lstm or gru) over input [T, B, I] from ``state`` ((hx, cx) or (hx,), [B, *] each).

    Returns (output [T, B, D] zero past each row's end, final states [B, *] each).
    """
    steps, batch = input.shape[:2]
    train = needs_grad(input, *state, *params)
    if steps == 0 or batch == 0:
        # torch's RNN ops refuse empty input. What comes back stays in autograd's graph, as torch.nn's outputs do
        # (zero gradients for the weights, the state's own for the state): an empty slice's sum is an exact 0.
        zero = exact_zero(input, *state, *params)
        return input.new_zeros(steps, batch, state[0].shape[1]) + zero, tuple(s + zero for s in state)
    if lengths is None or _every_row_full(lengths, steps):
        output, final = _run(rnn, input.flip(0) if reverse else input, state, params, has_biases, train)
        return (output.flip(0) if reverse else output), final
    lstm = len(state) == 2
    step = torch.arange(steps, device=input.device).unsqueeze(1)  # [T, 1]
    valid = step < lengths.unsqueeze(0)  # [T, B]
    # Row index of each (step, row) into [T * B + 1] rows: the row's time at that step (reversed for the reverse
    # direction, an involution that also puts the outputs back), the padding row on padded steps. One index_select
    # (a row copy, index_add in the backward) reads the input in run order with the padding, and one puts the outputs
    # back in time order with zeros past each row's end.
    time = torch.where(valid, lengths.unsqueeze(0) - 1 - step, step) if reverse else step.expand(steps, batch)
    rows = torch.arange(batch, device=input.device)
    index = torch.where(valid, time * batch + rows, steps * batch).reshape(-1)
    run_input = _padding_row_input(input, lstm).index_select(0, index).view(steps, batch, -1)
    if lstm:
        params = [_with_padding_column(params[0], input.dtype), *params[1:]]
    # A row of no steps keeps its state as given; it runs from zeros, so that no state of it (inf, NaN, or past the
    # saturation that holds a padded LSTM step) reaches its final cell state or the weights' gradients.
    nonempty = (lengths > 0).unsqueeze(1)
    run_state = tuple(torch.where(nonempty, s, s.new_zeros(())) for s in state)
    output, final = _run(rnn, run_input, run_state, params, has_biases, train)
    last = output[(lengths - 1).clamp(min=0), rows]  # [B, D]: each row's output at its last valid step
    kept = tuple(torch.where(nonempty, f, s) for f, s in zip((last, *final[1:]), state))
    flat = torch.nn.functional.pad(output.reshape(steps * batch, -1), (0, 0, 0, 1))
    return flat.index_select(0, index).view(steps, batch, -1), kept


def compile_limit() -> str | None:
    """torch.compile does not trace torch's RNN ops (Dynamo leaves torch.nn.LSTM and GRU out of its graphs too, and
    torch 2.13's AOT autograd fails on them when the input needs no gradient): the reference serves layers there."""
    if torch.compiler.is_compiling():
        return ("torch.compile does not trace torch's RNN ops (it leaves torch.nn.LSTM and GRU out of its graphs "
                "too); under it the reference backend serves layers, traced into the graph")
    return None
