"""Figures (matplotlib): learning curves, relation maps, layer-map diagrams, ablation plots."""
from ckdlab.viz.curves import plot_learning_curves

__all__ = ["plot_learning_curves"]
