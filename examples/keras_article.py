"""The article's Keras example, reproduced with s2s_fast: an LSTM encoder-decoder without attention on padded toy
sequences.

The article (seed/000, section 5.2) builds, in Keras:

    Embedding(vocab_size=10000, 256) -> LSTM(128) -> RepeatVector(40) -> LSTM(128) -> LSTM(128)
    -> TimeDistributed(Dense(vocab_size)), trained with RMSprop and cross-entropy for 10 epochs, batch 32, on
    sequences padded ('post') to length 40, the target being the input itself.

Here the same pieces are Seq2Seq(attention="none"): the encoder LSTM's final state is the fixed context vector
repeated at every decoder step (RepeatVector), the decoder is an LSTM, and the output layer is applied at every step
(TimeDistributed Dense). Two differences, both deliberate: the decoder also reads the previous target token (teacher
forcing in training, its own output when decoding), and padding is masked instead of being learned as a symbol.

    python examples/keras_article.py                 # random sequences of 3-10 symbols: learns to copy them
    python examples/keras_article.py --article-data  # the article's data: 100 copies of [1, 2, 3, 4, 5]
"""

from __future__ import annotations

import argparse
import random

import torch

from s2s_fast.data import collate
from s2s_fast.models import Seq2Seq, Seq2SeqConfig, sequence_loss

MAX_SEQUENCE_LEN, VOCAB_SIZE, EMBEDDING_DIM, LSTM_UNITS = 40, 10000, 256, 128
PAD_ID, BOS_ID, EOS_ID = 0, VOCAB_SIZE - 2, VOCAB_SIZE - 1  # the article's symbols 1.. keep their ids


def pad_sequences(sequences: list[list[int]], maxlen: int) -> torch.Tensor:
    """keras.preprocessing.sequence.pad_sequences(..., padding='post', truncating='post'): [N, maxlen]."""
    padded = torch.full((len(sequences), maxlen), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, :min(len(sequence), maxlen)] = torch.tensor(sequence[:maxlen])
    return padded


def toy_sequences(count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randint(1, 9) for _ in range(rng.randint(3, 10))] for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--article-data", action="store_true", help="train on 100 copies of [1, 2, 3, 4, 5]")
    parser.add_argument("--examples", type=int, default=3000, help="random training sequences (default 3000)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    sequences = [[1, 2, 3, 4, 5] for _ in range(100)] if args.article_data else toy_sequences(args.examples,
                                                                                             args.seed)
    input_data = pad_sequences(sequences, MAX_SEQUENCE_LEN)  # [N, 40], as in the article
    lengths = (input_data != PAD_ID).sum(dim=1)
    config = Seq2SeqConfig(src_vocab_size=VOCAB_SIZE, tgt_vocab_size=VOCAB_SIZE, embed_dim=EMBEDDING_DIM,
                           hidden_size=LSTM_UNITS, encoder_layers=1, decoder_layers=2, bidirectional=False,
                           cell="lstm", attention="none", input_feeding=False, dropout=0.0, pad_id=PAD_ID,
                           bos_id=BOS_ID, eos_id=EOS_ID)
    model = Seq2Seq(config)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{len(sequences)} sequences padded to {MAX_SEQUENCE_LEN}; model {parameters:,} parameters (LSTM encoder, "
          "fixed context vector, 2-layer LSTM decoder, per-step Dense)")
    for epoch in range(args.epochs):
        order = torch.randperm(len(sequences)).tolist()
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            rows = order[start:start + args.batch_size]
            batch = collate([(input_data[r, :lengths[r]].tolist(),) * 2 for r in rows], PAD_ID, BOS_ID, EOS_ID)
            loss = sequence_loss(model(batch.src, batch.src_lengths, batch.tgt_in), batch.tgt_out, PAD_ID)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {total / len(sequences):.4f}")

    held_out = [[1, 2, 3, 4, 5]] if args.article_data else toy_sequences(200, args.seed + 1)
    batch = collate([(s, s) for s in held_out], PAD_ID, BOS_ID, EOS_ID)
    outputs = model.generate(batch.src, batch.src_lengths, beam_size=1)
    correct = sum(output == target for output, target in zip(outputs, held_out))
    print(f"held-out copies exact: {correct}/{len(held_out)}")
    for source, output in list(zip(held_out, outputs))[:3]:
        print(f"  {source} -> {output}")


if __name__ == "__main__":
    main()
