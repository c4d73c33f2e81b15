"""How faithfully a student reproduces the teacher's relations, layer pair by layer pair."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ckdlab.objectives.ckd.angle_blocks import check_block_elements
from ckdlab.objectives.ckd.kernels import (
    PAIR_LOSSES,
    TRIPLET_LOSSES,
    layer_slice,
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
from ckdlab.objectives.ckd.module import hidden_states_of
from ckdlab.objectives.ckd.threads import KERNEL_THREADS, check_threads, kernel_threads
from ckdlab.objectives.layer_map import LayerMapSpec, resolve_layer_map
from ckdlab.objectives.relations import METRICS, _check_option, cosines_from_gram, full_precision


@torch.no_grad()
def relation_fidelity(
    teacher_hidden: object,
    student_hidden: object,
    attention_mask: Tensor,
    layer_map: LayerMapSpec = "uniform",
    *,
    pair_loss: str = "kl",
    pair_metric: str = "cos",
    triplet_loss: str = "mse",
    window: int | None = None,
    pair_temperature: float = 1.0,
    centred: bool = False,
    block_elements: int | None = None,
    threads: int | None = KERNEL_THREADS,
) -> list[dict]:
    """One row per mapped (teacher, student) layer pair: CKD terms and cosine-collapse indicators.

    Row keys (floats, except the layer indices):

    * ``teacher_layer``, ``student_layer``: the pair (hidden-states indices, 0 = embeddings);
    * ``wr_pair``, ``wr_triplet``: the WR terms of this pair alone, as ``CKDLoss`` computes them
      with the same options (CKDLoss's value is the mean of these over the rows);
    * ``ltr_pair``, ``ltr_triplet``: the LTR terms, which belong to the whole map: the same value
      repeated in every row (NaN when the map has fewer than 2 / 3 pairs);
    * ``cos_gap_raw``: mean over valid off-diagonal entries (sequence, i != j) of
      ``|cos(t_i, t_j) - cos(s_i, s_j)|``; ``cos_gap_centred`` the same on states centred per
      sequence (``c_i = h_i - mu``, mu = mean of the valid states);
    * ``teacher_cos_raw``, ``student_cos_raw``, ``teacher_cos_centred``, ``student_cos_centred``:
      each model's mean off-diagonal cosine over those entries, a collapse indicator (raw near 1:
      all tokens point one way, however the angles between their differences look).

    Means over entries pool all sequences of the batch (NaN if no sequence has two valid tokens).

    Args:
        teacher_hidden, student_hidden: model outputs with ``.hidden_states`` or the tuples themselves.
        attention_mask: ``[B, L]`` of 0/1.
        layer_map, pair_loss, pair_metric, triplet_loss, window, pair_temperature, centred,
            block_elements, threads: as for :class:`~ckdlab.objectives.ckd.CKDLoss`.
    """
    _check_option("pair_loss", pair_loss, PAIR_LOSSES)
    _check_option("pair_metric", pair_metric, METRICS)
    _check_option("triplet_loss", triplet_loss, TRIPLET_LOSSES)
    window, threads = check_window(window), check_threads(threads)
    temperature = check_temperature(pair_temperature, pair_loss, "pair_temperature")
    centred = check_centred(centred)
    teacher_hidden = hidden_states_of(teacher_hidden, "teacher_hidden")
    student_hidden = hidden_states_of(student_hidden, "student_hidden")
    pairs = resolve_layer_map(layer_map, len(teacher_hidden) - 1, len(student_hidden) - 1)
    teacher = [teacher_hidden[t] for t, _ in pairs]
    student = [student_hidden[s] for _, s in pairs]
    valid = check_layer_pairs(teacher, student, attention_mask, "relation_fidelity")
    device = valid.device
    block_elements = check_block_elements(block_elements, device)
    with kernel_threads(threads, device), full_precision(device):
        g_t, g_s = teacher_wr_gram(teacher, valid), wr_gram(student, valid)
        ltr = {"ltr_pair": math.nan, "ltr_triplet": math.nan}
        if len(pairs) >= 2:
            ltr_t = teacher_ltr_gram(teacher, valid, centred)
            ltr_s = ltr_gram(ltr_states(student, valid, centred), valid)
            ltr["ltr_pair"] = _mean(*ltr_pair_sum(ltr_t, ltr_s, valid, pair_loss, pair_metric, temperature))
            if len(pairs) >= 3:
                ltr["ltr_triplet"] = _mean(*ltr_triplet_sum(ltr_t, ltr_s, valid, triplet_loss))
        eye = torch.eye(valid.shape[1], dtype=torch.bool, device=device)
        off_diagonal = valid.unsqueeze(-1) & valid.unsqueeze(-2) & ~eye
        cosines = {
            (model, kind): cosines_from_gram(g, centred=kind == "centred")[:, off_diagonal]  # [K, entries]
            for model, g in (("teacher", g_t), ("student", g_s))
            for kind in ("raw", "centred")
        }
        rows = []
        for k, (t_layer, s_layer) in enumerate(pairs):
            g_tk, g_sk = layer_slice(g_t, slice(k, k + 1)), layer_slice(g_s, slice(k, k + 1))
            row: dict = {"teacher_layer": t_layer, "student_layer": s_layer}
            row["wr_pair"] = _mean(*wr_pair_sum(g_tk, g_sk, valid, pair_loss, pair_metric, temperature, centred))
            row["wr_triplet"] = _mean(*wr_triplet_sum(g_tk, g_sk, valid, triplet_loss, window, block_elements))
            row.update(ltr)
            for kind in ("raw", "centred"):
                t_cos, s_cos = cosines["teacher", kind][k], cosines["student", kind][k]
                row[f"cos_gap_{kind}"] = _entry_mean((t_cos - s_cos).abs())
                row[f"teacher_cos_{kind}"] = _entry_mean(t_cos)
                row[f"student_cos_{kind}"] = _entry_mean(s_cos)
            rows.append(row)
    return rows


def _mean(total: Tensor, count: Tensor) -> float:
    """A term's value as the losses give it: sum / count, 0 when there is nothing to average."""
    return float(total / count.clamp(min=1))


def _entry_mean(values: Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan
