"""examples/: the article's Keras example (LSTM encoder-decoder without attention) runs as a script and as a
command-line config."""

import json
import os
import subprocess
import sys
from pathlib import Path

from s2s_fast.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_keras_article_script_learns_the_article_data():
    environment = {**os.environ, "PYTHONPATH": str(EXAMPLES.parent), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(EXAMPLES / "keras_article.py"), "--article-data", "--epochs", "6"],
                            capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "held-out copies exact: 1/1" in result.stdout


def test_keras_article_config_trains_a_model_without_attention(tmp_path, capsys):
    run = tmp_path / "keras"
    assert main(["train", "--config", str(EXAMPLES / "keras_article.yaml"), "--output-dir", str(run),
                 "--max-steps", "3", "--eval-every", "3", "--toy-train-size", "200", "--toy-eval-size", "20",
                 "--device", "cpu", "--threads", "1", "--progress", "off"]) == 0
    model_config = json.loads(next(run.glob("checkpoints/step-*/model_config.json")).read_text())
    assert model_config["attention"] == "none" and model_config["decoder_layers"] == 2
    assert "dev step 3: accuracy" in capsys.readouterr().out
