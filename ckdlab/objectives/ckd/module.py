"""``CKDLoss``: the four CKD terms on Hugging Face model outputs, as the distillation engine calls them."""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ckdlab.objectives.ckd.angle_blocks import check_block_elements
from ckdlab.objectives.ckd.kernels import (
    PAIR_LOSSES,
    TRIPLET_LOSSES,
    ltr_gram,
    ltr_pair_sum,
    ltr_states,
    ltr_triplet_sum,
    teacher_ltr_gram,
    teacher_wr_gram,
    wr_gram,
    wr_pair_sum,
    wr_triplet_sum,
)
from ckdlab.objectives.ckd.losses import check_centred, check_layer_pairs, check_temperature, check_window
from ckdlab.objectives.ckd.memo import TeacherGramMemo
from ckdlab.objectives.ckd.threads import KERNEL_THREADS, check_threads, kernel_threads, run_scoped
from ckdlab.objectives.layer_map import LayerMapSpec, resolve_layer_map
from ckdlab.objectives.relations import METRICS, _check_option, full_precision

TERMS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")
MIN_LAYERS = {"ltr_pair": 2, "ltr_triplet": 3}


def checked_weights(weights: Mapping[str, float], name: str = "weights") -> dict[str, float]:
    """``weights`` as a dict over all four terms (missing ones 0); ValueError on unknown terms or non-numbers."""
    if not isinstance(weights, Mapping):
        raise ValueError(f"{name} must be a mapping from term to weight, got {type(weights).__name__}")
    unknown = sorted(set(weights) - set(TERMS))
    if unknown:
        raise ValueError(f"{name} has unknown term(s) {unknown}; the terms are {', '.join(TERMS)}")
    for term, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name}[{term!r}]={value!r} must be a real number")
    return {term: 0.0 for term in TERMS} | {term: float(value) for term, value in weights.items()}


class CKDLoss(nn.Module):
    """The CKD objective on Hugging Face model outputs.

    ``forward`` maps layers with ``layer_map`` and returns the *unweighted* terms
    ``{"wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet"}``, computing only those whose weight is
    non-zero; ``total(terms)`` is their weighted sum. The weights come from the call when given
    (``forward(..., weights=...)``, ``total(terms, weights=...)``: the engine passes its live
    weights and nothing is stored), else from the constructor (standalone use).

    Args:
        weights: default weight per term; missing terms get 0. None = all four at 1.0.
        layer_map: see ``ckdlab.objectives.layer_map.resolve_layer_map`` (default "uniform").
        pair_loss, pair_metric: options of both pair-wise terms ("kl"/"mse"/"huber", "cos"/"l2").
        triplet_loss: option of both triplet terms ("mse"/"huber").
        window: WR triplet window w (None = all triplets).
        block_elements: block size of the huber WR triplet walk (None = device default).
        pair_temperature: T > 0 of both pair terms' softmax, logits ``r / T`` for teacher and
            student; 1.0 is the official form. Only meaningful with ``pair_loss="kl"``: any other
            value with "mse"/"huber" raises ValueError (they have no softmax).
        centred: WR relations on states centred per sequence and layer, ``c_i = h_i - mu`` with
            ``mu = (1/|V|) sum_{j in V} h_j`` (V = valid tokens), and LTR relations on those same
            ``c_i``; WR pair cosines then expose collapse (all tokens near one vector), which
            angles and raw cosines hide. WR distances and angles are unchanged by it.
        memoize_teacher: keep the teacher's Grams per training example (:class:`TeacherGramMemo`),
            for calls that pass ``rows``, the dataset row of each sequence. For a fixed training
            set only (the distillation engine turns it on).
        threads: CPU threads of the CKD kernels, forward and backward (default 1, see
            :mod:`ckdlab.objectives.ckd.threads`); None keeps torch's setting.
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        layer_map: LayerMapSpec = "uniform",
        *,
        pair_loss: str = "kl",
        pair_metric: str = "cos",
        triplet_loss: str = "mse",
        window: int | None = None,
        block_elements: int | None = None,
        pair_temperature: float = 1.0,
        centred: bool = False,
        memoize_teacher: bool = False,
        threads: int | None = KERNEL_THREADS,
    ) -> None:
        super().__init__()
        self.weights: dict[str, float] = {term: 1.0 for term in TERMS} if weights is None else checked_weights(weights)
        self.layer_map = layer_map
        self.pair_loss = _check_option("pair_loss", pair_loss, PAIR_LOSSES)
        self.pair_metric = _check_option("pair_metric", pair_metric, METRICS)
        self.triplet_loss = _check_option("triplet_loss", triplet_loss, TRIPLET_LOSSES)
        self.window = check_window(window)
        self.block_elements = block_elements
        if block_elements is not None:
            check_block_elements(block_elements, torch.device("cpu"))
        self.pair_temperature = check_temperature(pair_temperature, pair_loss, "pair_temperature")
        self.centred = check_centred(centred)
        self.teacher_memo = TeacherGramMemo() if memoize_teacher else None
        self.threads = check_threads(threads)

    def reset_memo(self) -> None:
        """Forget the memoised teacher Grams (e.g. those a measurement pass computed in other batches)."""
        if self.teacher_memo is not None:
            self.teacher_memo = TeacherGramMemo()

    def _weights(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        # The constructor's dict is public and may have been edited since: check it on every use.
        return checked_weights(self.weights if weights is None else weights)

    def forward(self, teacher_outputs: object, student_outputs: object, attention_mask: Tensor,
                rows: Tensor | None = None, weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        """Unweighted CKD terms for the non-zero-weight terms.

        Args:
            teacher_outputs, student_outputs: model outputs with ``.hidden_states`` (call the
                models with ``output_hidden_states=True``), or the hidden-states tuples themselves.
            attention_mask: ``[B, L]`` of 0/1, the mask given to both models.
            rows: ``[B]`` dataset row of each sequence, for ``memoize_teacher``; without it (a batch
                from elsewhere) the teacher's Grams are computed afresh and not stored.
            weights: the weights of this call (terms missing from it count as 0); None = the
                constructor's ``self.weights``.
        """
        weights = self._weights(weights)
        teacher_hidden = hidden_states_of(teacher_outputs, "teacher_outputs")
        student_hidden = hidden_states_of(student_outputs, "student_outputs")
        pairs = resolve_layer_map(self.layer_map, len(teacher_hidden) - 1, len(student_hidden) - 1)
        for term, needed in MIN_LAYERS.items():
            if weights[term] != 0 and len(pairs) < needed:
                raise ValueError(
                    f"{term} needs at least {needed} mapped layers but layer_map={self.layer_map!r} gives "
                    f"{len(pairs)} pair(s) {pairs}; use a map with more pairs or set weights[{term!r}] = 0"
                )
        wanted = [term for term in TERMS if weights[term] != 0]
        if not wanted:
            return {}
        teacher = [teacher_hidden[t] for t, _ in pairs]
        student = [student_hidden[s] for _, s in pairs]
        valid = check_layer_pairs(teacher, student, attention_mask, "CKDLoss")
        memo = self.teacher_memo if rows is not None else None
        layout = memo.layout(rows, valid, tuple(t for t, _ in pairs)) if memo is not None else None
        wr, ltr = bool({"wr_pair", "wr_triplet"} & set(wanted)), bool({"ltr_pair", "ltr_triplet"} & set(wanted))
        device = valid.device
        with kernel_threads(self.threads, device), full_precision(device):
            # One centred Gram per layer (WR) and per token (LTR) serves both the pair and the
            # triplet term: the Grams are the largest part of CKD's cost at BERT widths.
            wr_t = (memo.wr(layout, teacher) if memo is not None else teacher_wr_gram(teacher, valid)) if wr else None
            if ltr:
                ltr_t = memo.ltr(layout, teacher, self.centred) if memo is not None else \
                    teacher_ltr_gram(teacher, valid, self.centred)
        block_elements = check_block_elements(self.block_elements, device)

        def kernels(student_states: list[Tensor]) -> tuple[Tensor, ...]:
            parts = {}
            if wr:
                wr_s = wr_gram(student_states, valid, self.centred)
                if "wr_pair" in wanted:
                    parts["wr_pair"] = wr_pair_sum(wr_t, wr_s, valid, self.pair_loss, self.pair_metric,
                                                   self.pair_temperature, self.centred)
                if "wr_triplet" in wanted:
                    parts["wr_triplet"] = wr_triplet_sum(wr_t, wr_s, valid, self.triplet_loss, self.window,
                                                         block_elements)
            if ltr:
                ltr_s = ltr_gram(ltr_states(student_states, valid, self.centred), valid)
                if "ltr_pair" in wanted:
                    parts["ltr_pair"] = ltr_pair_sum(ltr_t, ltr_s, valid, self.pair_loss, self.pair_metric,
                                                     self.pair_temperature)
                if "ltr_triplet" in wanted:
                    parts["ltr_triplet"] = ltr_triplet_sum(ltr_t, ltr_s, valid, self.triplet_loss)
            return tuple(total / count.clamp(min=1) for total, count in (parts[term] for term in wanted))

        return dict(zip(wanted, run_scoped(kernels, student, self.threads, device)))

    def total(self, terms: Mapping[str, Tensor], weights: Mapping[str, float] | None = None) -> Tensor:
        """``sum_k weights[k] * terms[k]`` (0 for an empty dict); ``weights`` None = the constructor's."""
        weights = self._weights(weights)
        unknown = sorted(set(terms) - set(TERMS))
        if unknown:
            raise ValueError(f"terms has unknown key(s) {unknown}; the terms are {', '.join(TERMS)}")
        result = torch.zeros(())
        for term, value in terms.items():
            result = result + weights[term] * value
        return result

    def extra_repr(self) -> str:
        return (
            f"weights={self.weights}, layer_map={self.layer_map!r}, pair_loss={self.pair_loss!r}, "
            f"pair_metric={self.pair_metric!r}, triplet_loss={self.triplet_loss!r}, window={self.window}, "
            f"pair_temperature={self.pair_temperature}, centred={self.centred}, threads={self.threads}"
        )


def hidden_states_of(outputs: object, name: str) -> Sequence[Tensor]:
    """``outputs.hidden_states`` (or ``outputs`` itself if it is the tuple); ValueError if absent."""
    hidden = outputs if isinstance(outputs, (tuple, list)) else getattr(outputs, "hidden_states", None)
    if hidden is None:
        raise ValueError(
            f"{name} has no hidden_states; call the model with output_hidden_states=True "
            f"(or pass the hidden_states tuple itself)"
        )
    if len(hidden) < 2:
        raise ValueError(
            f"{name}.hidden_states must hold the embedding output and at least one layer, got {len(hidden)} tensor(s)"
        )
    return hidden
