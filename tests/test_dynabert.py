"""DynaBERT: depth rule, width counts, importance against finite differences, exact rewiring,
sliced sub-networks equal to masked ones, the summed multi-width loss."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from ckdlab.models import dynabert as D
from ckdlab.objectives.dynabert import hidden_mse, soft_cross_entropy
from ckdlab.studies.dynabert import DynaBERTDistiller


@pytest.fixture(autouse=True)
def _one_thread():
    # Two threads on a loaded 2-core machine make tiny ops ~40x slower (spin-waiting).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_model(layers: int = 4, heads: int = 4, hidden: int = 16, ffn: int = 12, labels: int = 3, seed: int = 0):
    config = BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=ffn, num_labels=labels, max_position_embeddings=32,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).double().eval()


def tiny_batch(seed: int = 1, labels: int = 3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, labels, (3,), generator=g)}


def test_depth_rule_matches_dynabert():
    assert D.kept_layers(12, 0.5) == [0, 2, 4, 6, 8, 10]
    assert D.kept_layers(12, 0.75) == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    assert D.kept_layers(12, 1.0) == list(range(12))
    assert D.kept_layers(6, 0.5) == [0, 2, 4]
    assert D.depth_layer_map(12, 0.5) == [(0, 0), (2, 1), (4, 2), (6, 3), (8, 4), (10, 5), (12, 6)]
    assert D.depth_layer_map(4, 1.0) == [(k, k) for k in range(5)]
    for bad in (0, 1.5, -0.5, True):
        with pytest.raises(ValueError, match="depth"):
            D.kept_layers(12, bad)


def test_width_counts():
    assert [D.kept_count(12, w) for w in D.WIDTHS] == [3, 6, 9, 12]
    assert [D.kept_count(3072, w) for w in D.WIDTHS] == [768, 1536, 2304, 3072]
    assert D.kept_count(2, 0.25) == 1  # never zero heads
    with pytest.raises(ValueError, match="width"):
        D.kept_count(12, 0.0)


def _loss_with_scaled_head(model, batch, layer, head, scale):
    """Reference: scaling head h's value rows by s scales its context vector by s exactly."""
    model = copy.deepcopy(model)
    size = model.config.hidden_size // model.config.num_attention_heads
    value = model.bert.encoder.layer[layer].attention.self.value
    with torch.no_grad():
        value.weight[head * size:(head + 1) * size] *= scale
        value.bias[head * size:(head + 1) * size] *= scale
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(logits, batch["labels"]).item()


def _loss_with_scaled_neuron(model, batch, layer, neuron, scale):
    """Reference: scaling column n of output.dense scales neuron n's contribution by s exactly."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.bert.encoder.layer[layer].output.dense.weight[:, neuron] *= scale
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(logits, batch["labels"]).item()


def test_importance_matches_finite_differences():
    model = tiny_model(layers=2, heads=2, hidden=8, ffn=6)
    batches = [tiny_batch(1), tiny_batch(2)]
    heads, neurons = D.compute_importance(model, batches)
    eps = 1e-5
    for layer in range(2):
        for head in range(2):
            grad = sum((_loss_with_scaled_head(model, b, layer, head, 1 + eps) - _loss_with_scaled_head(model, b, layer, head, 1 - eps)) / (2 * eps)
                       for b in batches)
            assert heads[layer, head].item() == pytest.approx(abs(grad), rel=1e-4, abs=1e-9)
        for neuron in (0, 3, 5):
            grad = sum((_loss_with_scaled_neuron(model, b, layer, neuron, 1 + eps) - _loss_with_scaled_neuron(model, b, layer, neuron, 1 - eps)) / (2 * eps)
                       for b in batches)
            assert neurons[layer, neuron].item() == pytest.approx(abs(grad), rel=1e-4, abs=1e-9)
    per_batch, _ = D.compute_importance(model, batches, absolute="per_batch")
    singles = [D.compute_importance(model, [b])[0] for b in batches]
    torch.testing.assert_close(per_batch, singles[0] + singles[1])
    with pytest.raises(ValueError, match="absolute"):
        D.compute_importance(model, batches, absolute="max")


def test_rewire_keeps_the_function_and_sorts_importance():
    model = tiny_model()
    batch = tiny_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    before = model(**inputs, output_hidden_states=True)
    heads, neurons = D.compute_importance(model, [batch])
    D.rewire(model, heads, neurons)
    after = model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(after.logits, before.logits, rtol=0, atol=1e-12)
    for a, b in zip(after.hidden_states, before.hidden_states):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # Permuting heads permutes their importance: the rewired model's importance is sorted.
    heads2, neurons2 = D.compute_importance(model, [batch])
    torch.testing.assert_close(heads2, torch.sort(heads, dim=-1, descending=True).values, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(neurons2, torch.sort(neurons, dim=-1, descending=True).values, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="importance shapes"):
        D.rewire(model, heads[:, :2], neurons)


@pytest.mark.parametrize("width,depth", [(0.25, 0.5), (0.5, 0.75), (0.75, 1.0), (1.0, 0.5), (1.0, 1.0)])
def test_sliced_subnetwork_equals_masked_one(width, depth):
    model = tiny_model()
    batch = tiny_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with D.subnetwork(model, width, depth):
        masked = model(**inputs, output_hidden_states=True)
    sub = D.extract_subnetwork(model, width, depth)
    sliced = sub(**inputs, output_hidden_states=True)
    kept = D.kept_layers(4, depth)
    assert len(sub.bert.encoder.layer) == len(kept) == len(sliced.hidden_states) - 1 == len(masked.hidden_states) - 1
    heads, ffn = D.kept_count(4, width), D.kept_count(12, width)
    for layer in sub.bert.encoder.layer:
        assert layer.attention.self.query.weight.shape == (heads * 4, 16)
        assert layer.attention.output.dense.weight.shape == (16, heads * 4)
        assert layer.intermediate.dense.weight.shape == (ffn, 16)
        assert layer.output.dense.weight.shape == (16, ffn)
    torch.testing.assert_close(sliced.logits, masked.logits, rtol=0, atol=1e-12)
    # The full model is back to normal after the block.
    assert len(model(**inputs, output_hidden_states=True).hidden_states) == 5


def test_masked_subnetwork_is_the_reference_computation():
    """Width 0.5 by hand: zero the dropped heads' value rows and the dropped neurons' output columns."""
    model = tiny_model()
    batch = tiny_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for layer in reference.bert.encoder.layer:
            layer.attention.self.value.weight[8:] = 0
            layer.attention.self.value.bias[8:] = 0
            layer.output.dense.weight[:, 6:] = 0
    with D.subnetwork(model, 0.5, 1.0):
        out = model(**inputs).logits
    torch.testing.assert_close(out, reference(**inputs).logits, rtol=0, atol=1e-12)


def test_losses_against_loops():
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    expected = 0.0
    for b in range(4):
        pt = torch.softmax(zt[b], 0)
        expected -= sum(pt[c] * torch.log_softmax(zs[b], 0)[c] for c in range(3)) / 4
    assert soft_cross_entropy(zs, zt).item() == pytest.approx(float(expected), rel=1e-6)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    s = [torch.randn(2, 3, 5, generator=g) for _ in range(2)]
    t = [torch.randn(2, 3, 5, generator=g) for _ in range(2)]
    expected = 0.0
    for sj, tj in zip(s, t):
        cells = [(b, i) for b in range(2) for i in range(3) if mask[b, i]]
        expected += sum(((sj[b, i] - tj[b, i]) ** 2).sum() for b, i in cells) / (len(cells) * 5)
    assert hidden_mse(s, t, mask).item() == pytest.approx(float(expected), rel=1e-6)


def _distiller(loss, widths, depths):
    from datasets import Dataset

    from ckdlab.engine import TrainConfig
    from ckdlab.models import load_tokenizer

    tokenizer = load_tokenizer("tiny-random")
    teacher = BertForSequenceClassification(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=3,
                                                       num_attention_heads=4, intermediate_size=12, num_labels=2))
    student = copy.deepcopy(teacher)
    train = Dataset.from_dict({"sentence": ["a b c", "d e f g h"], "label": [0, 1]})
    return DynaBERTDistiller(teacher.eval(), student, tokenizer, "sst2", loss=loss, widths=widths, depths=depths,
                               config=TrainConfig(progress=False, max_steps=1), train_dataset=train,
                               dev_datasets={"dev": train}, cache_teacher=False), tokenizer


@pytest.mark.parametrize("loss", ["dynabert", "ckd+kd"])
def test_step_loss_is_the_sum_over_subnetworks(loss):
    distiller, tokenizer = _distiller(loss, (1.0, 0.5), (1.0, 0.5))
    encoded = tokenizer(["a b c", "d e f g h"], padding=True, return_tensors="pt")
    batch = {**encoded, "labels": torch.tensor([0, 1])}
    distiller.model.eval()  # no dropout, so separate forwards are comparable
    total = distiller.compute_terms(batch)
    parts = []
    for w in (1.0, 0.5):
        for d in (1.0, 0.5):
            distiller.widths, distiller.depths = [w], [d]
            parts.append(distiller.compute_terms(batch))
    assert set(total) == set().union(*parts)
    for name, value in total.items():
        torch.testing.assert_close(value, sum(p[name] for p in parts if name in p), rtol=1e-5, atol=1e-7)
    expected = {"dyna_logit", "dyna_hidden"} if loss == "dynabert" else {"kd", "wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet"}
    assert set(total) == expected


def test_bad_options():
    with pytest.raises(ValueError, match="loss="):
        _distiller("mse", (1.0,), (1.0,))
    with pytest.raises(ValueError, match="head_mask"):
        with D.masked(tiny_model(), head_mask=torch.ones(2, 2)):
            pass
