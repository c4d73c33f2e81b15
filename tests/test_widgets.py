"""The explorer and the live-distillation panel, driven headless through their widgets."""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pandas as pd
import pytest

from ckdlab.data import load_task
from ckdlab.engine import TrainConfig, Trainer
from ckdlab.engine.distill import Distiller
from ckdlab.models import build_student, load_backbone
from ckdlab.viz import encode, relation_view
from ckdlab.studies.relations import student_checkpoints
from ckdlab.widgets import LiveDistillationPanel, RelationExplorer

SMALL = dict(epochs=1, batch_size=8, eval_batch_size=16, lr=1e-3, max_length=32, log_every=1, progress=False, warmup_ratio=0.0)
CKD_TERMS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-random", num_labels=2)


@pytest.fixture(scope="module")
def data():
    return load_task("sst2", "train", limit=32), {"dev": load_task("sst2", "dev", limit=8)}


def distiller(tiny, data, out_dir, **kwargs) -> Distiller:
    teacher, tokenizer = tiny
    student = build_student(teacher, "config:L2-H32-A2-I64", num_labels=2)  # uniform map: 3 pairs, enough for LTR triplets
    train, dev = data
    return Distiller(
        teacher, student, tokenizer, "sst2", objective="ckd+kd", temperature=2.0, config=TrainConfig(**SMALL),
        out_dir=out_dir, train_dataset=train, dev_datasets=dev, **kwargs,
    )


def events(run, balancing: bool = False) -> list[dict]:
    """The run's events; the default weighting's "balanced_weights" event only when asked for."""
    every = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return every if balancing else [e for e in every if e["event"] != "balanced_weights"]


# ----------------------------------------------------------------- explorer
def test_explorer_redraws_on_a_new_sentence_and_on_every_control(tiny, tmp_path):
    teacher, tokenizer = tiny
    saved = tmp_path / "student"
    build_student(teacher, "config:L1-H32-A2-I64", num_labels=2).save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    explorer = RelationExplorer(
        {"teacher": tiny, "student": saved}, sentence="a good film", examples=["the plot is thin", "what a ride"]
    )
    first = explorer.state()
    assert first["tokens"] == ["[CLS]", "a", "good", "film", "[SEP]"] and first["matrix_shape"] == (5, 5)
    assert first["layer_choices"] == [0, 1, 2] and first["layer"] == 2 and first["redraws"] == 1

    explorer.text.value = "an unbelievably long and winding story"
    second = explorer.state()
    assert second["redraws"] == 2 and second["image_sha1"] != first["image_sha1"]
    assert second["tokens"][3:6] == ["·bel", "·ie", "·va"] and second["matrix_shape"] == (12, 12)
    hidden, tokens, mask = encode(teacher, tokenizer, explorer.text.value)
    np.testing.assert_array_equal(explorer.last_views[0].matrix, relation_view("wr_pair", hidden, tokens, mask, layer=2).matrix)

    explorer.layer.value = 1
    assert explorer.state()["image_sha1"] != second["image_sha1"] and explorer.state()["title"].endswith("L1")
    explorer.relation.value = "wr_triplet"
    explorer.token.value = 4
    assert explorer.state()["title"] == "WR triplet-wise · L1 · anchor '·ie' (4)"
    explorer.pieces.value = "merge"
    assert explorer.state()["tokens"] == ["[CLS]", "an", "unbelievably", "long", "and", "winding", "story", "[SEP]"]
    explorer.examples.value = "what a ride"
    assert explorer.state()["sentence"] == "what a ride" and explorer.state()["matrix_shape"] == (5, 5)

    # The saved student is loaded from its folder on first use; comparing aligns it by the layer map.
    explorer.model.value = "student"
    explorer.reference.value = "teacher"
    state = explorer.state()
    assert state["reference"] == "teacher" and state["layer_choices"] == [0, 1]  # uniform 2 -> 1: (0,0), (2,1)
    assert len(explorer.last_views) == 2 and state["error"] is None
    explorer.relation.value = "ltr_pair"
    assert [v.row_labels for v in explorer.last_views] == [["emb", "L2"], ["emb", "L1"]]


def test_explorer_shows_bad_input_instead_of_raising(tiny):
    explorer = RelationExplorer({"teacher": tiny}, sentence="a good film")
    explorer.relation.value = "wr_triplet"
    before = explorer.state()
    explorer.text.value = ""  # [CLS] [SEP]: too short for a triplet
    after = explorer.state()
    assert "at least 3 tokens" in after["error"] and "at least 3 tokens" in explorer.message.value
    assert after["image_sha1"] == before["image_sha1"] and after["redraws"] == before["redraws"]
    explorer.text.value = "it works again"
    assert explorer.state()["error"] is None and explorer.message.value == ""
    with pytest.raises(ValueError, match="reference='nope'"):
        RelationExplorer({"teacher": tiny}, reference="nope")


def test_student_checkpoints_are_found_where_notebook_03_saves_them(tmp_path):
    from ckdlab import api

    best = api.runs_dir() / "smoke" / "students" / "sst2" / "narrow" / "CKD___KD" / "seed0-1a2b3c4d" / "best"
    best.mkdir(parents=True)
    (best / "config.json").write_text("{}")
    assert student_checkpoints("sst2", "smoke") == {"narrow/CKD___KD/seed0-1a2b3c4d": best}


# ----------------------------------------------------------------- live panel
def test_panel_is_generic_over_the_trainer(data):
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    train, dev = data
    trainer = Trainer(model, tokenizer, "sst2", TrainConfig(**SMALL), train_dataset=train, dev_datasets=dev)
    panel = LiveDistillationPanel(trainer, refresh_every=2, max_steps=3, dpi=40)
    assert list(panel.sliders) == ["ce"]  # no temperature slider: a plain Trainer has no temperature
    assert panel.refreshes == 1 and panel.relation_image.value and not panel.curves.value
    with pytest.raises(RuntimeError, match="run_steps"):
        panel.start()  # no running event loop here
    assert len(panel.run_steps(2)) == 2 and panel.refreshes == 2 and panel.curves.value
    assert len(panel.run_steps(5)) == 1 and panel.status == "finished" and panel.refreshes == 3  # stops at max_steps
    assert panel.state()["global_step"] == 3 and "finished" in panel.status_html.value
    with pytest.raises(ValueError, match="refresh_every"):
        LiveDistillationPanel(trainer, refresh_every=0)


def test_a_slider_changes_the_weight_from_the_next_step_and_is_logged(tiny, data, tmp_path):
    run = tmp_path / "live"
    panel = LiveDistillationPanel(distiller(tiny, data, run), refresh_every=3, dpi=40)
    assert set(panel.sliders) == {"ce", *CKD_TERMS, "kd", "temperature"}
    # The sliders start at the weights the first step uses: CKD's balanced by the default weighting.
    balanced = events(run, balancing=True)[0]
    assert balanced["event"] == "balanced_weights" and set(balanced["weights"]) == set(CKD_TERMS)
    assert all(panel.sliders[t].value == pytest.approx(w) for t, w in balanced["weights"].items())
    panel.run_steps(1)
    old = dict(panel.trainer.weights)
    panel.sliders["wr_pair"].value = 3.0
    panel.sliders["temperature"].value = 4.0
    assert panel.state()["weights"]["wr_pair"] == 3.0 and panel.trainer.temperature == 4.0
    panel.run_steps(2)
    assert [(e["step"], e["event"], e.get("name"), e["new"]) for e in events(run)] == [
        (1, "set_weight", "wr_pair", 3.0), (1, "set_temperature", None, 4.0)
    ]
    log = pd.read_csv(run / "train_log.csv").pivot(index="step", columns="name", values="value")
    terms = [*CKD_TERMS, "kd"]

    def weighted(step: int, weights: dict[str, float]) -> float:
        return sum(weights[t] * log.loc[step, t] for t in terms)

    new = {**old, "wr_pair": 3.0}
    assert log.loc[1, "loss"] == pytest.approx(weighted(1, old), rel=1e-5)
    assert log.loc[2, "loss"] == pytest.approx(weighted(2, new), rel=1e-5)
    assert log.loc[2, "loss"] != pytest.approx(weighted(2, old), rel=1e-3)
    assert panel.state()["events"][1] == {"step": 1, "event": "set_weight", "name": "wr_pair", "old": old["wr_pair"], "new": 3.0}
    assert panel.refreshes == 2  # at build time and after step 3: teacher | student | difference of the probe
    assert [v.row_labels for v in panel.probe_views][0][:2] == ["[CLS]", "the"]


def test_start_pause_resume_stop_on_an_event_loop(tiny, data, tmp_path):
    run = tmp_path / "async"
    panel = LiveDistillationPanel(distiller(tiny, data, run), refresh_every=100, dpi=40)

    async def until(condition, limit: int = 10_000) -> None:
        for _ in range(limit):
            if condition():
                return
            await asyncio.sleep(0)
        raise AssertionError("condition never became true")

    def from_another_thread(action) -> None:
        # JupyterLab may deliver a click on a kernel subshell thread: it must be handed to the loop.
        worker = threading.Thread(target=action)
        worker.start()
        worker.join()

    async def scenario() -> list[int]:
        seen = []
        panel.buttons["start"].click()
        assert panel.status == "running" and panel.buttons["start"].disabled
        await until(lambda: panel.trainer.global_step >= 1)
        panel.buttons["pause"].click()
        paused_at = panel.trainer.global_step
        for _ in range(50):
            await asyncio.sleep(0)
        seen.append(panel.trainer.global_step - paused_at)  # no step while paused
        assert panel.status == "paused" and panel.buttons["start"].description == "resume"
        panel.sliders["kd"].value = 0.5  # applied between steps, like a click in the browser
        from_another_thread(panel.buttons["start"].click)
        assert panel.status == "paused"  # scheduled on the loop's thread, not run on the caller's
        await until(lambda: panel.trainer.global_step >= paused_at + 1)
        from_another_thread(panel.stop)
        await until(lambda: panel.status == "stopped", limit=10)
        stopped_at = panel.trainer.global_step
        await panel.wait()
        seen.append(panel.trainer.global_step - stopped_at)  # nothing after stop
        return seen

    assert asyncio.run(scenario()) == [0, 0]
    assert panel.status == "stopped" and panel.task.done() and panel.state()["error"] is None
    assert all(slider.disabled for slider in panel.sliders.values()) and panel.buttons["start"].disabled
    kinds = [e["event"] for e in events(run)]
    assert kinds == ["panel_start", "panel_pause", "set_weight", "panel_resume", "panel_stop"]
    with pytest.raises(RuntimeError, match="stopped"):
        panel.run_steps(1)


def test_a_slider_moved_on_another_thread_waits_for_the_step_in_progress(data, tmp_path):
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    train, dev = data
    trainer = Trainer(model, tokenizer, "sst2", TrainConfig(**SMALL), out_dir=tmp_path / "t", train_dataset=train, dev_datasets=dev)
    panel = LiveDistillationPanel(trainer, refresh_every=100, dpi=40)
    in_step, release = threading.Event(), threading.Event()
    real_step = trainer.step

    def slow_step():
        in_step.set()
        assert release.wait(10)
        return real_step()

    trainer.step = slow_step
    stepping = threading.Thread(target=panel.run_steps, args=(1,))
    stepping.start()
    assert in_step.wait(10)
    mover = threading.Thread(target=setattr, args=(panel.sliders["ce"], "value", 0.25))
    mover.start()
    mover.join(0.3)
    assert mover.is_alive() and trainer.weights["ce"] == 1.0  # held back while the step runs
    release.set()
    stepping.join(10)
    mover.join(10)
    assert trainer.weights["ce"] == 0.25 and trainer.history[0]["step"] == 1  # applies from step 2


def test_explorer_models_offer_teacher_fresh_student_and_saved_students(tiny, tmp_path, monkeypatch):
    from ckdlab import api
    from ckdlab.studies import relations

    teacher, tokenizer = tiny
    folder = tmp_path / "teacher"
    monkeypatch.setattr(relations, "load_teacher", lambda task, teacher_, profile: (folder, teacher, tokenizer))
    saved = api.runs_dir() / "smoke" / "students" / "sst2" / "narrow" / "CKD___KD" / "seed0-1a2b3c4d" / "best"
    build_student(teacher, "config:L2-H32-A2-I64", num_labels=2).save_pretrained(saved)
    tokenizer.save_pretrained(saved)  # as the trainer's save_model does
    models = api.explorer_models("sst2", "smoke")
    assert list(models) == ["teacher", "student (untrained)", "narrow/CKD___KD/seed0-1a2b3c4d"]
    assert models["student (untrained)"][0].config.hidden_size == 32  # the smoke profile's first student
    explorer = RelationExplorer(models, sentence="a fine film", model="narrow/CKD___KD/seed0-1a2b3c4d", reference="teacher")
    assert explorer.state()["error"] is None and explorer.state()["matrix_shape"] == (5, 5)
