"""Training settings: TrainConfig, the task defaults, config files, and the configuration a run resumes with.

Precedence: TrainConfig defaults < the task's defaults (TASK_DEFAULTS) < a config file < flags; when resuming, the
run's saved configuration replaces the first two, and the settings in FIXED_ON_RESUME (the model and its data) cannot
change. The resolved configuration is written to ``<output_dir>/config.json`` and into every checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import CHECKPOINTS, LATEST, TRAIN_CONFIG, find_checkpoint
from .data import check_task_name
from .models import PRESETS, Seq2SeqConfig, preset_config

LR_SCHEDULES = ("cosine", "linear", "inverse_sqrt", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
PROGRESS = ("auto", "on", "off")
TOY_MODEL = dict(embed_dim=32, hidden_size=64, encoder_layers=1, decoder_layers=1, bidirectional=True, cell="lstm",
                 attention="bahdanau", input_feeding=True, dropout=0.0)

# Per task, the values of the TrainConfig fields left as None.
TASK_DEFAULTS = {
    "g2p": dict(preset="g2p", max_steps=12000, batch_tokens=2400, lr=2e-3, warmup_steps=400, eval_every=1000,
                eval_max_examples=None),
    "parallel": dict(preset="translation", max_steps=20000, batch_tokens=4096, lr=1e-3, warmup_steps=1000,
                     eval_every=1000, eval_max_examples=None),
    "toy": dict(preset=None, max_steps=1000, batch_tokens=640, lr=3e-3, warmup_steps=50, eval_every=250,
                eval_max_examples=None),
}
# Fields that define the model and its data; a resumed run must keep them.
FIXED_ON_RESUME = ("task", "preset", "model", "train_src", "train_tgt", "src_spm", "tgt_spm", "spm_vocab_size",
                   "spm_model_type", "max_length", "toy_symbols", "toy_min_len", "toy_max_len", "toy_train_size",
                   "toy_seed", "seed", "batch_tokens", "max_batch_size")



@dataclass
class TrainConfig:
    """Everything a training run needs; None means the task's default (see TASK_DEFAULTS)."""

    task: str = "g2p"
    output_dir: str | None = None
    # Parallel text (task "parallel").
    train_src: str | None = None
    train_tgt: str | None = None
    dev_src: str | None = None
    dev_tgt: str | None = None
    test_src: str | None = None
    test_tgt: str | None = None
    src_spm: str | None = None
    tgt_spm: str | None = None
    spm_vocab_size: int = 8000
    spm_model_type: str = "unigram"
    max_length: int = 100
    # Toy tasks (copy, reverse, sort).
    toy_symbols: int = 10
    toy_min_len: int = 3
    toy_max_len: int = 12
    toy_train_size: int = 20000
    toy_eval_size: int = 500
    toy_seed: int = 0
    # Model: a preset from s2s_fast.models.PRESETS and Seq2SeqConfig fields overriding it.
    preset: str | None = None
    model: dict = field(default_factory=dict)
    # Optimisation.
    max_steps: int | None = None
    batch_tokens: int | None = None
    max_batch_size: int | None = None
    lr: float | None = None
    lr_schedule: str = "cosine"
    warmup_steps: int | None = None
    decay_steps: int | None = None
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.01
    adam_betas: list = field(default_factory=lambda: [0.9, 0.98])
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    sampling_rate: float = 0.0
    sampling_warmup_steps: int = 0
    # Dev evaluation, early stopping, checkpoints.
    eval_every: int | None = None
    save_every: int | None = None
    patience: int = 0
    eval_beam_size: int = 1
    eval_max_examples: int | None = None
    keep_checkpoints: int = 1
    # Runtime.
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    threads: int | None = None
    log_every: int = 100
    progress: str = "auto"

    def validate(self) -> "TrainConfig":
        check_task_name(self.task)
        if not self.output_dir:
            raise ValueError("an output directory is needed (--output-dir DIR)")
        positive = ("max_steps", "batch_tokens", "warmup_steps", "eval_every", "save_every", "log_every",
                    "eval_beam_size", "keep_checkpoints", "spm_vocab_size", "max_length", "toy_symbols",
                    "toy_min_len", "toy_max_len", "toy_train_size", "toy_eval_size")
        for name in positive:
            value = getattr(self, name)
            allow_zero = name in ("warmup_steps", "eval_every")
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < (0 if allow_zero else 1)):
                raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} integer, "
                                 f"got {value!r}")
        for name in ("max_batch_size", "decay_steps", "eval_max_examples", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.progress not in PROGRESS:
            raise ValueError(f"progress must be one of {', '.join(PROGRESS)}, got {self.progress!r}")
        for name, low, high in (("label_smoothing", 0.0, 1.0), ("sampling_rate", 0.0, 1.0),
                                ("min_lr_ratio", 0.0, 1.0)):
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {getattr(self, name)}")
        if self.clip_norm < 0 or self.weight_decay < 0 or self.patience < 0 or self.sampling_warmup_steps < 0:
            raise ValueError("clip_norm, weight_decay, patience and sampling_warmup_steps must be non-negative")
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.toy_min_len > self.toy_max_len:
            raise ValueError(f"toy_min_len ({self.toy_min_len}) exceeds toy_max_len ({self.toy_max_len})")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown model preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be a mapping of Seq2SeqConfig fields, got {self.model!r}")
        return self

    def with_task_defaults(self) -> "TrainConfig":
        """A copy with every None that has a task default filled in (the resolved configuration)."""
        defaults = TASK_DEFAULTS["toy" if self.task not in TASK_DEFAULTS else self.task]
        filled = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        resolved = dataclasses.replace(self, **filled)
        if resolved.save_every is None:
            resolved.save_every = resolved.eval_every or max(resolved.max_steps // 10, 1)
        return resolved.validate()

    def task_options(self) -> dict:
        names = ("train_src", "train_tgt", "dev_src", "dev_tgt", "test_src", "test_tgt", "src_spm", "tgt_spm",
                 "spm_vocab_size", "spm_model_type", "max_length", "toy_symbols", "toy_min_len", "toy_max_len",
                 "toy_train_size", "toy_eval_size", "toy_seed")
        return {name: getattr(self, name) for name in names}

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqConfig:
        """The model to build: the preset (toy tasks without one: TOY_MODEL) with the ``model`` overrides."""
        if self.preset is not None:
            return preset_config(self.preset, src_vocab_size, tgt_vocab_size, **self.model)
        options = {**(TOY_MODEL if self.task not in ("g2p", "parallel") else {}), **self.model}
        return Seq2SeqConfig(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, **options)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "configuration") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key.replace("-", "_"): value for key, value in values.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


def read_config_file(path: str) -> dict:
    """Settings from a YAML or JSON file (a mapping of TrainConfig field names)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    text = file.read_text()
    try:
        values = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the config file must hold a mapping of settings, got {type(values).__name__}")
    return values


def resolve_run_config(config: TrainConfig, explicit: dict, resume: bool) -> tuple[TrainConfig, Path | None]:
    """The resolved configuration of a run and, when resuming, the checkpoint to start from; ``explicit`` holds the
    settings the user gave, which override a resumed run's saved configuration."""
    output_dir = Path(config.output_dir)
    has_checkpoint = (output_dir / CHECKPOINTS / LATEST).is_file()
    if not resume:
        if has_checkpoint:
            raise ValueError(f"{output_dir} already holds a training run; pass --resume to continue it or choose "
                             "another --output-dir")
        return config.with_task_defaults(), None
    if not has_checkpoint:
        raise ValueError(f"--resume: {output_dir} holds no checkpoint to resume from")
    checkpoint = find_checkpoint(output_dir, "last")
    saved = json.loads((checkpoint / TRAIN_CONFIG).read_text())
    saved["output_dir"] = str(output_dir)
    changed = [name for name in FIXED_ON_RESUME if name in explicit and explicit[name] != saved.get(name)]
    if changed:
        raise ValueError(f"--resume: cannot change {', '.join(changed)} of an existing run (start a new one in "
                         "another --output-dir)")
    return TrainConfig.from_dict({**saved, **explicit}).validate(), checkpoint
