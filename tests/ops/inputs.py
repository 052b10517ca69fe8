"""Inputs for the per-op tests: awkward sizes, drawn on the backend's device."""

from __future__ import annotations

import functools

import torch


def cell_inputs(gates: int, batch: int, input_size: int, hidden: int, *, lstm: bool = True, bias: bool = True,
                steps: int | None = None, device="cpu", dtype=torch.float32) -> dict:
    """A cell call (steps None) or a layer call's inputs, weights scaled like torch.nn's initialisation."""
    t = functools.partial(torch.randn, device=device, dtype=dtype)
    args = dict(input=t(batch, input_size) if steps is None else t(steps, batch, input_size), hx=t(batch, hidden))
    if lstm:
        args["cx"] = t(batch, hidden)
    args.update(weight_ih=t(gates * hidden, input_size) / input_size ** 0.5,
                weight_hh=t(gates * hidden, hidden) / hidden ** 0.5,
                bias_ih=t(gates * hidden) if bias else None, bias_hh=t(gates * hidden) if bias else None)
    return args


def rnn_inputs(op: str, batch: int, input_size: int, hidden: int, **options) -> dict:
    """cell_inputs for ``op`` (lstm_cell, gru_cell, lstm_layer or gru_layer): its gate count and states."""
    lstm = op.startswith("lstm")
    return cell_inputs(4 if lstm else 3, batch, input_size, hidden, lstm=lstm, **options)


def attention_inputs(batch: int, queries: int | None, keys: int, attn: int, value_size: int, *, mask: str = "random",
                     device="cpu", dtype=torch.float32) -> dict:
    """queries None: one query per row ([B, A]). mask: "none", "random" (key 0 always valid) or "empty_row" (row
    B // 2 attends to nothing)."""
    t = functools.partial(torch.randn, device=device, dtype=dtype)
    query_shape = (batch, attn) if queries is None else (batch, queries, attn)
    args = dict(query_proj=t(query_shape), key_proj=t(batch, keys, attn), v=t(attn) * attn ** -0.5,
                values=t(batch, keys, value_size), mask=None)
    if mask != "none":
        generator = torch.Generator().manual_seed(keys)
        mask_tensor = torch.rand(batch, keys, generator=generator) > 0.4
        mask_tensor[:, 0] = True
        if mask == "empty_row":
            mask_tensor[batch // 2] = False
        args["mask"] = mask_tensor.to(device)
    return args


def strided(tensor):
    """The same values in another dense layout (the two last axes transposed in memory), or None."""
    if tensor is None or tensor.dim() < 2 or not tensor.is_floating_point():
        return tensor
    return tensor.transpose(-1, -2).contiguous().transpose(-1, -2)


def on(args: dict, device, dtype=None) -> dict:
    """The arguments on ``device``, floating ones in ``dtype`` when given."""
    moved = {}
    for name, value in args.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
        moved[name] = value
    return moved
