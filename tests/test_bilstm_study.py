"""Notebook 06's study: the BiLSTM's recurrence against packed sequences (values and gradients,
float64), the stage-1 trainer's loss against a hand computation, stage-1 runs (identity, reuse,
the teacher-vector cache), task-shaped students, the approximation measures, both stages on the
smoke profile, the tables, the costs, the figures, and the notebook itself (slow)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModel

from ckdlab.data import DynamicPaddingCollator
from ckdlab.data.paths import find_local
from ckdlab.engine import TrainConfig
from ckdlab.models import load_backbone
from ckdlab.models.bilstm import BiLSTMConfig, BiLSTMForSequenceClassification, BiLSTMModel, build_bilstm_student
from ckdlab.profiles import load_profile
from ckdlab.studies import bilstm as study
from ckdlab.studies.bilstm_stage1 import (
    SentenceApproximationTrainer,
    approximation_quality,
    least_squares_map,
    run_stage1,
    sentence_vectors,
    stage1_corpus,
)

matplotlib.use("Agg")
NEEDS_DATA = pytest.mark.skipif(find_local("glue_data/SST-2/train.tsv") is None, reason="needs the shared GLUE data")
SENTENCES = ["a gripping , funny film", "it rains", "the committee approved the budget on tuesday after a long debate",
             "not funny at all", "the streets are wet and nobody is outside", "ok", "an utterly charming story", "dull"]


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-random")


# --------------------------------------------------------------------------- the recurrence


def packed_reference(lstm: torch.nn.LSTM, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The obvious way: nn.LSTM over a packed sequence (empty rows run one step and are ignored)."""
    packed = pack_padded_sequence(embedded, lengths.clamp(min=1), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=embedded.shape[1])[0]


@pytest.mark.parametrize("lengths", [[7, 3, 5, 1, 7], [6, 6, 6], [4, 0, 2]])
def test_recurrence_equals_packed_sequences_values_and_gradients(lengths):
    torch.manual_seed(0)
    model = BiLSTMModel(BiLSTMConfig(vocab_size=50, embedding_size=6, hidden_size=5, num_layers=2, lstm_dropout=0.0)).double()
    lengths = torch.tensor(lengths)
    width = int(lengths.max())
    valid = (torch.arange(width)[None] < lengths[:, None])[..., None]
    embedded = torch.randn(len(lengths), width, 6, dtype=torch.float64)
    ours_in, ref_in = embedded.clone().requires_grad_(), embedded.clone().requires_grad_()
    ours = model.recurrence(ours_in, lengths) * valid
    params = list(model.lstm.parameters())
    weights = torch.randn_like(ours)
    ours_grads = torch.autograd.grad((ours * weights).sum(), [ours_in, *params])
    reference = packed_reference(model.lstm, ref_in, lengths) * valid
    ref_grads = torch.autograd.grad((reference * weights).sum(), [ref_in, *params])
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    for mine, theirs in zip(ours_grads, ref_grads):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)


def test_recurrence_ignores_what_lies_beyond_each_length():
    torch.manual_seed(1)
    model = BiLSTMModel(BiLSTMConfig(vocab_size=50, embedding_size=4, hidden_size=3, num_layers=2)).eval()
    lengths = torch.tensor([5, 2, 3])
    embedded = torch.randn(3, 5, 4)
    garbage = embedded.clone()
    garbage[1, 2:] = 1e3 * torch.randn(3, 4)
    garbage[2, 3:] = -7.0
    valid = (torch.arange(5)[None] < lengths[:, None])[..., None]
    torch.testing.assert_close(model.recurrence(embedded, lengths) * valid, model.recurrence(garbage, lengths) * valid)


# --------------------------------------------------------------------------- stage 1 on the training loop


def test_stage1_loss_is_the_hand_computed_mse_of_each_rows_teacher_vector(tiny):
    teacher, tokenizer = tiny
    encoder = build_bilstm_student(teacher, "bilstm:L1-H4-E8", num_labels=1, seed=3).bilstm
    targets = torch.randn(len(SENTENCES), 5)
    trainer = SentenceApproximationTrainer(encoder, tokenizer, SENTENCES, targets,
                                           config=TrainConfig(batch_size=3, max_steps=1, progress=False, seed=4))
    trainer.setup()
    batch = trainer._next_batch()
    trainer.unwrapped_model().eval()  # no dropout, so that the hand computation below is the same function
    loss = trainer.compute_terms(batch)["sentence"]
    with torch.no_grad():
        rows = batch["row"].tolist()
        by_hand = 0.0
        for i, row in enumerate(rows):
            ids = batch["input_ids"][i][batch["attention_mask"][i].bool()][1:-1]  # drop [CLS] and [SEP]
            states = encoder.lstm(encoder.embeddings(ids)[None])[0][0]
            u = torch.cat([states.max(dim=0).values, states.mean(dim=0)])
            mapped = trainer.approximation.projection.weight @ u + trainer.approximation.projection.bias
            by_hand += ((mapped - targets[row]) ** 2).sum()
        by_hand /= len(rows) * targets.shape[1]
    torch.testing.assert_close(loss.detach(), torch.as_tensor(by_hand, dtype=loss.dtype), rtol=1e-5, atol=1e-6)


def test_stage1_training_moves_the_student_onto_the_targets(tiny):
    teacher, tokenizer = tiny
    encoder = build_bilstm_student(teacher, "bilstm:L1-H8-E16", num_labels=1, seed=0).bilstm
    targets = torch.randn(len(SENTENCES), 6)
    config = TrainConfig(batch_size=8, max_steps=60, lr=2e-2, warmup_ratio=0.0, progress=False, seed=0)
    trainer = SentenceApproximationTrainer(encoder, tokenizer, SENTENCES, targets, config=config)
    trainer.setup()
    everything = DynamicPaddingCollator(tokenizer)([trainer.train_tokenized[i] for i in range(len(SENTENCES))])

    def loss() -> float:
        trainer.unwrapped_model().eval()
        with torch.no_grad():
            return float(trainer.compute_terms(everything)["sentence"])

    before = loss()
    trainer.train()
    assert loss() < 0.25 * before


def test_stage1_map_can_start_at_the_least_squares_readout(tiny):
    teacher, tokenizer = tiny
    encoder = build_bilstm_student(teacher, "bilstm:L1-H4-E8", num_labels=1, seed=1).bilstm
    targets = torch.randn(len(SENTENCES), 5, generator=torch.Generator().manual_seed(0))
    trainer = SentenceApproximationTrainer(encoder, tokenizer, SENTENCES, targets,
                                           config=TrainConfig(batch_size=4, max_steps=1, progress=False, seed=0))
    rows = len(SENTENCES) - 2
    trainer.start_map_at_least_squares(rows)
    features = sentence_vectors(encoder, tokenizer, SENTENCES[:rows]).double()
    expected = least_squares_map(features, targets[:rows])
    map_ = trainer.approximation.projection
    torch.testing.assert_close(map_.weight.double(), expected[:-1].T, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(map_.bias.double(), expected[-1], rtol=1e-4, atol=1e-5)
    # the fitted start is no worse on its sentences than the default random map
    fitted = ((features @ expected[:-1] + expected[-1] - targets[:rows].double()) ** 2).mean()
    assert fitted <= (targets[:rows].double() ** 2).mean()
    trainer.setup()
    with pytest.raises(RuntimeError, match="before training"):
        trainer.start_map_at_least_squares(rows)


def test_stage1_trainer_input_errors(tiny):
    teacher, tokenizer = tiny
    student = build_bilstm_student(teacher, "bilstm:L1-H4-E8", num_labels=1)
    with pytest.raises(ValueError, match="BiLSTMModel"):
        SentenceApproximationTrainer(student, tokenizer, SENTENCES, torch.zeros(len(SENTENCES), 3))
    with pytest.raises(ValueError, match="teacher_vectors must be"):
        SentenceApproximationTrainer(student.bilstm, tokenizer, SENTENCES, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="empty"):
        SentenceApproximationTrainer(student.bilstm, tokenizer, [], torch.zeros(0, 3))


def test_least_squares_map_matches_numpy():
    rng = np.random.default_rng(0)
    features, targets = rng.normal(size=(40, 5)), rng.normal(size=(40, 3))
    ours = least_squares_map(torch.tensor(features), torch.tensor(targets), ridge=0.0).numpy()
    design = np.hstack([features, np.ones((40, 1))])
    expected = np.linalg.lstsq(design, targets, rcond=None)[0]
    np.testing.assert_allclose(ours, expected, atol=1e-10)


def test_sentence_vectors_are_the_encoders_pooled_output_in_input_order(tiny):
    teacher, tokenizer = tiny
    encoder = build_bilstm_student(teacher, "bilstm:L1-H4-E8", num_labels=1).bilstm.eval()
    ours = sentence_vectors(encoder, tokenizer, SENTENCES, batch_size=3)
    for i, sentence in enumerate(SENTENCES):
        with torch.no_grad():
            alone = encoder(**tokenizer(sentence, return_tensors="pt")).pooler_output[0]
        torch.testing.assert_close(ours[i], alone, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- settings


def test_settings_errors_name_the_option():
    base = load_profile("smoke")
    broken = {**base, "bilstm": {**base["bilstm"], "methods": {"x": {"stage1": True}}}}
    with pytest.raises(ValueError, match=r"bilstm.methods\['x'\] needs 'objective'"):
        study.bilstm_settings(broken)
    broken = {**base, "bilstm": {**base["bilstm"], "seeds": []}}
    with pytest.raises(ValueError, match="bilstm.seeds"):
        study.bilstm_settings(broken)
    broken = {**base, "bilstm": {**base["bilstm"], "student": "bilstm:X3"}}
    with pytest.raises(ValueError, match="bilstm:X3"):
        study.bilstm_settings(broken)
    no_section = {k: v for k, v in base.items() if k != "bilstm"}
    with pytest.raises(ValueError, match="no 'bilstm' section"):
        study.bilstm_settings(no_section)


def test_student_label_and_stage2_options():
    assert study.student_label("bilstm:L2-H150-E300") == "BiLSTM 2×150"
    assert study.student_label("bilstm") == "BiLSTM 2×150" and study.student_label("bilstm:L1-H300") == "BiLSTM 1×300"
    assert study.stage2_options("smoke", "sst2") == {"lr": 1.0e-3, "max_steps": 2}
    assert study.stage2_options("quick", "SST-2") == study.stage2_options("quick", "sst2")


def test_every_profile_has_a_valid_bilstm_section():
    for name in ("smoke", "quick", "paper"):
        section = study.bilstm_settings(name)
        assert section["tasks"] and section["seeds"] and section["methods"]
        assert {"stage 1 + CE", "stage 1 + KD", "no stage 1 + CE", "no stage 1 + KD"} <= set(section["methods"])


@NEEDS_DATA
def test_stage1_corpus_train_and_heldout_are_disjoint_prefixes():
    train, heldout = stage1_corpus("smoke")
    options = load_profile("smoke")["bilstm"]["stage1"]["corpus"]
    assert len(train) == options["limit"] and len(heldout) == options["heldout"]
    assert not set(train.sentences) & set(heldout)
    bigger = {**load_profile("smoke")}
    bigger["bilstm"] = {**bigger["bilstm"], "stage1": {**bigger["bilstm"]["stage1"], "corpus": {**options, "limit": 300}}}
    assert stage1_corpus(bigger)[0].sentences[:256] == train.sentences
    bad = {**bigger, "bilstm": {**bigger["bilstm"], "stage1": {**bigger["bilstm"]["stage1"], "corpus": {**options, "limit": 0}}}}
    with pytest.raises(ValueError, match="limit"):
        stage1_corpus(bad)


# --------------------------------------------------------------------------- both stages, smoke profile


@NEEDS_DATA
def test_both_stages_on_the_smoke_profile(tmp_path):
    first = run_stage1("smoke", seed=0)
    assert first.state == "new" and first.info["steps"] == 4 and not first.info["vectors_reused"]
    assert list(first.log["step"]) == [1, 2, 3, 4] and np.isfinite(first.log["sentence"]).all()
    assert isinstance(AutoModel.from_pretrained(first.encoder_dir), BiLSTMModel)
    again = run_stage1("smoke", seed=0)
    assert again.state == "finished" and again.out_dir == first.out_dir
    other = run_stage1("smoke", seed=1)
    assert other.out_dir != first.out_dir and other.info["vectors_reused"]  # the teacher's vectors come from the cache

    single, pair = study.task_student(first, "sst2", seed=0), study.task_student(first, "stsb", seed=0)
    assert study.task_student(first, "sst2", seed=0) == single and study.task_student(first, "sst2", seed=1) != single
    heads = [BiLSTMForSequenceClassification.from_pretrained(study.task_student(first, "sst2", seed=s)).classifier for s in (0, 1)]
    assert not torch.equal(heads[0][-1].weight, heads[1][-1].weight)  # the stage-2 seed initialises the head
    loaded_pair = BiLSTMForSequenceClassification.from_pretrained(pair)
    assert loaded_pair.config.sentence_pair and loaded_pair.config.num_labels == 1
    assert loaded_pair.config.problem_type == "regression"
    for name, tensor in first.encoder().state_dict().items():
        assert torch.equal(loaded_pair.bilstm.state_dict()[name], tensor), name

    approximation = approximation_quality(first, "smoke")
    summary = approximation.summary.set_index("model")
    assert list(summary.index) == ["stage-1 student", "untrained student + least squares", "mean teacher vector"]
    assert abs(summary.loc["mean teacher vector", "R²"]) < 1e-5
    assert approximation.cosines["cosine"].between(-1 - 1e-6, 1 + 1e-6).all()
    assert approximation.teacher.shape == approximation.student.shape == (64, 64)

    grid, stage1 = study.run_bilstm("smoke", tasks=["sst2", "mrpc"], seeds=[0, 1])
    assert len(grid) == 2 * 2 * 4 and set(stage1) == {0, 1}
    assert grid["score"].notna().all()
    assert all(Path(p).exists() for p in grid["out_dir"])
    stage1_runs = grid[grid["method"].str.startswith("stage 1")]
    assert all(Path(json.loads((Path(p) / "run.json").read_text())["config"]["student"]["path"]).parent.parent == stage1[s].out_dir
               for p, s in zip(stage1_runs["out_dir"], stage1_runs["seed"]))
    again, _ = study.run_bilstm("smoke", tasks=["sst2", "mrpc"], seeds=[0, 1])  # every run is read back
    pd.testing.assert_frame_equal(grid.drop(columns="wall_time_s"), again.drop(columns="wall_time_s"))

    costs = study.cost_table("smoke", repeats=2, batch_repeats=1, batch=4)
    assert list(costs["student"]) == ["teacher", "narrow", "subset", "BiLSTM 1×16"]
    assert costs.set_index("student").loc["teacher", "x teacher"] == 1.0 and (costs["latency_ms"] > 0).all()

    others = study.comparison_runs("smoke", ["sst2", "mrpc"])
    assert set(others["student"]) == {"teacher"} and len(others) == 2
    result, shown = study.bilstm_table(grid, others, costs)
    assert (result.count.loc[("BiLSTM 1×16", "stage 1 + CE")] == 2).all()  # two seeds pooled per cell
    assert set(shown.columns) >= {"mrpc", "sst2", "avg", "seeds", "params (M)", "latency_ms", "x teacher", "sentences/s"}
    assert study.markdown(shown).count("\n") == 2 + len(shown) - 1
    lines = study.stage1_effect(grid, [("stage 1 + CE", "no stage 1 + CE"), ("absent", "no stage 1 + CE")])
    assert lines[0].startswith("**stage 1 + CE vs no stage 1 + CE**") and len(lines) == 3
    points = study.pareto_points(result, costs)
    assert set(points["kind"]) == {"teacher", "BiLSTM"} and len(points) == 5


# --------------------------------------------------------------------------- figures


def test_figures_draw_and_save(tmp_path):
    from ckdlab.viz.bilstm import plot_cosines, plot_method_diagram, plot_score_latency, plot_sentence_space, plot_stage1_loss

    rng = np.random.default_rng(0)
    plot_method_diagram(save_to=tmp_path / "method.png")
    log = pd.DataFrame({"step": range(1, 31), "sentence": np.linspace(1, 0.2, 30), "lr": np.linspace(1e-3, 0, 30)})
    plot_stage1_loss(log, save_to=tmp_path / "loss.png")
    cosines = pd.DataFrame({"model": ["a"] * 50 + ["b"] * 50, "cosine": rng.uniform(0.5, 1.0, 100)})
    plot_cosines(cosines, save_to=tmp_path / "cos.png")
    teacher = torch.randn(30, 8)
    plot_sentence_space(teacher, teacher + 0.1 * torch.randn(30, 8), save_to=tmp_path / "space.png")
    points = pd.DataFrame({"student": ["teacher", "BiLSTM 2×150", "subset"], "method": ["fine-tune", "stage 1 + KD", "no KD"],
                           "score": [0.8, 0.7, 0.75], "score_std": [np.nan, 0.01, np.nan], "latency_ms": [15.0, 4.0, 8.0],
                           "kind": ["teacher", "BiLSTM", "transformer student"]})
    plot_score_latency(points, save_to=tmp_path / "pareto.png")
    assert {p.name for p in tmp_path.glob("*.png")} == {"method.png", "loss.png", "cos.png", "space.png", "pareto.png"}
    with pytest.raises(ValueError, match="plot_score_latency needs"):
        plot_score_latency(points.drop(columns="kind"))
    with pytest.raises(ValueError, match="same"):
        plot_sentence_space(teacher, teacher[:5])


# --------------------------------------------------------------------------- the notebook


@pytest.mark.slow
@NEEDS_DATA
def test_notebook_06_smoke(tmp_path):
    import nbformat
    import papermill

    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    out = tmp_path / "06.ipynb"
    papermill.execute_notebook(str(notebooks / "06_bilstm_student.ipynb"), str(out),
                               parameters={"profile": "smoke", "tasks": ["sst2", "mrpc"]}, cwd=str(notebooks),
                               kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    figures = {p.name for p in (tmp_path / "figures" / "smoke").glob("06_*.png")}
    assert figures == {"06_bilstm_method.png", "06_bilstm_stage1_loss.png", "06_bilstm_cosines.png",
                       "06_bilstm_sentence_space.png", "06_bilstm_pareto.png"}
    table = pd.read_csv(tmp_path / "results" / "smoke" / "bilstm_table.csv")
    assert {"BiLSTM 1×16", "teacher"} <= set(table["student"])
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "stage 1 + CE vs no stage 1 + CE" in text and "Stage 1" in text
