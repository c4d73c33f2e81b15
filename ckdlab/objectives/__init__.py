"""Distillation objectives: CKD (the heart), the baselines, and one registry.

    from ckdlab.objectives import wr_pair_loss, wr_triplet_loss, ltr_pair_loss, ltr_triplet_loss, CKDLoss
    from ckdlab.objectives import CoDIR, info_nce_loss, sample_negatives
"""
from ckdlab.objectives.ckd import (
    CKDLoss,
    ltr_pair_loss,
    ltr_triplet_loss,
    relation_fidelity,
    wr_pair_loss,
    wr_triplet_loss,
)
from ckdlab.objectives.codir import CoDIR, build_codir
from ckdlab.objectives.contrastive import in_batch_info_nce_loss, info_nce_loss, sample_negatives, update_memory_bank
from ckdlab.objectives.distilbert import DistilBERTCosine
from ckdlab.objectives.dynabert import DynaBERTLoss, hidden_mse, soft_cross_entropy
from ckdlab.objectives.kd import CrossEntropy, LogitKD, mix_kd_ce
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.objectives.minilm import MiniLM
from ckdlab.objectives.pkd import PKD
from ckdlab.objectives.registry import REGISTRY, build_objectives, default_weights, parse_objective
from ckdlab.objectives.relations import ltr_pair_relation, ltr_triplet_relation, wr_pair_relation, wr_triplet_relation
from ckdlab.objectives.sentence import SentenceApproximationLoss, masked_mean, teacher_sentence_vector
from ckdlab.objectives.tinybert import TinyBERT

__all__ = [
    "CKDLoss",
    "CoDIR",
    "CrossEntropy",
    "DistilBERTCosine",
    "DynaBERTLoss",
    "LogitKD",
    "MiniLM",
    "PKD",
    "REGISTRY",
    "SentenceApproximationLoss",
    "TinyBERT",
    "build_codir",
    "build_objectives",
    "default_weights",
    "hidden_mse",
    "in_batch_info_nce_loss",
    "info_nce_loss",
    "ltr_pair_loss",
    "ltr_pair_relation",
    "ltr_triplet_loss",
    "ltr_triplet_relation",
    "masked_mean",
    "mix_kd_ce",
    "parse_objective",
    "relation_fidelity",
    "resolve_layer_map",
    "soft_cross_entropy",
    "sample_negatives",
    "update_memory_bank",
    "teacher_sentence_vector",
    "wr_pair_loss",
    "wr_pair_relation",
    "wr_triplet_loss",
    "wr_triplet_relation",
]
