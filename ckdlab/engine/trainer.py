"""The training loop, on Hugging Face Accelerate.

One loop serves fine-tuning and distillation: :class:`Trainer` fine-tunes with cross-entropy
(MSE for regression); :class:`ckdlab.engine.distill.Distiller` overrides :meth:`compute_terms`.

What the loop does, in order: seeds everything; tokenises once (dynamic padding per batch);
AdamW with linear warm-up/decay (no decay on biases and LayerNorm); gradient clipping;
evaluation every ``eval_every`` steps (or each epoch) with the best-on-dev model saved through
``save_pretrained``; a checkpoint (``accelerator.save_state`` + loop state) every ``save_every``
steps and when training stops early, from which ``train(resume=True)`` continues after an interruption
(written atomically, see :mod:`ckdlab.engine.checkpoints`; a finished run keeps only its loop state
unless ``keep_checkpoint``); Ctrl-C finishes the current step,
checkpoints and raises :class:`~ckdlab.engine.interrupt.TrainingInterrupted`; tidy CSV and
TensorBoard logs, created when training starts (building a trainer writes nothing to disk); a
NaN/inf guard naming the loss term and step.

It can also be driven one step at a time (:meth:`step`) so that a notebook widget can run it
without blocking the kernel and change loss weights between steps (:meth:`set_weight`).

``accelerate launch --num_processes N -m ckdlab.cli finetune ...`` runs it on N GPUs, and
``--mixed_precision bf16`` (or ``TrainConfig.mixed_precision``) switches precision; no code
changes are needed for either.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from ckdlab.data import (
    DynamicPaddingCollator,
    LengthGroupedSampler,
    compute_metrics,
    get_task,
    load_task,
    tokenize_dataset,
)
from ckdlab.engine import checkpoints
from ckdlab.engine.callbacks import Callback
from ckdlab.engine.config import TrainConfig
from ckdlab.engine.interrupt import DeferredInterrupt, TrainingInterrupted
from ckdlab.engine.logger import RunLogger
from ckdlab.errors import UserError
from ckdlab.io import atomic_directory, atomic_write_json
from ckdlab.models.heads import set_label_names, task_loss
from ckdlab.models.outputs import model_inputs

STATE_FILE = checkpoints.STATE_FILE


class NonFiniteLossError(UserError, FloatingPointError):
    """A loss term became NaN or inf; the message names the term and the step."""


def task_splits(task: Any, config: TrainConfig, data_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    """``(train, {dev split name: dataset})`` of ``task`` as a run with ``config`` reads them (seeded
    subsets of ``train_limit`` / ``dev_limit``; MNLI has two dev splits). Loading them before a run
    folder is opened makes a data error fail the run before anything is written."""
    spec = get_task(task) if isinstance(task, str) else task
    train = load_task(spec.name, "train", data_dir=data_dir, limit=config.train_limit, seed=config.seed)
    splits = {"dev": "dev"} if spec.name != "mnli" else {"dev_matched": "dev_matched", "dev_mismatched": "dev_mismatched"}
    dev = {key: load_task(spec.name, split, data_dir=data_dir, limit=config.dev_limit, seed=config.seed)
           for key, split in splits.items()}
    return train, dev


class Trainer:
    """Fine-tune ``model`` on ``task`` (see the module docstring)."""

    default_weights: dict[str, float] = {"ce": 1.0}

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        task: str | Any,
        config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
        train_dataset=None,
        dev_datasets: dict[str, Any] | None = None,
        weights: dict[str, float] | None = None,
        callbacks: Iterable[Callback] = (),
        accelerator: Accelerator | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.task = get_task(task) if isinstance(task, str) else task
        self.model = model
        if self.task.label_names and getattr(model.config, "num_labels", None) == self.task.num_labels:
            # Saved models carry their label names (HF pipelines and id2label users read them).
            set_label_names(model.config, self.task.label_names)
        self.tokenizer = tokenizer
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.data_dir = data_dir
        self.weights = dict(self.default_weights)
        if weights:
            self._check_weight_names(weights)
            self.weights.update(weights)
        self.callbacks = list(callbacks)
        self.accelerator = accelerator or Accelerator(
            mixed_precision=self.config.mixed_precision,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=self.config.seed),
        )
        self._logger: RunLogger | None = None
        self._train_dataset = train_dataset
        self._dev_datasets = dev_datasets
        self.global_step = 0
        self.epoch = 0
        self.batches_into_epoch = 0
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.history: list[dict[str, Any]] = []
        self.stop_requested = False
        self.last_eval_step: int | None = None
        self._is_setup = False
        self._iterator = None
        self._started = False  # a fresh run calls _before_first_step once; a resumed one never

    @property
    def logger(self) -> RunLogger:
        """The run's logs, created on first use: building a trainer writes nothing to disk."""
        if self._logger is None:
            self._logger = RunLogger(self.out_dir or ".", enabled=self.out_dir is not None and self.accelerator.is_main_process)
        return self._logger

    # ----------------------------------------------------------------- data and setup
    def _train_split(self):
        if self._train_dataset is not None:
            return self._train_dataset
        return load_task(self.task.name, "train", data_dir=self.data_dir, limit=self.config.train_limit, seed=self.config.seed)

    def _dev_splits(self) -> dict[str, Any]:
        if self._dev_datasets is not None:
            return self._dev_datasets
        return task_splits(self.task, self.config, self.data_dir)[1]

    def trainable_modules(self) -> list[torch.nn.Module]:
        """Modules whose parameters the optimiser updates (a distiller adds projections)."""
        return [self.model]

    def setup(self) -> None:
        if self._is_setup:
            return
        cfg = self.config
        set_seed(cfg.seed)
        collator = DynamicPaddingCollator(self.tokenizer)
        self.train_raw = self._train_split()
        train = tokenize_dataset(self.train_raw, self.tokenizer, self.task, max_length=cfg.max_length)
        # Each batch carries its rows so that per-example caches (teacher outputs) can be looked up.
        train = train.add_column("row", list(range(len(train))))
        self.train_tokenized = train
        self.train_size = len(train)
        if cfg.group_by_length:
            lengths = [len(ids) for ids in train["input_ids"]]
            sampler = LengthGroupedSampler(lengths, cfg.batch_size, seed=cfg.seed)
            train_loader = DataLoader(train, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collator)
        else:
            train_loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, collate_fn=collator)
        self.steps_per_epoch = math.ceil(len(train_loader) / self.accelerator.num_processes)
        self.total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        dev_loaders = {
            name: DataLoader(tokenize_dataset(ds, self.tokenizer, self.task, max_length=cfg.max_length), batch_size=cfg.eval_batch_size, shuffle=False, collate_fn=collator)
            for name, ds in self._dev_splits().items()
        }
        modules = self.trainable_modules()
        decay, no_decay = [], []
        for module in modules:
            for name, param in module.named_parameters():
                if not param.requires_grad:
                    continue
                (no_decay if param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(param)
        device = self.accelerator.device
        if device.type == "cpu":
            # AdamW's second moments of tiny gradients (CKD's relation terms make many) go denormal,
            # and x86 sqrt on denormals is ~7x slower: that alone doubled a CKD step on CPU.
            torch.set_flush_denormal(True)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
            # One fused kernel instead of a loop over parameters: 69 ms -> 5 ms per step for an
            # 11M-parameter student on 2 CPU threads (the word embeddings dominate).
            fused=device.type in ("cpu", "cuda") or None,
        )
        # Under n processes Accelerate steps a prepared scheduler n times per optimiser step (it
        # assumes a schedule counted in single-process batches), so the schedule is counted that way.
        n = self.accelerator.num_processes
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * self.total_steps) * n, self.total_steps * n)
        prepared = self.accelerator.prepare(modules[0], optimizer, train_loader, scheduler, *dev_loaders.values())
        self.model = prepared[0]
        self._prepared_modules = [self.model, *(self._prepare_extra_module(m) for m in modules[1:])]
        self.optimizer, self.train_loader, self.scheduler = prepared[1:4]
        self.dev_loaders = dict(zip(dev_loaders, prepared[4:]))
        self._after_setup()
        self._is_setup = True

    def _prepare_extra_module(self, module: torch.nn.Module) -> torch.nn.Module:
        """An extra trained module (an objective's heads or projections) on the device, saved in
        checkpoints after the model (``model_1`` ...), and under several processes wrapped in DDP
        that tolerates parameters unused in a step (a term at weight 0) and leaves buffers alone:
        an objective's state such as CoDIR's memory bank is kept identical by its own gathered
        update, and broadcasting it from process 0 at every forward would only cost time."""
        module = self.accelerator.prepare_model(module, evaluation_mode=True)
        if self.accelerator.num_processes == 1:
            return module
        device = self.accelerator.device
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
            find_unused_parameters=True)

    def _after_setup(self) -> None:
        """Hook for subclasses (e.g. a distiller moves its teacher to the device here)."""

    def _after_optimizer_step(self) -> None:
        """Hook for subclasses: state that follows each update (e.g. an objective's memory bank)."""

    def _before_first_step(self) -> None:
        """Hook for subclasses: once before the first step of a fresh run (e.g. balancing weights)."""

    def start(self) -> None:
        """Set up and do what precedes a fresh run's first step (e.g. balance the weights), once; the
        first :meth:`step` calls it, a panel that shows the weights calls it before drawing them."""
        self.setup()
        if not self._started:
            self._started = True
            self._before_first_step()

    # ----------------------------------------------------------------- the loss
    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return model_inputs(batch)

    def compute_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unweighted loss terms for one batch; fine-tuning has only cross-entropy (or MSE)."""
        logits = self.model(**self.model_inputs(batch)).logits
        return {"ce": task_loss(logits, batch["labels"], self.task.is_regression)}

    def set_weight(self, name: str, value: float) -> None:
        """Change one loss weight; it applies from the next step and is recorded in the run log."""
        self._check_weight_names({name: value})
        old = self.weights.get(name)
        if old == value:
            return
        self.weights[name] = float(value)
        self.logger.log_event(self.global_step, "set_weight", name=name, old=old, new=float(value))
        self.history.append({"step": self.global_step, "event": "set_weight", "name": name, "old": old, "new": float(value)})

    def _check_weight_names(self, weights: dict[str, float]) -> None:
        unknown = set(weights) - set(self.available_terms())
        if unknown:
            raise ValueError(f"unknown loss term(s) {sorted(unknown)}; this run has: {sorted(self.available_terms())}")
        bad = {k: v for k, v in weights.items() if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"loss weights must be finite and >= 0, got {bad}")

    def available_terms(self) -> tuple[str, ...]:
        return tuple(self.default_weights)

    # ----------------------------------------------------------------- stepping
    def _epoch_iterator(self, skip: int = 0):
        self.train_loader.set_epoch(self.epoch)
        loader = self.accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        return iter(loader)

    def _next_batch(self) -> dict[str, torch.Tensor]:
        # Starting an epoch's iterator draws a base seed from the global RNG (lazily, at the first
        # next()); isolating data loading keeps the dropout stream identical in a straight run and
        # after a resume. Batches never need the global RNG: their order is seeded per epoch.
        with torch.random.fork_rng(devices=[]):
            if self._iterator is None:
                self._iterator = self._epoch_iterator(skip=self.batches_into_epoch)
            try:
                batch = next(self._iterator)
            except StopIteration:
                self.epoch += 1
                self.batches_into_epoch = 0
                self._iterator = self._epoch_iterator()
                batch = next(self._iterator)
        self.batches_into_epoch += 1
        return batch

    def step(self) -> dict[str, float]:
        """One optimisation step; returns the logged values (terms, total loss, lr)."""
        self.start()
        for module in self._prepared_modules:
            module.train()
        batch = self._next_batch()
        with self.accelerator.autocast():
            terms = self.compute_terms(batch)
        for name, value in terms.items():
            if not torch.isfinite(value).all():
                raise NonFiniteLossError(
                    f"loss term '{name}' is {value.item()} at step {self.global_step + 1}; lower the learning rate or "
                    f"the weight of '{name}', or check the inputs of this batch"
                )
        loss = sum(self.weights.get(name, 0.0) * value for name, value in terms.items())
        self.accelerator.backward(loss)
        if self.config.max_grad_norm:
            params = [p for m in self._prepared_modules for p in m.parameters()]
            self.accelerator.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._after_optimizer_step()
        self.global_step += 1
        logs = {name: float(value.detach()) for name, value in terms.items()}
        logs["loss"] = float(loss.detach())
        logs["lr"] = self.scheduler.get_last_lr()[0]
        if self.global_step % max(1, self.config.log_every) == 0 or self.global_step == 1:
            self.logger.log_train(self.global_step, self.fractional_epoch, logs)
        for callback in self.callbacks:
            callback.on_step_end(self, self.global_step, logs)
        return logs

    @property
    def fractional_epoch(self) -> float:
        return self.epoch + self.batches_into_epoch / max(1, self.steps_per_epoch)

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        preds, labels = [], []
        for batch in loader:
            with self.accelerator.autocast():
                logits = self.model(**self.model_inputs(batch)).logits
            logits, batch_labels = self.accelerator.gather_for_metrics((logits.float(), batch["labels"]))
            preds.append(logits.cpu().numpy())
            labels.append(batch_labels.cpu().numpy())
        return np.concatenate(preds), np.concatenate(labels)

    def evaluate(self) -> dict[str, float]:
        """Metrics on every dev split; keys are ``<split>_<metric>`` when there are several splits."""
        self.setup()
        metrics: dict[str, float] = {}
        for split, loader in self.dev_loaders.items():
            preds, labels = self.predict(loader)
            if self.task.is_regression:
                preds = preds.squeeze(-1)
            split_metrics = compute_metrics(self.task, preds, labels)
            self.logger.log_eval(self.global_step, self.fractional_epoch, split, split_metrics)
            prefix = "" if len(self.dev_loaders) == 1 else f"{split}_"
            metrics.update({f"{prefix}{k}": float(v) for k, v in split_metrics.items()})
        first = next(iter(self.dev_loaders))
        headline_key = self.task.headline if len(self.dev_loaders) == 1 else f"{first}_{self.task.headline}"
        metrics["score"] = metrics[headline_key]
        for callback in self.callbacks:
            callback.on_evaluate(self, self.global_step, metrics)
        return metrics

    # ----------------------------------------------------------------- checkpoints
    def unwrapped_model(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.model)

    def save_model(self, directory: str | Path) -> Path:
        """``save_pretrained`` of the model and tokenizer, atomically (main process only)."""
        directory = Path(directory)
        if self.accelerator.is_main_process:
            with atomic_directory(directory) as tmp:
                self.unwrapped_model().save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)
        self.accelerator.wait_for_everyone()
        return directory

    def _loop_state(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "epoch": self.epoch,
            "batches_into_epoch": self.batches_into_epoch,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "weights": self.weights,
            "total_steps": self.total_steps,
        }

    def save_checkpoint(self) -> Path:
        assert self.out_dir is not None, "checkpoints need an out_dir"
        return checkpoints.save(self.accelerator, self.out_dir, self._loop_state())

    def load_checkpoint(self) -> bool:
        """Restore model, optimiser, scheduler, RNG and loop state; False when there is none. An
        unreadable checkpoint is a :class:`~ckdlab.errors.UserError` naming the file."""
        if self.out_dir is not None and self.accelerator.is_main_process:
            checkpoints.recover_run_folder(self.out_dir)
        self.accelerator.wait_for_everyone()
        path = checkpoints.find_checkpoint(self.out_dir)
        if path is None:
            checkpoints.refuse_finished(self.out_dir)
            return False
        self.setup()
        state = checkpoints.load(self.accelerator, path)
        self.global_step, self.epoch = state["global_step"], state["epoch"]
        self.batches_into_epoch = state["batches_into_epoch"]
        self.best_score = state["best_score"] if state["best_score"] is not None else -math.inf
        self.best_step = state["best_step"]
        self.weights.update(state["weights"])
        self._iterator = None
        self._started = True
        self.logger.truncate_after(self.global_step)
        self.logger.log_event(self.global_step, "resumed", checkpoint=str(path))
        return True

    def _stop_on_interrupt(self) -> None:
        """Checkpoint the completed step and raise :class:`TrainingInterrupted` (Ctrl-C in :meth:`train`)."""
        checkpoint = self.save_checkpoint() if self.out_dir is not None else None
        self.logger.log_event(self.global_step, "interrupted")
        self.logger.close()
        raise TrainingInterrupted(self.global_step, checkpoint)

    # ----------------------------------------------------------------- the whole run
    def _maybe_evaluate(self, force: bool = False) -> dict[str, float] | None:
        if not self.dev_loaders:  # task-agnostic training on unlabeled text has nothing to score
            return None
        every = self.config.eval_every
        end_of_epoch = self.batches_into_epoch >= self.steps_per_epoch
        due = (every and self.global_step % every == 0) or (not every and end_of_epoch)
        if not (due or force):
            return None
        metrics = self.evaluate()
        self.last_eval_step = self.global_step
        if metrics["score"] > self.best_score:
            self.best_score, self.best_step = metrics["score"], self.global_step
            if self.out_dir is not None:
                self.save_model(self.out_dir / "best")
                atomic_write_json(self.out_dir / "best_metrics.json", {"step": self.global_step, **metrics})
        return metrics

    def train(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Run to ``total_steps`` (or ``stop_after`` more steps); returns a summary dict.

        With ``resume=True`` a checkpoint in ``out_dir`` is loaded first and the run continues
        exactly where it stopped (same batches, same learning rate, same RNG state).
        """
        self.setup()
        if self.accelerator.num_processes > 1:
            # Every process opens the run folder; one that arrives after the main process wrote
            # run.json sees a run to resume. The main process's answer is the run's (otherwise the
            # processes wait at different barriers for ever).
            resume = bool(broadcast_object_list([resume])[0])
        resumed = self.load_checkpoint() if resume else False
        if not resumed and self.global_step == 0:
            self.logger.reset()
        start = time.perf_counter()
        target = self.total_steps if stop_after is None else min(self.total_steps, self.global_step + stop_after)
        progress = tqdm(
            total=self.total_steps, initial=self.global_step, desc=f"{self.task.name}", disable=not (self.config.progress and self.accelerator.is_local_main_process), leave=False
        )
        last_metrics: dict[str, float] | None = None
        with DeferredInterrupt() as interrupt:
            while self.global_step < target and not self.stop_requested:
                logs = self.step()
                progress.update(1)
                progress.set_postfix(loss=f"{logs['loss']:.4f}")
                metrics = self._maybe_evaluate()
                last_metrics = metrics or last_metrics
                if self.out_dir is not None and self.config.save_every and self.global_step % self.config.save_every == 0:
                    self.save_checkpoint()
                if interrupt.requested and self.global_step < self.total_steps:
                    progress.close()
                    self._stop_on_interrupt()
        progress.close()
        finished = self.global_step >= self.total_steps
        if finished and self.last_eval_step != self.global_step:
            last_metrics = self._maybe_evaluate(force=True)
        if self.out_dir is not None:
            checkpoints.finish(self.accelerator, self.out_dir, self._loop_state(), keep_checkpoint=self.config.keep_checkpoint or not finished)
        summary = {
            "task": self.task.name,
            "steps": self.global_step,
            "total_steps": self.total_steps,
            "finished": finished,
            "train_examples": self.train_size,
            "best_step": self.best_step,
            "best_score": self.best_score,
            "headline_metric": self.task.headline,
            "final_metrics": last_metrics,
            "wall_time_s": time.perf_counter() - start,
        }
        if self.out_dir is not None:
            # Every process returns the same summary (callers that record from any process see
            # the metrics); the main process wrote best_metrics.json and writes summary.json.
            self.accelerator.wait_for_everyone()
            best = self.out_dir / "best_metrics.json"
            if best.exists():
                summary["best_metrics"] = json.loads(best.read_text())
            if self.accelerator.is_main_process:
                atomic_write_json(self.out_dir / "summary.json", summary)
        self.logger.close()
        for callback in self.callbacks:
            callback.on_train_end(self, summary)
        return summary
