"""Figures of a distillation run's set-up and progress: the layer-map diagram and per-term loss curves.

:func:`plot_layer_map` draws which teacher layer each student layer learns from (hidden-state
indices, 0 = embedding output, as in :mod:`ckdlab.objectives.layer_map`). :func:`plot_loss_terms`
draws one small panel per logged loss term from a run's tidy ``train_log.csv`` (step, epoch,
name, value), with the weight and temperature changes of ``events.jsonl`` as vertical lines.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import MaxNLocator

from ckdlab.objectives.layer_map import LayerMapSpec, resolve_layer_map
from ckdlab.viz.tokens import layer_label

TEACHER_COLOUR = "#4c72b0"
STUDENT_COLOUR = "#dd8452"
UNUSED_COLOUR = "#e6e6e6"
NOT_TERMS = ("lr", "epoch", "grad_norm")


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


def read_train_log(run: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The tidy training log (step, epoch, name, value) of a run folder, a CSV path or a frame."""
    if isinstance(run, pd.DataFrame):
        frame = run
    else:
        path = Path(run)
        path = path / "train_log.csv" if path.is_dir() else path
        if not path.exists():
            raise FileNotFoundError(f"no training log at {path}; pass a run folder holding train_log.csv, the CSV, or a DataFrame")
        frame = pd.read_csv(path)
    missing = {"step", "name", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"the training log lacks column(s) {sorted(missing)}; expected the tidy columns step, epoch, name, value")
    return frame


def read_events(run: str | Path) -> list[dict[str, Any]]:
    """The events (weight/temperature changes, resume, stop) of a run folder's ``events.jsonl``."""
    path = Path(run) / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss_terms(
    log: str | Path | pd.DataFrame,
    names: Sequence[str] | None = None,
    events: Iterable[dict[str, Any]] | None = None,
    ncols: int = 4,
    save_to: str | Path | None = None,
) -> Figure:
    """One panel per loss term (and the weighted total ``loss``) against the step.

    ``log`` is a run folder, its ``train_log.csv`` or the tidy frame itself. ``names`` picks terms
    (default: every logged name except ``lr``). ``events`` default to the run folder's
    ``events.jsonl``; each ``set_weight`` / ``set_temperature`` event is a dashed line at the step
    *after* which it applies, labelled in the panel of the term it changed.
    """
    frame = read_train_log(log)
    if events is None:
        events = read_events(log) if isinstance(log, (str, Path)) and Path(log).is_dir() else []
    events = [e for e in events if e.get("event") in ("set_weight", "set_temperature")]
    available = list(dict.fromkeys(frame["name"]))
    chosen = [n for n in available if n not in NOT_TERMS] if names is None else list(names)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ValueError(f"names {unknown} are not in the log; it has {available}")
    if not chosen:
        raise ValueError("the training log holds no loss terms yet; run at least one step")
    cols = max(1, min(ncols, len(chosen)))
    rows = math.ceil(len(chosen) / cols)
    # one step axis for all panels: a term that stops being logged (weight 0) keeps the run's span
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows), squeeze=False, sharex=True)
    for ax, name in zip(axes.flat, chosen):
        series = frame[frame["name"] == name].sort_values("step")
        ax.plot(series["step"], series["value"], lw=1.2, marker="." if len(series) < 40 else None)
        for event in events:
            changed = event.get("name", "temperature" if event["event"] == "set_temperature" else None)
            ours = changed == name or (name == "kd" and event["event"] == "set_temperature") or name == "loss"
            ax.axvline(event["step"] + 0.5, color="tab:red" if ours else "#bbbbbb", ls="--", lw=0.8)
            if ours and name != "loss":
                label = "T" if event["event"] == "set_temperature" else ""
                ax.annotate(f"{label}→{event['new']:g}", (event["step"] + 0.5, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(2, -2), textcoords="offset points", fontsize=7, color="tab:red", va="top")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for i, ax in enumerate(list(axes.flat)[: len(chosen)]):
        if i + cols >= len(chosen):  # lowest panel of its column: the shared step axis needs labels here
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("step", fontsize=8)
    # Fixed spacing rather than tight_layout: the live panel redraws this figure while training,
    # and tight_layout would about double the time of each redraw.
    fig.subplots_adjust(left=0.75 / fig.get_figwidth(), right=0.98, bottom=0.55 / fig.get_figheight(),
                        top=1 - 0.35 / fig.get_figheight(), wspace=0.38, hspace=0.45)
    _save(fig, save_to)
    return fig
