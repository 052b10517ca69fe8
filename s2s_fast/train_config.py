"""Training settings: TrainConfig, the task defaults, config files, and the configuration a run resumes with.

Each setting is declared once, as a TrainConfig field whose metadata (see ``setting``) holds its help text, its
check, its section of the train command's help, its per-task defaults and whether a resumed run must keep it;
validate(), TASK_DEFAULTS, FIXED_ON_RESUME, task_options() and the command line's flags are all read from there.

Precedence: TrainConfig defaults < the task's defaults (TASK_DEFAULTS) < a config file < flags; when resuming, the
run's saved configuration replaces the first two, and the settings in FIXED_ON_RESUME (the model and its data) cannot
change. The resolved configuration is written to ``<output_dir>/config.json`` and into every checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path

from .backends import MATMUL_PRECISIONS
from .checkpoint import CHECKPOINTS, latest_checkpoint, read_train_config
from .config_values import coerce, optional_type
from .data import TASK_NAMES, check_task_name
from .data.metrics import BLEU_TOKENIZE, DEFAULT_BLEU_TOKENIZE
from .files import read_text
from .models import PRESETS, Seq2SeqConfig, preset_config
from .models.config import FIELD_TYPES as MODEL_FIELD_TYPES

LR_SCHEDULES = ("cosine", "linear", "inverse_sqrt", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
PROGRESS = ("auto", "on", "off")
SPM_MODEL_TYPES = ("unigram", "bpe", "char", "word")
# Task defaults are given for "g2p", "parallel" and "toy" (every toy task alike).
TOY = "toy"
TOY_MODEL = dict(embed_dim=32, hidden_size=64, encoder_layers=1, decoder_layers=1, bidirectional=True, cell="lstm",
                 attention="bahdanau", input_feeding=True, dropout=0.0)
# Sections of the train command's help, in order.
DATA, MODEL, OPTIMISATION, EVALUATION, RUNTIME = ("task and data", "model", "optimisation",
                                                   "dev evaluation and checkpoints", "runtime")
# The checks a setting may name: what its values must be, None aside where the default is None.
CHECKS = {"positive": lambda value: value > 0, "non-negative": lambda value: value >= 0,
          "fraction": lambda value: 0 <= value <= 1, "seed": lambda value: abs(value) < SEED_BOUND}
# Seeds lie within +-2**62: torch's generators take 64 bits, and a run seeds them with the seed plus its process
# and step counts.
SEED_BOUND = 2 ** 62


def setting(default, help: str, *, section: str, check: str | None = None, choices: tuple | None = None,
            task_defaults: dict | None = None, unset: str | None = None, fixed_on_resume: bool = False,
            task_option: str | None = None, metavar: str | tuple | None = None):
    """A TrainConfig field.

    Args:
        default: the value when nothing sets it; None with ``task_defaults`` means "the task's value".
        help: what the setting does, as the train command's --help shows it (followed there by the default).
        section: the group of the help it is listed in (DATA, MODEL, OPTIMISATION, EVALUATION, RUNTIME).
        check: a key of CHECKS the value must pass.
        choices: the values allowed.
        task_defaults: {"g2p": ..., "parallel": ..., "toy": ...}, the value a run of that task gets when unset.
        unset: what a default of None means, for the help (e.g. "no cap").
        fixed_on_resume: the setting defines the model or its data, so a resumed run must keep it.
        task_option: the tasks that read it ("parallel", or TOY for every toy task; passed to
            s2s_fast.data.build_task); given to another task, it is refused. A resumed run reads the task saved with
            its checkpoint, so a task option is fixed on resume too: a new value would be recorded, not used.
        metavar: the value's name in the help.
    """
    metadata = dict(help=help, section=section, check=check, choices=choices, task_defaults=task_defaults,
                    unset=unset, fixed_on_resume=fixed_on_resume or task_option is not None, task_option=task_option,
                    metavar=metavar)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _parallel_file(split: str, side: str) -> dataclasses.Field:
    """The setting naming one of the parallel task's text files, e.g. (train, src) -> train_src."""
    return setting(None, f"parallel: {split} {dict(src='source', tgt='target')[side]} sentences, one per line",
                   section=DATA, metavar="FILE", task_option="parallel")


def _toy_setting(default: int, help: str, check: str | None = "positive"):
    """A setting of the toy tasks' data."""
    return setting(default, f"toy tasks: {help}", section=DATA, check=check, task_option=TOY)


@dataclass
class TrainConfig:
    """Everything a training run needs; None means the task's default where the field has task defaults."""

    task: str = setting("g2p", "g2p (CMUdict), parallel (text files) or a toy task", section=DATA,
                        choices=TASK_NAMES, fixed_on_resume=True)
    output_dir: str | None = setting(None, "where checkpoints, logs and the resolved config go", section=DATA,
                                     metavar="DIR")
    train_src: str | None = _parallel_file("train", "src")
    train_tgt: str | None = _parallel_file("train", "tgt")
    dev_src: str | None = _parallel_file("dev", "src")
    dev_tgt: str | None = _parallel_file("dev", "tgt")
    test_src: str | None = _parallel_file("test", "src")
    test_tgt: str | None = _parallel_file("test", "tgt")
    src_spm: str | None = setting(None, "parallel: a trained sentencepiece model for the source", section=DATA,
                                  unset="one trained on --train-src", metavar="MODEL", task_option="parallel")
    tgt_spm: str | None = setting(None, "parallel: a trained sentencepiece model for the target", section=DATA,
                                  unset="one trained on --train-tgt", metavar="MODEL", task_option="parallel")
    spm_vocab_size: int = setting(8000, "parallel: pieces per trained sentencepiece model", section=DATA,
                                  check="positive", task_option="parallel")
    spm_model_type: str = setting("unigram", "parallel: the kind of sentencepiece model trained", section=DATA,
                                  choices=SPM_MODEL_TYPES, task_option="parallel")
    max_length: int = setting(100, "parallel: drop training pairs longer than this (in pieces)", section=DATA,
                              check="positive", task_option="parallel")
    bleu_tokenize: str = setting(DEFAULT_BLEU_TOKENIZE, "parallel: sacrebleu's tokenization for BLEU (zh or char "
                                 "for text without spaces, such as Chinese or Japanese)", section=DATA,
                                 choices=BLEU_TOKENIZE, task_option="parallel")
    toy_symbols: int = _toy_setting(10, "distinct symbols")
    toy_min_len: int = _toy_setting(3, "shortest sequence")
    toy_max_len: int = _toy_setting(12, "longest sequence")
    toy_train_size: int = _toy_setting(20000, "training sequences")
    toy_eval_size: int = _toy_setting(500, "dev and test sequences")
    toy_seed: int = _toy_setting(0, "data seed", check="seed")

    preset: str | None = setting(None, "model preset from s2s_fast.models.PRESETS; toy tasks without one get a "
                                 "small built-in model", section=MODEL,
                                 task_defaults={"g2p": "g2p", "parallel": "translation", TOY: None},
                                 fixed_on_resume=True)
    model: dict = setting({}, "override a Seq2SeqConfig field of the preset, e.g. --model attention=none --model "
                          "hidden_size=512 (repeatable)", section=MODEL, metavar="KEY=VALUE", fixed_on_resume=True)

    max_steps: int | None = setting(None, "optimizer steps to train for", section=OPTIMISATION, check="positive",
                                    task_defaults={"g2p": 12000, "parallel": 20000, TOY: 1000})
    batch_tokens: int | None = setting(None, "padded tokens per batch (length-bucketed)", section=OPTIMISATION,
                                       check="positive", task_defaults={"g2p": 2400, "parallel": 4096, TOY: 640},
                                       fixed_on_resume=True)
    max_batch_size: int | None = setting(None, "cap on sentences per batch", section=OPTIMISATION, check="positive",
                                         unset="no cap", fixed_on_resume=True)
    lr: float | None = setting(None, "peak learning rate of AdamW", section=OPTIMISATION, check="positive",
                               task_defaults={"g2p": 2e-3, "parallel": 1e-3, TOY: 3e-3})
    lr_schedule: str = setting("cosine", "decay after warm-up", section=OPTIMISATION, choices=LR_SCHEDULES)
    warmup_steps: int | None = setting(None, "linear warm-up steps (the task's default: a tenth of a run that ends "
                                       "within it)", section=OPTIMISATION, check="non-negative",
                                       task_defaults={"g2p": 400, "parallel": 1000, TOY: 50})
    decay_steps: int | None = setting(None, "step at which decay ends", section=OPTIMISATION, check="positive",
                                      unset="--max-steps")
    min_lr_ratio: float = setting(0.02, "final learning rate / peak", section=OPTIMISATION, check="fraction")
    weight_decay: float = setting(0.01, "AdamW weight decay of matrices", section=OPTIMISATION,
                                  check="non-negative")
    adam_betas: list[float] = setting([0.9, 0.98], "AdamW's two betas", section=OPTIMISATION,
                                      metavar=("BETA1", "BETA2"))
    label_smoothing: float = setting(0.1, "label smoothing of the loss", section=OPTIMISATION, check="fraction")
    clip_norm: float = setting(1.0, "gradient norm clipping, 0 disables", section=OPTIMISATION, check="non-negative")
    sampling_rate: float = setting(0.0, "scheduled sampling rate, 0 = teacher forcing", section=OPTIMISATION,
                                   check="fraction")
    sampling_warmup_steps: int = setting(0, "steps over which the sampling rate ramps up from 0",
                                         section=OPTIMISATION, check="non-negative")

    eval_every: int | None = setting(None, "evaluate on dev every N steps (0: never)", section=EVALUATION,
                                     check="non-negative", task_defaults={"g2p": 1000, "parallel": 1000, TOY: 250})
    save_every: int | None = setting(None, "checkpoint every N steps", section=EVALUATION, check="positive",
                                     unset="--eval-every, or max_steps / 10 without dev evaluation")
    patience: int = setting(0, "stop after N evaluations without improvement (0: never)", section=EVALUATION,
                            check="non-negative")
    eval_beam_size: int = setting(1, "beam size of dev evaluations", section=EVALUATION, check="positive")
    eval_max_examples: int | None = setting(None, "evaluate on an evenly spread dev subset of this size",
                                            section=EVALUATION, check="positive", unset="all of dev")
    keep_checkpoints: int = setting(1, "recent checkpoints kept besides the best", section=EVALUATION,
                                    check="positive")

    device: str = setting("auto", "auto (cuda if present), cpu or cuda", section=RUNTIME)
    precision: str = setting("auto", "auto: bf16 autocast on GPUs, fp32 on CPUs", section=RUNTIME,
                             choices=PRECISIONS)
    matmul_precision: str | None = setting(
        None, "torch.set_float32_matmul_precision for the run: medium lets float32 matrix products run in bfloat16 "
        "(on a CPU the cpu backend's, where the CPU has bfloat16 products in hardware, AVX512-BF16 or AMX; on a GPU "
        "cuBLAS's TF32 or bfloat16), high in TF32", section=RUNTIME, choices=MATMUL_PRECISIONS,
        unset="as the process has it, torch's default highest")
    seed: int = setting(0, "seed of the initial weights, the data order and random draws", section=RUNTIME,
                        check="seed", fixed_on_resume=True)
    threads: int | None = setting(None, "torch CPU threads", section=RUNTIME, check="positive",
                                  unset="torch's choice")
    log_every: int = setting(100, "log loss and tokens/s every N steps", section=RUNTIME, check="positive")
    progress: str = setting("auto", "tqdm progress bar (auto: on a terminal)", section=RUNTIME, choices=PROGRESS)

    def validate(self, together: bool = True) -> "TrainConfig":
        """Check every setting (made its type); with ``together``, also the settings that must agree with each other
        (the flags of a resumed run are checked alone: the run's saved settings complete them)."""
        check_task_name(self.task)
        if not self.output_dir:
            raise ValueError("an output directory is needed (--output-dir DIR)")
        for spec in dataclasses.fields(self):
            setattr(self, spec.name, checked_setting(spec, getattr(self, spec.name)))
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        return self._check_together() if together else self

    def _check_together(self) -> "TrainConfig":
        for spec in _other_tasks_settings(self.task):
            if getattr(self, spec.name) != default_of(spec):
                owner = spec.metadata["task_option"]
                raise ValueError(f"{spec.name} is read by the {'toy tasks' if owner == TOY else owner + ' task'}, "
                                 f"not by {self.task}")
        for name, why in self._unread().items():
            raise ValueError(f"{name} ({getattr(self, name)!r}) {why}")
        if None not in (self.decay_steps, self.warmup_steps) and self.decay_steps <= self.warmup_steps:
            raise ValueError(f"decay_steps ({self.decay_steps}) must exceed warmup_steps ({self.warmup_steps}): the "
                             "decay runs from the end of the warm-up to that step")
        if self.toy_min_len > self.toy_max_len:
            raise ValueError(f"toy_min_len ({self.toy_min_len}) exceeds toy_max_len ({self.toy_max_len})")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown model preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        if self._model_decided():
            self.model_config(100, 100)  # the model's own refusals (any vocabulary sizes) before the task is built
        return self

    def given(self) -> dict:
        """The settings away from their defaults (what a TrainConfig built in Python was given)."""
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)
                if getattr(self, spec.name) != default_of(spec)}

    def _unread(self) -> dict[str, str]:
        """{setting: why} for each setting set away from its default that this configuration never reads: refused,
        as an option accepted and ignored would be (another task's settings are refused apart)."""
        unread, given = {}, self.given().keys()
        if self.lr_schedule not in ("cosine", "linear"):
            for name in {"decay_steps", "min_lr_ratio"} & given:
                unread[name] = ("is read by the cosine and linear schedules only, not by lr_schedule "
                                f"{self.lr_schedule!r}")
        if "sampling_warmup_steps" in given and self.sampling_rate == 0:
            unread["sampling_warmup_steps"] = "ramps up scheduled sampling, and sampling_rate is 0 (teacher forcing)"
        if not self.has_dev_evaluation():
            none = "makes none (" + ("--eval-every 0" if self.eval_every == 0 else "no --dev-src/--dev-tgt") + ")"
            if "patience" in given:
                unread["patience"] = f"counts dev evaluations without improvement, and this run {none}"
            for name in {"eval_beam_size", "eval_max_examples"} & given:
                unread[name] = f"is read by dev evaluations, and this run {none}"
        if self.task == "parallel" and self.src_spm and self.tgt_spm:
            for name in {"spm_vocab_size", "spm_model_type"} & given:
                unread[name] = ("is read when a sentencepiece model is trained, and --src-spm and --tgt-spm both give "
                                "one")
        return dict(sorted(unread.items()))

    def notes(self) -> list[str]:
        """What the run's log should say about settings that are allowed but likely not meant."""
        if self.decay_steps is None and self.warmup_steps >= self.max_steps:
            return [f"the warm-up ({self.warmup_steps} steps) outlasts the run ({self.max_steps}): the learning rate "
                    "stays below its peak throughout"]
        return []

    def has_dev_evaluation(self) -> bool:
        """Whether the run scores dev: --eval-every not 0, and for the parallel task dev files given."""
        return self.eval_every != 0 and (self.task != "parallel" or bool(self.dev_src and self.dev_tgt))

    def with_task_defaults(self) -> "TrainConfig":
        """A copy with every None that has a task default filled in (the resolved configuration). The task's
        warm-up, where the run's decay ends within it (a short trial run), becomes a tenth of the run; the default
        checkpoint interval is --eval-every where dev is scored, else a tenth of the run."""
        defaults = TASK_DEFAULTS[task_family(self.task)]
        filled = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        resolved = dataclasses.replace(self, **filled)
        horizon = resolved.decay_steps or resolved.max_steps
        if "warmup_steps" in filled and resolved.warmup_steps >= horizon:
            resolved.warmup_steps = horizon // 10
        if resolved.save_every is None:
            dev = resolved.has_dev_evaluation()
            resolved.save_every = resolved.eval_every if dev else max(resolved.max_steps // 10, 1)
        return resolved.validate()

    def task_options(self) -> dict:
        """The settings the task reads (those declared with task_option)."""
        return {spec.name: getattr(self, spec.name) for spec in dataclasses.fields(self)
                if spec.metadata["task_option"] is not None}

    def model_config(self, src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqConfig:
        """The model to build: the preset (toy tasks without one: TOY_MODEL) with the ``model`` overrides."""
        if self.preset is not None:
            return preset_config(self.preset, src_vocab_size, tgt_vocab_size, **self.model)
        return Seq2SeqConfig(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, **self._model_fields())

    def _model_fields(self) -> dict:
        """The Seq2SeqConfig fields the preset (toy tasks without one: TOY_MODEL) and the ``model`` overrides set."""
        base = PRESETS[self.preset] if self.preset is not None else TOY_MODEL if task_family(self.task) == TOY else {}
        return {**base, **self.model}

    def _model_decided(self) -> bool:
        """Whether the preset is known (the g2p and parallel tasks' is filled in with the task's defaults)."""
        return self.preset is not None or task_family(self.task) == TOY

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "configuration") -> "TrainConfig":
        return cls(**read_settings(values, source))


SETTINGS = dataclasses.fields(TrainConfig)


def task_family(task: str) -> str:
    """The key of a task in TASK_DEFAULTS and in the settings' task_option: "g2p", "parallel", or TOY."""
    return task if task in ("g2p", "parallel") else TOY


def _other_tasks_settings(task: str) -> list[dataclasses.Field]:
    """The settings only other tasks than ``task`` read."""
    return [spec for spec in SETTINGS if spec.metadata["task_option"] not in (None, task_family(task))]
_TYPE_HINTS = typing.get_type_hints(TrainConfig)
# Per task, the values of the TrainConfig fields left as None.
TASK_DEFAULTS = {task: {spec.name: spec.metadata["task_defaults"][task] for spec in SETTINGS
                        if spec.metadata["task_defaults"]} for task in ("g2p", "parallel", TOY)}
# Fields that define the model and its data; a resumed run must keep them.
FIXED_ON_RESUME = tuple(spec.name for spec in SETTINGS if spec.metadata["fixed_on_resume"])


def default_of(spec: dataclasses.Field):
    """The value a TrainConfig gets for ``spec`` when nothing sets it."""
    return spec.default_factory() if spec.default is dataclasses.MISSING else spec.default


def setting_type(spec: dataclasses.Field):
    """The type of the setting's values, None aside, from the field's annotation: int, float, str, dict or
    list[float]."""
    return optional_type(_TYPE_HINTS[spec.name])[0]


def checked_setting(spec: dataclasses.Field, value):
    """``value`` made the type the setting declares (see s2s_fast.config_values) and checked against its choices
    and its check; raises ValueError naming the setting."""
    name, check, choices = spec.name, spec.metadata["check"], spec.metadata["choices"]
    if isinstance(value, bool) and choices is not None and {"on", "off"} <= set(choices):
        # YAML reads an unquoted on / off as a bool.
        value = "on" if value else "off"
    value = coerce(name, value, _TYPE_HINTS[name])
    if value is None:
        return None
    if choices is not None and value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    if check is not None and not CHECKS[check](value):
        if check == "seed":
            raise ValueError(f"{name} must be an integer in (-2**62, 2**62), got {value!r}")
        if setting_type(spec) is int:
            null = " or null" if spec.default is None and not spec.metadata["task_defaults"] else ""
            raise ValueError(f"{name} must be a {check} integer{null}, got {value!r}")
        raise ValueError(f"{name} must be {'in [0, 1]' if check == 'fraction' else check}, got {value!r}")
    return _checked_model_overrides(value) if name == "model" else value


# Seq2SeqConfig fields the data set, not the model setting: the vocabulary sizes, and the special tokens' ids, which
# every task's vocabularies and batches place at PAD_ID, BOS_ID and EOS_ID (a model told otherwise would stop
# decoding at an ordinary symbol and never learn another).
_SET_BY_THE_DATA = ("src_vocab_size", "tgt_vocab_size", "pad_id", "bos_id", "eos_id")


def _checked_model_overrides(overrides: dict) -> dict:
    """The ``model`` setting: Seq2SeqConfig fields (those the data set aside), each value made the field's type."""
    valid = {name: hint for name, hint in MODEL_FIELD_TYPES.items() if name not in _SET_BY_THE_DATA}
    overrides = _by_field_name(overrides, "model: ")
    fixed = sorted(set(overrides) & set(_SET_BY_THE_DATA))
    if fixed:
        raise ValueError(f"model: {', '.join(fixed)} cannot be set: the data set the vocabulary sizes and the special "
                         "tokens' ids")
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"model: unknown field(s) {', '.join(unknown)}; valid fields: {', '.join(valid)}")
    return {key: coerce(f"model: {key}", value, valid[key]) for key, value in overrides.items()}


def _by_field_name(values: dict, where: str) -> dict:
    """``values`` keyed by field name (a - read as _); two keys that name one field are refused."""
    named = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name in named:
            spellings = [repr(k) for k in values if str(k).replace("-", "_") == name]
            raise ValueError(f"{where}{name} is given twice (as {' and '.join(spellings)})")
        named[name] = value
    return named


def read_settings(values: dict, source: str) -> dict:
    """Settings given by name (with - or _), each made its field's type and checked; an unknown name or a bad value
    raises ValueError that starts with ``source`` (a config file's path, or "flags")."""
    specs = {spec.name: spec for spec in SETTINGS}
    values = _by_field_name(values, f"{source}: ")
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(specs))}")
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = checked_setting(specs[name], value)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None
    return checked


def read_config_file(path: str) -> dict:
    """Settings from a YAML or JSON file (a mapping of TrainConfig field names)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    text = read_text(file)
    try:
        values = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the config file must hold a mapping of settings, got {type(values).__name__}")
    return values


def _same_model(saved: dict, merged: dict) -> bool:
    """Whether the preset and model overrides of ``merged`` (the saved settings with the given ones) make the saved
    run's model: the same Seq2SeqConfig, whatever they spell out (a preset's own dropout restated, say)."""
    def model(values: dict) -> dict:
        config = TrainConfig.from_dict({key: values.get(key) for key in ("task", "preset", "model")
                                        if values.get(key) is not None})
        return config.model_config(100, 100).to_dict()  # any vocabulary sizes: the same for both

    try:
        return model(saved) == model(merged)
    except ValueError:
        return False


def resolve_run_config(config: TrainConfig, explicit: dict, resume: bool) -> tuple[TrainConfig, Path | None]:
    """The resolved configuration of a run and, when resuming, the checkpoint to start from; ``explicit`` holds the
    settings the user gave, which override a resumed run's saved configuration."""
    if not resume:
        return config.with_task_defaults(), None
    output_dir = Path(config.output_dir)
    checkpoint = latest_checkpoint(output_dir / CHECKPOINTS)
    if checkpoint is None:
        raise ValueError(f"--resume: {output_dir} holds no checkpoint to resume from")
    saved = read_train_config(checkpoint)
    saved["output_dir"] = str(output_dir)
    saved = _without_what_went_unread(saved)
    # A None that a task default fills means that default, as in a fresh start (not the None itself, which the run
    # cannot train with, nor a change of a setting fixed on resume).
    defaults = TASK_DEFAULTS[task_family(saved["task"])]
    explicit = {name: defaults[name] if value is None and name in defaults else value
                for name, value in explicit.items()}
    merged = {**saved, **explicit}
    if "model" in explicit:  # --model overrides merge key by key over the run's, as over a config file's
        merged["model"] = {**(saved.get("model") or {}), **explicit["model"]}
    changed = [name for name in FIXED_ON_RESUME if name in explicit and merged[name] != saved.get(name)
               and not (name in ("preset", "model") and _same_model(saved, merged))]
    if changed:
        raise ValueError(f"--resume: cannot change {', '.join(changed)} of an existing run (start a new one in "
                         "another --output-dir)")
    # The run's own settings that it recorded unread (before such were refused), or that the flags given now leave
    # unread (--eval-every 0 over its eval_beam_size), go back to their defaults; one the user gives is refused.
    for name in TrainConfig.from_dict(merged)._unread():
        if name not in explicit:
            merged[name] = default_of(TrainConfig.__dataclass_fields__[name])
    return TrainConfig.from_dict(merged).with_task_defaults(), checkpoint


def _without_what_went_unread(saved: dict) -> dict:
    """A run's saved settings without those it recorded but never read, which are refused since: another task's
    settings, an attention_size of an attention that has none (those TrainConfig._unread names are reset once the
    flags given on resume are merged in: resolve_run_config)."""
    saved = dict(saved)
    config = TrainConfig.from_dict(saved)
    for spec in _other_tasks_settings(config.task):
        saved[spec.name] = default_of(spec)
    if "attention_size" in config.model and \
            config._model_fields().get("attention", Seq2SeqConfig.attention) != "bahdanau":
        saved["model"] = {key: value for key, value in config.model.items() if key != "attention_size"}
    return saved
