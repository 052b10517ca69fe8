"""Every op on every fused backend, backpropagated from the sum of its first output alone: upstream gradients with
zero strides on that output and none on the others, as a loss on the context or the last layer's output gives."""

import pytest
import torch
from inputs import attention_inputs, on, rnn_inputs

from s2s_fast import functional as F

OPS = ["additive_attention", "lstm_cell", "gru_cell", "lstm_layer", "gru_layer"]


def _inputs(op):
    if op == "additive_attention":
        return attention_inputs(2, 3, 5, 4, 3)
    return rnn_inputs(op, 3, 5, 6, steps=4 if op.endswith("layer") else None)


@pytest.mark.parametrize("op", OPS)
def test_backward_from_the_sum_of_the_first_output(backend, op):
    inputs = on(_inputs(op), backend.device)
    backend.skip_unless_served(op, inputs)
    grads = []
    for name in (backend.name, "reference"):
        leaves = {k: (v.clone().requires_grad_() if v is not None and v.is_floating_point() else v)
                  for k, v in inputs.items()}
        outputs = getattr(F, op)(**leaves, backend=name)
        (outputs if op == "gru_cell" else outputs[0]).sum().backward()
        grads.append({k: v.grad for k, v in leaves.items() if v is not None and v.is_floating_point()})
    for name, expected in grads[1].items():
        torch.testing.assert_close(grads[0][name], expected, rtol=2e-4, atol=2e-5, msg=lambda m, n=name: f"{n}: {m}")
