"""Op benchmarks: additive attention (one query per row, and many), LSTM/GRU cell steps, LSTM/GRU layers.

Providers: the reference backend called eagerly, torch.compile of the reference implementation, torch.nn's modules
(cuDNN on a GPU) for the RNN ops, every other backend of the registry (triton, cuda) through s2s_fast.functional,
and each forced variant a backend lists for the op ("triton: persistent", "cuda: fused gates", ...), so that one
run times a backend's schedules side by side.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import torch

from .. import functional as F
from .. import reference
from ..reference.additive_attention import one_query_per_row
from .base import (COMPILE, TORCH_NN, Case, Runner, Unavailable, backend_implements, backend_providers,
                   backend_unavailable, compile_failed, generator, randn, tensor_bytes, tensors_in, uniform, variant,
                   variant_providers)
from .timing import synchronize

_OP_OF_FAMILY = {
    "attention_one_query": "additive_attention",
    "attention_many": "additive_attention",
    "lstm_cell": "lstm_cell",
    "gru_cell": "gru_cell",
    "lstm_layer": "lstm_layer",
    "gru_layer": "gru_layer",
}
_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_ARG_NAMES = {
    "additive_attention": ("query_proj", "key_proj", "v", "values", "mask"),
    "lstm_cell": ("input", "hx", "cx") + _WEIGHTS,
    "gru_cell": ("input", "hx") + _WEIGHTS,
    "lstm_layer": ("input", "hx", "cx") + _WEIGHTS + ("lengths", "reverse", "weight_hr"),
    "gru_layer": ("input", "hx") + _WEIGHTS + ("lengths", "reverse"),
}
_OUTPUT_NAMES = {
    "additive_attention": ("context", "weights"),
    "lstm_cell": ("hy", "cy"),
    "gru_cell": ("hy",),
    "lstm_layer": ("output", "hy", "cy"),
    "gru_layer": ("output", "hy"),
}
_CELL_OF_LAYER = {"lstm_layer": "lstm_cell", "gru_layer": "gru_cell"}
_TORCH_NN_MODULE = {
    "lstm_cell": torch.nn.LSTMCell,
    "gru_cell": torch.nn.GRUCell,
    "lstm_layer": torch.nn.LSTM,
    "gru_layer": torch.nn.GRU,
}


def _as_tuple(outputs) -> tuple:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


@dataclass
class OpCase(Case):
    """One functional op at one size.

    Sizes: attention_one_query B, Tk, A, Dv; attention_many B, Tq, Tk, A, Dv (mask with random lengths in
    (Tk/2, Tk]); cells B, H; layers T, B, H. RNN input size equals H; layers run full-length sequences.
    """

    # One torch.compile wrapper per case, shared by its input sets (a new wrapper would compile again).
    _compiled: dict = field(default_factory=dict, repr=False)

    @property
    def op(self) -> str:
        return _OP_OF_FAMILY[self.family]

    def providers(self) -> list[str]:
        torch_nn = [TORCH_NN] if self.op in _TORCH_NN_MODULE else []
        return ["reference", COMPILE, *torch_nn, *backend_providers(), *variant_providers(self.op)]

    def tokens(self) -> int:
        """Queries attended (B or B*Tq), or steps of B rows (B for a cell, T*B for a layer)."""
        return self.sizes["B"] * self.sizes.get("Tq", 1) * self.sizes.get("T", 1)

    def _input_shapes(self) -> dict:
        s = self.sizes
        if self.op == "additive_attention":
            batch, keys, width, value_width = s["B"], s["Tk"], s["A"], s["Dv"]
            query = (batch, width) if self.family == "attention_one_query" else (batch, s["Tq"], width)
            return {"query_proj": query, "key_proj": (batch, keys, width), "v": (width,),
                    "values": (batch, keys, value_width)}
        batch, hidden = s["B"], s["H"]
        gates = 4 if self.op.startswith("lstm") else 3
        shapes = {"input": (batch, hidden) if self.op.endswith("cell") else (s["T"], batch, hidden),
                  "hx": (batch, hidden)}
        if gates == 4:
            shapes["cx"] = (batch, hidden)
        shapes.update(weight_ih=(gates * hidden, hidden), weight_hh=(gates * hidden, hidden),
                      bias_ih=(gates * hidden,), bias_hh=(gates * hidden,))
        return shapes

    def _output_shapes(self) -> list:
        s = self.sizes
        if self.op == "additive_attention":
            rows = (s["B"],) if self.family == "attention_one_query" else (s["B"], s["Tq"])
            return [rows + (s["Dv"],), rows + (s["Tk"],)]
        state = (s["B"], s["H"])
        if self.op.endswith("cell"):
            return [state] * len(_OUTPUT_NAMES[self.op])
        return [(s["T"], s["B"], s["H"])] + [state] * (len(_OUTPUT_NAMES[self.op]) - 1)

    def make_inputs(self, seed: int) -> dict:
        gen = generator(seed)
        device, dtype = self.device, self.dtype
        inputs = {}
        for name, shape in self._input_shapes().items():
            if name.startswith(("weight", "bias")):
                inputs[name] = uniform(shape, gen, device, dtype, 1.0 / math.sqrt(self.sizes["H"]))
            else:
                inputs[name] = randn(shape, gen, device, dtype, 1.0 / math.sqrt(shape[0]) if name == "v" else 1.0)
        if self.backward:
            for tensor in inputs.values():
                tensor.requires_grad_(True)
            inputs["upstream"] = [randn(shape, gen, device, dtype) for shape in self._output_shapes()]
        if self.op == "additive_attention":
            keys = self.sizes["Tk"]
            lengths = torch.randint(keys // 2 + 1, keys + 1, (self.sizes["B"],), generator=gen)
            lengths[0] = keys
            inputs["mask"] = (torch.arange(keys) < lengths.unsqueeze(1)).to(device)
        if self.op in _CELL_OF_LAYER:
            inputs.update(lengths=None, reverse=False)
        if self.op == "lstm_layer":
            inputs["weight_hr"] = None
        return inputs

    def _args(self, inputs: dict) -> tuple:
        return tuple(inputs[name] for name in _ARG_NAMES[self.op])

    def _runner(self, forward, inputs: dict, leaves: dict | None = None, note: str | None = None) -> Runner:
        """Wrap ``forward() -> outputs`` as a Runner: forward alone, or forward and gradients of ``leaves``."""
        names = _OUTPUT_NAMES[self.op]
        if leaves is None:
            leaves = {name: inputs[name] for name in _ARG_NAMES[self.op]
                      if isinstance(inputs[name], torch.Tensor) and inputs[name].is_floating_point()}
        owned = tensors_in({k: v for k, v in inputs.items() if k != "upstream"}) + list(leaves.values())
        if not self.backward:
            def run():
                with torch.no_grad():
                    forward()

            def results():
                with torch.no_grad():
                    return dict(zip(names, _as_tuple(forward())))

            return Runner(run, results, None, lambda: owned, note)
        upstream = inputs["upstream"]
        targets = list(leaves.values())

        def run():
            torch.autograd.grad(_as_tuple(forward()), targets, upstream, allow_unused=True)

        def results():
            outputs = _as_tuple(forward())
            grads = torch.autograd.grad(outputs, targets, upstream, allow_unused=True)
            named = {name: output.detach() for name, output in zip(names, outputs)}
            for (name, leaf), grad in zip(leaves.items(), grads):
                named[f"grad_{name}"] = torch.zeros_like(leaf) if grad is None else grad
            return named

        return Runner(run, results, forward, lambda: owned, note)

    def prepare(self, provider: str, inputs: dict) -> Runner:
        args = self._args(inputs)
        op = self.op
        if provider == "reference":
            return self._runner(lambda: getattr(F, op)(*args, backend="reference"), inputs)
        if provider == COMPILE:
            return self._compile_runner(inputs)
        if provider == TORCH_NN and op in _TORCH_NN_MODULE:
            return self._torch_nn_runner(inputs)
        if provider in variant_providers(op):
            backend, implementation = variant(provider, op)
            backend_unavailable(backend, self.device, op, args)
            implementation, limit = implementation
            if op == "additive_attention":
                # Like functional, hand the backend [B, Tq, A] queries (attention_one_query cases have [B, A] ones).
                implementation = functools.partial(one_query_per_row, implementation)
            reason = limit(*args) if limit is not None else None
            if reason is not None:
                raise Unavailable(reason)
            return self._runner(lambda: implementation(*args), inputs)
        if provider in backend_providers():
            backend_unavailable(provider, self.device, op, args)
            note = None
            if op in _CELL_OF_LAYER and not backend_implements(provider, op):
                note = f"the reference time loop around {provider}'s {_CELL_OF_LAYER[op]}"
            return self._runner(lambda: getattr(F, op)(*args, backend=provider), inputs, note=note)
        raise ValueError(f"{self.name}: unknown provider {provider!r}; choose from {', '.join(self.providers())}")

    def _compile_runner(self, inputs: dict) -> Runner:
        """torch.compile of the reference implementation; for layers, of its per-step cell (the time loop stays
        eager: compiling the unrolled loop takes minutes per size)."""
        if self.op not in self._compiled:
            if self.op in _CELL_OF_LAYER:
                cell = torch.compile(reference.OPS[_CELL_OF_LAYER[self.op]], dynamic=False)
                self._compiled[self.op] = functools.partial(reference.OPS[self.op], cell=cell)
            else:
                self._compiled[self.op] = torch.compile(reference.OPS[self.op], dynamic=False)
        compiled = self._compiled[self.op]
        args = self._args(inputs)
        note = "per-step cell compiled, time loop eager" if self.op in _CELL_OF_LAYER else None
        runner = self._runner(lambda: compiled(*args), inputs, note=note)
        started = time.perf_counter()
        try:
            runner.results()
        except Exception as error:  # noqa: BLE001 - a compiler that cannot run here makes the provider unavailable
            raise compile_failed(error) from None
        synchronize(self.device)
        runner.first_call_s = time.perf_counter() - started
        return runner

    def _torch_nn_runner(self, inputs: dict) -> Runner:
        """torch.nn's module (cuDNN on a GPU) holding copies of the case's weights."""
        op = self.op
        is_layer = op in _CELL_OF_LAYER
        hidden = inputs["weight_hh"].shape[1]
        module = _TORCH_NN_MODULE[op](inputs["weight_ih"].shape[1], hidden, device=self.device, dtype=self.dtype)
        suffix = "_l0" if is_layer else ""
        with torch.no_grad():
            for name in _WEIGHTS:
                getattr(module, name + suffix).copy_(inputs[name])
        if is_layer:
            module.flatten_parameters()
        state_names = ("input", "hx", "cx") if "cx" in inputs else ("input", "hx")
        leaves = {name: inputs[name] for name in state_names}
        leaves.update({name: getattr(module, name + suffix) for name in _WEIGHTS})
        x, hx, cx = inputs["input"], inputs["hx"], inputs.get("cx")

        def forward():
            if op == "lstm_cell":
                return module(x, (hx, cx))
            if op == "gru_cell":
                return module(x, hx)
            if op == "lstm_layer":
                output, (h, c) = module(x, (hx.unsqueeze(0), cx.unsqueeze(0)))
                return output, h[0], c[0]
            output, h = module(x, hx.unsqueeze(0))
            return output, h[0]

        return self._runner(forward, inputs, leaves, note="cuDNN" if self.device.type == "cuda" else None)

    def gold(self, inputs: dict) -> Runner:
        wide = torch.float64 if self.dtype == torch.float32 else torch.float32
        upcast = {}
        for name, value in inputs.items():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                upcast[name] = value.detach().to(wide).requires_grad_(value.requires_grad)
            elif name == "upstream":
                upcast[name] = [g.to(wide) for g in value]
            else:
                upcast[name] = value
        return self.prepare("reference", upcast)

    def min_bytes(self, inputs: dict, results: dict) -> int:
        read = tensor_bytes([inputs[name] for name in _ARG_NAMES[self.op]])
        written = tensor_bytes([results[name] for name in _OUTPUT_NAMES[self.op]])
        if not self.backward:
            return read + written
        gradients = tensor_bytes([value for name, value in results.items() if name.startswith("grad_")])
        # Backward reads the inputs again and the upstream gradients, and writes the input gradients.
        return 2 * read + 2 * written + gradients

    def working_set_bytes(self) -> int:
        element = torch.empty((), dtype=self.dtype).element_size()
        tensors = [*self._input_shapes().values(), *self._output_shapes()]
        total = 4 * element * sum(math.prod(shape) for shape in tensors)
        if self.op == "additive_attention":
            s = self.sizes
            # The reference materialises [B, Tq, Tk, A]: two at once forward (the sum and its tanh), three with
            # backward (the tanh kept, its gradient and the gradient of the sum); and again in the wider dtype of the
            # gold reference (gold()) where a provider misses the elementwise tolerance. Counting the gold's too, as
            # a CPU full run was killed for memory at B=128, Tq=Tk=128, A=512 (2026-12-04, 24 GiB).
            wide = 8 if self.dtype == torch.float32 else 4
            total += (3 if self.backward else 2) * (element + wide) * s["B"] * s.get("Tq", 1) * s["Tk"] * s["A"]
        return total
