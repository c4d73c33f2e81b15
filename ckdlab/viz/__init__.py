"""Figures (matplotlib): learning curves, relation maps, layer-map diagrams, ablation plots."""
from ckdlab.viz.ablations import plot_ablation_bars, plot_dynabert, plot_pareto, plot_sweep_heatmap
from ckdlab.viz.curves import learning_curves, plot_learning_curves, plot_loss_terms
from ckdlab.viz.layer_map import plot_layer_map
from ckdlab.viz.relations import (
    RelationView,
    plot_ltr_pair,
    plot_ltr_triplet,
    plot_relation,
    plot_relations,
    plot_teacher_student,
    plot_wr_pair,
    plot_wr_triplet,
    relation_gap,
    relation_view,
    teacher_student_views,
)
from ckdlab.viz.tokens import encode, encode_batch

__all__ = [
    "RelationView",
    "plot_ablation_bars",
    "plot_dynabert",
    "plot_pareto",
    "plot_sweep_heatmap",
    "encode",
    "encode_batch",
    "learning_curves",
    "plot_layer_map",
    "plot_learning_curves",
    "plot_loss_terms",
    "plot_ltr_pair",
    "plot_ltr_triplet",
    "plot_relation",
    "plot_relations",
    "plot_teacher_student",
    "plot_wr_pair",
    "plot_wr_triplet",
    "relation_gap",
    "relation_view",
    "teacher_student_views",
]
