"""Distillation objectives: CKD (the heart), the baselines, and one registry.

    from ckdlab.objectives import wr_pair_loss, wr_triplet_loss, ltr_pair_loss, ltr_triplet_loss, CKDLoss
"""
from ckdlab.objectives.ckd import (
    CKDLoss,
    ltr_pair_loss,
    ltr_triplet_loss,
    relation_fidelity,
    wr_pair_loss,
    wr_triplet_loss,
)
from ckdlab.objectives.distilbert import DistilBERTCosine
from ckdlab.objectives.kd import CrossEntropy, LogitKD, mix_kd_ce
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.objectives.minilm import MiniLM
from ckdlab.objectives.pkd import PKD
from ckdlab.objectives.registry import REGISTRY, build_objectives, default_weights, parse_objective
from ckdlab.objectives.relations import ltr_pair_relation, ltr_triplet_relation, wr_pair_relation, wr_triplet_relation
from ckdlab.objectives.tinybert import TinyBERT

__all__ = [
    "CKDLoss",
    "CrossEntropy",
    "DistilBERTCosine",
    "LogitKD",
    "MiniLM",
    "PKD",
    "REGISTRY",
    "TinyBERT",
    "build_objectives",
    "default_weights",
    "ltr_pair_loss",
    "ltr_pair_relation",
    "ltr_triplet_loss",
    "ltr_triplet_relation",
    "mix_kd_ce",
    "parse_objective",
    "relation_fidelity",
    "resolve_layer_map",
    "wr_pair_loss",
    "wr_pair_relation",
    "wr_triplet_loss",
    "wr_triplet_relation",
]
