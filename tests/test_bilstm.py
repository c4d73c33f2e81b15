"""The BiLSTM student: masking, pair splitting, PCA initialisation, Hugging Face round trips,
Auto-class registration, load_backbone, build_student specs, and training through the engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from ckdlab.data import load_task
from ckdlab.data.paths import find_local
from ckdlab.models import build_student, count_parameters, describe, load_backbone
from ckdlab.models.bilstm import (
    BiLSTMConfig,
    BiLSTMForSequenceClassification,
    BiLSTMModel,
    build_bilstm_student,
    parse_bilstm_spec,
    pair_features,
    pca_embeddings,
    segment_masks,
)

SMALL = "bilstm:L2-H16-E32"  # tiny-random is 64 wide, so E <= 64 for init="pca"
FIRST = ["a gripping , funny film", "it rains", "the committee approved the budget on tuesday after a long debate", ""]
SECOND = ["not funny at all", "the streets are wet and nobody is outside", "ok", "an empty first sentence"]


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-random", num_labels=2)


def student(teacher, **kwargs):
    model = build_student(teacher, SMALL, num_labels=kwargs.pop("num_labels", 2), **kwargs)
    return model.eval()


def test_shapes_of_encoder_and_classifier(tiny):
    teacher, tokenizer = tiny
    single, pair = student(teacher), student(teacher, sentence_pair=True, num_labels=3)
    batch = tokenizer(FIRST, padding=True, return_tensors="pt")
    out = single.bilstm(**batch)
    assert out.last_hidden_state.shape == (4, batch["input_ids"].shape[1], 32)  # 2H
    assert out.pooler_output.shape == (4, 64) and out.pair_pooler_output is None  # 4H
    assert single(**batch).logits.shape == (4, 2)
    pairs = tokenizer(FIRST, SECOND, padding=True, return_tensors="pt")
    assert pair(**pairs).logits.shape == (4, 3)
    assert single.config.num_hidden_layers == 2 and describe(single) == "BiLSTM-2L-16H-32E"


def test_segment_masks_drop_cls_and_sep_and_split_by_token_type():
    # [CLS] a a [SEP] b [SEP] pad   and   [CLS] a [SEP] pad pad pad pad
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1]])  # garbage types on padding
    first, second = segment_masks(attention, types)
    assert first.int().tolist() == [[0, 1, 1, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0]]
    assert second.int().tolist() == [[0, 0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0]]
    first, second = segment_masks(attention, None)
    assert first.int().tolist() == [[0, 1, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]] and not second.any()


def test_padding_garbage_never_reaches_the_sentence_vector(tiny):
    teacher, tokenizer = tiny
    model = student(teacher, sentence_pair=True)
    batch = tokenizer(FIRST, SECOND, padding=True, return_tensors="pt")
    padded = batch["attention_mask"] == 0
    assert padded.any()
    garbage = {k: v.clone() for k, v in batch.items()}
    generator = torch.Generator().manual_seed(0)
    garbage["input_ids"][padded] = torch.randint(0, teacher.config.vocab_size, (int(padded.sum()),), generator=generator)
    garbage["token_type_ids"][padded] = torch.randint(0, 2, (int(padded.sum()),), generator=generator)
    with torch.no_grad():
        clean, dirty = model.bilstm(**batch), model.bilstm(**garbage)
        assert torch.equal(clean.pooler_output, dirty.pooler_output)
        assert torch.equal(clean.pair_pooler_output, dirty.pair_pooler_output)
        assert torch.equal(model(**batch).logits, model(**garbage).logits)
        # and each row equals the same pair encoded alone, without any padding
        for row, (a, b) in enumerate(zip(FIRST, SECOND)):
            alone = model.bilstm(**tokenizer(a, b, return_tensors="pt"))
            torch.testing.assert_close(alone.pooler_output[0], clean.pooler_output[row], rtol=0, atol=1e-6)
            torch.testing.assert_close(alone.pair_pooler_output[0], clean.pair_pooler_output[row], rtol=0, atol=1e-6)


def test_padding_gets_no_gradient(tiny):
    teacher, tokenizer = tiny
    model = student(teacher)
    batch = tokenizer(FIRST, padding=True, return_tensors="pt")
    pad_id = teacher.config.pad_token_id
    assert not (batch["input_ids"][batch["attention_mask"] == 1] == pad_id).any()
    model.bilstm(**batch).pooler_output.sum().backward()
    grad = model.bilstm.embeddings.weight.grad
    assert torch.count_nonzero(grad[pad_id]) == 0  # padding and the empty sentence's dummy step
    assert torch.count_nonzero(grad[batch["input_ids"][0, 1]]) > 0


def test_empty_sentence_gives_the_zero_vector(tiny):
    teacher, tokenizer = tiny
    model = student(teacher)
    out = model.bilstm(**tokenizer(FIRST, padding=True, return_tensors="pt"))
    assert torch.count_nonzero(out.pooler_output[3]) == 0 and torch.count_nonzero(out.last_hidden_state[3]) == 0
    assert torch.count_nonzero(out.pooler_output[:3].abs().sum(dim=1)) == 3


def test_pair_is_split_into_the_two_sentences_encoded_separately(tiny):
    teacher, tokenizer = tiny
    model = student(teacher, sentence_pair=True)
    pairs = tokenizer(FIRST[:3], SECOND[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.bilstm(**pairs)
        u = model.bilstm(**tokenizer(FIRST[:3], padding=True, return_tensors="pt")).pooler_output
        v = model.bilstm(**tokenizer(SECOND[:3], padding=True, return_tensors="pt")).pooler_output
        torch.testing.assert_close(out.pooler_output, u, rtol=0, atol=1e-6)
        torch.testing.assert_close(out.pair_pooler_output, v, rtol=0, atol=1e-6)
        torch.testing.assert_close(model(**pairs).logits, model.classifier(pair_features(u, v)), rtol=0, atol=1e-6)
    # the pooled vector is [max ; mean] of the segment's token states
    states = out.last_hidden_state
    first, _ = segment_masks(pairs["attention_mask"], pairs["token_type_ids"])
    row_states = states[0][first[0]]
    torch.testing.assert_close(out.pooler_output[0], torch.cat([row_states.amax(0), row_states.mean(0)]), rtol=0, atol=1e-6)


def test_pair_features_formula():
    u, v = torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 4.0]])
    assert pair_features(u, v).tolist() == [[1.0, -2.0, 3.0, 4.0, 2.0, 6.0, 3.0, -8.0]]


def test_wrong_input_kind_is_a_clear_error(tiny):
    teacher, tokenizer = tiny
    single, pair = student(teacher), student(teacher, sentence_pair=True)
    pairs = tokenizer(FIRST, SECOND, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="sentence_pair=True"):
        single(**pairs)
    singles = tokenizer(FIRST, padding=True, return_tensors="pt")
    with pytest.raises(ValueError, match="no sentence B"):
        pair(**singles)
    with pytest.raises(ValueError, match="no sentence B"):
        pair(input_ids=singles["input_ids"], attention_mask=singles["attention_mask"])
    with pytest.raises(ValueError, match="output_hidden_states"):
        single(**singles, output_hidden_states=True)


def test_losses_match_transformers_conventions(tiny):
    teacher, tokenizer = tiny
    batch = tokenizer(FIRST, padding=True, return_tensors="pt")
    classifier = student(teacher, num_labels=3)
    labels = torch.tensor([0, 2, 1, 1])
    out = classifier(**batch, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    regressor = student(teacher, num_labels=1)
    scores = torch.tensor([0.5, 4.0, 2.5, 1.0])
    out = regressor(**batch, labels=scores)
    assert regressor.config.problem_type == "regression" and out.logits.shape == (4, 1)
    torch.testing.assert_close(out.loss, ((out.logits[:, 0] - scores) ** 2).mean())
    assert classifier(**batch).loss is None


def test_pca_embeddings_match_scikit_learn():
    matrix = torch.from_numpy(np.random.default_rng(0).normal(size=(200, 12)) * np.linspace(3, 0.5, 12))
    reference = PCA(n_components=5, svd_solver="full").fit_transform(matrix.numpy())
    np.testing.assert_allclose(pca_embeddings(matrix, 5).numpy(), reference, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="n_components"):
        pca_embeddings(matrix, 13)


def test_pca_initialisation_from_the_teacher(tiny):
    teacher, _ = tiny
    model = build_student(teacher, SMALL, num_labels=2, init="pca")
    words = teacher.get_input_embeddings().weight.detach().double().numpy()
    reference = PCA(n_components=32, svd_solver="full").fit_transform(words)
    np.testing.assert_allclose(model.bilstm.embeddings.weight.detach().double().numpy(), reference, rtol=0, atol=1e-6)
    random = build_student(teacher, SMALL, num_labels=2, init="random")
    assert abs(float(random.bilstm.embeddings.weight.detach().std()) - 0.02) < 0.002
    with pytest.raises(ValueError, match="init='pca' needs an embedding width"):
        build_student(teacher, "bilstm:E65", num_labels=2)  # wider than the 64-wide teacher
    assert build_student(teacher, "bilstm:L1-H8-E65", num_labels=2, init="random").config.embedding_size == 65


def test_seeded_and_leaves_the_global_rng_alone(tiny):
    teacher, _ = tiny
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    a = build_student(teacher, SMALL, num_labels=2, seed=1)
    assert torch.equal(torch.rand(1), expected)
    b, c = build_student(teacher, SMALL, num_labels=2, seed=1), build_student(teacher, SMALL, num_labels=2, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.bilstm.lstm.weight_hh_l0, c.bilstm.lstm.weight_hh_l0)


def test_lstm_initialisation(tiny):
    teacher, _ = tiny
    lstm = student(teacher).bilstm.lstm
    h = lstm.hidden_size
    for gate in lstm.weight_hh_l0.detach().view(4, h, h):
        torch.testing.assert_close(gate @ gate.T, torch.eye(h), rtol=0, atol=1e-5)  # orthogonal
    expected = torch.zeros(4 * h)
    expected[h : 2 * h] = 1.0  # forget gate
    assert torch.equal(lstm.bias_ih_l0.detach(), expected) and torch.count_nonzero(lstm.bias_hh_l0) == 0


def test_parameter_count_written_out(tiny):
    teacher, _ = tiny
    model = build_student(teacher, "bilstm:L2-H16-E32", num_labels=3, sentence_pair=True)
    v, e, h, c = teacher.config.vocab_size, 32, 16, 512
    lstm = 2 * (4 * h * (e + h) + 8 * h) + 2 * (4 * h * (2 * h + h) + 8 * h)
    head = (16 * h * c + c) + (c * 3 + 3)
    counts = count_parameters(model)
    assert counts == {"total": v * e + lstm + head, "embedding": v * e, "non_embedding": lstm + head}


@pytest.mark.parametrize(
    "spec, sizes",
    [("bilstm", {}), ("bilstm:", {}), ("bilstm:L2-H300-E300", {"num_layers": 2, "hidden_size": 300, "embedding_size": 300}),
     ("BiLSTM:h64", {"hidden_size": 64}), ("bilstm:E16-L1", {"embedding_size": 16, "num_layers": 1})],
)
def test_valid_specs(spec, sizes):
    assert parse_bilstm_spec(spec) == sizes


@pytest.mark.parametrize("spec", ["bilstm:L0", "bilstm:X3", "bilstm:L1-L2", "bilstm:H", "bilstm:L1.5", "bilstm:H-3"])
def test_invalid_specs_name_the_spec(spec, tiny):
    with pytest.raises(ValueError, match="student spec"):
        build_student(tiny[0], spec, num_labels=2)


def test_builder_argument_errors(tiny):
    teacher, _ = tiny
    with pytest.raises(ValueError, match="init='bert' is not known for a BiLSTM"):
        build_student(teacher, "bilstm", num_labels=2, init="bert")
    encoder, _ = load_backbone("tiny-random")
    with pytest.raises(ValueError, match="num_labels is required"):
        build_student(encoder, SMALL)
    assert build_student(teacher, SMALL).config.num_labels == 2  # taken from the teacher's head
    with pytest.raises(ValueError, match="hidden_size must be an integer >= 1"):
        BiLSTMConfig(hidden_size=0)
    with pytest.raises(ValueError, match="lstm_dropout"):
        BiLSTMConfig(lstm_dropout=1.5)


def test_config_carries_the_teachers_labels(minilm):
    teacher, _ = minilm
    teacher.config.id2label, teacher.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    model = build_bilstm_student(teacher, "bilstm:L1-H8-E16", num_labels=2)
    assert model.config.id2label == {0: "negative", 1: "positive"} and model.config.vocab_size == 30522


def test_save_load_round_trip_and_auto_classes(tiny, tmp_path):
    teacher, tokenizer = tiny
    model = student(teacher, sentence_pair=True, num_labels=3)
    model.config.id2label, model.config.label2id = {0: "a", 1: "b", 2: "c"}, {"a": 0, "b": 1, "c": 2}
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    batch = tokenizer(FIRST, SECOND, padding=True, return_tensors="pt")
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, BiLSTMConfig) and config.sentence_pair and config.id2label[2] == "c"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, BiLSTMForSequenceClassification)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=0, atol=1e-6)
        encoder = AutoModel.from_pretrained(tmp_path).eval()
        assert isinstance(encoder, BiLSTMModel)
        torch.testing.assert_close(encoder(**batch).pooler_output, model.bilstm(**batch).pooler_output, rtol=0, atol=1e-6)

    # ckdlab's own loader, with and without a head
    backbone, backbone_tokenizer = load_backbone(tmp_path, num_labels=3)
    assert isinstance(backbone, BiLSTMForSequenceClassification) and backbone_tokenizer("a b")["input_ids"] == tokenizer("a b")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(backbone.eval()(**batch).logits, model(**batch).logits, rtol=0, atol=1e-6)
    assert isinstance(load_backbone(tmp_path)[0], BiLSTMModel)


def test_stage_one_encoder_becomes_a_pair_classifier(tiny, tmp_path):
    teacher, tokenizer = tiny
    encoder = student(teacher).bilstm  # what stage 1 trains
    encoder.save_pretrained(tmp_path)
    classifier = BiLSTMForSequenceClassification.from_pretrained(tmp_path, num_labels=3, sentence_pair=True)
    assert classifier.config.sentence_pair and classifier.config.num_labels == 3
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(classifier.bilstm.state_dict()[name], tensor), name
    assert classifier.classifier[-1].out_features == 3


@pytest.mark.skipif(find_local("glue_data/MRPC/train.tsv") is None, reason="needs the shared GLUE data")
def test_the_distiller_trains_a_pair_bilstm_with_logit_kd(tiny, tmp_path):
    from ckdlab.engine.config import TrainConfig
    from ckdlab.engine.distill import Distiller

    teacher, tokenizer = tiny
    model = build_student(teacher, SMALL, num_labels=2, sentence_pair=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, batch_size=8, eval_batch_size=16, lr=1e-3, max_steps=3, progress=False, log_every=1)
    distiller = Distiller(
        teacher, model, tokenizer, "mrpc", objective="ce+kd", config=config, out_dir=tmp_path / "run",
        train_dataset=load_task("mrpc", "train", limit=24), dev_datasets={"dev": load_task("mrpc", "dev", limit=16)},
    )
    summary = distiller.train()
    assert summary["steps"] == 3 and np.isfinite(summary["best_score"])
    trained = distiller.unwrapped_model()
    assert any(not torch.equal(before[k], v) for k, v in trained.state_dict().items())
    saved, _ = load_backbone(tmp_path / "run" / "best", num_labels=2)
    assert isinstance(saved, BiLSTMForSequenceClassification) and saved.config.sentence_pair
