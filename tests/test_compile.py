"""torch.compile traces the reference path: the drop-in LSTM without a graph break, the model with the same output;
and why the drop-in LSTM and GRU are not subclasses of torch.nn.LSTM and GRU."""

import pytest
import torch

import s2s_fast.nn as snn
from s2s_fast.data import BOS_ID, EOS_ID, PAD_ID, collate, make_pairs, toy_vocab_size
from s2s_fast.models import Seq2Seq, Seq2SeqConfig
from s2s_fast.testing import tolerance


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_lstm_and_attention_trace_in_one_graph():
    lstm = snn.LSTM(4, 6, num_layers=2, bidirectional=True)
    attention = snn.AdditiveAttention(12, 12, 5)

    def block(x, mask):
        memory, _ = lstm(x)
        memory = memory.transpose(0, 1)
        return attention(memory[:, -1], memory, mask=mask)

    x, mask = torch.randn(5, 3, 4), torch.rand(3, 5) > 0.3
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    for got, expected in zip(compiled(x, mask), block(x, mask)):
        torch.testing.assert_close(got, expected)


def test_backend_switch_recompiles():
    import s2s_fast
    from torch._dynamo.testing import CompileCounter

    from s2s_fast.cuda import compiled as cuda_compiled

    cell = snn.LSTMCell(3, 4)
    counter = CompileCounter()
    compiled = torch.compile(cell, backend=counter, fullgraph=True)
    x = torch.randn(2, 3)
    expected = cell(x)
    torch.testing.assert_close(compiled(x), expected)
    with s2s_fast.use_backend("cuda"):
        if cuda_compiled.EMULATED_GPU is None:
            with pytest.raises(Exception, match="cuda"):
                compiled(x)
        else:  # the emulated cuda backend serves CPU tensors: the switch must still reach the compiled code
            torch.testing.assert_close(compiled(x), expected, **tolerance(torch.float32))
            assert counter.frame_count == 2


def test_seq2seq_compiles_and_matches_eager():
    vocab = toy_vocab_size(5)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, embed_dim=6, hidden_size=8,
                                  encoder_layers=1, dropout=0.0)).eval()
    batch = collate(make_pairs("copy", 3, num_symbols=5, max_len=4), PAD_ID, BOS_ID, EOS_ID)
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(batch.src, batch.src_lengths, batch.tgt_in),
                               model(batch.src, batch.src_lengths, batch.tgt_in))


def test_a_subclass_of_torch_nn_lstm_would_not_compile_so_the_drop_ins_build_on_rnn_base():
    """Dynamo refuses any instance of torch.nn.LSTM / GRU (torch._dynamo.config.allow_rnn is off), subclasses too:
    the same module made a torch.nn.LSTM subclass breaks a full-graph compile, so s2s_fast.nn.LSTM and GRU build
    on torch.nn.RNNBase and isinstance(snn.LSTM(...), torch.nn.LSTM) is False (the cells do subclass theirs)."""
    from s2s_fast.nn.rnn import _RNNMixin

    class LSTMSubclass(_RNNMixin, torch.nn.LSTM):
        _is_lstm = True

        def __init__(self, *args):
            super().__init__(*args)
            self._init_backend(None)

    x = torch.randn(5, 3, 4)
    subclass = LSTMSubclass(4, 6)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="RNN, GRU, or LSTM"):
        torch.compile(subclass, backend="aot_eager", fullgraph=True)(x)
    drop_in = snn.LSTM(4, 6)
    drop_in.load_state_dict(subclass.state_dict())
    torch.testing.assert_close(torch.compile(drop_in, backend="aot_eager", fullgraph=True)(x)[0], subclass(x)[0])
    assert isinstance(drop_in, torch.nn.RNNBase) and not isinstance(drop_in, torch.nn.LSTM)
    assert not isinstance(snn.GRU(4, 6), torch.nn.GRU)
    assert isinstance(snn.LSTMCell(4, 6), torch.nn.LSTMCell) and isinstance(snn.GRUCell(4, 6), torch.nn.GRUCell)


def test_compiled_encoder_and_decoder_step_keep_sizes_symbolic():
    """Issue 17.6: a Seq2Seq compiled with dynamic shapes and fed 20 batches of random source lengths 5-100
    recompiles a handful of times at most. The encoder and the decoder step are what gets compiled (a whole model's
    decoder is a Python loop over target steps, which Dynamo unrolls). Neither the model's input checks nor
    functional's lengths check read values on the host or format a size while tracing."""
    from torch._dynamo.testing import CompileCounter

    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=20, tgt_vocab_size=20, embed_dim=8, hidden_size=12,
                                  encoder_layers=2, dropout=0.0)).eval()
    encode_counter, step_counter = CompileCounter(), CompileCounter()
    encode = torch.compile(model.encode, backend=encode_counter, dynamic=True)
    decode_step = torch.compile(model.decode_step, backend=step_counter, dynamic=True)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(20):
            source_len, batch = int(torch.randint(5, 101, (1,), generator=generator)), 3
            lengths = torch.randint(1, source_len + 1, (batch,), generator=generator)
            lengths[0] = source_len
            src = torch.randint(3, 20, (batch, source_len), generator=generator)
            src[torch.arange(source_len) >= lengths.unsqueeze(1)] = PAD_ID
            encoded, expected = encode(src, lengths), model.encode(src, lengths)
            torch.testing.assert_close(encoded.memory, expected.memory)
            state, tokens = model.init_state(encoded), torch.full((batch,), BOS_ID)
            for _ in range(3):
                logits, state, _ = decode_step(tokens, state, encoded)
                tokens = logits.argmax(-1)
    assert encode_counter.frame_count <= 2
    assert step_counter.frame_count <= 2  # the first step's state (init_state's) has other strides than later ones
    with pytest.raises(RuntimeError, match="lengths must lie in"):
        encode(src, lengths + 200)
