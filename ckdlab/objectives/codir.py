"""CoDIR: Contrastive Distillation on Intermediate Representations, Sun, Gan, Cheng, Fang, Wang & Liu
(EMNLP 2020). Where CKD matches relations *inside* one example, CoDIR asks the student's summary of its
intermediate layers to pick out the teacher's summary of the *same* example among other examples'.

For an example x with mapped student layers s_1..s_n and teacher layers t_1..t_m:

    u_S(x) = [pool(h_{s_1}(x)); …; pool(h_{s_n}(x))]   (n·d_S)      u_T(x) likewise   (m·d_T)
    z_S = normalize(W_S u_S),  z_T = normalize(W_T u_T)            (learned linear heads to ``dim`` = 128)
    codir = InfoNCE(anchor z_S, positive z_T, negatives)           (``info_nce_loss``, τ = 0.07)

``pool`` is the [CLS] state (``pooling="cls"``, the official code's choice) or the masked mean over valid
tokens (``"mean"``). The teacher is frozen: its states are detached, only the heads and the student learn.

Two forms (option ``form``):

* ``"finetune"`` (default) — label-aware negatives from a memory bank. The bank holds one ``dim``-d teacher
  projection per training example, updated after each step with ``row ← normalize(m·row + (1 − m)·z_T)``
  (m = 0.5); each anchor gets K = 100 bank rows of examples whose label differs from its own
  (``sample_negatives``; for regression, ``|Δlabel| >= min_label_distance``, 1.0 on STS-B's 0–5 scale).
  ``symmetric=True`` adds the teacher-anchored direction against a bank of student projections and
  averages the two, as the official code does.
* ``"pretrain"`` — unlabeled text: the other examples of the batch are the negatives (B >= 2); no bank.

Layer selection. Default: the run's layer map without its embedding pair (0, 0) (kept only when it is the
whole map). With the default uniform map and a student whose depth divides the teacher's, that is every
student layer against every (Lt/Ls)-th teacher layer — for 12 → 6 layers, teacher 2, 4, …, 12 against
student 1..6 (for 12 → 8 the uniform map pairs only student layers 2, 4, 6, 8; pass ``layers=`` or
the separate lists below for more).
That is the official code's every-other-teacher-layer choice (it takes 1, 3, …, 11) shifted to end on the
last layer, which every layer map of this workbench pairs; using the run's map also lets the engine's
teacher cache serve CoDIR, CKD and PKD alike. Other choices: ``layers=`` (teacher, student) hidden-state
index pairs or a layer-map spec (the official code: ``"1-1,3-2,5-3,7-4,9-5,11-6"``), or ``teacher_layers=``
and ``student_layers=`` separately — the summaries are concatenated, so n and m may differ (the paper's
"all layers": ``teacher_layers=range(1, 13), student_layers=range(1, 7)``).

The bank starts as seeded random unit vectors (as the official code starts from random vectors, here
normalised): it needs no extra teacher pass over the training set, and random 128-d unit vectors are nearly
orthogonal to everything, so unwritten rows are weak, harmless negatives until the first epoch writes them.

State (saved in checkpoints, restored on resume): the heads, the bank(s) and the training-set labels are
parameters and buffers; negatives come from a generator seeded each forward from (``seed``, the ``draws``
counter buffer, ``process_index``), so a resumed run draws the same negatives without saving a generator.

Official defaults (``sentence_prediction_crd``): KD temperature T = 2, KD mixing 0.5 (weights ce = 0.5,
kd = 0.5), CoDIR weight 0.1 — in this workbench ``temperature=2, weights={"ce": 0.5, "kd": 0.5,
"codir": 0.1}`` with ``objective="codir+kd"``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ckdlab.objectives.contrastive import (
    NegativeSampler,
    _check_temperature,
    in_batch_info_nce_loss,
    info_nce_loss,
    update_memory_bank,
)
from ckdlab.objectives.layer_map import resolve_layer_map

CODIR_OPTIONS = (
    "pooling", "dim", "negatives", "nce_temperature", "symmetric", "momentum", "form", "seed",
    "layers", "teacher_layers", "student_layers", "min_label_distance",
)
POOLINGS = ("cls", "mean")
FORMS = ("finetune", "pretrain")


def summarize_layers(
    hidden_states: Sequence[Tensor | None], layers: Sequence[int], attention_mask: Tensor | None, pooling: str, who: str
) -> Tensor:
    """``[B, len(layers)·d]``: the pooled state of each listed hidden-state index, concatenated in order.

    ``pooling="cls"`` takes position 0; ``"mean"`` averages the positions where ``attention_mask`` is 1.
    """
    if hidden_states is None:
        raise ValueError(f"CoDIR needs the {who}'s hidden states; run the {who} with output_hidden_states=True")
    parts = []
    for index in layers:
        state = hidden_states[index] if index < len(hidden_states) else None
        if state is None:
            raise ValueError(
                f"CoDIR needs the {who}'s hidden state {index} (0 = embeddings) but the {who} outputs have "
                f"{len(hidden_states)} hidden states{'' if index >= len(hidden_states) else ' and this one is None'}; "
                f"provide (or cache) hidden states {list(layers)}"
            )
        if pooling == "cls":
            parts.append(state[:, 0])
        else:
            if attention_mask is None:
                raise ValueError("CoDIR pooling='mean' needs batch['attention_mask']; pass it or use pooling='cls'")
            mask = attention_mask[..., None].to(state.dtype)
            parts.append((state * mask).sum(1) / mask.sum(1).clamp_min(1.0))
    return torch.cat(parts, dim=-1)


def _seeded_linear(in_features: int, out_features: int, generator: torch.Generator) -> nn.Linear:
    # nn.Linear's default init, drawn from our generator: building the objective neither depends on nor
    # advances the global RNG (which drives the student's dropout).
    layer = torch.nn.utils.skip_init(nn.Linear, in_features, out_features)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    bound = 1.0 / math.sqrt(in_features)
    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def _mix_seed(*parts: int) -> int:
    # Nearby (seed, step) pairs must give unrelated streams and distinct pairs distinct seeds.
    value = 0x243F6A8885A308D3
    for part in parts:
        value = ((value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0x100000001B3 + 0x9E3779B97F4A7C15) % 2**64
        value ^= value >> 29
    return value


class CoDIR(nn.Module):
    """The CoDIR term (``codir``; formula, forms and defaults in the module docstring).

    Args:
        teacher_layers, student_layers: hidden-state indices (0 = embeddings) summarised on each side.
        teacher_width, student_width: hidden sizes d_T, d_S.
        pooling: ``"cls"`` (default) or ``"mean"``. dim: projection size (128).
        negatives: K, bank negatives per anchor (100; finetune form). nce_temperature: τ (0.07).
        symmetric: add the teacher-anchored direction (finetune: against a student bank; pretrain: in-batch).
        momentum: bank momentum m in [0, 1) (0.5). form: ``"finetune"`` or ``"pretrain"``.
        seed: seeds the heads, the initial bank and the negatives. regression: the task's labels are real
            numbers (negatives by label distance). min_label_distance: that distance (1.0).

    Engine protocol: ``bind_training_set(labels, regression)`` once before training (finetune form);
    ``forward(teacher, student, batch, weights)`` with ``batch["row"]`` the training-set rows;
    ``after_step(gather)`` after each optimiser step; set ``process_index`` under several processes.
    """

    def __init__(
        self,
        teacher_layers: Sequence[int],
        student_layers: Sequence[int],
        teacher_width: int,
        student_width: int,
        *,
        pooling: str = "cls",
        dim: int = 128,
        negatives: int = 100,
        nce_temperature: float = 0.07,
        symmetric: bool = False,
        momentum: float = 0.5,
        form: str = "finetune",
        seed: int = 0,
        regression: bool = False,
        min_label_distance: float = 1.0,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"CoDIR option pooling must be one of {POOLINGS}, got {pooling!r}")
        if form not in FORMS:
            raise ValueError(f"CoDIR option form must be one of {FORMS}, got {form!r}")
        for name, value in (("dim", dim), ("negatives", negatives), ("teacher_width", teacher_width), ("student_width", student_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CoDIR option {name} must be an int >= 1, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"CoDIR option seed must be an int, got {seed!r}")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"CoDIR option momentum must lie in [0, 1) (official: 0.5), got {momentum!r}")
        if not (float(min_label_distance) > 0 and math.isfinite(float(min_label_distance))):
            raise ValueError(f"CoDIR option min_label_distance must be a finite number > 0, got {min_label_distance!r}")
        self.teacher_layers = _check_indices(teacher_layers, "teacher_layers")
        self.student_layers = _check_indices(student_layers, "student_layers")
        self.pooling, self.form, self.dim, self.negatives = pooling, form, dim, negatives
        self.nce_temperature = _check_temperature(nce_temperature, "CoDIR option nce_temperature")
        self.symmetric, self.momentum, self.seed = bool(symmetric), float(momentum), seed
        self.regression, self.min_label_distance = bool(regression), float(min_label_distance)
        self.process_index = 0  # the engine sets accelerator.process_index: each process draws its own negatives
        generator = torch.Generator().manual_seed(_mix_seed(seed, 0))
        self.student_head = _seeded_linear(len(self.student_layers) * student_width, dim, generator)
        self.teacher_head = _seeded_linear(len(self.teacher_layers) * teacher_width, dim, generator)
        # Empty until bind_training_set; load_state_dict resizes them to the checkpoint's.
        self.register_buffer("bank", torch.zeros(0, dim))
        self.register_buffer("student_bank", torch.zeros(0, dim))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("draws", torch.zeros((), dtype=torch.long))
        self._sampler: NegativeSampler | None = None
        self._pending: tuple[Tensor, Tensor, Tensor | None] | None = None

    # ----------------------------------------------------------------- training-set state
    def bind_training_set(self, labels: Tensor, regression: bool) -> None:
        """Size the bank for the training set (row r has label ``labels[r]``) and fill it with seeded random
        unit vectors. Binding the labels already bound keeps the bank and the draw counter, so a resumed run
        may bind before or after loading its checkpoint. The pretrain form has no bank: a no-op."""
        if self.form == "pretrain":
            return
        if labels.dim() != 1 or labels.numel() < 2:
            raise ValueError(f"bind_training_set needs labels [N] with N >= 2 training examples, got shape {tuple(labels.shape)}")
        self.regression = bool(regression)
        sampler = NegativeSampler(labels, self.min_label_distance if self.regression else None)
        sampler.check_all_have_negatives()
        # By value: the labels buffer follows module casts (.float()), the training set stays the same.
        if self.labels.shape == sampler.labels.shape and torch.equal(self.labels.to("cpu", torch.float64), sampler.labels):
            self._sampler = sampler
            return
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, 1))
        n = labels.numel()
        self.bank = self._random_unit_rows(n, generator)
        self.student_bank = self._random_unit_rows(n if self.symmetric else 0, generator)
        self.labels = sampler.labels.to(self.bank.device)
        self.draws.zero_()
        self._sampler, self._pending = sampler, None

    def _random_unit_rows(self, n: int, generator: torch.Generator) -> Tensor:
        # Gaussian rows, normalised: uniform on the sphere. Drawn on the CPU (reproducible on any device)
        # in the bank's own dtype, in place: MNLI's 393k rows take about a second, not several.
        rows = torch.randn(n, self.dim, generator=generator, dtype=self.bank.dtype)
        rows.div_(rows.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        return rows.to(self.bank.device)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A fresh (unbound) module must accept a checkpoint's bank: take the checkpoint's sizes.
        for name in ("bank", "student_bank", "labels"):
            incoming, current = state_dict.get(prefix + name), self._buffers[name]
            if incoming is not None and current is not None and incoming.shape != current.shape:
                self._buffers[name] = torch.empty(incoming.shape, dtype=current.dtype, device=current.device)
        self._sampler, self._pending = None, None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def negative_sampler(self) -> NegativeSampler:
        if self.bank.shape[0] == 0:
            raise ValueError(
                "CoDIR(form='finetune') has no memory bank yet: call bind_training_set(train_labels, regression) "
                "before the first step (or use form='pretrain' for in-batch negatives)"
            )
        if self._sampler is None:
            self._sampler = NegativeSampler(self.labels, self.min_label_distance if self.regression else None)
        return self._sampler

    def draw_negatives(self, rows: Tensor) -> Tensor:
        """``[B, negatives]`` bank rows for the anchors ``rows`` at the current draw counter (no state change)."""
        sampler = self.negative_sampler()
        generator = torch.Generator().manual_seed(_mix_seed(self.seed, 2, int(self.draws), self.process_index))
        return sampler.sample(sampler.check_index(rows, "batch['row']"), self.negatives, generator)

    # ----------------------------------------------------------------- the loss
    def project(self, teacher: Any, student: Any, attention_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(z_S, z_T)``: the normalised projections of the student's and the (detached) teacher's summaries."""
        u_s = summarize_layers(student.hidden_states, self.student_layers, attention_mask, self.pooling, "student")
        u_t = summarize_layers(teacher.hidden_states, self.teacher_layers, attention_mask, self.pooling, "teacher").detach()
        for u, head, who in ((u_s, self.student_head, "student"), (u_t, self.teacher_head, "teacher")):
            if u.shape[-1] != head.in_features:
                raise ValueError(
                    f"CoDIR's {who} summary has width {u.shape[-1]} but its head expects {head.in_features} "
                    f"(layers × hidden size from the {who} config); the {who} model does not match the config it was built for"
                )
        dtype = self.student_head.weight.dtype
        z_s = F.normalize(self.student_head(u_s.to(dtype)), dim=-1)
        z_t = F.normalize(self.teacher_head(u_t.to(dtype)), dim=-1)
        return z_s, z_t

    def forward(
        self, teacher: Any, student: Any, batch: dict[str, Tensor], weights: dict[str, float] | None = None
    ) -> dict[str, Tensor]:
        """``{"codir": loss}`` (unweighted); ``{}`` when ``weights["codir"] == 0``. In training mode the batch's
        projections are kept (detached) for ``after_step``; in eval mode nothing changes."""
        if weights is not None and weights.get("codir", 0.0) == 0:
            return {}
        z_s, z_t = self.project(teacher, student, batch.get("attention_mask"))
        tau = self.nce_temperature
        if self.form == "pretrain":
            loss = in_batch_info_nce_loss(z_s, z_t, tau)
            if self.symmetric:
                loss = 0.5 * (loss + in_batch_info_nce_loss(z_t, z_s, tau))
            return {"codir": loss}
        if "row" not in batch:
            raise ValueError(
                "CoDIR(form='finetune') needs batch['row'] (each example's index in the training set) to use its "
                "memory bank; use form='pretrain' for batches without rows"
            )
        rows = batch["row"]
        negatives = self.draw_negatives(rows).to(self.bank.device)
        loss = info_nce_loss(z_s, z_t, self.bank[negatives], tau)
        if self.symmetric:
            loss = 0.5 * (loss + info_nce_loss(z_t, z_s, self.student_bank[negatives], tau))
        if self.training:
            self.draws += 1
            self._pending = (rows.detach(), z_t.detach(), z_s.detach() if self.symmetric else None)
        return {"codir": loss}

    @torch.no_grad()
    def after_step(self, gather: Callable[[Tensor], Tensor] = lambda tensor: tensor) -> None:
        """Write the last training batch's projections into the bank(s); ``gather`` collects rows and
        projections from every process (accelerate's ``gather``; identity in one process)."""
        pending, self._pending = self._pending, None
        if pending is None or self.form == "pretrain":
            return
        rows, z_t, z_s = pending
        rows = gather(rows)
        update_memory_bank(self.bank, rows, gather(z_t), self.momentum)
        if z_s is not None:
            update_memory_bank(self.student_bank, rows, gather(z_s), self.momentum)


def _check_indices(indices: Sequence[int], name: str) -> tuple[int, ...]:
    values = tuple(indices)
    if not values or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in values):
        raise ValueError(f"CoDIR {name} must be a non-empty list of hidden-state indices >= 0 (0 = embeddings), got {indices!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"CoDIR {name} lists a layer twice: {list(values)}")
    return values


def codir_layers(
    layer_map: Sequence[tuple[int, int]], options: dict[str, Any], n_teacher_layers: int, n_student_layers: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(teacher_layers, student_layers)`` from the options ``layers`` / ``teacher_layers`` + ``student_layers``,
    or else the run's ``layer_map`` without its (0, 0) embedding pair (see the module docstring)."""
    explicit = "teacher_layers" in options or "student_layers" in options
    if "layers" in options and explicit:
        raise ValueError("CoDIR takes either the option layers (pairs) or teacher_layers + student_layers, not both")
    if explicit:
        if "teacher_layers" not in options or "student_layers" not in options:
            raise ValueError("CoDIR option teacher_layers needs student_layers too (and vice versa)")
        teacher = _check_indices(list(options["teacher_layers"]), "teacher_layers")
        student = _check_indices(list(options["student_layers"]), "student_layers")
    else:
        pairs = resolve_layer_map(options["layers"], n_teacher_layers, n_student_layers) if "layers" in options else list(layer_map)
        pairs = [(t, s) for t, s in pairs if (t, s) != (0, 0)] or list(pairs)
        teacher, student = tuple(t for t, _ in pairs), tuple(s for _, s in pairs)
    for name, values, top in (("teacher", teacher, n_teacher_layers), ("student", student, n_student_layers)):
        if max(values) > top:
            raise ValueError(f"CoDIR {name} layers {list(values)} go past the {name}'s {top} layers (indices 0..{top})")
    return teacher, student


def build_codir(ctx: Any) -> CoDIR:
    """Build from the registry's ``BuildContext`` (configs, layer map, regression, ``options``)."""
    options = {k: v for k, v in ctx.options.items() if k in CODIR_OPTIONS}
    teacher, student = codir_layers(
        ctx.layer_map, options, ctx.teacher_config.num_hidden_layers, ctx.student_config.num_hidden_layers
    )
    kwargs = {k: v for k, v in options.items() if k not in ("layers", "teacher_layers", "student_layers")}
    kwargs.setdefault("seed", getattr(ctx, "seed", 0))  # the run's seed unless the options name one
    return CoDIR(
        teacher, student, ctx.teacher_config.hidden_size, ctx.student_config.hidden_size, regression=ctx.regression, **kwargs
    )
