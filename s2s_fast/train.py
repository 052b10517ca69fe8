"""Training: configuration, the loop, dev evaluation with early stopping, checkpoints, exact resume, DDP.

Configuration precedence: TrainConfig defaults < the task's defaults (TASK_DEFAULTS) < a config file < flags; when
resuming, the run's saved configuration replaces the first two. The resolved configuration is written to
``<output_dir>/config.json`` and into every checkpoint.

Resuming is exact: the data order is a function of (seed, epoch), and the checkpoint holds the position in it, the
optimizer and scheduler states and every process's RNG states, so a run stopped at step k and resumed ends with the
same weights as one that ran straight through (as long as the configuration is the same).

Distributed: under torchrun (WORLD_SIZE > 1) each process takes every WORLD_SIZE-th batch of the common order and
DistributedDataParallel averages gradients (NCCL on GPUs, gloo on CPUs). Process 0 logs, evaluates and saves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from .backends import resolve_device
from .checkpoint import (find_checkpoint, is_better, load_checkpoint, load_trainer_state, save_checkpoint,
                         update_best, write_json_atomic)
from .data import (BOS_ID, EOS_ID, PAD_ID, build_task, check_task_name, collate, example_length, load_task,
                   token_batches)
from .evaluate import evenly_spaced, score_items
from .models import PRESETS, Seq2Seq, Seq2SeqConfig, preset_config, sequence_loss

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


def model_config(config: TrainConfig, src_vocab_size: int, tgt_vocab_size: int) -> Seq2SeqConfig:
    if config.preset is not None:
        return preset_config(config.preset, src_vocab_size, tgt_vocab_size, **config.model)
    options = {**(TOY_MODEL if config.task not in ("g2p", "parallel") else {}), **config.model}
    return Seq2SeqConfig(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, **options)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the peak learning rate before optimizer step ``step`` (0-based): linear warm-up, then decay
    to min_lr_ratio at decay_steps (default max_steps) along the chosen schedule."""
    warmup = config.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "constant":
        return 1.0
    if config.lr_schedule == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / (step + 1))
    horizon = config.decay_steps or config.max_steps
    progress = min(1.0, (step - warmup) / max(horizon - warmup, 1))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if config.lr_schedule == "cosine" else 1.0 - progress
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape


def sampling_rate_at(step: int, config: TrainConfig) -> float:
    if config.sampling_warmup_steps == 0:
        return config.sampling_rate
    return config.sampling_rate * min(1.0, step / config.sampling_warmup_steps)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_gather(self, value) -> list:
        if self.world == 1:
            return [value]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value):
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE > 1); NCCL on CUDA, gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size()), device


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class Logger:
    """Lines to stdout and <output_dir>/train.log, events to <output_dir>/metrics.jsonl; silent off process 0."""

    def __init__(self, output_dir: Path, active: bool, echo: Callable[[str], Any] = print):
        self.active = active
        self.echo = echo
        self.log_path = output_dir / "train.log"
        self.metrics_path = output_dir / "metrics.jsonl"

    def __call__(self, line: str) -> None:
        if self.active:
            self.echo(line)
            with open(self.log_path, "a") as file:
                file.write(line + "\n")

    def event(self, **values) -> None:
        if self.active:
            with open(self.metrics_path, "a") as file:
                file.write(json.dumps(values) + "\n")


@dataclass
class TrainResult:
    model: Seq2Seq
    step: int
    best: dict | None
    stopped_early: bool
    output_dir: Path


def _resolve_for_run(config: TrainConfig, explicit: dict, resume: bool) -> tuple[TrainConfig, Path | None]:
    """The resolved configuration and, when resuming, the checkpoint to start from."""
    output_dir = Path(config.output_dir)
    has_checkpoint = (output_dir / "checkpoints" / "latest.json").is_file()
    if not resume:
        if has_checkpoint:
            raise ValueError(f"{output_dir} already holds a training run; pass --resume to continue it or choose "
                             "another --output-dir")
        return config.with_task_defaults(), None
    if not has_checkpoint:
        raise ValueError(f"--resume: {output_dir} holds no checkpoint to resume from")
    checkpoint = find_checkpoint(output_dir, "last")
    saved = json.loads((checkpoint / "train_config.json").read_text())
    saved["output_dir"] = str(output_dir)
    changed = [name for name in FIXED_ON_RESUME if name in explicit and explicit[name] != saved.get(name)]
    if changed:
        raise ValueError(f"--resume: cannot change {', '.join(changed)} of an existing run (start a new one in "
                         "another --output-dir)")
    return TrainConfig.from_dict({**saved, **explicit}).validate(), checkpoint


def train(config: TrainConfig, resume: bool = False, explicit: dict | None = None,
          echo: Callable[[str], Any] = print) -> TrainResult:
    """Train (or, with resume, continue) the run described by ``config``; ``explicit`` names the settings the user
    gave (they override a resumed run's saved configuration)."""
    config.validate()
    explicit = explicit if explicit is not None else config.to_dict()
    device = resolve_device(config.device)
    distributed, device = setup_distributed(device)
    threads = torch.get_num_threads()
    try:
        return _train(config, resume, explicit, echo, device, distributed)
    finally:
        torch.set_num_threads(threads)
        if distributed.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, resume: bool, explicit: dict, echo, device: torch.device,
           distributed: Distributed) -> TrainResult:
    config, start_checkpoint = _resolve_for_run(config, explicit, resume)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    output_dir = Path(config.output_dir)
    if distributed.main:
        output_dir.mkdir(parents=True, exist_ok=True)
    distributed.barrier()
    log = Logger(output_dir, distributed.main, echo)
    if distributed.main:
        write_json_atomic(output_dir / "config.json", config.to_dict())

    if start_checkpoint is not None:
        model, task, _ = load_checkpoint(start_checkpoint, "cpu")
        model.train()
        state = load_trainer_state(start_checkpoint)
    else:
        vocab_dir = output_dir / "vocab"
        if distributed.main:
            task = build_task(config.task, config.task_options(), vocab_dir)
            task.save(vocab_dir)
        distributed.barrier()
        if not distributed.main:
            task = load_task(vocab_dir)
        torch.manual_seed(config.seed)
        model = Seq2Seq(model_config(config, len(task.src_vocab), len(task.tgt_vocab)))
        state = None
    model.to(device)

    pairs = task.training_pairs("train")
    if not pairs:
        raise ValueError(f"task {config.task}: the training split is empty")
    lengths = [example_length(source, target) for source, target in pairs]
    dev_items = None
    if config.eval_every:
        try:
            dev_items = evenly_spaced(task.evaluation_items("dev"), config.eval_max_examples)
        except ValueError as error:
            log(f"no dev evaluation: {error}")

    parameters = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in parameters if p.dim() > 1]
    no_decay = [p for p in parameters if p.dim() <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr,
                                  betas=tuple(config.adam_betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    step, epoch, epoch_step = 0, 0, 0
    best, evals_since_best, stopped_early = None, 0, False
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, epoch_step = state["step"], state["epoch"], state["epoch_step"]
        best, evals_since_best = state["best"], state["evals_since_best"]
        if state["world_size"] != distributed.world:
            log(f"note: resuming a run of {state['world_size']} process(es) on {distributed.world}: the data order "
                "and random draws differ from an uninterrupted run")
            torch.manual_seed(config.seed + 7919 * distributed.rank + step)
        else:
            _set_rng_state(state["rng"][distributed.rank], device)
        log(f"resumed from {start_checkpoint} at step {step} (epoch {epoch}, batch {epoch_step} of it)")
    else:
        # Every process starts from the same weights (seeded above); dropout and sampling draws differ per process.
        torch.manual_seed(config.seed + 7919 * distributed.rank)

    trained = model
    if distributed.world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    use_bf16 = device.type == "cuda" and config.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
    use_bf16 = use_bf16 or (device.type == "cpu" and config.precision == "bf16")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext

    parameter_count = sum(p.numel() for p in model.parameters())
    log(f"task {task.name}: {len(pairs)} training pairs, vocabularies {len(task.src_vocab)} / "
        f"{len(task.tgt_vocab)}; model {parameter_count:,} parameters; {device}"
        f"{', bf16 autocast' if use_bf16 else ''}; {distributed.world} process(es); output {output_dir}")
    log(f"model: {json.dumps(model.config.to_dict())}")

    def save(is_eval_step: bool, metrics: dict | None) -> None:
        nonlocal best, evals_since_best
        rng = distributed.all_gather(_rng_state(device))
        trainer_state = {"step": step, "epoch": epoch, "epoch_step": epoch_step,
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng,
                         "best": best, "evals_since_best": evals_since_best, "world_size": distributed.world}
        if not distributed.main:
            return
        checkpoint = save_checkpoint(output_dir, step, model, task, config.to_dict(), trainer_state,
                                     config.keep_checkpoints)
        if is_eval_step and best is not None and best["step"] == step:
            update_best(output_dir, checkpoint, task.primary_metric, best["value"], task.higher_is_better,
                        {"metrics": metrics})

    def evaluate_dev() -> dict:
        nonlocal best, evals_since_best
        started = time.perf_counter()
        metrics, _ = score_items(model, task, dev_items, beam_size=config.eval_beam_size)
        value = metrics[task.primary_metric]
        improved = is_better(value, best["value"] if best else None, task.higher_is_better)
        if improved:
            best, evals_since_best = {"step": step, "value": value}, 0
        else:
            evals_since_best += 1
        log(f"dev step {step}: {task.format_metrics(metrics)} ({len(dev_items)} examples, "
            f"{time.perf_counter() - started:.1f} s){'  new best' if improved else ''}")
        log.event(kind="dev", step=step, **metrics, best=improved)
        return metrics

    progress = None
    show_progress = config.progress == "on" or (config.progress == "auto" and sys.stderr.isatty())
    if distributed.main and show_progress:
        from tqdm import tqdm

        progress = tqdm(total=config.max_steps, initial=step, unit="step", dynamic_ncols=True)
        log.echo = tqdm.write
    window_loss, window_targets, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
    run_start, start_step = time.perf_counter(), step
    model.train()
    while step < config.max_steps and not stopped_early:
        batches = token_batches(lengths, config.batch_tokens, seed=config.seed, epoch=epoch,
                                max_batch_size=config.max_batch_size)
        steps_in_epoch = len(batches) // distributed.world
        if steps_in_epoch == 0:
            raise ValueError(f"the training data make {len(batches)} batch(es), fewer than the {distributed.world} "
                             "processes; lower --batch-tokens")
        while epoch_step < steps_in_epoch and step < config.max_steps:
            indices = batches[epoch_step * distributed.world + distributed.rank]
            batch = collate([pairs[i] for i in indices], PAD_ID, BOS_ID, EOS_ID).to(device)
            with autocast():
                logits = trained(batch.src, batch.src_lengths, batch.tgt_in,
                                 sampling_rate=sampling_rate_at(step, config))
                loss = sequence_loss(logits, batch.tgt_out, PAD_ID, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            epoch_step += 1
            target_tokens = int((batch.tgt_out != PAD_ID).sum())
            window_loss += float(loss.detach()) * target_tokens
            window_targets += target_tokens
            window_tokens += target_tokens + int(batch.src_lengths.sum())
            if progress is not None:
                progress.update(1)
            if step % config.log_every == 0 or step == config.max_steps:
                totals = torch.tensor([window_loss, float(window_targets), float(window_tokens)], dtype=torch.float64)
                if distributed.world > 1:
                    dist.all_reduce(totals)
                elapsed = time.perf_counter() - window_start
                tokens_per_second = float(totals[2]) / max(elapsed, 1e-9)
                mean_loss = float(totals[0]) / max(float(totals[1]), 1.0)
                log.event(kind="train", step=step, epoch=epoch, loss=mean_loss, lr=scheduler.get_last_lr()[0],
                          tokens_per_second=tokens_per_second)
                if progress is not None:
                    progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_second:,.0f}")
                else:
                    log(f"step {step}  epoch {epoch}  loss {mean_loss:.4f}  lr {scheduler.get_last_lr()[0]:.2e}  "
                        f"{tokens_per_second:,.0f} tokens/s  {time.perf_counter() - run_start:,.0f} s")
                window_loss, window_targets, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
            is_eval_step = bool(dev_items) and (step % config.eval_every == 0 or step == config.max_steps)
            metrics = None
            if is_eval_step:
                metrics = evaluate_dev() if distributed.main else None
                best, evals_since_best = distributed.broadcast((best, evals_since_best))
                stopped_early = config.patience > 0 and evals_since_best >= config.patience
                model.train()
            if is_eval_step or step % config.save_every == 0 or step == config.max_steps or stopped_early:
                save(is_eval_step, metrics)
            if stopped_early:
                log(f"early stop at step {step}: no improvement in {config.patience} evaluations; best "
                    f"{task.primary_metric} {best['value']:.4f} at step {best['step']}")
                break
        if epoch_step >= steps_in_epoch:
            epoch, epoch_step = epoch + 1, 0
    if progress is not None:
        progress.close()
    if step == start_step and distributed.main:
        log(f"nothing to do: the run is already at step {step} (max_steps {config.max_steps})")
    log(f"done: step {step}, {time.perf_counter() - run_start:,.0f} s this session"
        + (f"; best dev {task.primary_metric} {best['value']:.4f} at step {best['step']}" if best else ""))
    model.eval()
    return TrainResult(model, step, best, stopped_early, output_dir)
