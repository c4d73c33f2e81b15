"""Distillation: the training loop of :mod:`ckdlab.engine.trainer` with a frozen teacher.

``Distiller`` trains ``student`` on ``task`` with any combination of registered objectives
(``"ckd+kd"``, ``"tinybert+kd"``, ...; see :mod:`ckdlab.objectives.registry`):

    loss = Σ_term weight[term] · term(teacher outputs, student outputs, batch)

- The teacher is frozen, in eval mode, under ``no_grad``, and runs in ``teacher_precision``
  (:mod:`ckdlab.models.precision`: a bf16 or int8 copy; ``self.teacher`` stays as given); its
  outputs reach the objectives in float32. The student and any learned head or projection of an
  objective are what Accelerate wraps for DDP and mixed precision, and the objectives are called
  through their DDP wrappers, so their gradients are averaged over processes like the student's.
- Only terms with a non-zero weight are computed; the weights are passed into the objectives at
  each step, and what the models must produce (hidden states, q/k/v) follows from those terms.
- Teacher outputs can be cached (``cache_teacher``): logits always, hidden states of the mapped
  layers (of every layer with ``cache_all_layers``, for grids of runs) when they fit the memory
  budget. Terms that need attention q/k/v run the teacher live.
- Loss weights and the KD temperature can change between steps (``set_weight``,
  ``set_temperature``); every change is recorded in ``events.jsonl`` with its step.
- ``tokenizer`` is the student's; ``teacher_tokenizer`` (default: the same) the teacher's. Each
  model only ever reads ids of its own tokenizer. When they tokenise differently, objectives that
  need only the teacher's logits (``kd``, ``ce``: example-aligned) get the teacher's outputs on
  the same examples tokenised by the teacher's tokenizer; token-aligned objectives (CKD, PKD,
  TinyBERT, MiniLM, DistilBERT), and any term reading the teacher's hidden states (which the
  objectives pair with the student's attention mask), are refused up front with an error naming
  both tokenizers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import DynamicPaddingCollator, tokenize_dataset
from ckdlab.engine.balance import BALANCE_BATCHES, balanced_weights, check_scheme, measure
from ckdlab.engine.callbacks import Callback
from ckdlab.engine.config import DistillConfig, TrainConfig
from ckdlab.engine.teacher_cache import TeacherCache
from ckdlab.engine.trainer import Trainer
from ckdlab.errors import UserError
from ckdlab.models.outputs import ModelOutputs, forward_outputs, frozen_outputs
from ckdlab.models.precision import cast_teacher, resolve_teacher_precision
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.objectives.registry import REGISTRY, BuildContext, build_objectives, default_weights, parse_objective, term_needs

PROBE_TEXTS = ("The quick brown fox doesn't jump over 3 lazy dogs!", "Ünïcode – naïve café, 東京.")
MODEL_OUTPUTS = frozenset({"hidden_states", "qkv"})


class TokenizationMismatchError(UserError):
    """Teacher and student tokenise differently, so token-aligned relations are undefined."""


def describe_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """``BertTokenizerFast 'path' (30522 tokens)``: enough to tell two tokenizers apart in a message."""
    return f"{type(tokenizer).__name__} '{tokenizer.name_or_path}' ({len(tokenizer)} tokens)"


def tokenization_differences(teacher_tokenizer: PreTrainedTokenizerBase, student_tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """How the two tokenizers map text to ids differently (empty: they are interchangeable)."""
    if teacher_tokenizer is student_tokenizer:
        return []
    problems = []
    if teacher_tokenizer.get_vocab() != student_tokenizer.get_vocab():
        problems.append(f"vocabularies differ ({len(teacher_tokenizer)} vs {len(student_tokenizer)} entries)")
    for text in PROBE_TEXTS:
        if teacher_tokenizer(text)["input_ids"] != student_tokenizer(text)["input_ids"]:
            problems.append(f"'{text}' tokenises differently")
    return problems


def _mismatch(teacher_tokenizer: PreTrainedTokenizerBase, student_tokenizer: PreTrainedTokenizerBase, problems: list[str],
              why: str) -> TokenizationMismatchError:
    return TokenizationMismatchError(
        f"teacher and student must share tokenisation {why}, but the teacher's tokenizer is "
        f"{describe_tokenizer(teacher_tokenizer)} and the student's is {describe_tokenizer(student_tokenizer)}: "
        f"{'; '.join(problems)}. Build the student from the teacher (a spec such as layers:0,2,4 or "
        "config:L4-H256-A4-I1024), save it with the teacher's tokenizer, or use an objective that needs only the "
        "teacher's logits (kd, ce)."
    )


def check_same_tokenization(teacher_tokenizer: PreTrainedTokenizerBase, student_tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise unless both tokenizers map text to the same ids (same vocabulary, same rules)."""
    problems = tokenization_differences(teacher_tokenizer, student_tokenizer)
    if problems:
        raise _mismatch(teacher_tokenizer, student_tokenizer, problems,
                        "for token-aligned objectives (CKD relations compare token i with token j in both models)")


class Distiller(Trainer):
    """Distil ``teacher`` into ``student`` on ``task`` (see the module docstring).

    ``objective``, ``layer_map`` and ``temperature`` default to :class:`~ckdlab.engine.config.DistillConfig`'s.
    """

    # Batches carry the row of each example in one fixed training set, so objectives may keep
    # per-example state. Subclasses that feed objectives other teacher states per row turn it off.
    rows_fixed = True

    def __init__(
        self,
        teacher: PreTrainedModel,
        student: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        task: str | Any,
        objective: str | None = None,
        weights: dict[str, float] | None = None,
        temperature: float | None = None,
        layer_map: str | list[tuple[int, int]] | None = None,
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
        balance: str | None = None,
        balance_fraction: float | None = None,
        teacher_precision: str | None = None,
    ) -> None:
        defaults = DistillConfig()
        self.balance = check_scheme(balance or defaults.balance,
                                    defaults.balance_fraction if balance_fraction is None else balance_fraction)
        # Weights given explicitly are the user's; balancing leaves them alone.
        self.explicit_weights = frozenset(weights or {})
        self.balance_report: dict[str, Any] | None = None
        objective = objective or defaults.objective
        temperature = defaults.temperature if temperature is None else temperature
        self.objective_names = parse_objective(objective)
        self.default_weights = default_weights(self.objective_names)
        # None: the teacher reads the student's ids (one tokenisation); else the teacher's own tokenizer.
        self.teacher_tokenizer: PreTrainedTokenizerBase | None = None
        problems = tokenization_differences(teacher_tokenizer, tokenizer) if teacher_tokenizer is not None else []
        if problems:
            aligned = [n for n in self.objective_names if REGISTRY[n].token_aligned]
            if aligned:
                raise _mismatch(teacher_tokenizer, tokenizer, problems,
                                f"for the token-aligned objective(s) {'+'.join(aligned)} (they compare the models token by token)")
            self.teacher_tokenizer = teacher_tokenizer
        self.layer_map = resolve_layer_map(layer_map or defaults.layer_map, teacher.config.num_hidden_layers,
                                           student.config.num_hidden_layers)
        super().__init__(
            student, tokenizer, task, config, out_dir=out_dir, data_dir=data_dir, train_dataset=train_dataset,
            dev_datasets=dev_datasets, weights=weights, callbacks=callbacks,
        )
        self.teacher = teacher
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher.eval()
        self.teacher_precision = resolve_teacher_precision(teacher_precision or defaults.teacher_precision,
                                                           self.accelerator.device)
        self._frozen_teacher: torch.nn.Module | None = None
        ctx = BuildContext(
            teacher_config=teacher.config,
            student_config=student.config,
            layer_map=self.layer_map,
            regression=self.task.is_regression,
            temperature=temperature,
            options=dict(objective_options or {}),
            fixed_rows=self.rows_fixed,
            seed=self.config.seed,
        )
        self.objectives = build_objectives(self.objective_names, ctx)
        self.temperature = float(temperature)
        self.cache_teacher = cache_teacher
        self.cache_budget_bytes = int(cache_budget_gb * 1024**3)
        self.cache_all_layers = cache_all_layers
        if teacher_cache is not None and teacher_cache.precision != self.teacher_precision:
            raise ValueError(f"the teacher cache given holds a {teacher_cache.precision} teacher's outputs but this run's "
                             f"teacher_precision is {self.teacher_precision}; pass a cache built at that precision or none")
        self.teacher_cache = teacher_cache
        self._objective_runners: dict[str, torch.nn.Module] = {}
        self._check_separate_tokenization(term_needs(self.weights, self.objective_names))
        self._check_precision(term_needs(self.weights, self.objective_names))

    def _check_precision(self, needs: Iterable[str]) -> None:
        if self.teacher_precision == "int8" and "qkv" in needs:
            readers = [n for n in self.objective_names if "qkv" in term_needs(self.weights, [n])]
            raise UserError(f"objective(s) {'+'.join(readers)} read the teacher's attention q/k/v, which an int8 teacher "
                            "(dynamically quantised Linear layers) does not expose; use --teacher-precision bf16 or fp32, "
                            "or set those terms' weights to 0")

    @property
    def frozen_teacher(self) -> torch.nn.Module:
        """The teacher in ``teacher_precision`` (made on first use: a run served by a cache never
        needs it)."""
        if self._frozen_teacher is None:
            self._frozen_teacher = cast_teacher(self.teacher, self.teacher_precision)
        return self._frozen_teacher

    def _check_separate_tokenization(self, needs: Iterable[str]) -> None:
        """With two tokenizations only the teacher's logits are example-aligned: the objectives pair
        teacher hidden states with the student's attention mask, position by position."""
        if self.teacher_tokenizer is not None and set(needs) & MODEL_OUTPUTS:
            readers = [n for n in self.objective_names if term_needs(self.weights, [n]) & MODEL_OUTPUTS]
            raise _mismatch(self.teacher_tokenizer, self.tokenizer, tokenization_differences(self.teacher_tokenizer, self.tokenizer),
                            f"for objective(s) {'+'.join(readers)}, which read the teacher's hidden states with the "
                            "student's attention mask")

    @property
    def student(self) -> PreTrainedModel:
        return self.model

    def available_terms(self) -> tuple[str, ...]:
        return tuple(self.default_weights)

    def _learned_objectives(self) -> list[str]:
        return [name for name, m in self.objectives.items() if any(p.requires_grad for p in m.parameters())]

    def trainable_modules(self) -> list[torch.nn.Module]:
        return [self.model, *(self.objectives[name] for name in self._learned_objectives())]

    def set_temperature(self, value: float) -> None:
        """Change the KD temperature from the next step on; recorded in the run log."""
        if not value > 0:
            raise ValueError(f"temperature must be > 0, got {value}")
        old, self.temperature = self.temperature, float(value)
        for module in self.objectives.values():
            if hasattr(module, "temperature"):
                module.temperature = self.temperature
        if old != self.temperature:
            self.logger.log_event(self.global_step, "set_temperature", old=old, new=self.temperature)
            self.history.append({"step": self.global_step, "event": "set_temperature", "old": old, "new": self.temperature})

    # ----------------------------------------------------------------- set-up
    def _active(self) -> list[str]:
        """Objectives with at least one non-zero weight (the others are not computed at all)."""
        return [name for name in self.objectives if any(self.weights.get(t, 0.0) > 0 for t in REGISTRY[name].terms)]

    def mapped_teacher_layers(self, needs: Iterable[str] | None = None) -> list[int]:
        """Teacher hidden-state indices the objectives read (when ``needs`` has hidden states): the
        layer map's, and any an objective names itself (``teacher_layers``)."""
        needs = term_needs(self.weights, self.objectives) if needs is None else needs
        if "hidden_states" not in needs:
            return []
        extra = {int(t) for module in self.objectives.values() for t in getattr(module, "teacher_layers", ())}
        return sorted({t for t, _ in self.layer_map} | extra)

    def _after_setup(self) -> None:
        self.teacher_tokenized = self.train_tokenized
        self._teacher_collator = DynamicPaddingCollator(self.teacher_tokenizer or self.tokenizer)
        if self.teacher_tokenizer is not None:
            # The same examples, in the same row order, in the teacher's own ids.
            self.teacher_tokenized = tokenize_dataset(self.train_raw, self.teacher_tokenizer, self.task,
                                                      max_length=self.config.max_length)
        self.teacher.to(self.accelerator.device)
        self.objectives.to(self.accelerator.device)
        # The prepared (under several processes DDP-wrapped) objectives: calling these, not the bare
        # modules, is what makes DDP average the gradients of their heads and projections.
        self._objective_runners = dict(zip(self._learned_objectives(), self._prepared_modules[1:]))
        labels = torch.as_tensor(self.train_tokenized["labels"]) if "labels" in self.train_tokenized.column_names else None
        for module in self.objectives.values():
            if hasattr(module, "process_index"):
                module.process_index = self.accelerator.process_index
            if hasattr(module, "bind_training_set"):
                module.bind_training_set(labels, self.task.is_regression)
        needs = term_needs(self.weights, self.objectives)
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
                self.frozen_teacher, self.teacher_tokenized, self._teacher_collator, layers,
                batch_size=self.config.eval_batch_size, budget_bytes=self.cache_budget_bytes,
                progress=self.config.progress, precision=self.teacher_precision,
            )

    def _before_first_step(self) -> None:
        """Balanced weights (see :mod:`ckdlab.engine.balance`), measured on the first training batches."""
        scheme, fraction = self.balance
        active = self._active()
        balanced = [t for n in active if REGISTRY[n].balanced for t in REGISTRY[n].terms
                    if t not in self.explicit_weights and self.weights.get(t, 0.0) > 0]
        reference = [t for n in active if REGISTRY[n].reference for t in REGISTRY[n].terms if self.weights.get(t, 0.0) > 0]
        if scheme == "none" or not balanced or not reference:
            return
        size = self.config.batch_size
        rows = self.train_tokenized.select(range(min(len(self.train_tokenized), BALANCE_BATCHES * size)))
        batches = DataLoader(rows, batch_size=size, shuffle=False, collate_fn=DynamicPaddingCollator(self.tokenizer))
        device = self.accelerator.device
        params = [p for p in self.unwrapped_model().base_model.parameters() if p.requires_grad]
        self.model.train()
        # Measuring must not move the run's RNG streams (dropout), so a balanced run stays reproducible.
        with torch.random.fork_rng(devices=[]):
            measured = measure(self.compute_terms, ({k: v.to(device) for k, v in b.items()} for b in batches), self.weights,
                               balanced, reference, params, scheme)
        # The measurement batches are padded unlike the training batches: Grams memoised from them would
        # differ in the last bit from those a resumed run computes, so the memos start empty.
        for module in self.objectives.values():
            if hasattr(module, "reset_memo"):
                module.reset_memo()
        new = balanced_weights(measured, scheme, fraction)
        self.weights.update(new)
        self.balance_report = {"scheme": scheme, "fraction": fraction, "measured": measured, "weights": new}
        self.logger.log_event(self.global_step, "balanced_weights", **self.balance_report)
        self.history.append({"step": self.global_step, "event": "balanced_weights", **self.balance_report})

    def _after_optimizer_step(self) -> None:
        for module in self.objectives.values():
            if hasattr(module, "after_step"):
                module.after_step(self.accelerator.gather)

    # ----------------------------------------------------------------- the loss
    def teacher_outputs(self, batch: dict[str, torch.Tensor], needs: Iterable[str]) -> ModelOutputs:
        needs = frozenset(needs)
        self._check_separate_tokenization(needs)
        self._check_precision(needs)
        cache = self.teacher_cache
        mapped = self.mapped_teacher_layers(needs)
        if cache is not None and "qkv" not in needs and set(mapped) <= set(cache.layers):
            return cache.lookup(batch["row"], batch["attention_mask"], layers=mapped)
        if self.teacher_tokenizer is None:
            inputs = self.model_inputs(batch)
        else:
            rows = batch["row"].tolist()
            own = self._teacher_collator([self.teacher_tokenized[int(row)] for row in rows])
            inputs = {key: value.to(batch["row"].device) for key, value in self.model_inputs(own).items()}
        outputs = frozen_outputs(self.frozen_teacher, inputs, needs & MODEL_OUTPUTS)
        return outputs if self.teacher_precision == "fp32" else as_float32(outputs)

    def compute_terms(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        active = self._active()
        needs = term_needs(self.weights, active)
        student = forward_outputs(self.model, self.model_inputs(batch), needs & MODEL_OUTPUTS)
        teacher = self.teacher_outputs(batch, needs - {"labels"}) if needs - {"labels"} else None
        terms: dict[str, torch.Tensor] = {}
        for name in active:
            objective = self._objective_runners.get(name, self.objectives[name])
            terms.update(objective(teacher, student, batch, weights=self.weights))
        return {k: v for k, v in terms.items() if self.weights.get(k, 0.0) > 0}


def as_float32(outputs: ModelOutputs) -> ModelOutputs:
    """``outputs`` with every tensor in float32 (a bf16 teacher's; an int8 teacher's already are)."""
    def f32(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return tensor.float() if tensor is not None and tensor.is_floating_point() else tensor

    hidden = None if outputs.hidden_states is None else tuple(f32(h) for h in outputs.hidden_states)
    qkv = None if outputs.qkv is None else [tuple(f32(t) for t in layer) for layer in outputs.qkv]
    return ModelOutputs(logits=f32(outputs.logits), hidden_states=hidden, qkv=qkv)
