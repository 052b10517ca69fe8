"""End-to-end benchmarks on the Seq2Seq model: one decoder step, one training step, greedy and beam decoding.

Every provider builds the model from the same weights with ``Seq2SeqConfig.backend`` naming its backend, so each op
of the model runs on that backend (a backend that cannot serve one of them is reported unavailable); "auto" lets
s2s_fast pick per op, as it does by default. On a GPU, the
decoder step and greedy decoding are also run with the decoder step captured in a CUDA graph.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch._dynamo.utils import counters

from .. import functional as F
from ..models import Seq2Seq, preset_config, sequence_loss
from ..models.config import BackendCannotServeModel
from ..models.seq2seq import DecoderState, EncoderOutput
from .base import (COMPILE, GRAPH_SUFFIX, LOW_PRECISION, Case, Runner, Unavailable, backend_providers,
                   backend_unavailable, compile_failed, generator, tensors_in)
from .timing import synchronize

# Parameters a decoder step reads (the target embedding is read one row per token).
_STEP_PARAMETERS = ("decoder.", "attention.query_layer.", "attention.v", "combine.", "output.")
# Parameters the encoder side reads once per batch (the source embedding, one row per token).
_ENCODER_PARAMETERS = ("encoder.", "attention.key_layer.", "bridge_h.", "bridge_c.")
# Minimal traffic of one Adam training step, in parameter sizes: parameters read in forward and in backward,
# gradients written, and Adam reading parameters, gradients and two moments and writing three of them back.
_TRAIN_PARAMETER_PASSES = 10


def _serving(backend: str, call):
    """Run ``call()``; a backend that cannot serve one of the model's ops makes the provider unavailable."""
    try:
        return call()
    except RuntimeError as error:
        if f"backend {backend!r} cannot serve" in str(error):
            raise Unavailable(str(error)) from None
        raise


def _copy_state(target: DecoderState, source: DecoderState) -> None:
    hidden_pairs = zip(target.hidden, source.hidden) if isinstance(target.hidden, tuple) else [(target.hidden,
                                                                                                 source.hidden)]
    for into, value in hidden_pairs:
        into.copy_(value)
    if target.feed is not None:
        target.feed.copy_(source.feed)


def _copy_encoded(target: EncoderOutput, source: EncoderOutput) -> None:
    for into, value in ((target.memory, source.memory), (target.mask, source.mask),
                        (target.key_proj, source.key_proj), (target.summary, source.summary)):
        if into is not None:
            into.copy_(value)


def _capture(step, device: torch.device):
    """Capture ``step()`` in a CUDA graph (after warm-up on a side stream); returns (graph, its static output, the
    capture's peak memory above what was allocated before it: Runner.graph_memory_bytes)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(2):
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            output = step()
        torch.cuda.synchronize(device)
    except RuntimeError as error:
        raise Unavailable(f"CUDA graph capture failed: {str(error).strip().splitlines()[0]}") from None
    return graph, output, max(0, torch.cuda.max_memory_allocated(device) - before)


def _step_results(encoded: EncoderOutput, logits, state: DecoderState, weights) -> dict:
    hidden = state.hidden if isinstance(state.hidden, tuple) else (state.hidden,)
    named = {"memory": encoded.memory, "logits": logits, "h": hidden[0]}
    if len(hidden) == 2:
        named["c"] = hidden[1]
    if state.feed is not None:
        named["feed"] = state.feed
    if weights is not None:
        named["weights"] = weights
    return {name: value.detach().clone() for name, value in named.items()}


@dataclass
class ModelCase(Case):
    """A Seq2Seq preset at one batch size.

    Sizes: model (preset name), Vs and Vt (vocabularies), cell (optional: the preset's cell replaced), B, S (source length; lengths random in (S/2, S]), and
    T (target length) for training, L (output tokens per input; EOS is held off so every row decodes L) and K
    (beam size) for decoding.
    """

    max_rotations: int = 2

    def __post_init__(self):
        if self.family != "decoder_step":
            # A training step or a decoding run streams activations (and optimizer state) far larger than any
            # cache through memory: one input set.
            self.max_rotations = 1

    def _config(self, backend: str):
        s = self.sizes
        # A size may override one field of the preset: the g2p training step with GRU cells (cell=gru).
        overrides = {"cell": s["cell"]} if "cell" in s else {}
        try:
            return preset_config(s["model"], s["Vs"], s["Vt"], backend=backend, **overrides)
        except BackendCannotServeModel as refusal:  # a backend named alone must serve every op
            raise Unavailable(str(refusal)) from None

    def providers(self) -> list[str]:
        # "auto": the backends s2s_fast picks by default, op by op (a backend named alone must serve every op).
        eager = ["reference", "auto", *backend_providers()]
        graphed = [name + GRAPH_SUFFIX for name in eager]
        if self.family == "decoder_step":
            return ["reference", COMPILE, *eager[1:], *graphed]
        if self.family == "greedy_decode":
            return [*eager, *graphed]
        return eager

    def tokens(self) -> int:
        s = self.sizes
        if self.family == "decoder_step":
            return s["B"]
        if self.family == "train_step":
            return s["B"] * s["T"]
        return s["B"] * s["L"]

    def make_inputs(self, seed: int) -> dict:
        gen = generator(seed)
        s = self.sizes
        config = self._config("reference")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Seq2Seq(config)
        inputs = {"state_dict": {name: value.to(self.device) for name, value in model.state_dict().items()}}
        batch, source_len = s["B"], s["S"]
        lengths = torch.randint(source_len // 2 + 1, source_len + 1, (batch,), generator=gen)
        lengths[0] = source_len
        src = torch.randint(3, s["Vs"], (batch, source_len), generator=gen)
        src[torch.arange(source_len) >= lengths.unsqueeze(1)] = config.pad_id
        inputs.update(src=src.to(self.device), src_lengths=lengths)
        if self.family == "train_step":
            target = torch.randint(3, s["Vt"], (batch, s["T"] + 1), generator=gen).to(self.device)
            inputs.update(tgt_in=target[:, :-1], tgt_out=target[:, 1:])
        if self.family == "decoder_step":
            inputs["prev_tokens"] = torch.randint(3, s["Vt"], (batch,), generator=gen).to(self.device)
        return inputs

    def _model(self, inputs: dict, backend: str, dtype: torch.dtype) -> Seq2Seq:
        model = Seq2Seq(self._config(backend))
        model.load_state_dict(inputs["state_dict"])
        model.to(self.device)
        if self.family != "train_step":
            model.to(dtype).eval()
        elif dtype == torch.float64:  # the gold of a float32 training step; a low-precision one autocasts
            model.to(dtype)
        return model

    def prepare(self, provider: str, inputs: dict) -> Runner:
        return self._prepare(provider, inputs, self.dtype)

    def gold(self, inputs: dict) -> Runner:
        # Wider than the case, as the op cases' gold: a float32 case's gold in float32 was the reference itself, and
        # a provider's error "against" it was measured against the very result it had missed.
        return self._prepare("reference", inputs, torch.float64 if self.dtype == torch.float32 else torch.float32)

    def _prepare(self, provider: str, inputs: dict, dtype: torch.dtype) -> Runner:
        if provider not in self.providers():
            raise ValueError(f"{self.name}: unknown provider {provider!r}; choose from {', '.join(self.providers())}")
        graphed = provider.endswith(GRAPH_SUFFIX)
        backend = "reference" if provider == COMPILE else provider.removesuffix(GRAPH_SUFFIX)
        if backend != "reference":
            backend_unavailable(backend, self.device)
        if graphed and self.device.type != "cuda":
            raise Unavailable("CUDA graphs need a CUDA device")
        model = self._model(inputs, backend, dtype)
        if self.family == "train_step":
            return self._train_runner(model, inputs, backend, dtype)
        if self.family == "decoder_step":
            return self._decoder_step_runner(model, inputs, backend, compiled=provider == COMPILE, graphed=graphed)
        if graphed:
            return self._graphed_greedy_runner(model, inputs, backend)
        return self._decode_runner(model, inputs, backend)

    def _owned(self, model: Seq2Seq, inputs: dict, optimizer=None):
        def owned():
            tensors = tensors_in(inputs) + list(model.parameters())
            if optimizer is not None:
                tensors += [t for state in optimizer.state.values() for t in tensors_in(list(state.values()))]
            return tensors

        return owned

    def _decoder_step_runner(self, model: Seq2Seq, inputs: dict, backend: str, compiled: bool,
                             graphed: bool) -> Runner:
        with torch.no_grad():
            encoded = _serving(backend, lambda: model.encode(inputs["src"], inputs["src_lengths"]))
            state = model.init_state(encoded)
        tokens = inputs["prev_tokens"]
        decode_step = model.decode_step
        note = first_call_s = graph_memory = None
        if compiled:
            decode_step = torch.compile(model.decode_step, dynamic=False)
            breaks_before = sum(counters["graph_break"].values())
            started = time.perf_counter()
            try:
                with torch.no_grad():
                    decode_step(tokens, state, encoded)
            except Exception as error:  # noqa: BLE001 - a compiler that cannot run here makes it unavailable
                raise compile_failed(error) from None
            synchronize(self.device)
            first_call_s = time.perf_counter() - started
            breaks = sum(counters["graph_break"].values()) - breaks_before
            note = f"{breaks} graph break(s)" if breaks else "one graph"

        def step():
            with torch.no_grad():
                return decode_step(tokens, state, encoded)

        if graphed:
            _serving(backend, step)
            graph, static, graph_memory = _capture(step, self.device)

            def replay():
                graph.replay()
                return static

            step = replay

        def results():
            logits, new_state, weights = _serving(backend, step)
            return _step_results(encoded, logits, new_state, weights)

        return Runner(step, results, None, self._owned(model, inputs), note, first_call_s, graph_memory)

    def _decode_runner(self, model: Seq2Seq, inputs: dict, backend: str) -> Runner:
        src, lengths = inputs["src"], inputs["src_lengths"]
        steps, beam = self.sizes["L"], self.sizes.get("K", 1)

        def run():
            return model.generate(src, lengths, beam_size=beam, min_len=steps, max_len=steps)

        def results():
            with torch.no_grad():
                encoded = model.encode(src, lengths)
                state = model.init_state(encoded)
                first = torch.full((src.shape[0],), model.config.bos_id, device=src.device)
                logits, new_state, weights = model.decode_step(first, state, encoded)
            return _step_results(encoded, logits, new_state, weights)

        return Runner(run, lambda: _serving(backend, results), None, self._owned(model, inputs),
                      "checked on the first decoder step")

    def _graphed_greedy_runner(self, model: Seq2Seq, inputs: dict, backend: str) -> Runner:
        """Greedy decoding of L tokens per row: the encoder runs eagerly, then L replays of a graph holding one
        decoder step, the log-softmax maximum, the scores and the feedback of token and state into the graph's static
        inputs."""
        src, lengths = inputs["src"], inputs["src_lengths"]
        steps, config = self.sizes["L"], model.config
        with torch.no_grad():
            encoded = _serving(backend, lambda: model.encode(src, lengths))
            state = model.init_state(encoded)
        tokens = torch.full((src.shape[0],), config.bos_id, device=src.device)
        history = torch.zeros(src.shape[0], steps, dtype=torch.long, device=src.device)
        position = torch.zeros(1, dtype=torch.long, device=src.device)
        scores = torch.zeros(src.shape[0], dtype=torch.float64, device=src.device)

        @torch.no_grad()
        def step():
            logits, new_state, weights = model.decode_step(tokens, state, encoded)
            # The eager search's step (decoding.greedy_search, EOS held off for all L steps as min_len=L does): its
            # log-softmax maximum and scores, which the arg-max alone left out of the graphed rows' time. Left out:
            # the host read of whether every row has ended, which is what a graph removes, and the ended rows'
            # bookkeeping (a few [B] elementwise ops), moot where no row ends.
            best, chosen = F.log_softmax_max(logits, config.eos_id, backend=config.backend)
            scores.add_(best.double())
            chosen = torch.where(torch.isfinite(best), chosen, config.eos_id)
            tokens.copy_(chosen)
            _copy_state(state, new_state)
            history.index_copy_(1, position, chosen.unsqueeze(1))
            position.add_(1)
            return logits, weights

        _serving(backend, step)
        graph, (static_logits, static_weights), graph_memory = _capture(step, self.device)

        def restart():
            fresh = model.encode(src, lengths)
            _copy_encoded(encoded, fresh)
            _copy_state(state, model.init_state(fresh))
            tokens.fill_(config.bos_id)
            scores.zero_()
            position.zero_()

        def run():
            with torch.no_grad():
                restart()
                for _ in range(steps):
                    graph.replay()
            return history

        def results():
            with torch.no_grad():
                restart()
                graph.replay()
            return _step_results(encoded, static_logits, state, static_weights)

        return Runner(run, results, None, self._owned(model, inputs), "checked on the first decoder step",
                      graph_memory_bytes=graph_memory)

    def _train_runner(self, model: Seq2Seq, inputs: dict, backend: str, dtype: torch.dtype) -> Runner:
        model.train()
        # torch's fused Adam, as the trainer's AdamW (s2s_fast.train): the step every provider shares.
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        src, lengths = inputs["src"], inputs["src_lengths"]
        tgt_in, tgt_out = inputs["tgt_in"], inputs["tgt_out"]
        low_precision = dtype in LOW_PRECISION

        def loss():
            with torch.autocast(self.device.type, dtype=dtype, enabled=low_precision):
                logits = model(src, lengths, tgt_in)
            return sequence_loss(logits, tgt_out, model.config.pad_id)

        def run():
            optimizer.zero_grad(set_to_none=True)
            loss().backward()
            optimizer.step()

        def seeded_loss():
            # Seeded: one set of dropout masks for every call of a provider (its saved-for-backward count).
            torch.manual_seed(1234)
            return loss()

        def results():
            # Compared with dropout off: each backend draws its own masks (the cpu backend's are not torch's for a
            # seed), so only without them do the providers' losses and gradients match; the timed steps keep it on
            # (tests/ops/test_dropout.py checks the masks). Eval mode changes nothing else in this model.
            optimizer.zero_grad(set_to_none=True)
            model.eval()
            try:
                value = _serving(backend, seeded_loss)
                value.backward()
            finally:
                model.train()
            named = {"loss": value.detach()}
            named.update({f"grad_{name}": p.grad.detach().clone() for name, p in model.named_parameters()
                          if p.grad is not None})
            optimizer.zero_grad(set_to_none=True)
            return named

        return Runner(run, results, seeded_loss, self._owned(model, inputs, optimizer),
                      "bf16 autocast" if dtype == torch.bfloat16 else ("fp16 autocast" if low_precision else None))

    def _parameter_bytes(self, inputs: dict, prefixes: tuple, element: int) -> int:
        return element * sum(value.numel() for name, value in inputs["state_dict"].items()
                             if name.startswith(prefixes))

    def _step_bytes(self, inputs: dict, rows: int, element: int) -> int:
        config = self._config("reference")
        hidden, width = config.hidden_size, config.attention_size or config.hidden_size
        layers, source_len = config.decoder_layers, self.sizes["S"]
        per_row = (config.embed_dim + source_len * (hidden + width) + config.tgt_vocab_size
                   + 2 * (2 * layers + 1) * hidden) * element + source_len
        return self._parameter_bytes(inputs, _STEP_PARAMETERS, element) + rows * per_row

    def min_bytes(self, inputs: dict, results: dict) -> int:
        """Decoding: the encoder's parameters and outputs once, then per step the decoder's parameters, the rows'
        memory and projected keys, states and logits. Training: parameter traffic of forward, backward and Adam."""
        s = self.sizes
        tokens = inputs["src"].numel() * inputs["src"].element_size()
        if self.family == "train_step":
            return _TRAIN_PARAMETER_PASSES * self._parameter_bytes(inputs, ("",), 4) + 3 * tokens
        element = torch.empty((), dtype=self.dtype).element_size()
        if self.family == "decoder_step":
            return self._step_bytes(inputs, s["B"], element)
        config = self._config("reference")
        width = config.attention_size or config.hidden_size
        encoder = (self._parameter_bytes(inputs, _ENCODER_PARAMETERS, element) + tokens
                   + s["B"] * s["S"] * (config.embed_dim + config.hidden_size + width) * element)
        return encoder + s["L"] * self._step_bytes(inputs, s["B"] * s.get("K", 1), element)

    def working_set_bytes(self) -> int:
        s = self.sizes
        config = self._config("reference")
        with torch.device("meta"):
            parameters = sum(p.numel() for p in Seq2Seq(config).parameters())
        rows = s["B"] * s.get("K", 1)
        steps = s.get("T", s.get("L", 1))
        activations = rows * steps * (4 * config.tgt_vocab_size + 64 * config.hidden_size + 4 * s["S"])
        return 4 * (16 * parameters + 4 * activations)
