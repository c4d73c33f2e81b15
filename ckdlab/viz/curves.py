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
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ckdlab.data.tasks import METRIC_NAMES, TASKS

NOT_TERMS = ("lr", "epoch", "grad_norm")
EVENT_COLOUR, OTHER_EVENT_COLOUR = "tab:red", "#bbbbbb"
DEV_COLOUR = "tab:red"  # learning curves have no event marks, so red is free there
# Loss-term colours: tab10 without its red (weight-change marks, dev metric) and grey (other terms' marks).
TERM_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def term_colour(name: str, index: int) -> str:
    """The colour of a loss term's curve: black for the weighted total ``loss``, else the index-th of :data:`TERM_COLOURS`."""
    return "black" if name == "loss" else TERM_COLOURS[index % len(TERM_COLOURS)]


def headline_of(metric_names: Iterable[str]) -> str | None:
    """The headline metric GLUE quotes for a set of dev series (``dev_pearson``, ``dev_spearman`` ->
    ``spearman``): the task whose metrics are exactly these names, if all such tasks agree."""
    found = {next((m for m in METRIC_NAMES if name.endswith(m)), name) for name in metric_names}
    headlines = {spec.headline for spec in TASKS.values() if set(spec.metrics) == found}
    return headlines.pop() if len(headlines) == 1 else None


def _dev_series(dev: pd.DataFrame, metric: str | None) -> tuple[str, pd.DataFrame]:
    """The dev series of one run to plot: ``metric`` if given; else the run's headline metric (the
    ``headline`` column of :func:`learning_curves`, else inferred from the names); else the first."""
    chosen = dev[dev["name"].str.endswith(metric)] if metric else dev.iloc[:0]
    if not chosen.empty:
        return str(chosen["name"].iloc[0]), chosen[chosen["name"] == chosen["name"].iloc[0]]
    names = list(dict.fromkeys(dev["name"]))
    if "headline" in dev and dev["headline"].eq(True).any():
        name = str(dev.loc[dev["headline"].eq(True), "name"].iloc[0])
    else:
        headline = headline_of(names)
        name = next((n for n in names if headline and n.endswith(headline)), names[0])
    return name, dev[dev["name"] == name]


def plot_learning_curves(
    curves: pd.DataFrame, loss_names: tuple[str, ...] = ("loss",), metric: str | None = None, save_to: str | Path | None = None
) -> Figure:
    """Training loss terms (left axis) and a dev metric (right axis, red dots) per run.

    ``curves`` is the tidy frame of :func:`learning_curves` (run, step, kind, name, value, headline).
    ``metric`` picks the dev metric by name or suffix (``"spearman"``; a run without it shows its
    default); by default each run shows its task's headline metric (Spearman for STS-B, F1 for MRPC,
    MCC for CoLA), as in the tables. The legend names the series each panel shows. Each
    loss term keeps one colour in every panel; one legend under the panels names the terms and the
    dev metrics shown.
    """
    runs = list(dict.fromkeys(curves["run"]))
    if not runs:
        raise ValueError("no curves to plot: the frame is empty")
    dev_names = set(curves.loc[curves["kind"] == "dev", "name"])
    if metric and not any(name.endswith(metric) for name in dev_names):
        raise ValueError(f"metric={metric!r} is in no run's dev series {sorted(dev_names)}; pass one of them or None")
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    colour = {name: term_colour(name, i) for i, name in enumerate(loss_names)}  # red, in no term, is the dev metric's
    handles: dict[str, Any] = {}
    dev_lines: dict[str, Any] = {}
    for ax, run in zip(axes.flat, runs):
        frame = curves[curves["run"] == run]
        for name in loss_names:
            series = frame[(frame["kind"] == "train") & (frame["name"] == name)]
            (line,) = ax.plot(series["step"], series["value"], color=colour[name], label=f"train {name}", lw=1.2)
            handles.setdefault(line.get_label(), line)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(run)
        dev = frame[frame["kind"] == "dev"]
        if not dev.empty:
            name, series = _dev_series(dev, metric)
            twin = ax.twinx()
            (line,) = twin.plot(series["step"], series["value"], "o-", color=DEV_COLOUR, label=name, ms=3, lw=1.0)
            dev_lines[name] = line
            twin.set_ylabel(name)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    if dev_lines:  # one entry: the metric's name, or a pointer to the panels when tasks differ
        label = f"{next(iter(dev_lines))} (right axis)" if len(dev_lines) == 1 else "dev headline metric (right axis, named per panel)"
        handles[label] = next(iter(dev_lines.values()))
    fig.tight_layout()
    fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncols=min(4, len(handles)), fontsize=8, frameon=False)
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
    legend_height = 0.3 * math.ceil((len(chosen) + 2) / 4)  # inches under the panels for the legend rows
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.2 * rows + legend_height), squeeze=False, sharex=True)
    handles = []
    for index, (ax, name) in enumerate(zip(axes.flat, chosen)):
        series = frame[frame["name"] == name].sort_values("step")
        (line,) = ax.plot(series["step"], series["value"], lw=1.2, marker="." if len(series) < 40 else None,
                          color=term_colour(name, index), label=name)
        handles.append(line)
        for event in events:
            changed = event.get("name", "temperature" if event["event"] == "set_temperature" else None)
            ours = changed == name or (name == "kd" and event["event"] == "set_temperature") or name == "loss"
            ax.axvline(event["step"] + 0.5, color=EVENT_COLOUR if ours else OTHER_EVENT_COLOUR, ls="--", lw=0.8)
            if ours and name != "loss":
                label = "T" if event["event"] == "set_temperature" else ""
                ax.annotate(f"{label}→{event['new']:g}", (event["step"] + 0.5, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(2, -2), textcoords="offset points", fontsize=7, color=EVENT_COLOUR, va="top")
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
    fig.subplots_adjust(left=0.75 / fig.get_figwidth(), right=0.98, bottom=(0.55 + legend_height) / fig.get_figheight(),
                        top=1 - 0.35 / fig.get_figheight(), wspace=0.38, hspace=0.45)
    if events:
        handles += [Line2D([], [], color=EVENT_COLOUR, ls="--", lw=0.8, label="change of this term's weight or T"),
                    Line2D([], [], color=OTHER_EVENT_COLOUR, ls="--", lw=0.8, label="change of another term")]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncols=min(4, len(handles)), fontsize=7, frameon=False)
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120, bbox_inches="tight")
    return fig


def run_headline(directory: str | Path) -> str | None:
    """A run folder's headline metric: ``summary.json``'s ``headline_metric`` once the run finished,
    else the headline of the task named in ``run.json``; None when neither says."""
    directory = Path(directory)
    summary, identity = directory / "summary.json", directory / "run.json"
    if summary.exists() and json.loads(summary.read_text(encoding="utf-8")).get("headline_metric"):
        return str(json.loads(summary.read_text(encoding="utf-8"))["headline_metric"])
    if identity.exists():
        task = json.loads(identity.read_text(encoding="utf-8")).get("config", {}).get("task")
        spec = TASKS.get(str(task))
        return spec.headline if spec is not None else None
    return None


def learning_curves(run_dirs: dict[str, str | Path]) -> pd.DataFrame:
    """Tidy training-loss and dev-metric curves of several run folders: run, step, epoch, kind, name,
    value, and ``headline`` (True on the dev rows of the run's headline metric, see :func:`run_headline`)."""
    frames = []
    for run, directory in run_dirs.items():
        directory = Path(directory)
        train = read_train_log(directory).assign(run=run, kind="train", headline=False)
        frames.append(train[["run", "step", "epoch", "kind", "name", "value", "headline"]])
        if (directory / "eval_log.csv").exists():
            dev = pd.read_csv(directory / "eval_log.csv")
            dev = dev.assign(run=run, kind="dev", name=dev["split"] + "_" + dev["metric"], headline=dev["metric"] == run_headline(directory))
            frames.append(dev[["run", "step", "epoch", "kind", "name", "value", "headline"]])
    if not frames:
        raise ValueError("learning_curves needs at least one run folder")
    return pd.concat(frames, ignore_index=True)
