"""Notebook panels (ipywidgets 8): the relation explorer and live distillation.

Both are plain Python objects holding their widgets; display one by leaving it as the last
expression of a cell, or drive it from code (``panel.sliders[...]``, ``run_steps``, ``state``).
"""
from ckdlab.widgets.explorer import ModelSource, RelationExplorer
from ckdlab.widgets.live import LiveDistillationPanel

__all__ = ["LiveDistillationPanel", "ModelSource", "RelationExplorer"]
