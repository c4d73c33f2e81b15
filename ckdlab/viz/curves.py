"""Training curves: loss terms and dev metrics against steps, one panel per run
(:func:`plot_learning_curves`), and one panel per logged loss term of a run with its weight and
temperature changes as vertical lines (:func:`plot_loss_terms`)."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

NOT_TERMS = ("lr", "epoch", "grad_norm")


def plot_learning_curves(
    curves: pd.DataFrame, loss_names: tuple[str, ...] = ("loss",), metric: str | None = None, save_to: str | Path | None = None
) -> Figure:
    """Training loss (left axis) and a dev metric (right axis) per run.

    ``curves`` is the tidy frame of :func:`learning_curves` (run, step, kind, name, value).
    ``metric`` picks the dev metric (default: the first dev series of each run).
    """
    runs = list(dict.fromkeys(curves["run"]))
    if not runs:
        raise ValueError("no curves to plot: the frame is empty")
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        frame = curves[curves["run"] == run]
        for name in loss_names:
            series = frame[(frame["kind"] == "train") & (frame["name"] == name)]
            ax.plot(series["step"], series["value"], label=f"train {name}", lw=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(run)
        dev = frame[frame["kind"] == "dev"]
        if not dev.empty:
            name = metric if metric and any(dev["name"].str.endswith(metric)) else dev["name"].iloc[0]
            series = dev[dev["name"].str.endswith(name) if metric else dev["name"] == name]
            twin = ax.twinx()
            twin.plot(series["step"], series["value"], "o-", color="tab:red", label=f"dev {name}", ms=3)
            twin.set_ylabel(name, color="tab:red")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.tight_layout()
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120, bbox_inches="tight")
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
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120, bbox_inches="tight")
    return fig


def learning_curves(run_dirs: dict[str, str | Path]) -> pd.DataFrame:
    """Tidy training-loss and dev-metric curves of several run folders: run, step, epoch, kind, name, value."""
    frames = []
    for run, directory in run_dirs.items():
        directory = Path(directory)
        train = read_train_log(directory).assign(run=run, kind="train")
        frames.append(train[["run", "step", "epoch", "kind", "name", "value"]])
        if (directory / "eval_log.csv").exists():
            dev = pd.read_csv(directory / "eval_log.csv")
            dev = dev.assign(run=run, kind="dev", name=dev["split"] + "_" + dev["metric"])
            frames.append(dev[["run", "step", "epoch", "kind", "name", "value"]])
    if not frames:
        raise ValueError("learning_curves needs at least one run folder")
    return pd.concat(frames, ignore_index=True)
