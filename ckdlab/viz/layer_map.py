"""The layer-map diagram: which teacher layer each student layer learns from (hidden-state
indices, 0 = embedding output, as in :mod:`ckdlab.objectives.layer_map`)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from ckdlab.objectives.layer_map import LayerMapSpec, resolve_layer_map
from ckdlab.viz.tokens import layer_label

TEACHER_COLOUR = "#4c72b0"
STUDENT_COLOUR = "#dd8452"
UNUSED_COLOUR = "#e6e6e6"


def _save(fig: Figure, save_to: str | Path | None) -> None:
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120, bbox_inches="tight")


def plot_layer_map(
    layer_map: LayerMapSpec,
    n_teacher_layers: int,
    n_student_layers: int,
    names: tuple[str, str] = ("teacher", "student"),
    save_to: str | Path | None = None,
) -> Figure:
    """The teacher (top row) and student (bottom row) hidden states with a line per mapped pair.

    ``layer_map`` is a spec (``"uniform"``, ``"last"``, ``"skip"``, ``"0-0,2-1"``) or a list of
    ``(teacher, student)`` pairs; it is validated by :func:`resolve_layer_map`. Both rows span the
    same width, so a uniform map draws as near-parallel lines. Unmapped layers are grey.
    """
    pairs = resolve_layer_map(layer_map, n_teacher_layers, n_student_layers)
    width = max(n_teacher_layers, n_student_layers) + 1
    fig, ax = plt.subplots(figsize=(min(14.0, 1.6 + 0.75 * width), 2.6))

    def x_of(index: int, n_layers: int) -> float:
        return index * (width - 1) / n_layers

    mapped_t = {t for t, _ in pairs}
    mapped_s = {s for _, s in pairs}
    rows = ((1.0, n_teacher_layers, mapped_t, TEACHER_COLOUR, names[0]), (0.0, n_student_layers, mapped_s, STUDENT_COLOUR, names[1]))
    for y, n_layers, mapped, colour, name in rows:
        for i in range(n_layers + 1):
            x = x_of(i, n_layers)
            used = i in mapped
            box = FancyBboxPatch(
                (x - 0.32, y - 0.13), 0.64, 0.26, boxstyle="round,pad=0.02", facecolor=colour if used else UNUSED_COLOUR,
                edgecolor="black" if used else "#999999", linewidth=0.8,
            )
            ax.add_patch(box)
            ax.text(x, y, layer_label(i), ha="center", va="center", fontsize=8, color="white" if used else "#555555")
        ax.text(-0.6, y, f"{name}\n({n_layers} layers)", ha="right", va="center", fontsize=9)
    for t, s in pairs:
        ax.plot([x_of(t, n_teacher_layers), x_of(s, n_student_layers)], [0.87, 0.13], color="#333333", lw=1.2)
    ax.set_xlim(-2.4, width - 0.4)
    ax.set_ylim(-0.35, 1.35)
    ax.axis("off")
    spec = layer_map if isinstance(layer_map, str) else "explicit"
    ax.set_title(f"layer map '{spec}': " + ", ".join(f"{layer_label(t)}→{layer_label(s)}" for t, s in pairs), fontsize=9)
    fig.tight_layout()
    _save(fig, save_to)
    return fig
