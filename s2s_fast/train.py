"""Training: the loop, dev evaluation with early stopping, checkpoints, exact resume; settings in train_config.

``train`` resolves the configuration and hands it to a ``Trainer``, which reads like JoeyNMT's TrainManager or
nanoGPT's train.py: prepare the run (output directory, task, model, data), build or restore the optimizer and the
position in the data, then repeat one step, a throughput line now and then, and evaluate-and-checkpoint.

Resuming is exact: the data order is a function of (seed, epoch), and the checkpoint holds the position in it, the
optimizer and scheduler states and every process's RNG states, so a run stopped at step k and resumed ends with the
same weights as one that ran straight through (as long as the configuration is the same).

Nothing saved is lost: process 0 holds the output directory's lock for the run's life, and a directory that holds
a run's files is only used to resume that run or, told to, to replace it. A loss or weights that stop being finite
end the run (NonFiniteLoss) before anything of them is scored or saved; SIGINT and SIGTERM end the step, save a
checkpoint and raise TrainingInterrupted.

Distributed: under torchrun (WORLD_SIZE > 1) each process takes every WORLD_SIZE-th batch of the common order and
DistributedDataParallel averages gradients (see s2s_fast.distributed). Process 0 logs, evaluates and saves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .allocator import held_note
from .backends import float32_matmul_precision, matmul_precision_note, resolve_device
from .checkpoint import (CHECKPOINTS, NOT_DAMAGE, TRAINER_STATE, checkpoint_name, is_better, load_checkpoint,
                         load_trainer_state, read_train_config, repair_pointers, rng_state, save_checkpoint,
                         set_rng_state)
from .data import (BOS_ID, EOS_ID, PAD_ID, Batch, MissingSplit, Task, build_task, collate, example_length,
                   load_task, token_batches)
from .distributed import Distributed, setup_distributed
from .evaluate import EVALUATIONS, evenly_spaced, score_items
from .files import locked_directory, one_line, write_json_atomic
from .models import Seq2Seq, sequence_loss
from .train_config import TrainConfig, resolve_run_config
from .train_log import LOG_FILE, METRICS_FILE, Logger, ThroughputMeter

# Offsets every process's seed so that dropout and sampling draws differ between processes.
RANK_SEED_STRIDE = 7919
CONFIG_FILE, VOCAB_DIR = "config.json", "vocab"
# What a run leaves in its output directory: a directory holding any of them holds a run (vocab/ is only the
# task's working copy, rewritten by every fresh start).
RUN_FILES = (CONFIG_FILE, LOG_FILE, METRICS_FILE, CHECKPOINTS, EVALUATIONS)


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
    """The scheduled-sampling rate at ``step``: ramped up linearly over sampling_warmup_steps."""
    if config.sampling_warmup_steps == 0:
        return config.sampling_rate
    return config.sampling_rate * min(1.0, step / config.sampling_warmup_steps)


class NonFiniteLoss(FloatingPointError):
    """Training stopped because the loss or the weights stopped being finite numbers."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM (``signum``) after saving a checkpoint."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequests:
    """While the block runs, SIGINT and SIGTERM only record that a stop was asked for (``signal``, 0 while none),
    so that training stops at the end of a step; the first one puts the previous handlers back, so a second acts
    at once (Ctrl-C twice raises KeyboardInterrupt). Off the main thread, where Python delivers no signals, it
    does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal = 0
        self._previous: dict = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._record) for signum in self.SIGNALS}
        return self

    def _record(self, signum: int, frame) -> None:
        self.signal = signum
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __exit__(self, *exception) -> None:
        self._restore()


@contextlib.contextmanager
def _damage_named(path: Path, what: str) -> Iterator[None]:
    """torch's refusal of a saved state (a hand-edited or foreign trainer state) as a ValueError naming its file."""
    try:
        yield
    except (torch.OutOfMemoryError, *NOT_DAMAGE):
        raise  # this machine's limits, not the file's
    except (KeyError, TypeError, IndexError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: damaged trainer state, {what} ({one_line(error)})") from None


@dataclass
class Progress:
    """Where a run stands: optimizer steps taken, the epoch and the batch within it, the best dev score so far
    ({"step", "value", "metrics"}) with the evaluations since it, and whether early stopping has ended the run."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    best: dict | None = None
    evals_since_best: int = 0
    stopped_early: bool = False
    # (best, evals_since_best) as they stood before a dev evaluation off the --eval-every grid (the last step's),
    # which an uninterrupted longer run would not have made: what a run resumed from here carries on with.
    before_last_eval: tuple | None = None
    # The step of the last dev evaluation (None before the first): a run stopped before its last step's evaluation
    # and resumed with that step as its max_steps makes it then.
    evaluated_step: int | None = None


@dataclass
class TrainResult:
    model: Seq2Seq
    step: int
    best: dict | None
    stopped_early: bool
    output_dir: Path


def train(config: TrainConfig, resume: bool = False, explicit: dict | None = None, overwrite: bool = False,
          echo: Callable[[str], Any] = print) -> TrainResult:
    """Train (or, with resume, continue) the run described by ``config``; ``explicit`` names the settings the user
    gave (they override a resumed run's saved configuration; by default those of ``config`` away from their
    defaults, TrainConfig.given: to set one back to its default on resume, name it in ``explicit``). A directory
    that holds another run's files is refused unless ``resume`` continues that run or ``overwrite`` replaces it.
    Process 0 holds the output directory's lock for the run's life: a second run there is refused, naming the
    holder's pid."""
    config.validate(together=not resume)  # a resumed run's flags agree with its saved settings, not the defaults
    if resume and overwrite:
        raise ValueError("--resume continues the run in --output-dir and --overwrite replaces it: give one of them")
    explicit = explicit if explicit is not None else config.given()
    distributed, device = setup_distributed(resolve_device(config.device))
    output_dir = Path(config.output_dir)
    threads = torch.get_num_threads()
    try:
        with contextlib.ExitStack() as lock:
            # Process 0 holds the lock; a refusal (another train there) reaches every process as one line.
            distributed.on_main(lambda: lock.enter_context(locked_directory(output_dir, "s2s-fast train")))
            aside = distributed.on_main(lambda: _claim_output_dir(output_dir, resume, overwrite))
            try:
                config, start_checkpoint = resolve_run_config(config, explicit, resume)
                # The run's own setting, a resumed run's saved one included; put back when the lock is let go.
                lock.enter_context(float32_matmul_precision(config.matmul_precision))
                if config.threads is not None:
                    torch.set_num_threads(config.threads)
                trainer = Trainer(config, start_checkpoint, device, distributed, echo)
            except BaseException:
                if aside is not None:
                    _put_back(output_dir, aside)
                raise
            if aside is not None:
                shutil.rmtree(aside)
            result = trainer.run()
        distributed.settled = True
        return result
    finally:
        torch.set_num_threads(threads)
        distributed.close()


def _claim_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """Refuse a directory that holds a run's files unless resuming it. With ``overwrite``, move them into a hidden
    folder of it, returned: train deletes that once the new run is built (its settings, data and model checked), and
    puts them back if building it fails, so that a typo in the new run's settings does not cost the old one."""
    found = [name for name in RUN_FILES if (output_dir / name).exists()]
    # Only the configuration and the log: a start that failed before its first step (a setting refused while the
    # run was built); the corrected command may start there (config.json is rewritten, train.log goes on).
    if resume or not found or set(found) <= {CONFIG_FILE, LOG_FILE}:
        return None
    if not overwrite:
        raise ValueError(f"{output_dir} already holds a training run ({', '.join(found)}); pass --resume to continue "
                         "it, --overwrite to replace it, or choose another --output-dir")
    aside = output_dir / f".replaced-by-{os.getpid()}"
    aside.mkdir()
    for name in (*found, VOCAB_DIR):  # the old vocabularies too: the new run writes its own there
        if (output_dir / name).exists():
            (output_dir / name).rename(aside / name)
    return aside


def _put_back(output_dir: Path, aside: Path) -> None:
    """Undo _claim_output_dir's move: what the failed new run wrote under those names goes, the old files return."""
    for old in aside.iterdir():
        new = output_dir / old.name
        if new.is_dir() and not new.is_symlink():
            shutil.rmtree(new)
        elif new.exists() or new.is_symlink():
            new.unlink()
        old.rename(new)
    aside.rmdir()


class Trainer:
    """One training run. Construction prepares it (output directory, task, model, data, optimizer, and the position
    to start from: a fresh start or a checkpoint); ``run`` trains until max_steps or early stopping."""

    def __init__(self, config: TrainConfig, start_checkpoint: Path | None, device: torch.device,
                 distributed: Distributed, echo: Callable[[str], Any]):
        self.config, self.device, self.distributed = config, device, distributed
        self.output_dir = Path(config.output_dir)
        self.log = Logger(self.output_dir, distributed.main, echo)
        self.model, self.task, trainer_state = self._load_or_build(start_checkpoint)
        self.model.to(device)
        # Each target in the order the decoder writes it (right to left with Seq2SeqConfig.reverse_target).
        self.pairs = [(source, self.model.config.writing_order(target))
                      for source, target in self.task.training_pairs("train")]
        if not self.pairs:
            raise ValueError(f"task {config.task}: the training split is empty")
        self.lengths = [example_length(source, target) for source, target in self.pairs]
        self.dev_items = self._dev_items()
        self.optimizer, self.scheduler = self._build_optimizer()
        self.progress = self._restore(trainer_state, start_checkpoint)
        # The step of the last checkpoint on disk (None: none yet), and the signal (0: none) every process agreed
        # to stop on.
        self.saved_step = self.progress.step if start_checkpoint is not None else None
        self.stop_signal = 0
        self.step_lr = self.config.lr  # the learning rate of the last step taken
        self.stop_requests = StopRequests()
        # config.json describes the run's checkpoints: a fresh run's from the start, a resumed run's settings once its
        # first checkpoint holds them (a resume with nothing to do, or one that fails first, leaves the file as it was).
        self.config_written = False
        if start_checkpoint is None:
            self._write_config()
        self.trained = distributed.wrap(self.model, device)
        use_bf16 = device.type == "cuda" and config.precision in ("auto", "bf16") and torch.cuda.is_bf16_supported()
        self.use_bf16 = use_bf16 or (device.type == "cpu" and config.precision == "bf16")
        parameter_count = sum(p.numel() for p in self.model.parameters())
        runtime = ", ".join(filter(None, (str(device), "bf16 autocast" if self.use_bf16 else "",
                                          matmul_precision_note(device, config.matmul_precision))))
        self.log(f"task {self.task.name}: {len(self.pairs)} training pairs, vocabularies {len(self.task.src_vocab)} / "
                 f"{len(self.task.tgt_vocab)}; model {parameter_count:,} parameters; {runtime}; {distributed.world} "
                 f"process(es); output {self.output_dir}")
        self.log(f"model: {json.dumps(self.model.config.to_dict())}")
        for note in [*self.task.notes, *config.notes(), *filter(None, [held_note()])]:
            self.log(f"note: {note}")

    def _load_or_build(self, start_checkpoint: Path | None) -> tuple[Seq2Seq, Task, dict | None]:
        """(model, task, trainer state) from the checkpoint, or a new task (built by process 0, read by the others)
        and a model initialised from the seed, with no trainer state."""
        if start_checkpoint is not None:
            model, task, _ = load_checkpoint(start_checkpoint, "cpu")
            return model.train(), task, load_trainer_state(start_checkpoint)
        vocab_dir = self.output_dir / VOCAB_DIR

        def build_and_save() -> Task:
            built = build_task(self.config.task, self.config.task_options(), vocab_dir)
            built.save(vocab_dir)
            return built

        task = self.distributed.on_main(build_and_save)
        if not self.distributed.main:
            task = load_task(vocab_dir)
        torch.manual_seed(self.config.seed)
        model_config = self.config.model_config(len(task.src_vocab), len(task.tgt_vocab))
        try:
            return Seq2Seq(model_config), task, None
        except RuntimeError as error:  # torch.OutOfMemoryError is one
            if "allocate" not in str(error):
                raise
            raise ValueError(f"the model does not fit in this machine's memory ({one_line(error)}); choose a smaller "
                             "one (--model hidden_size=..., embed_dim=...)") from None

    def _dev_items(self) -> list | None:
        if not self.config.eval_every:
            return None
        try:
            return evenly_spaced(self.task.evaluation_items("dev"), self.config.eval_max_examples)
        except MissingSplit as error:
            self.log(f"no dev evaluation: {error}")
            return None

    def _build_optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW with weight decay on matrices only, and the warm-up-then-decay schedule of lr_factor.

        torch's fused AdamW (one kernel over every parameter) where it serves them, CPU and CUDA: on a CPU about four
        times the speed of the loop over parameters (the g2p model's step 4.2 against 16.6 ms on one thread of an AMD
        EPYC, 2026-12-05). A run resumed from a checkpoint keeps the saved optimizer's choice."""
        config = self.config
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in parameters if p.dim() > 1], "weight_decay": config.weight_decay},
                  {"params": [p for p in parameters if p.dim() <= 1], "weight_decay": 0.0}]
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.adam_betas), fused=fused or None)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))

    def _restore(self, state: dict | None, start_checkpoint: Path | None) -> Progress:
        """The position to start from; on resume, also the optimizer, scheduler and RNG states of the checkpoint."""
        rank = self.distributed.rank
        if state is None:
            # Every process starts from the same weights (seeded before the model was built); draws differ per process.
            torch.manual_seed(self.config.seed + RANK_SEED_STRIDE * rank)
            return Progress()
        damaged = start_checkpoint / TRAINER_STATE
        with _damage_named(damaged, "its optimizer or scheduler state does not fit the model"):
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        self._use_configured_hyperparameters()
        progress = Progress(state["step"], state["epoch"], state["epoch_step"], state["best"],
                            state["evals_since_best"], evaluated_step=self._evaluated_step(state, start_checkpoint))
        # A resume that trains on returns to the best before that evaluation; one with no step to take (its
        # max_steps reached) keeps the run as it ended, its best and best.json included.
        if state.get("before_last_eval") is not None and self.config.max_steps > progress.step:
            progress.best, progress.evals_since_best = state["before_last_eval"]
            state = {**state, "best": progress.best}  # for the pointers below
            self.log(f"note: the dev evaluation at step {progress.step} (the last step, off the --eval-every grid) "
                     "counts neither for the best nor for early stopping from here, as in a run never stopped there")
        # Early stopping ended the run if the evaluations since its best reach this run's patience (a larger one
        # given on resume lets it go on).
        progress.stopped_early = self.config.patience > 0 and progress.evals_since_best >= self.config.patience
        if state["world_size"] != self.distributed.world:
            # The position within the epoch counts each process's batches: the run has taken epoch_step batches on
            # each of its processes, i.e. the first epoch_step * world_size of the epoch's (every world size splits
            # the same list, batch i to process i % world). Resume after as many (rounded down: at most world - 1
            # batches are taken twice, none skipped).
            taken = state["epoch_step"] * state["world_size"]
            progress.epoch_step = taken // self.distributed.world
            self.log(f"note: resuming a run of {state['world_size']} process(es) on {self.distributed.world}: the "
                     f"epoch goes on after the {taken} batches of it taken; the data order and random draws differ "
                     "from an uninterrupted run")
            torch.manual_seed(self.config.seed + RANK_SEED_STRIDE * rank + progress.step)
        else:
            with _damage_named(damaged, "its random generator state is not torch's"):
                set_rng_state(state["rng"][rank], self.device)
        self.log(f"resumed from {start_checkpoint} at step {progress.step} (epoch {progress.epoch}, batch "
                 f"{progress.epoch_step} of it)")
        # metrics.jsonl keeps what it holds, events of steps past this checkpoint (a run killed or stopped after it)
        # included: this mark says which events follow it, and a reader keeps, for each step, the last one.
        self.log.event(kind="resume", step=progress.step, checkpoint=start_checkpoint.name)
        if self.distributed.main:
            for note in repair_pointers(self.output_dir, start_checkpoint, state, self.task):
                self.log(f"note: {note}")
        return progress

    def _evaluated_step(self, state: dict, checkpoint: Path) -> int | None:
        """The step of the last dev evaluation a trainer state records. A checkpoint written before the field was
        (s2s_fast before 2026-12-05) records it where it follows: its own step, if it was evaluated there (on the
        grid of the run's --eval-every then, which a resume may change; the best; or the last step's off-grid
        evaluation)."""
        if "evaluated_step" in state:
            return state["evaluated_step"]
        every = read_train_config(checkpoint).get("eval_every")
        if not isinstance(every, int) or isinstance(every, bool):
            every = self.config.eval_every
        step, best = state["step"], state["best"]
        on_grid = bool(every) and step % every == 0
        if on_grid or state.get("before_last_eval") is not None or (best is not None and best["step"] == step):
            return step
        return None

    def _use_configured_hyperparameters(self) -> None:
        """Replace the lr, betas and weight decay that a checkpoint's optimizer and scheduler states carry by this
        run's settings: the same values unless the user changed them on resume, and then the ones config.json
        records."""
        config = self.config
        self.scheduler.base_lrs = [config.lr] * len(self.optimizer.param_groups)
        lr = config.lr * lr_factor(self.scheduler.last_epoch, config)
        for group, weight_decay in zip(self.optimizer.param_groups, (config.weight_decay, 0.0)):
            group.update(lr=lr, initial_lr=config.lr, betas=tuple(config.adam_betas), weight_decay=weight_decay)

    def run(self) -> TrainResult:
        """Train until max_steps or early stopping. A non-finite loss or weights raise NonFiniteLoss (the last good
        checkpoint stays); SIGINT or SIGTERM end the step, save a checkpoint and raise TrainingInterrupted."""
        config, progress = self.config, self.progress
        bar = self._progress_bar()
        run_start, start_step, start_evaluated = time.perf_counter(), progress.step, progress.evaluated_step
        self.model.train()
        try:
            with self.stop_requests:
                self._train_steps(bar, run_start)
        finally:
            if bar is not None:
                bar.close()
        if progress.step == start_step and progress.evaluated_step == start_evaluated and self.distributed.main:
            why = (f"early stopping ended it (patience {config.patience})" if progress.stopped_early
                   else f"max_steps {config.max_steps}")
            self.log(f"nothing to do: the run is already at step {progress.step} ({why})")
        best = progress.best
        best_line = f"; best dev {self.task.primary_metric} {best['value']:.4f} at step {best['step']}" if best else ""
        self.log(f"done: step {progress.step}, {time.perf_counter() - run_start:,.0f} s this session{best_line}")
        self.model.eval()
        return TrainResult(self.model, progress.step, best, progress.stopped_early, self.output_dir)

    def _train_steps(self, bar, run_start: float) -> None:
        """The loop over epochs and their batches: a step, a throughput line when due, evaluate-and-checkpoint."""
        config, progress = self.config, self.progress
        meter = ThroughputMeter()
        if (self.dev_items and progress.step == config.max_steps and not progress.stopped_early
                and progress.evaluated_step != progress.step):
            # Stopped (Ctrl-C) at the step that is now its last, before that step's evaluation: make it now.
            self.log(f"evaluating step {progress.step}, the last step, which the stop came before")
            self._evaluate_and_checkpoint()
            (self.stop_signal,) = self.distributed.max_of([self.stop_requests.signal], self.device)
            if self.stop_signal:
                self._stop_on_signal()
        while progress.step < config.max_steps and not progress.stopped_early:
            batches = self._epoch_batches()
            while progress.epoch_step < len(batches) and progress.step < config.max_steps:
                batch = collate([self.pairs[i] for i in batches[progress.epoch_step]], PAD_ID, BOS_ID, EOS_ID)
                batch = batch.to(self.device)
                loss, ctc_loss = self._train_step(batch)
                meter.add(loss, int((batch.tgt_out != PAD_ID).sum()), int(batch.src_lengths.sum()), ctc_loss)
                if bar is not None:
                    bar.update(1)
                # A loss line every log_every steps and at the last; also before a stop (a signal, or a dev
                # evaluation that may end the run early), so that no step's loss goes unlogged.
                if (progress.step % config.log_every == 0 or progress.step == config.max_steps or self.stop_signal
                        or (config.patience > 0 and self._eval_due())):
                    self._log_throughput(meter, bar, run_start)
                self._evaluate_and_checkpoint()
                if self.stop_signal:
                    self._stop_on_signal()
                if progress.stopped_early:
                    self.log(f"early stop at step {progress.step}: no improvement in {config.patience} evaluations; "
                             f"best {self.task.primary_metric} {progress.best['value']:.4f} at step "
                             f"{progress.best['step']}")
                    break
            if progress.epoch_step >= len(batches):
                progress.epoch, progress.epoch_step = progress.epoch + 1, 0

    def _progress_bar(self):
        """A tqdm bar on process 0 when asked for (auto: on a terminal), with log lines written above it; else None."""
        show = self.config.progress == "on" or (self.config.progress == "auto" and sys.stderr.isatty())
        if not (self.distributed.main and show):
            return None
        from tqdm import tqdm

        self.log.echo = tqdm.write
        return tqdm(total=self.config.max_steps, initial=self.progress.step, unit="step", dynamic_ncols=True)

    def _epoch_batches(self) -> list[list[int]]:
        """This process's batches (example indices) of the current epoch: every world-th of the common order."""
        world, rank = self.distributed.world, self.distributed.rank
        batches = token_batches(self.lengths, self.config.batch_tokens, seed=self.config.seed,
                                epoch=self.progress.epoch, max_batch_size=self.config.max_batch_size)
        steps_in_epoch = len(batches) // world
        if steps_in_epoch == 0:
            raise ValueError(f"the training data make {len(batches)} batch(es), fewer than the {world} processes; "
                             "lower --batch-tokens")
        return [batches[step * world + rank] for step in range(steps_in_epoch)]

    def _train_step(self, batch: Batch) -> tuple[float, float | None]:
        """One optimizer step on ``batch``; returns its loss (mean per target token; with a CTC head, the weighted
        sum of the decoder's and CTC's, Seq2SeqConfig.ctc_weight) and CTC's part (None without a head)."""
        config, progress = self.config, self.progress
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.use_bf16
                    else contextlib.nullcontext())
        with autocast:
            ctc_weight = self.model.config.ctc_weight
            output = self.trained(batch.src, batch.src_lengths, batch.tgt_in,
                                  sampling_rate=sampling_rate_at(progress.step, config), ctc=ctc_weight > 0)
            logits = output[0] if ctc_weight > 0 else output
            loss = sequence_loss(logits, batch.tgt_out, PAD_ID, label_smoothing=config.label_smoothing)
            ctc_loss = self.model.ctc_loss(output[1], batch.tgt_out) if ctc_weight > 0 else None
            if ctc_loss is not None:  # joint CTC-attention (Seq2SeqConfig.ctc_weight)
                loss = (1 - ctc_weight) * loss + ctc_weight * ctc_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = float(loss.detach())
        ctc_value = None if ctc_loss is None else float(ctc_loss.detach())  # read with the loss: one host sync
        # Every process learns whether any loss was not finite and whether any process was asked to stop.
        diverged, self.stop_signal = self.distributed.max_of([int(not math.isfinite(value)),
                                                               self.stop_requests.signal], self.device)
        if diverged:
            self.distributed.settled = True  # every process learnt it from the same max_of and stops here
            self._stop_diverged(progress.step + 1, f"the loss is {value}" if not math.isfinite(value) else
                                "the loss is not finite on another process")
        if config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.clip_norm)
        try:
            self.optimizer.step()
        except RuntimeError as error:
            # AdamW's step size lr / (1 - beta1 ** t) beyond float32's range (an lr near 1e38) stops torch itself.
            if "overflow" not in str(error):
                raise
            lr = self.optimizer.param_groups[0]["lr"]
            self._stop_diverged(progress.step + 1, f"the update overflows ({error}; lr {lr:.2e})")
        # The rate this step ran at (the scheduler moves on): the group's, which a resume with another --lr has set
        # (_use_configured_hyperparameters) where the scheduler's last rate is still the checkpoint's.
        self.step_lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        progress.step += 1
        progress.epoch_step += 1
        return value, ctc_value

    def _stop_diverged(self, step: int, what: str) -> None:
        """Raise NonFiniteLoss, after a line in the log, leaving the checkpoints as they are."""
        kept = (f"the last good checkpoint, {checkpoint_name(self.saved_step)}, stays" if self.saved_step is not None
                else "no checkpoint was saved")
        message = (f"step {step}: {what}; training stopped and {kept}. Lower --lr, raise --warmup-steps or clip "
                   "gradients (--clip-norm)")
        self.log(message)
        raise NonFiniteLoss(message)

    def _stop_on_signal(self) -> None:
        """Save a checkpoint of this step (unless it was just saved), then raise TrainingInterrupted."""
        if self.saved_step != self.progress.step:
            self._check_finite_weights()
            self._save()
        name = signal.Signals(self.stop_signal).name
        self.distributed.settled = True  # every process agreed on the stop (max_of) and saved with the others
        self.log(f"{name} at step {self.progress.step}: checkpoint {checkpoint_name(self.progress.step)} saved; "
                 f"continue with s2s-fast train --output-dir {self.output_dir} --resume")
        raise TrainingInterrupted(self.stop_signal)

    def _log_throughput(self, meter: ThroughputMeter, bar, run_start: float) -> None:
        """A line of the window's loss and throughput, and the learning rate of the step just taken, into train.log
        and metrics.jsonl; on the console too where no progress bar shows them."""
        mean_loss, mean_ctc, tokens_per_second = meter.read(self.distributed)
        step, epoch, lr = self.progress.step, self.progress.epoch, self.step_lr
        if bar is not None:
            bar.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{tokens_per_second:,.0f}")
        # With a CTC head the loss is (1 - w) x the decoder's + w x CTC's: both parts are logged beside it.
        ctc_weight = self.model.config.ctc_weight
        parts = {}
        if ctc_weight > 0:
            parts = {"decoder_loss": (mean_loss - ctc_weight * mean_ctc) / (1 - ctc_weight), "ctc_loss": mean_ctc}

        def write() -> None:
            self.log.event(kind="train", step=step, epoch=epoch, loss=mean_loss, **parts, lr=lr,
                           tokens_per_second=tokens_per_second)
            shown = f" (decoder {parts['decoder_loss']:.4f}, ctc {parts['ctc_loss']:.4f})" if parts else ""
            self.log(f"step {step}  epoch {epoch}  loss {mean_loss:.4f}{shown}  lr {lr:.2e}  "
                     f"{tokens_per_second:,.0f} tokens/s  {time.perf_counter() - run_start:,.0f} s",
                     echo=bar is None)

        # On process 0; a failure there (a full disk) reaches every process as one line.
        self.distributed.on_main(write)

    def _evaluate_and_checkpoint(self) -> None:
        """After a step: score dev when due (on process 0; the others learn the outcome), decide early stopping, and
        save a checkpoint when due (every dev evaluation, every save_every steps, the last step, an early stop)."""
        config, progress = self.config, self.progress
        last_step = progress.step == config.max_steps
        is_eval_step = self._eval_due()
        is_save_step = progress.step % config.save_every == 0 or last_step
        if is_eval_step or is_save_step:
            self._check_finite_weights()
        if is_eval_step:
            off_grid = progress.step % config.eval_every != 0
            progress.before_last_eval = (progress.best, progress.evals_since_best) if off_grid else None
            progress.evaluated_step = progress.step
            # On process 0; a failure there (its log on a full disk) reaches every process as one line.
            self.distributed.on_main(self._evaluate_dev)
            progress.best, progress.evals_since_best = self.distributed.broadcast(
                (progress.best, progress.evals_since_best))
            progress.stopped_early = config.patience > 0 and progress.evals_since_best >= config.patience
            self.model.train()
        if is_eval_step or is_save_step or progress.stopped_early:
            self._save()

    def _eval_due(self) -> bool:
        """Whether dev is scored after this step: every eval_every steps and at the last step, where there is dev."""
        step, config = self.progress.step, self.config
        return bool(self.dev_items) and (step % config.eval_every == 0 or step == config.max_steps)

    def _check_finite_weights(self) -> None:
        """Before weights are scored or saved: an update that made them NaN or infinite stops the run."""
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            self._stop_diverged(self.progress.step, "the update made the weights NaN or infinite")

    def _evaluate_dev(self) -> None:
        progress, task = self.progress, self.task
        started = time.perf_counter()
        metrics, _ = score_items(self.model, task, self.dev_items, beam_size=self.config.eval_beam_size)
        value = metrics[task.primary_metric]
        improved = is_better(value, progress.best["value"] if progress.best else None, task.higher_is_better)
        if improved:
            progress.best, progress.evals_since_best = {"step": progress.step, "value": value, "metrics": metrics}, 0
        else:
            progress.evals_since_best += 1
        self.log(f"dev step {progress.step}: {task.format_metrics(metrics)} ({len(self.dev_items)} examples, "
                 f"{time.perf_counter() - started:.1f} s){'  new best' if improved else ''}")
        self.log.event(kind="dev", step=progress.step, **metrics, best=improved)

    def _save(self) -> None:
        """Checkpoint the run (every process sends its RNG state; process 0 writes); best.json moves to it when this
        step's dev score is the new best."""
        progress = self.progress
        rng = self.distributed.all_gather(rng_state(self.device))
        trainer_state = {"step": progress.step, "epoch": progress.epoch, "epoch_step": progress.epoch_step,
                         "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "rng": rng, "best": progress.best, "evals_since_best": progress.evals_since_best,
                         "before_last_eval": progress.before_last_eval, "evaluated_step": progress.evaluated_step,
                         "world_size": self.distributed.world}
        # Process 0 writes; a failure there (a full disk) reaches every process as one line, not as a peer gone.
        self.distributed.on_main(lambda: save_checkpoint(self.output_dir, progress.step, self.model, self.task,
                                                         self.config.to_dict(), trainer_state,
                                                         self.config.keep_checkpoints))
        self.saved_step = progress.step
        if not self.config_written:
            self._write_config()

    def _write_config(self) -> None:
        if self.distributed.main:
            write_json_atomic(self.output_dir / CONFIG_FILE, self.config.to_dict())
        self.config_written = True
