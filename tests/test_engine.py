"""The training loop: a fine-tuning integration test on tiny-random, seeds, resume, guards, logs."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from ckdlab.engine import NonFiniteLossError, TrainConfig, Trainer, checkpoints, finetune
from ckdlab.errors import UserError
from ckdlab.profiles import load_profile, profile_config
from ckdlab.models import load_backbone

SMALL = dict(epochs=2, batch_size=8, eval_batch_size=32, lr=1e-3, max_length=32, train_limit=32, dev_limit=32, log_every=1, progress=False)


def run(tmp_path, name, **changes):
    config = TrainConfig(**{**SMALL, **changes})
    return finetune("sst2", model="tiny-random", config=config, out_dir=tmp_path / name)


def test_finetune_writes_model_logs_and_metrics(tmp_path):
    summary = run(tmp_path, "a")
    out = tmp_path / "a"
    assert summary["finished"] and summary["steps"] == 8 and summary["train_examples"] == 32
    assert (out / "best" / "config.json").exists() and (out / "best" / "tokenizer.json").exists()
    train = pd.read_csv(out / "train_log.csv")
    assert set(train["name"]) >= {"ce", "loss", "lr"} and train["step"].max() == 8
    dev = pd.read_csv(out / "eval_log.csv")
    assert list(dev["step"].unique()) == [4, 8] and set(dev["metric"]) == {"accuracy"}
    best = json.loads((out / "best_metrics.json").read_text())
    assert best["score"] == summary["best_score"] == dev["value"].max()
    assert any((out / "tb").iterdir())
    reloaded, _ = load_backbone(out / "best", num_labels=2)
    assert reloaded.config.num_hidden_layers == 2


def test_a_finished_run_keeps_its_loop_state_and_drops_its_checkpoint_unless_asked(tmp_path):
    run(tmp_path, "dropped")
    run(tmp_path, "kept", keep_checkpoint=True)
    dropped, kept = tmp_path / "dropped", tmp_path / "kept"
    assert not (dropped / "checkpoint").exists() and not list(dropped.glob(".checkpoint*"))
    assert (kept / "checkpoint" / "optimizer.bin").exists() and not (kept / "final_state.json").exists()
    # The same loop state either way (steps, best score, the loss weights used), read by one function.
    assert checkpoints.final_state(dropped) == checkpoints.final_state(kept)
    assert checkpoints.final_state(dropped)["global_step"] == 8
    assert (dropped / "best" / "model.safetensors").exists()


def test_an_unfinished_run_keeps_its_checkpoint_and_a_dropped_one_cannot_be_resumed(tmp_path):
    config = TrainConfig(**SMALL)
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    partial = Trainer(model, tokenizer, "sst2", config, out_dir=tmp_path / "run").train(stop_after=3)
    assert not partial["finished"] and (tmp_path / "run" / "checkpoint" / "trainer_state.json").exists()
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    assert Trainer(model, tokenizer, "sst2", config, out_dir=tmp_path / "run").train(resume=True)["finished"]
    assert not (tmp_path / "run" / "checkpoint").exists()
    # Resuming a finished run whose checkpoint is gone would silently train it again from step 0.
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    with pytest.raises(UserError, match=r"finished run whose checkpoint was dropped.*--no-resume"):
        Trainer(model, tokenizer, "sst2", config, out_dir=tmp_path / "run").train(resume=True)


def test_training_reduces_the_loss(tmp_path):
    summary = run(tmp_path, "fit", epochs=6, train_limit=16, dev_limit=16)
    train = pd.read_csv(tmp_path / "fit" / "train_log.csv")
    ce = train[train["name"] == "ce"]["value"].to_numpy()
    assert ce[-3:].mean() < ce[:3].mean()
    assert summary["steps"] == 12


def test_same_seed_same_numbers_on_cpu(tmp_path):
    a = run(tmp_path, "a", epochs=1)
    b = run(tmp_path, "b", epochs=1)
    c = run(tmp_path, "c", epochs=1, seed=1)
    logs = [pd.read_csv(tmp_path / n / "train_log.csv") for n in "abc"]
    assert logs[0]["value"].tolist() == logs[1]["value"].tolist()
    assert logs[0]["value"].tolist() != logs[2]["value"].tolist()
    assert a["best_score"] == b["best_score"]


def test_resume_continues_exactly(tmp_path):
    straight = run(tmp_path, "straight", epochs=2)
    config = TrainConfig(**SMALL)
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    interrupted = Trainer(model, tokenizer, "sst2", config, out_dir=tmp_path / "resumed")
    partial = interrupted.train(stop_after=5)  # stops mid-epoch 2, after a checkpoint
    assert not partial["finished"] and partial["steps"] == 5
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    resumed = Trainer(model, tokenizer, "sst2", config, out_dir=tmp_path / "resumed")
    summary = resumed.train(resume=True)
    assert summary["steps"] == 8 and summary["finished"]
    a = pd.read_csv(tmp_path / "straight" / "train_log.csv")
    b = pd.read_csv(tmp_path / "resumed" / "train_log.csv")
    assert b["step"].is_monotonic_increasing
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)
    assert summary["best_score"] == pytest.approx(straight["best_score"])
    events = [json.loads(line)["event"] for line in (tmp_path / "resumed" / "events.jsonl").read_text().splitlines()]
    assert "resumed" in events


def test_weight_changes_apply_next_step_and_are_logged(tmp_path):
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    trainer = Trainer(model, tokenizer, "sst2", TrainConfig(**SMALL), out_dir=tmp_path / "w")
    first = trainer.step()
    trainer.set_weight("ce", 0.0)
    second = trainer.step()
    assert first["loss"] == pytest.approx(first["ce"]) and second["loss"] == 0.0
    event = json.loads((tmp_path / "w" / "events.jsonl").read_text().splitlines()[0])
    assert event == {"step": 1, "event": "set_weight", "name": "ce", "old": 1.0, "new": 0.0}
    with pytest.raises(ValueError, match="unknown loss term"):
        trainer.set_weight("kd", 1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        trainer.set_weight("ce", -1.0)


def test_non_finite_loss_stops_with_the_term_and_step(tmp_path):
    model, tokenizer = load_backbone("tiny-random", num_labels=2)

    class Broken(Trainer):
        def compute_terms(self, batch):
            terms = super().compute_terms(batch)
            return {"ce": terms["ce"] * float("nan")}

    trainer = Broken(model, tokenizer, "sst2", TrainConfig(**SMALL))
    with pytest.raises(NonFiniteLossError, match="'ce' is nan at step 1"):
        trainer.step()


def test_regression_task_and_mnli_style_two_dev_splits(tmp_path):
    summary = finetune("stsb", model="tiny-random", config=TrainConfig(**{**SMALL, "epochs": 1}), out_dir=tmp_path / "s")
    assert set(summary["best_metrics"]) >= {"pearson", "spearman", "score"}
    from ckdlab.data import load_task

    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    dev = load_task("rte", "dev", limit=16)
    trainer = Trainer(model, tokenizer, "rte", TrainConfig(**SMALL), train_dataset=dev, dev_datasets={"a": dev, "b": dev})
    metrics = trainer.evaluate()
    assert metrics["a_accuracy"] == metrics["b_accuracy"] == metrics["score"]


def test_profiles_are_data():
    quick = load_profile("quick")
    assert quick["teacher"] == "minilm-l6" and set(quick["tasks"]) == {"sst2", "mrpc", "rte", "cola", "stsb"}
    config = profile_config("quick", "finetune", "sst2", seed=3)
    assert config.seed == 3 and config.train_limit == quick["finetune"]["tasks"]["sst2"]["train_limit"]
    paper = profile_config("paper", "finetune", "mnli")
    assert (paper.batch_size, paper.lr, paper.epochs, paper.max_length) == (32, 2e-5, 3, 128)
    with pytest.raises(FileNotFoundError, match="profile 'nope' not found"):
        load_profile("nope")
    with pytest.raises(ValueError, match="unknown training option"):
        profile_config("quick", "finetune", "sst2", learning_rate=1.0)


def test_cli_errors_are_one_line_and_exit_2(capsys):
    from ckdlab.cli import main, parse_weights

    assert main(["finetune", "--task", "nosuchtask", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "ckdlab finetune: error:" in err and "nosuchtask" in err
    assert parse_weights("wr_pair=1,kd=0.5") == {"wr_pair": 1.0, "kd": 0.5}
    with pytest.raises(ValueError, match="name=number"):
        parse_weights("wr_pair:1")
