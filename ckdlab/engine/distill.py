"""Distillation: the training loop of :mod:`ckdlab.engine.trainer` with a frozen teacher.

``Distiller`` trains ``student`` on ``task`` with any combination of registered objectives
(``"ckd+kd"``, ``"tinybert+kd"``, ...; see :mod:`ckdlab.objectives.registry`):

    loss = Σ_term weight[term] · term(teacher outputs, student outputs, batch)

- The teacher is frozen, in eval mode, under ``no_grad``; the student (and any learned projection
  of an objective) is what Accelerate wraps for DDP and mixed precision.
- Teacher outputs can be cached (``cache_teacher``): logits always, hidden states of the mapped
  layers (of every layer with ``cache_all_layers``, for grids of runs) when they fit the memory
  budget. Objectives that need attention q/k/v (TinyBERT, MiniLM)
  run the teacher live.
- Loss weights and the KD temperature can change between steps (``set_weight``,
  ``set_temperature``); every change is recorded in ``events.jsonl`` with its step.
- Token-aligned objectives (CKD, PKD, TinyBERT, MiniLM, DistilBERT) need the teacher and the
  student to tokenise identically; a mismatch is a clear error, checked up front.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import DynamicPaddingCollator
from ckdlab.engine.config import TrainConfig
from ckdlab.engine.teacher_cache import TeacherCache
from ckdlab.engine.trainer import Callback, Trainer
from ckdlab.objectives.capture import capture_qkv
from ckdlab.objectives.ckd import TeacherGramMemo
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.objectives.registry import REGISTRY, BuildContext, build_objectives, default_weights, parse_objective

PROBE_TEXTS = ("The quick brown fox doesn't jump over 3 lazy dogs!", "Ünïcode – naïve café, 東京.")


class TokenizationMismatchError(ValueError):
    """Teacher and student tokenise differently, so token-aligned relations are undefined."""


def check_same_tokenization(teacher_tokenizer: PreTrainedTokenizerBase, student_tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise unless both tokenizers map text to the same ids (same vocabulary, same rules)."""
    problems = []
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        problems.append(f"vocabularies differ ({len(teacher_tokenizer)} vs {len(student_tokenizer)} entries)")
    for text in PROBE_TEXTS:
        if teacher_tokenizer(text)["input_ids"] != student_tokenizer(text)["input_ids"]:
            problems.append(f"'{text}' tokenises differently")
    if problems:
        raise TokenizationMismatchError(
            "teacher and student must share tokenisation for token-aligned objectives (CKD relations compare token "
            f"i with token j in both models): {'; '.join(problems)}. Build the student from the teacher "
            "(ckdlab.models.build_student) or save it with the teacher's tokenizer."
        )


class Distiller(Trainer):
    """Distil ``teacher`` into ``student`` on ``task`` (see the module docstring)."""

    # Subclasses that feed CKD other teacher states than the dataset row's mapped layers turn this off.
    memoize_teacher_relations = True

    def __init__(
        self,
        teacher: PreTrainedModel,
        student: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        task: str | Any,
        objective: str = "ckd+kd",
        weights: dict[str, float] | None = None,
        temperature: float = 1.0,
        layer_map: str | list[tuple[int, int]] = "uniform",
        objective_options: dict[str, Any] | None = None,
        config: TrainConfig | None = None,
        out_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
        train_dataset=None,
        dev_datasets: dict[str, Any] | None = None,
        callbacks: Iterable[Callback] = (),
        teacher_tokenizer: PreTrainedTokenizerBase | None = None,
        cache_teacher: bool = True,
        cache_budget_gb: float = 2.0,
        cache_all_layers: bool = False,
        teacher_cache: TeacherCache | None = None,
    ) -> None:
        self.objective_names = parse_objective(objective)
        self.default_weights = default_weights(self.objective_names)
        if teacher_tokenizer is not None and any(REGISTRY[n].token_aligned for n in self.objective_names):
            check_same_tokenization(teacher_tokenizer, tokenizer)
        self.layer_map = resolve_layer_map(layer_map, teacher.config.num_hidden_layers, student.config.num_hidden_layers)
        super().__init__(
            student, tokenizer, task, config, out_dir=out_dir, data_dir=data_dir, train_dataset=train_dataset,
            dev_datasets=dev_datasets, weights=weights, callbacks=callbacks,
        )
        self.teacher = teacher
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher.eval()
        ctx = BuildContext(
            teacher_config=teacher.config,
            student_config=student.config,
            layer_map=self.layer_map,
            regression=self.task.is_regression,
            temperature=temperature,
            options=dict(objective_options or {}),
        )
        self.objectives = build_objectives(self.objective_names, ctx)
        if "ckd" in self.objectives and self.memoize_teacher_relations and ctx.options.get("memoize_teacher", True):
            # One fixed training set whose batches carry their rows: the teacher's Grams can be
            # kept per example (see TeacherGramMemo), so later epochs skip the teacher half of CKD.
            self.objectives["ckd"].loss.teacher_memo = TeacherGramMemo()
        self.temperature = float(temperature)
        self.cache_teacher = cache_teacher
        self.cache_budget_bytes = int(cache_budget_gb * 1024**3)
        self.cache_all_layers = cache_all_layers
        self.teacher_cache = teacher_cache

    @property
    def student(self) -> PreTrainedModel:
        return self.model

    def available_terms(self) -> tuple[str, ...]:
        return tuple(self.default_weights)

    def trainable_modules(self) -> list[torch.nn.Module]:
        extra = [m for m in self.objectives.values() if any(p.requires_grad for p in m.parameters())]
        return [self.model, *extra]

    def set_temperature(self, value: float) -> None:
        """Change the KD temperature from the next step on; recorded in the run log."""
        if not value > 0:
            raise ValueError(f"temperature must be > 0, got {value}")
        old, self.temperature = self.temperature, float(value)
        if "kd" in self.objectives:
            self.objectives["kd"].temperature = self.temperature
        if old != self.temperature:
            self.logger.log_event(self.global_step, "set_temperature", old=old, new=self.temperature)
            self.history.append({"step": self.global_step, "event": "set_temperature", "old": old, "new": self.temperature})

    # ----------------------------------------------------------------- set-up
    def _active(self) -> list[str]:
        """Objectives with at least one non-zero weight (the others are not computed at all)."""
        return [name for name, module in self.objectives.items() if any(self.weights.get(t, 0.0) > 0 for t in REGISTRY[name].terms)]

    def _needs(self, names: Iterable[str]) -> set[str]:
        return set().union(*(REGISTRY[n].needs for n in names)) if names else set()

    def mapped_teacher_layers(self, needs: set[str] | None = None) -> list[int]:
        """Teacher hidden-state indices the objectives read (all of them, or those with ``needs``)."""
        needs = self._needs(self.objectives) if needs is None else needs
        return sorted({t for t, _ in self.layer_map}) if "hidden_states" in needs else []

    def _after_setup(self) -> None:
        self.teacher.to(self.accelerator.device)
        self.objectives.to(self.accelerator.device)
        needs = self._needs(self.objectives)
        # Fine-tuning alone ("ce") needs nothing from the teacher: no pass over the training set.
        if self.cache_teacher and self.teacher_cache is None and needs - {"labels"} and "qkv" not in needs:
            layers = self.mapped_teacher_layers(needs)
            if self.cache_all_layers:
                # Every hidden state, so that runs of other students and objectives on the same
                # training set (a grid of runs) reuse this cache instead of running the teacher again.
                every = list(range(self.teacher.config.num_hidden_layers + 1))
                lengths = [len(ids) for ids in self.train_tokenized["input_ids"]]
                if TeacherCache.estimate_bytes(lengths, len(every), self.teacher.config.hidden_size) <= self.cache_budget_bytes:
                    layers = every
            self.teacher_cache = TeacherCache.build(
                self.teacher, self.train_tokenized, DynamicPaddingCollator(self.tokenizer), layers,
                batch_size=self.config.eval_batch_size, budget_bytes=self.cache_budget_bytes,
                progress=self.config.progress,
            )

    # ----------------------------------------------------------------- the loss
    def _forward(self, model: PreTrainedModel, inputs: dict[str, torch.Tensor], needs: set[str]) -> SimpleNamespace:
        if "qkv" in needs:
            with capture_qkv(model) as qkv:
                out = model(**inputs, output_hidden_states="hidden_states" in needs)
        else:
            qkv = None
            out = model(**inputs, output_hidden_states="hidden_states" in needs)
        return SimpleNamespace(logits=out.logits, hidden_states=out.hidden_states, qkv=qkv)

    def teacher_outputs(self, batch: dict[str, torch.Tensor], needs: set[str]) -> SimpleNamespace:
        cache = self.teacher_cache
        mapped = self.mapped_teacher_layers(needs)
        if cache is not None and "qkv" not in needs and set(mapped) <= set(cache.layers):
            return cache.lookup(batch["row"], batch["attention_mask"], layers=mapped)
        with torch.no_grad():
            return self._forward(self.teacher, self.model_inputs(batch), needs)

    def compute_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        active = self._active()
        needs = self._needs(active)
        student = self._forward(self.model, self.model_inputs(batch), needs)
        teacher = self.teacher_outputs(batch, needs - {"labels"}) if needs - {"labels"} else None
        terms: dict[str, torch.Tensor] = {}
        for name in active:
            module = self.objectives[name]
            if name == "ckd":
                module.weights.update({t: self.weights.get(t, 0.0) for t in REGISTRY["ckd"].terms})
            terms.update(module(teacher, student, batch))
        return {k: v for k, v in terms.items() if self.weights.get(k, 0.0) > 0}
