"""Learning-curve figures: a legend that tells every series apart, distinct colours, and the task's
headline metric on the dev axis (Spearman for STS-B, not the first logged metric)."""
from __future__ import annotations

import json

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from ckdlab.viz.curves import EVENT_COLOUR, headline_of, learning_curves, plot_learning_curves, plot_loss_terms

TERMS = ("kd", "wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")
PEARSON, SPEARMAN = [0.50, 0.60, 0.70], [0.40, 0.45, 0.80]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def write_run(folder, metrics: dict[str, list[float]], terms=TERMS, summary: dict | None = None, identity: dict | None = None):
    """A run folder as the engine writes it: long-format train log, eval log, optional summary / run.json."""
    folder.mkdir(parents=True)
    train = [(step, step / 9, name, 1.0 / (step + i)) for step in range(1, 10) for i, name in enumerate(terms)]
    pd.DataFrame(train, columns=["step", "epoch", "name", "value"]).to_csv(folder / "train_log.csv", index=False)
    evals = [(step, step / 9, "dev", metric, values[k]) for metric, values in metrics.items() for k, step in enumerate((3, 6, 9))]
    pd.DataFrame(evals, columns=["step", "epoch", "split", "metric", "value"]).to_csv(folder / "eval_log.csv", index=False)
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    if identity is not None:
        (folder / "run.json").write_text(json.dumps(identity))
    return folder


def stsb_frame(run="stsb") -> pd.DataFrame:
    """An STS-B-like tidy frame without the headline column (as a user might build it)."""
    rows = [(run, step, "train", "loss", 1.0 / step) for step in range(1, 10)]
    rows += [(run, step, "dev", f"dev_{m}", v) for m, values in (("pearson", PEARSON), ("spearman", SPEARMAN))
             for step, v in zip((3, 6, 9), values)]
    return pd.DataFrame(rows, columns=["run", "step", "kind", "name", "value"])


def dev_line(fig, panel: int = 0):
    """The dev-metric line of a panel: the only line on its twin (right) axis."""
    visible = [ax for ax in fig.axes if ax.get_visible()]
    twins = [ax for ax in visible if ax.get_ylabel().startswith("dev")]
    return twins[panel].lines[0], twins[panel].get_ylabel()


def legend_labels(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


def test_headline_is_inferred_from_the_metric_names():
    assert headline_of(["dev_pearson", "dev_spearman"]) == "spearman"
    assert headline_of(["dev_f1", "dev_accuracy"]) == "f1"
    assert headline_of(["dev_mcc"]) == "mcc"
    assert headline_of(["dev_accuracy"]) == "accuracy"
    assert headline_of(["dev_bleu"]) is None


def test_stsb_frame_plots_spearman_with_a_legend():
    fig = plot_learning_curves(stsb_frame())
    line, label = dev_line(fig)
    assert label == "dev_spearman" and list(line.get_ydata()) == SPEARMAN
    assert legend_labels(fig) == ["train loss", "dev_spearman (right axis)"]
    line, label = dev_line(plot_learning_curves(stsb_frame(), metric="pearson"))
    assert label == "dev_pearson" and list(line.get_ydata()) == PEARSON
    with pytest.raises(ValueError, match="metric='bleu'"):
        plot_learning_curves(stsb_frame(), metric="bleu")


def test_run_folders_mark_the_headline_from_summary_or_run_json(tmp_path):
    finished = write_run(tmp_path / "a", {"pearson": PEARSON, "spearman": SPEARMAN}, summary={"headline_metric": "spearman"})
    running = write_run(tmp_path / "b", {"f1": [0.7, 0.8, 0.9], "accuracy": [0.6, 0.65, 0.7]}, identity={"config": {"task": "mrpc"}})
    unknown = write_run(tmp_path / "c", {"accuracy": [0.5, 0.6, 0.7]})
    curves = learning_curves({"stsb": finished, "mrpc": running, "sst2": unknown})
    marked = curves[curves["headline"]].groupby("run")["name"].unique().to_dict()
    assert {run: list(names) for run, names in marked.items()} == {"stsb": ["dev_spearman"], "mrpc": ["dev_f1"]}
    fig = plot_learning_curves(curves, loss_names=TERMS)
    shown = [dev_line(fig, panel)[1] for panel in range(3)]
    assert shown == ["dev_spearman", "dev_f1", "dev_accuracy"]
    assert legend_labels(fig)[-1] == "dev headline metric (right axis, named per panel)"
    assert list(dev_line(fig, 0)[0].get_ydata()) == SPEARMAN


def test_every_term_and_the_dev_metric_have_their_own_colour_and_legend_entry(tmp_path):
    run = write_run(tmp_path / "run", {"pearson": PEARSON, "spearman": SPEARMAN}, summary={"headline_metric": "spearman"})
    fig = plot_learning_curves(learning_curves({"stsb": run, "again": run}), loss_names=TERMS)
    assert legend_labels(fig) == [f"train {t}" for t in TERMS] + ["dev_spearman (right axis)"]
    left = fig.axes[0]
    colours = [mcolors.to_hex(line.get_color()) for line in left.lines] + [mcolors.to_hex(dev_line(fig)[0].get_color())]
    assert len(colours) == len(TERMS) + 1 and len(set(colours)) == len(colours)
    # a term keeps its colour in every panel
    assert [line.get_color() for line in fig.axes[0].lines] == [line.get_color() for line in fig.axes[1].lines]


def test_loss_term_panels_have_distinct_colours_and_a_legend(tmp_path):
    run = write_run(tmp_path / "run", {"accuracy": [0.5, 0.6, 0.7]}, terms=TERMS + ("loss",))
    (run / "events.jsonl").write_text(json.dumps({"step": 4, "event": "set_weight", "name": "kd", "old": 1.0, "new": 2.0}) + "\n")
    fig = plot_loss_terms(run)
    assert legend_labels(fig) == list(TERMS) + ["loss", "change of this term's weight or T", "change of another term"]
    curves = [ax.lines[0] for ax in fig.axes if ax.get_visible()]
    colours = [mcolors.to_hex(line.get_color()) for line in curves]
    assert len(set(colours)) == len(colours) and mcolors.to_hex(EVENT_COLOUR) not in colours
    assert legend_labels(plot_loss_terms(run, names=["kd"], events=[])) == ["kd"]
