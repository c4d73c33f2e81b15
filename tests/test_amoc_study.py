"""The AMoC study end to end on the smoke profile: base models, candidates, predictions, tables, figures, notebook 07."""
from __future__ import annotations

import math
import time
from pathlib import Path

import datasets
import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from ckdlab.data import compute_metrics, get_task
from ckdlab.data import paths
from ckdlab.data.domains import sentiment_domains, stsb_genre_domains
from ckdlab.data.glue import find_glue_file
from ckdlab.engine import TrainConfig
from ckdlab.models import build_student, load_backbone
from ckdlab.studies import amoc_report as report
from ckdlab.studies import amoc_runs
from ckdlab.studies.amoc import TABLE_COLUMNS
from ckdlab.studies.amoc_runs import (
    dataset_fingerprint,
    run_amoc,
    sentence_vectors,
    train_candidate,
    treatment_effect,
)
from ckdlab.studies.amoc_settings import configure, load_amoc_settings, study_pairs
from ckdlab.viz.amoc import plot_ate_illustration, plot_ate_vs_target, plot_main_table, plot_regression_fit
from ckdlab.workspace import load_runs

shared = pytest.mark.skipif(
    find_glue_file("sst2", "train") is None or paths.find_local("umsab_sentiment/english") is None
    or find_glue_file("stsb", "train") is None,
    reason="the shared offline data is not available (set CKDLAB_DATA to the shared data folder)",
)
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "07_domain_adaptation_amoc.ipynb"
SMOKE_PAIRS = ["sst2->tweets-en-binary", "tweets-en-binary->sst2", "stsb-news->stsb-captions", "stsb-news->stsb-forum",
               "stsb-captions->stsb-news"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of the whole study in its own folders: ``(result, root, seconds)``."""
    if find_glue_file("sst2", "train") is None or find_glue_file("stsb", "train") is None:
        pytest.skip("the shared offline data is not available")
    root = tmp_path_factory.mktemp("amoc")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("runs", "results", "figures"):
            patch.setenv(f"CKDLAB_{name.upper()}", str(root / name))
        start = time.perf_counter()
        result = run_amoc("smoke", progress=False)
        yield result, root, time.perf_counter() - start


def tiny_model(num_labels: int, layers: int = 3):
    model, tokenizer = load_backbone("minilm-l6", num_labels=num_labels)
    return build_student(model, f"config:L{layers}-H32-A2-I64", num_labels=num_labels, init="slice", seed=0), tokenizer


# --------------------------------------------------------------------------- the pipeline on the smoke profile


@shared
def test_smoke_table_has_every_pair_candidate_and_full_model(smoke):
    result, _, _ = smoke
    frame = result.candidates
    assert set(TABLE_COLUMNS) | {"family", "source", "target"} <= set(frame.columns)
    assert list(dict.fromkeys(frame["pair"])) == SMOKE_PAIRS
    for pair, rows in frame.groupby("pair"):
        # A 3-layer base: every set of 1 or 2 of its layers (default_max_removed(3) = 2), plus the full model.
        assert sorted(rows["removed"]) == sorted(["", "0", "1", "2", "0,1", "0,2", "1,2"]), pair
        full = rows[rows["n_removed"] == 0].iloc[0]
        assert full["ate_target"] == 0.0 and full["ate_source"] == 0.0
        candidates = rows[rows["n_removed"] >= 1]
        assert (candidates["ate_target"] > 0).all() and (candidates["ate_source"] > 0).all()
        assert (candidates["params"] < full["params"]).all()
        assert rows["domain_distance"].nunique() == 1 and 0.0 <= full["domain_distance"] <= 1.0
    assert (frame["n_layers"] == 3).all() and set(result.bases) == {"sst2", "tweets-en-binary", "stsb-news", "stsb-captions"}


@shared
def test_candidates_depend_on_the_source_only(smoke):
    frame = smoke[0].candidates.set_index("removed")
    to_captions = frame[frame["pair"] == "stsb-news->stsb-captions"]
    to_forum = frame[frame["pair"] == "stsb-news->stsb-forum"]
    # One set of candidates serves both pairs: what is measured on the source is identical ...
    for column in ("source_dev_score", "ate_source", "params", "n_removed", "mean_removed_depth"):
        pd.testing.assert_series_equal(to_captions[column], to_forum[column], check_names=False)
    # ... what is measured on the target is not.
    assert not np.allclose(to_captions["ate_target"], to_forum["ate_target"])


def slow_total_variation(p, q):
    return sum(0.5 * sum(abs(a - b) for a, b in zip(row_p, row_q)) for row_p, row_q in zip(p, q)) / len(p)


@shared
def test_table_values_recomputed_from_the_logits_and_the_data(smoke):
    result, _, _ = smoke
    frame = result.candidates
    checks = [("sst2", "tweets-en-binary", sentiment_domains()[1], "1"), ("stsb-news", "stsb-forum", stsb_genre_domains()[2], "0,2")]
    for source, target_name, target, removed in checks:
        row = frame[(frame["pair"] == f"{source}->{target_name}") & (frame["removed"] == removed)].iloc[0]
        logits, base = result.logits[(source, removed)], result.logits[(source, "")]
        test = target.load("test", limit=24, seed=0)  # the smoke limits, read again
        task = target.task
        predictions = logits[f"test:{target_name}"][:, 0] if task.is_regression else logits[f"test:{target_name}"]
        assert row["target_score"] == pytest.approx(compute_metrics(task, predictions, np.asarray(test["label"]))[task.headline])
        full, cut = base[f"unlabeled:{target_name}"].astype(np.float64), logits[f"unlabeled:{target_name}"].astype(np.float64)
        if task.is_regression:
            expected = float(np.mean(np.abs(full[:, 0] - cut[:, 0])))
        else:
            softmax = lambda z: np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)  # noqa: E731
            expected = slow_total_variation(softmax(full), softmax(cut))
        assert row["ate_target"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert len(logits[f"unlabeled:{target_name}"]) == 24 and len(logits["source_dev"]) == 24


@shared
def test_finished_runs_are_read_back_and_recorded(smoke, monkeypatch):
    result, root, _ = smoke
    for name in ("runs", "results", "figures"):
        monkeypatch.setenv(f"CKDLAB_{name.upper()}", str(root / name))

    class NoTraining:
        def __init__(self, *args, **kwargs):
            raise AssertionError("a finished AMoC run was trained again")

    monkeypatch.setattr(amoc_runs, "Trainer", NoTraining)
    again = run_amoc("smoke", progress=False)
    pd.testing.assert_frame_equal(again.candidates, result.candidates)
    assert len(load_runs(root / "results", kind="amoc-base")) == 4
    candidates = load_runs(root / "results", kind="amoc-candidate")
    assert len(candidates) == 4 * 6 and set(candidates["domain"]) == set(result.bases)
    news = candidates[candidates["domain"] == "stsb-news"].iloc[0]
    assert {"metric.source_dev", "metric.test:stsb-captions", "metric.test:stsb-forum"} <= set(news.dropna().index)


@shared
def test_train_candidate_changes_only_what_the_freezing_rule_allows():
    base, tokenizer = tiny_model(num_labels=2)
    train = sentiment_domains()[0].load("train", limit=48, seed=0)
    before = {name: p.detach().clone() for name, p in base.named_parameters()}
    config = TrainConfig(epochs=1, batch_size=16, lr=1e-2, max_length=32, progress=False, seed=0)
    candidate, trainable, summary = train_candidate(base, tokenizer, get_task("sst2"), (1,), train, config)
    assert summary["steps"] == 3 and candidate.config.num_hidden_layers == 2
    # Removed layer 1: the kept layer below it (original 0, still position 0), the pooler and the classifier train.
    prefixes = ("bert.encoder.layer.0.", "bert.pooler.", "classifier.")
    assert all(name.startswith(prefixes) for name in trainable)
    assert all(any(name.startswith(prefix) for name in trainable) for prefix in prefixes)
    original = {0: 0, 1: 2}  # reduced position -> original layer
    for name, parameter in candidate.named_parameters():
        source = name
        if name.startswith("bert.encoder.layer."):
            position = int(name.split(".")[3])
            source = name.replace(f"layer.{position}.", f"layer.{original[position]}.", 1)
        changed = not torch.equal(parameter.detach(), before[source])
        assert changed == (name in trainable), name
    for name, parameter in base.named_parameters():  # the base model itself is untouched
        assert torch.equal(parameter, before[name]), name


def test_sentence_vectors_are_masked_means_row_by_row():
    model, tokenizer = tiny_model(num_labels=1)
    ds = datasets.Dataset.from_dict({
        "sentence1": ["a cat sat on the mat", "dogs", "the quick brown fox jumps over it"],
        "sentence2": ["a dog", "two dogs were barking loudly at night", "fox"],
    })
    vectors = sentence_vectors(model, tokenizer, ds, get_task("stsb"), batch_size=2, max_length=32)
    model.eval()
    with torch.no_grad():
        for i in range(len(ds)):
            encoded = tokenizer(ds[i]["sentence1"], ds[i]["sentence2"], return_tensors="pt")
            expected = model.base_model(**encoded).last_hidden_state[0].mean(dim=0).numpy()
            np.testing.assert_allclose(vectors[i], expected, rtol=1e-5, atol=1e-6)


def test_example_effects_average_to_the_ate_and_displayed_values():
    rng = np.random.default_rng(0)
    full, cut = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    sentiment = get_task("sst2")
    for task in (get_task("stsb"), sentiment):
        a, b = (full[:, :1], cut[:, :1]) if task.is_regression else (full[:, :2], cut[:, :2])
        assert report.example_effects(task, a, b).mean() == pytest.approx(treatment_effect(task, a, b), rel=1e-12)
    values, label = report.displayed_prediction(sentiment, full[:, :2])
    assert label == "P(positive)" and np.allclose(values, 1 / (1 + np.exp(full[:, 0] - full[:, 1])))
    assert report.displayed_prediction(get_task("stsb"), full[:, :1])[0].tolist() == full[:, 0].tolist()


def test_dataset_fingerprint_follows_content():
    a = datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": [0, 1]})
    assert dataset_fingerprint(a) == dataset_fingerprint(datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": [0, 1]}))
    assert dataset_fingerprint(a) != dataset_fingerprint(datasets.Dataset.from_dict({"sentence": ["x", "y"], "label": [1, 1]}))


# --------------------------------------------------------------------------- settings


def test_profiles_define_the_study():
    quick = study_pairs(configure("quick"))
    assert {f: len(p) for f, p in quick.items()} == {"sentiment": 2, "stsb-genre": 4}
    paper = configure("paper")
    assert paper["base_model"] == "bert-base-uncased" and paper["candidates_per_source"] is None
    assert {f: len(p) for f, p in study_pairs(paper).items()} == {"mnli-genre": 20, "amazon-category": 12}
    assert configure("quick", families=["sentiment"], candidates_per_source=9)["candidates_per_source"] == 9


@pytest.mark.parametrize("change, message", [
    ({"shrink": 1}, "unknown amoc option"),
    ({"families": {"weather": {}}}, "not one of"),
    ({"families": {"sentiment": {"pairs": ["sst2->imdb", "tweets-en-binary->sst2"]}}}, "are not pairs of sentiment"),
    ({"families": {"sentiment": {"pairs": ["sst2->tweets-en-binary"]}}}, "at least 2"),
    ({"families": {"sentiment": {"pair": "all"}}}, "unknown key"),
    ({"limits": {"test": 0}}, "limits.test"),
    ({"limits": {"dev": 10}}, "unknown key"),
])
def test_bad_settings_are_named(change, message):
    settings = configure("smoke")
    with pytest.raises(ValueError, match=message):
        if "shrink" in change:
            configure("smoke", **change)
        study_pairs(load_amoc_settings({**settings, **change}))


def test_family_selection_must_name_profile_families():
    with pytest.raises(ValueError, match="not in this profile's amoc.families"):
        configure("smoke", families=["weather"])


# --------------------------------------------------------------------------- analysis and figures


@shared
def test_report_on_the_smoke_table(smoke):
    frame = smoke[0].candidates
    chosen = report.choices(frame)
    assert len(chosen) == 5 * 2 and set(chosen["family"]) == {"sentiment", "stsb-genre"}
    tables = report.main_tables(frame, chosen)
    assert list(tables) == ["sentiment", "stsb-genre", "all pairs"]
    for name, table in tables.items():
        part = chosen if name == "all pairs" else chosen[chosen["family"] == name]
        np.testing.assert_allclose(table[("amoc", "mean")], part.groupby("n_removed")["target_score"].mean())
        assert (table[("oracle", "mean")] >= table[("amoc", "mean")] - 1e-12).all()
    formatted = report.format_main_table(tables["stsb-genre"])
    assert list(formatted.columns)[:2] == ["AMoC", "top layers"] and formatted["pairs"].tolist() == [3, 3]
    assert " ± " in formatted.iloc[0, 0]
    regression = report.regression_summary(frame)
    assert set(regression) == {"sentiment", "stsb-genre"}
    assert regression["stsb-genre"]["n"] == 3 * 6 and 0.0 <= regression["stsb-genre"]["r2"] <= 1.0
    lines = report.verdict(frame, chosen, regression)
    # Two levels, the overall line, a line on collapsed candidates and one on weak base models when there are any,
    # one per family.
    optional = int(len(report.collapsed(frame)) > 0) + int(len(report.weak_bases(frame)) > 0)
    assert len(lines) == 2 + 1 + optional + 2 and lines[0].startswith("- **1 layer(s) removed**")
    shares = frame.loc[frame["family"] == "sentiment", "target_majority_share"]
    assert ((shares >= 0.5) & (shares <= 1.0)).all() and frame.loc[frame["family"] == "stsb-genre", "target_majority_share"].isna().all()
    correlations = report.ate_correlations(frame)
    assert len(correlations) == 5 and (correlations["candidates"] == 6).all()


def synthetic_table(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(4):
        for removed in ["", "0", "1", "2", "0,1", "0,2", "1,2"]:
            k = len([r for r in removed.split(",") if r])
            ate = 0.0 if not k else rng.uniform(0, 0.3)
            rows.append({"family": "f", "pair": f"p{p}", "removed": removed, "n_removed": k, "n_layers": 3,
                         "target_score": 0.9 - ate + rng.normal(0, 0.01), "ate_target": ate,
                         "ate_source": 0.0 if not k else rng.uniform(0, 0.3), "source_dev_score": 0.85 + rng.normal(0, 0.02), "mean_removed_depth": 0.5 if k else 0.0,
                         "params": 100 - 10 * k, "domain_distance": 0.6 + 0.1 * p})
    return pd.DataFrame(rows)


def test_lopo_predictions_never_see_the_held_out_pair():
    frame = synthetic_table()
    before = report.lopo_predictions(frame)
    changed = frame.copy()
    changed.loc[changed["pair"] == "p2", "target_score"] = 0.0  # only the held-out pair's truth changes
    after = report.lopo_predictions(changed)
    held = before["pair"] == "p2"
    np.testing.assert_array_equal(before.loc[held, "predicted"], after.loc[held, "predicted"])
    assert not np.allclose(before.loc[~held, "predicted"], after.loc[~held, "predicted"])
    fit = report.regression_summary(frame)["f"]
    # The score is 0.9 - ATE (+ noise): the fit finds the ATE and predicts held-out pairs far better than a constant.
    assert "ate_target" in fit["selected"] and fit["lopo_mae"] < 0.5 * fit["constant_mae"] and fit["r2"] > 0.9


def test_collapsed_candidates_name_the_baseline_they_are():
    frame = synthetic_table().assign(target_majority_share=0.6)
    frame.loc[(frame["pair"] == "p1") & (frame["removed"] == "2"), "target_majority_share"] = 0.97  # top layer of 3
    frame.loc[(frame["pair"] == "p3") & (frame["removed"] == "0,2"), "target_majority_share"] = 1.0  # neither baseline
    frame.loc[(frame["pair"] == "p0") & (frame["removed"] == ""), "target_majority_share"] = 1.0  # the full model: not a candidate
    broken = report.collapsed(frame)
    assert broken[["pair", "removed", "baseline"]].values.tolist() == [["p1", "2", "top"], ["p3", "0,2", ""]]
    lines = report.verdict(frame, report.choices(frame))
    assert any("2 of 24 candidate rows" in line and "top layers in p1 (1 removed)" in line for line in lines)
    assert report.collapsed(synthetic_table()).empty  # no column, no claim


def test_weak_base_models_are_named_with_their_pairs():
    frame = synthetic_table().assign(source=lambda f: f["pair"].map({"p0": "a", "p1": "a", "p2": "b", "p3": "c"}))
    frame.loc[(frame["source"] == "a") & (frame["n_removed"] == 0), "source_dev_score"] = 0.08
    frame.loc[(frame["source"] == "c") & (frame["n_removed"] == 0), "source_dev_score"] = 0.5  # at the floor: learned
    assert report.weak_bases(frame).to_dict() == {"a": 0.08}
    lines = report.verdict(frame, report.choices(frame))
    assert any("a (source dev 8.0)" in line and "the rows of p0, p1 compare" in line for line in lines)
    assert report.weak_bases(synthetic_table()).empty  # no source column, no claim
    assert not any("did not learn" in line for line in report.verdict(frame.assign(source_dev_score=0.85), report.choices(frame)))


def test_verdict_says_better_only_when_the_interval_excludes_zero():
    frame = synthetic_table()
    chosen = report.choices(frame)
    lines = report.verdict(frame, chosen)
    diffs = report.paired_differences(frame, chosen)
    for level, part in diffs.groupby("n_removed"):
        line = next(x for x in lines if x.startswith(f"- **{level} layer"))
        for baseline in report.COMPARED:
            label = report.METHOD_LABELS[baseline]
            values = part[baseline].to_numpy()
            half = 3.182 * values.std(ddof=1) / math.sqrt(len(values))  # t(0.975, 3) for 4 pairs
            if abs(values.mean()) > half * 1.001:
                assert f"better than {label}" in line or f"worse than {label}" in line
            elif abs(values.mean()) < half * 0.999:
                assert f"not distinguishable from {label}" in line


@shared
def test_figures_from_the_smoke_run(smoke, tmp_path):
    result, _, _ = smoke
    frame = result.candidates
    task = get_task("sst2")
    base, cut = result.logits[("sst2", "")]["unlabeled:tweets-en-binary"], result.logits[("sst2", "2")]["unlabeled:tweets-en-binary"]
    values, label = report.displayed_prediction(task, base)
    figures = [
        plot_ate_illustration(values, {"drop 2": report.displayed_prediction(task, cut)[0]}, {"drop 2": report.example_effects(task, base, cut)},
                              value_label=label, save_to=tmp_path / "ate.png"),
        plot_ate_vs_target(frame, save_to=tmp_path / "scatter.png"),
        plot_regression_fit(report.lopo_predictions(frame), report.regression_summary(frame), save_to=tmp_path / "fit.png"),
        plot_main_table(report.main_tables(frame, report.choices(frame)), save_to=tmp_path / "main.png"),
    ]
    for figure, name in zip(figures, ("ate", "scatter", "fit", "main")):
        assert isinstance(figure, Figure) and (tmp_path / f"{name}.png").stat().st_size > 10_000
        assert figure.legends or all(ax.get_legend() is not None for ax in figure.axes[:1])
    assert len(figures[1].axes) == 2 and len(figures[3].axes) == 3
    with pytest.raises(ValueError, match="same candidates"):
        plot_ate_illustration(values, {"a": values}, {"b": values})


# --------------------------------------------------------------------------- the notebook


@pytest.mark.slow
@shared
def test_notebook_07_smoke(tmp_path):
    import papermill

    out = tmp_path / NOTEBOOK.name
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters={"profile": "smoke"}, cwd=str(NOTEBOOK.parent),
                               kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    figures = tmp_path / "figures" / "smoke"
    for name in ("07_ate_illustration", "07_ate_vs_target", "07_regression_fit", "07_main_table"):
        assert (figures / f"{name}.png").exists(), name
    table = pd.read_csv(tmp_path / "results" / "smoke" / "07_amoc_main_table_all_pairs.csv")
    assert list(table.columns)[:2] == ["layers removed", "AMoC"] and len(table) == 2
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "5 pairs, 4 sources, 24 candidates" in text
