"""s2s_fast.attention_plot: the decode command's heatmaps, bounded in size and reading tokens literally."""

import struct

import torch

from s2s_fast.attention_plot import MAX_INCHES, plot_attention


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_long_input_gives_a_bounded_figure(tmp_path):
    """A 1,000-letter word asked matplotlib for a 40,000 x 17,000 pixel image before (its memory ran out)."""
    source, target = [chr(97 + i % 26) for i in range(1000)], [f"P{i}" for i in range(900)]
    weights = torch.softmax(torch.randn(900, 1000), dim=1)
    plot_attention(weights, source, target, tmp_path / "long.png", title="".join(source))
    width, height = _png_size(tmp_path / "long.png")
    assert width <= MAX_INCHES * 100 and height <= MAX_INCHES * 100


def test_short_inputs_keep_a_cell_per_token_and_every_label(tmp_path):
    plot_attention(torch.full((3, 4), 0.25), list("word"), ["W", "ER", "D"], tmp_path / "short.png", title="word")
    width, height = _png_size(tmp_path / "short.png")
    assert (width, height) == (310, 255)  # (0.4 x 4 + 1.5) x (0.35 x 3 + 1.5) inches at 100 dpi


def test_dollar_signs_are_text_not_math(tmp_path):
    """matplotlib read "$\\frac{$" as the start of a formula and failed (and "$5 to $10" came out as math)."""
    tokens = ["die", "$\\frac{$", "katze", "$5", "to", "$10"]
    plot_attention(torch.full((2, 6), 1 / 6), tokens, ["$x$", "y"], tmp_path / "dollar.png", title=" ".join(tokens))
    assert _png_size(tmp_path / "dollar.png")[0] > 0
