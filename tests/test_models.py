"""Model zoo: embedded backbones, student builders (shapes, parameter counts, copied weights), round trips."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from ckdlab.models import build_student, count_parameters, load_backbone, measure_latency, select_layers
from ckdlab.models.students import parse_config_spec


def bert_parameter_count(c: BertConfig, num_labels: int | None) -> int:
    """BERT's parameter count written out from the architecture (embeddings, layers, pooler, head)."""
    h, i, v, p, t = c.hidden_size, c.intermediate_size, c.vocab_size, c.max_position_embeddings, c.type_vocab_size
    embeddings = (v + p + t) * h + 2 * h
    attention = 4 * (h * h + h) + 2 * h
    ffn = (h * i + i) + (i * h + h) + 2 * h
    pooler = h * h + h
    head = (h * num_labels + num_labels) if num_labels else 0
    return embeddings + c.num_hidden_layers * (attention + ffn) + pooler + head


def test_minilm_is_the_embedded_bert(minilm):
    model, tokenizer = minilm
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert tokenizer("Hello world")["input_ids"][0] == tokenizer.cls_token_id
    assert count_parameters(model)["total"] == bert_parameter_count(model.config, 2)


def test_tiny_random_is_deterministic_and_does_not_move_the_global_rng():
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a, _ = load_backbone("tiny-random", num_labels=3)
    after = torch.rand(1)
    b, _ = load_backbone("tiny-random", num_labels=3)
    assert torch.equal(before, after)
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 64
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize(
    "spec, expected",
    [("layers:0,2,4", [0, 2, 4]), ("first:3", [0, 1, 2]), ("every-other", [0, 2, 4]), ("skip:3", [1, 3, 5]), ("skip:2", [2, 5])],
)
def test_select_layers(spec, expected):
    assert select_layers(spec, 6) == expected


@pytest.mark.parametrize("spec", ["layers:0,9", "layers:2,1", "layers:", "skip:4", "first:0", "bogus:1", "layers:a"])
def test_select_layers_rejects_bad_specs(spec):
    with pytest.raises(ValueError, match="student spec"):
        select_layers(spec, 6)


def test_layer_subset_copies_the_selected_layers(minilm):
    teacher, _ = minilm
    student = build_student(teacher, "layers:1,3,5")
    assert student.config.num_hidden_layers == 3
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for j, i in enumerate([1, 3, 5]):
        for suffix in ("attention.self.query.weight", "output.dense.bias", "intermediate.dense.weight"):
            assert torch.equal(s_state[f"bert.encoder.layer.{j}.{suffix}"], t_state[f"bert.encoder.layer.{i}.{suffix}"])
    for key in ("bert.embeddings.word_embeddings.weight", "bert.pooler.dense.weight", "classifier.weight"):
        assert torch.equal(s_state[key], t_state[key])
    assert count_parameters(student)["total"] == bert_parameter_count(student.config, 2)


def test_fresh_student_shapes_counts_and_slice_init(minilm):
    teacher, _ = minilm
    student = build_student(teacher, "config:L4-H256-A4-I1024", init="slice")
    c = student.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (4, 256, 4, 1024)
    assert count_parameters(student)["total"] == bert_parameter_count(c, 2)
    t = teacher.state_dict()["bert.encoder.layer.2.intermediate.dense.weight"]
    s = student.state_dict()["bert.encoder.layer.2.intermediate.dense.weight"]
    assert torch.equal(s, t[:1024, :256])
    logits = student(**{"input_ids": torch.tensor([[101, 7592, 102]])}).logits
    assert logits.shape == (1, 2)


def test_fresh_student_bert_init_is_seeded(minilm):
    teacher, _ = minilm
    a = build_student(teacher, "config:L2-H128", seed=3)
    b = build_student(teacher, "config:L2-H128", seed=3)
    c = build_student(teacher, "config:L2-H128", seed=4)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert a.config.num_attention_heads == 2 and a.config.intermediate_size == 512


@pytest.mark.parametrize("spec", ["L4-H250-A4", "4x256", "L4"])
def test_bad_config_specs(minilm, spec):
    with pytest.raises(ValueError, match="spec"):
        parse_config_spec(spec, minilm[0].config)


def test_slice_init_refuses_a_wider_student(minilm):
    with pytest.raises(ValueError, match="no larger than the teacher"):
        build_student(minilm[0], "config:L2-H512-A8-I1024", init="slice")


def test_save_pretrained_round_trip(minilm, tmp_path):
    student = build_student(minilm[0], "layers:0,5")
    student.save_pretrained(tmp_path / "s")
    minilm[1].save_pretrained(tmp_path / "s")
    loaded, tokenizer = load_backbone(tmp_path / "s", num_labels=2)
    assert isinstance(loaded, BertForSequenceClassification) and loaded.config.num_hidden_layers == 2
    for (name, x), (_, y) in zip(student.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(x, y), name
    assert tokenizer.vocab_size == minilm[1].vocab_size


def test_folder_without_tokenizer_is_a_clear_error(minilm, tmp_path):
    build_student(minilm[0], "layers:0").save_pretrained(tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match=r"no tokenizer.*save_pretrained"):
        load_backbone(tmp_path / "bare", num_labels=2)


def test_regression_head_and_latency():
    model, _ = load_backbone("tiny-random", num_labels=1)
    assert model.config.problem_type == "regression"
    timing = measure_latency(model, seq_len=16, repeats=3, threads=1)
    assert timing["latency_ms"] > 0 and timing["threads"] == 1


def test_unknown_model_gives_a_clear_error():
    with pytest.raises(OSError, match="Could not load 'no-such-model-xyz'"):
        load_backbone("no-such-model-xyz")


def test_layer_subset_of_an_encoder_without_pooler():
    from transformers import BertModel

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32)
    encoder = BertModel(config, add_pooling_layer=False)
    student = build_student(encoder, "layers:1,3")
    assert torch.equal(student.encoder.layer[1].output.dense.weight, encoder.encoder.layer[3].output.dense.weight)


def test_a_new_head_is_drawn_from_the_seed_not_from_the_global_rng():
    """Two loads with one seed give the same head whatever the global RNG holds, and leave it alone."""
    torch.manual_seed(1)
    a, _ = load_backbone("minilm-l6", num_labels=2, seed=7)
    state = torch.random.get_rng_state()
    torch.manual_seed(2)
    b, _ = load_backbone("minilm-l6", num_labels=2, seed=7)
    c, _ = load_backbone("minilm-l6", num_labels=2, seed=8)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    torch.manual_seed(1)
    load_backbone("minilm-l6", num_labels=2, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
