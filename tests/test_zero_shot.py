"""Zero-shot cross-lingual pipeline (ckdlab.multilingual): table arithmetic against hand computations,
per-language evaluation against a one-example-at-a-time reference, English-dev selection, frozen
embeddings, task-agnostic distillation, the four settings end to end, and notebook 04 (slow)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from ckdlab.data import crosslingual
from ckdlab.data.tasks import XNLI_TASK
from ckdlab.engine import pretrain
from ckdlab.engine.inference import predict_labels
from ckdlab.studies import zero_shot as zs
from ckdlab.studies import zero_shot_tables as tables
from ckdlab.data import paths
from ckdlab.data.xnli import XNLI_LANGUAGES, load_xnli, xnli_features
from ckdlab.engine import TrainConfig
from ckdlab.models import build_student

shared = pytest.mark.skipif(
    paths.find_local("xnli/xtreme/dev-en.tsv") is None or paths.find_local("xnli/hf/train-en-sample9k.jsonl") is None,
    reason="the shared offline XNLI data is not available (set CKDLAB_DATA to the shared data folder)",
)


# --------------------------------------------------------------------------- fixtures: tiny models on the me5 vocabulary


@pytest.fixture(scope="module")
def tokenizer():
    from ckdlab.models.me5 import load_me5_tokenizer

    return load_me5_tokenizer()


def tiny_classifier(tokenizer, layers: int = 4, seed: int = 0) -> BertForSequenceClassification:
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=3, pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForSequenceClassification(config)


def toy_nli(n: int, seed: int) -> datasets.Dataset:
    """Pairs whose label is readable from the hypothesis' first word (so a tiny model can learn it)."""
    rng = np.random.default_rng(seed)
    words = ("yes", "maybe", "no")
    labels = rng.integers(0, 3, size=n)
    premises = [f"the {w} cat sat on mat number {i}" for i, w in enumerate(rng.choice(["red", "big", "old"], size=n))]
    hypotheses = [f"{words[y]} it did {'very ' * int(rng.integers(0, 4))}much" for y in labels]
    return datasets.Dataset.from_dict({"premise": premises, "hypothesis": hypotheses, "label": labels.tolist()}, features=xnli_features())


# --------------------------------------------------------------------------- the table


def test_zero_shot_table_average_is_the_mean_over_the_14_non_english_languages():
    rng = np.random.default_rng(0)
    scores = {row: {code: float(rng.uniform(0.3, 0.9)) for code in XNLI_LANGUAGES} for row in ("teacher", "student")}
    table = tables.zero_shot_table(scores)
    assert list(table.columns) == [*XNLI_LANGUAGES, "avg (non-en)"]
    for row, by_language in scores.items():
        total, count = 0.0, 0
        for code, value in by_language.items():
            if code != "en":
                total, count = total + value, count + 1
        assert count == 14
        assert table.loc[row, "avg (non-en)"] == pytest.approx(total / count, abs=1e-12)
        assert table.loc[row, "en"] == by_language["en"]


def test_zero_shot_table_by_hand_and_its_errors():
    table = tables.zero_shot_table({"t": {"en": 0.8, "de": 0.6, "sw": 0.4}, "s": {"en": 0.7, "de": 0.3, "sw": 0.5}})
    assert table.loc["t", "avg (non-en)"] == pytest.approx(0.5)
    assert table.loc["s", "avg (non-en)"] == pytest.approx(0.4)
    retention = tables.retention_table(table, teacher_row="t")
    assert list(retention.index) == ["s"]
    assert retention.loc["s", "de"] == pytest.approx(0.5)
    assert retention.loc["s", "sw"] == pytest.approx(1.25)
    assert retention.loc["s", "avg (non-en)"] == pytest.approx((0.5 + 1.25) / 2)
    with pytest.raises(ValueError, match="same languages"):
        tables.zero_shot_table({"t": {"en": 0.8, "de": 0.6}, "s": {"en": 0.7, "fr": 0.3}})
    with pytest.raises(ValueError, match="at least one target language"):
        tables.zero_shot_table({"t": {"en": 0.8}})
    zero = tables.retention_table(tables.zero_shot_table({"t": {"en": 0.8, "de": 0.0, "sw": 0.4}, "s": {"en": 0.7, "de": 0.3, "sw": 0.2}}), "t")
    assert np.isnan(zero.loc["s", "de"]) and zero.loc["s", "avg (non-en)"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="teacher_row"):
        tables.retention_table(table, teacher_row="teacher")


def test_best_setting_and_findings_read_the_numbers():
    labels = tables.SETTING_LABELS
    rows = {labels["teacher"]: 0.9, labels["a"]: 0.6, labels["b"]: 0.4, labels["c"]: 0.5, labels["d"]: 0.45}
    table = tables.zero_shot_table({row: {"en": 0.9, "de": v, "fr": v} for row, v in rows.items()})
    assert tables.best_setting(table) == labels["a"]
    found = tables.findings(table).set_index("claim")
    assert found["holds"].all()
    assert found.loc["pre-training KD beats fine-tuning KD", "difference"] == pytest.approx(0.2)
    flipped = tables.zero_shot_table({row: {"en": 0.9, "de": 1 - v} for row, v in rows.items()})
    assert not tables.findings(flipped).set_index("claim").loc["pre-training KD beats no KD", "holds"]


# --------------------------------------------------------------------------- evaluation


def test_evaluate_zero_shot_matches_one_at_a_time_reference(tokenizer):
    model = tiny_classifier(tokenizer, layers=2).eval()
    sets = {"en": toy_nli(13, 1), "de": toy_nli(7, 2)}
    scores = zs.evaluate_zero_shot(model, tokenizer, "xnli", eval_sets=sets, batch_size=4, max_length=24)
    assert list(scores) == ["en", "de"]
    for code, dataset in sets.items():
        correct = 0
        for row in dataset:
            encoded = tokenizer(row["premise"], row["hypothesis"], truncation="longest_first", max_length=24, return_tensors="pt")
            with torch.no_grad():
                predicted = int(model(**encoded).logits.argmax(-1))
            correct += predicted == row["label"]
        assert scores[code] == pytest.approx(correct / len(dataset), abs=1e-12)


def test_unknown_languages_settings_and_objectives_are_clear_errors(tokenizer):
    task = crosslingual.get_zero_shot_task("xnli")
    with pytest.raises(ValueError, match="not xnli languages"):
        task.check_languages(["en", "xx"])
    with pytest.raises(ValueError, match="unknown zero-shot task"):
        crosslingual.get_zero_shot_task("squad")
    with pytest.raises(ValueError, match="settings"):
        zs.run_zero_shot("smoke", settings=["e"])
    with pytest.raises(FileNotFoundError, match="profile 'huge' not found"):
        zs.load_zero_shot_profile("huge")
    model = tiny_classifier(tokenizer, layers=2)
    with pytest.raises(ValueError, match="need labels or logits"):
        pretrain.hidden_state_weights("ckd+kd", None)
    with pytest.raises(ValueError, match="unknown term"):
        pretrain.hidden_state_weights("ckd", {"kd": 1.0})


# --------------------------------------------------------------------------- training: selection and frozen embeddings


def _config(**changes) -> TrainConfig:
    base = dict(epochs=2, batch_size=8, eval_batch_size=32, lr=3e-3, max_length=24, warmup_ratio=0.0, log_every=1, progress=False, seed=0)
    return TrainConfig(**{**base, **changes})


def test_finetune_keeps_embeddings_frozen_by_default_and_trains_them_on_request(tokenizer):
    train, dev = toy_nli(32, 3), toy_nli(16, 4)
    for train_embeddings in (False, True):
        model = tiny_classifier(tokenizer, layers=2)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        zs.finetune_on_source(model, tokenizer, "xnli", train, dev, _config(epochs=1), train_embeddings=train_embeddings)
        after = dict(model.named_parameters())
        embedding = "bert.embeddings.word_embeddings.weight"
        assert torch.equal(after[embedding], before[embedding]) is (not train_embeddings)
        assert not torch.equal(after["bert.encoder.layer.0.attention.self.query.weight"], before["bert.encoder.layer.0.attention.self.query.weight"])


def test_selection_restores_the_best_english_dev_checkpoint(tokenizer):
    train, dev = toy_nli(32, 5), toy_nli(16, 6)
    model = tiny_classifier(tokenizer, layers=2)
    summary = zs.finetune_on_source(model, tokenizer, "xnli", train, dev, _config(epochs=2, eval_every=1))
    # Every step was evaluated, so the restored model must score the best of them on dev.
    predictions = predict_labels(model, tokenizer, dev, XNLI_TASK, max_length=24)
    assert np.mean(predictions == np.asarray(dev["label"])) == pytest.approx(summary["dev_accuracy"])
    assert summary["steps"] == 8 and 1 <= summary["best_step"] <= 8


def test_distill_on_source_keeps_embeddings_frozen_and_shares_the_teacher_cache(tokenizer):
    train, dev = toy_nli(24, 7), toy_nli(12, 8)
    teacher = tiny_classifier(tokenizer, layers=4, seed=1).requires_grad_(False)
    student = build_student(teacher, "layers:1,3", num_labels=3)
    embedding = student.bert.embeddings.word_embeddings.weight.detach().clone()
    summary, cache = zs.distill_on_source(teacher, student, tokenizer, "xnli", train, dev, _config(epochs=1),
                                          objective="ckd+kd", weights={"ce": 1.0}, temperature=2.0)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, embedding)
    assert cache is not None and summary["steps"] == 3
    again = build_student(teacher, "layers:1,3", num_labels=3)
    _, same = zs.distill_on_source(teacher, again, tokenizer, "xnli", train, dev, _config(epochs=1), teacher_cache=cache)
    assert same is cache


# --------------------------------------------------------------------------- task-agnostic distillation


@pytest.mark.parametrize(
    "objective, weights",
    [("ckd", None), ("tinybert", {"tinybert_attn": 0.0, "tinybert_emb": 0.0})],  # CKD relations; TinyBERT hidden-state MSE
)
def test_pretrain_distill_reduces_its_loss_and_keeps_embeddings_frozen(tokenizer, objective, weights):
    teacher = tiny_classifier(tokenizer, layers=4, seed=2).bert
    student = tiny_classifier(tokenizer, layers=2, seed=3).bert  # a random student: far from the teacher
    sentences = [f"sentence number {i} about {w} things" for i, w in enumerate(["red", "green", "blue", "odd"] * 3)]
    options = dict(objective=objective, weights=weights, max_length=16)
    before = pretrain.hidden_state_loss(teacher, student, tokenizer, sentences, **options)
    embedding = student.embeddings.word_embeddings.weight.detach().clone()
    log = pretrain.pretrain_distill(teacher, student, tokenizer, sentences, epochs=10, batch_size=6, lr=3e-3, progress=False, **options)
    after = pretrain.hidden_state_loss(teacher, student, tokenizer, sentences, **options)
    assert len(log) == 20 and np.isfinite(log["loss"]).all()
    assert after < 0.7 * before, (before, after)
    assert torch.equal(student.embeddings.word_embeddings.weight, embedding)


# --------------------------------------------------------------------------- the four settings


@shared
def test_four_settings_run_on_tiny_data_and_are_recorded(tokenizer, monkeypatch, tmp_path):
    # The real teacher path (me5-small) is exercised by the notebook test; here a tiny random teacher.
    monkeypatch.setattr(zs, "load_pretrained_teacher", lambda name, shrink=None, seed=0: (tiny_classifier(tokenizer, 4, seed).bert, tokenizer))
    profile = zs.load_zero_shot_profile("smoke")
    profile.update(languages=["en", "de", "sw"], train_limit=16, dev_limit=8, test_limit=8)
    profile["pretrain"] = {**profile["pretrain"], "limit_per_language": 4}
    result = zs.run_zero_shot(profile, results_dir=tmp_path / "results")
    labels = [tables.SETTING_LABELS[k] for k in ("teacher", "a", "b", "c", "d")]
    assert list(result.table.index) == labels
    assert list(result.table.columns) == ["en", "de", "sw", "avg (non-en)"]
    np.testing.assert_allclose(result.table["avg (non-en)"], (result.table["de"] + result.table["sw"]) / 2)
    assert list(result.retention.index) == labels[1:]
    assert result.sizes == {"train_examples": 16, "dev_examples": 8, "test_examples_per_language": 8, "unlabeled_sentences": len(set(
        crosslingual.get_zero_shot_task("xnli").unlabeled(["en", "de", "sw"], limit_per_language=4)))}
    assert len(result.pretrain_log) >= 1
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "results" / "records").glob("*.json"))]
    assert sorted(r["method"] for r in records) == sorted(labels)
    assert all(r["kind"] == "zero-shot" and 0 <= r["metrics"]["dev_accuracy"] <= 1 for r in records)
    # Settings can be chosen; (d) alone needs no task-agnostic stage.
    only_d = zs.run_zero_shot(profile, settings=["(d)"])
    assert list(only_d.table.index) == [labels[0], labels[4]] and only_d.pretrain_log is None
    # Same seed, same data: the teacher row is reproducible across runs.
    pd.testing.assert_series_equal(only_d.table.loc[labels[0]], result.table.loc[labels[0]])
    # The second zero-shot task (XLM-T tweet sentiment) goes through the same functions.
    if paths.find_local("umsab_sentiment/german") is not None:
        sentiment = zs.run_zero_shot(profile, task="sentiment", languages=["de", "fr"], settings=["b"])
        assert list(sentiment.table.columns) == ["en", "de", "fr", "avg (non-en)"]
        assert list(sentiment.table.index) == [labels[0], labels[2]]


# --------------------------------------------------------------------------- notebook 04


@shared
@pytest.mark.slow
def test_notebook_04_runs_in_the_smoke_profile(tmp_path):
    papermill = pytest.importorskip("papermill")
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(str(notebooks / "04_multilingual_zero_shot.ipynb"), str(out), parameters={"profile": "smoke"},
                               cwd=str(notebooks), kernel_name="python3", progress_bar=False)
    text = out.read_text()
    assert "avg (non-en)" in text and "retention" in text
