"""The distillation engine: every registered objective end to end, the teacher cache, live weight and
temperature changes, tokenisation checks, the NaN guard, resume, and the CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from ckdlab import api
from ckdlab.engine.distill import TokenizationMismatchError, check_same_tokenization
from ckdlab.engine.trainer import NonFiniteLossError
from ckdlab.models import minilm_path
from ckdlab.objectives.registry import REGISTRY, default_weights, parse_objective

NARROW = "config:L2-H32-A2-I64"


def events(directory):
    return [json.loads(line) for line in (directory / "events.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "objective, student",
    [("ce", NARROW), ("kd", NARROW), ("ckd+kd", NARROW), ("ckd+kd", "layers:0,1"), ("pkd+kd", "layers:0,1"),
     ("tinybert+kd", NARROW), ("minilm+kd", NARROW), ("distilbert+kd", "layers:0,1")],
)
def test_every_objective_distils_and_logs_each_term(objective, student, tmp_path):
    row = api.distill("sst2", student=student, objective=objective, profile="smoke", out_dir=tmp_path / "run", max_steps=2)
    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    expected = {t for n in parse_objective(objective) for t in REGISTRY[n].terms if default_weights(parse_objective(objective))[t] > 0}
    assert expected <= set(log["name"]) and 0.0 <= row["score"] <= 1.0
    record = api.results_dir() / "records"
    assert len(list(record.glob("*.json"))) >= 1


def test_cached_teacher_gives_the_same_run_as_the_live_teacher(tmp_path):
    for cache in (True, False):
        api.distill("rte", student=NARROW, objective="ckd+kd", profile="smoke", cache_teacher=cache, out_dir=tmp_path / str(cache), max_steps=3)
    cached = pd.read_csv(tmp_path / "True" / "train_log.csv")
    live = pd.read_csv(tmp_path / "False" / "train_log.csv")
    assert list(cached["name"]) == list(live["name"])
    assert cached["value"].to_numpy() == pytest.approx(live["value"].to_numpy(), rel=1e-4, abs=1e-7)


def test_teacher_gram_memo_gives_the_same_run(tmp_path):
    """Two epochs, so the second reuses the memoised teacher Grams in new batch compositions."""
    for memo in (True, False):
        distiller = api.make_distiller("rte", student=NARROW, objective="ckd+kd", profile="smoke", epochs=2,
                                       objective_options={"memoize_teacher": memo}, out_dir=tmp_path / str(memo))
        assert (distiller.objectives["ckd"].loss.teacher_memo is not None) == memo
        distiller.train()
    memoised = pd.read_csv(tmp_path / "True" / "train_log.csv")
    fresh = pd.read_csv(tmp_path / "False" / "train_log.csv")
    assert memoised["step"].max() == fresh["step"].max() >= 8
    assert list(memoised["name"]) == list(fresh["name"])
    assert memoised["value"].to_numpy() == pytest.approx(fresh["value"].to_numpy(), rel=1e-4, abs=1e-7)


def test_grid_runs_share_one_teacher_pass(tmp_path, monkeypatch):
    """A logit-KD run caches every teacher layer, so a CKD run of another student reuses it."""
    from ckdlab.engine import TeacherCache
    from ckdlab.workspace import POOL

    POOL.clear()
    api.distill("sst2", student=NARROW, objective="kd", profile="smoke", out_dir=tmp_path / "kd", max_steps=1)
    cache = POOL._cache
    assert cache is not None and cache.layers == tuple(range(cache.n_hidden_states))

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the teacher ran over the training set again")

    monkeypatch.setattr(TeacherCache, "build", no_second_pass)
    api.distill("sst2", student="layers:0,1", objective="ckd+kd", profile="smoke", out_dir=tmp_path / "ckd", max_steps=1)
    assert POOL._cache is cache
    rows = torch.tensor([0, 1])
    length = max(cache.hidden[0].shape[1], cache.hidden[1].shape[1])
    mask = torch.ones(2, length, dtype=torch.long)
    out = cache.lookup(rows, mask, layers=[0, 2])
    assert out.hidden_states[1] is None and out.hidden_states[0].shape[:2] == (2, length)
    assert torch.equal(out.hidden_states[2][0, : cache.hidden[0].shape[1]], cache.hidden[0][2])
    with pytest.raises(KeyError, match="not cached"):
        cache.lookup(rows, mask, layers=[99])


def test_cache_lookup_matches_a_live_teacher_forward():
    distiller = api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke")
    distiller.setup()
    assert distiller.teacher_cache is not None and distiller.teacher_cache.has_hidden
    batch = distiller._next_batch()
    cached = distiller.teacher_cache.lookup(batch["row"], batch["attention_mask"])
    with torch.no_grad():
        live = distiller.teacher(**distiller.model_inputs(batch), output_hidden_states=True)
    assert torch.allclose(cached.logits, live.logits, atol=1e-5)
    mask = batch["attention_mask"].bool()
    for index in distiller.teacher_cache.layers:
        assert torch.allclose(cached.hidden_states[index][mask], live.hidden_states[index][mask], atol=1e-5)


def test_weight_and_temperature_changes_apply_next_step_and_are_logged(tmp_path):
    distiller = api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke",
                                   weights={"wr_triplet": 0.0}, out_dir=tmp_path / "live")
    first = distiller.step()
    assert "wr_triplet" not in first and "wr_pair" in first
    distiller.set_weight("wr_triplet", 2.0)
    distiller.set_weight("kd", 0.0)
    distiller.set_temperature(4.0)
    second = distiller.step()
    assert "wr_triplet" in second and "kd" not in second
    expected = sum(distiller.weights[k] * v for k, v in second.items() if k in distiller.weights)
    assert second["loss"] == pytest.approx(expected, rel=1e-5)
    log = events(tmp_path / "live")
    # The default weighting balances CKD's terms before the first step (wr_triplet, named, is left alone).
    assert log[0]["event"] == "balanced_weights" and "wr_triplet" not in log[0]["weights"]
    assert [(e["event"], e.get("name"), e["step"]) for e in log[1:]] == [
        ("set_weight", "wr_triplet", 1), ("set_weight", "kd", 1), ("set_temperature", None, 1)]
    assert distiller.objectives["kd"].temperature == 4.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distiller.set_temperature(0)


def test_tokenisation_mismatch_is_a_clear_error():
    teacher = AutoTokenizer.from_pretrained(minilm_path())
    cased = AutoTokenizer.from_pretrained(minilm_path(), do_lower_case=False)
    check_same_tokenization(teacher, AutoTokenizer.from_pretrained(minilm_path()))
    with pytest.raises(TokenizationMismatchError, match="share tokenisation"):
        check_same_tokenization(teacher, cased)


def test_nan_guard_names_the_term(tmp_path):
    distiller = api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke")
    kd = distiller.objectives["kd"]
    original = kd.forward
    kd.forward = lambda t, s, b, weights=None: {"kd": original(t, s, b)["kd"] * float("inf")}
    with pytest.raises(NonFiniteLossError, match="'kd' is inf at step 1"):
        distiller.step()


def test_distillation_resumes_exactly(tmp_path):
    straight = api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke", out_dir=tmp_path / "a")
    straight.train()
    first = api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke", out_dir=tmp_path / "b")
    first.train(stop_after=2)
    again = api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke", out_dir=tmp_path / "b")
    again.train(resume=True)
    a = pd.read_csv(tmp_path / "a" / "train_log.csv")
    b = pd.read_csv(tmp_path / "b" / "train_log.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)


def test_unknown_objective_and_bad_weights():
    with pytest.raises(ValueError, match="unknown objective"):
        parse_objective("ckd+magic")
    with pytest.raises(ValueError, match="unknown loss term"):
        api.make_distiller("sst2", student=NARROW, objective="kd", profile="smoke", weights={"wr_pair": 1.0})


def test_cli_distill(tmp_path, capsys):
    from ckdlab.cli import main

    code = main(["distill", "--task", "sst2", "--student", NARROW, "--objective", "ckd+kd", "--profile", "smoke",
                 "--weights", "wr_pair=1,wr_triplet=0.5,ltr_pair=1,ltr_triplet=1,kd=1", "--max-steps", "2",
                 "--out", str(tmp_path / "cli")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["weights"]["wr_triplet"] == 0.5 and (tmp_path / "cli" / "best" / "config.json").exists()
    assert main(["distill", "--task", "sst2", "--student", "layers:7", "--profile", "smoke"]) == 2
    assert "layers [7] out of range" in capsys.readouterr().err
