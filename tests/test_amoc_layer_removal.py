"""AMoC candidates: layer removal against a by-hand forward pass, candidate sets, the freezing rule."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification
from transformers.masking_utils import create_bidirectional_mask

from ckdlab.models import load_backbone, load_tokenizer
from ckdlab.models.backbones import tiny_random_config
from ckdlab.models.layer_removal import (
    candidate_sets,
    default_max_removed,
    evenly_spaced_layers,
    freeze_for_candidate,
    remove_layers,
    top_layers,
)

SENTENCES = ["a gripping, funny and moving film", "dull."]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random")


@pytest.fixture(scope="module")
def tiny():
    model, _ = load_backbone("tiny-random", num_labels=2)
    return model.eval()


@pytest.fixture
def six_layer(tokenizer):
    """tiny-random's width with six layers, so that sets of 1..3 removed layers exist."""
    config = tiny_random_config(len(tokenizer))
    config.num_hidden_layers, config.num_labels = 6, 3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = BertForSequenceClassification(config)
    return model.eval()


def encode(tokenizer):
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def by_hand(model, kept, inputs):
    """Logits with only the layers ``kept`` applied, using the model's own modules one at a time."""
    base = model.bert
    hidden = base.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"])
    mask = create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=inputs["attention_mask"])
    for index in kept:
        hidden = base.encoder.layer[index](hidden, mask)
    return model.classifier(model.dropout(base.pooler(hidden))), hidden


# --------------------------------------------------------------------------- remove_layers


def test_removing_nothing_gives_identical_logits(tiny, tokenizer):
    inputs = encode(tokenizer)
    copy = remove_layers(tiny, [])
    with torch.no_grad():
        assert torch.equal(copy(**inputs).logits, tiny(**inputs).logits)
    assert copy is not tiny and copy.config.num_hidden_layers == 2
    assert copy.config.kept_layers == [0, 1] and copy.config.removed_layers == []


@pytest.mark.parametrize("removed", [(0,), (5,), (2, 3), (0, 2, 4), (1, 4, 5)])
def test_removal_equals_running_the_kept_layers_by_hand(six_layer, tokenizer, removed):
    model = six_layer.double()
    inputs = encode(tokenizer)
    kept = [i for i in range(6) if i not in removed]
    reduced = remove_layers(model, removed)
    with torch.no_grad():
        expected_logits, expected_hidden = by_hand(model, kept, inputs)
        out = reduced(**inputs, output_hidden_states=True)
    torch.testing.assert_close(out.hidden_states[-1], expected_hidden, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.logits, expected_logits, rtol=0, atol=1e-12)
    assert reduced.config.num_hidden_layers == len(kept) == len(reduced.bert.encoder.layer)
    # The original model is untouched.
    assert len(model.bert.encoder.layer) == 6 and model.config.num_hidden_layers == 6


def test_removal_gradients_match_the_by_hand_pass(six_layer, tokenizer):
    model = six_layer.double()
    inputs = encode(tokenizer)
    removed, kept = (1, 2), [0, 3, 4, 5]
    reduced = remove_layers(model, removed)
    reduced(**inputs).logits.square().sum().backward()
    by_hand(model, kept, inputs)[0].square().sum().backward()
    for position, original in enumerate(kept):
        ours = dict(reduced.bert.encoder.layer[position].named_parameters())
        for name, parameter in model.bert.encoder.layer[original].named_parameters():
            torch.testing.assert_close(ours[name].grad, parameter.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(reduced.bert.embeddings.word_embeddings.weight.grad,
                               model.bert.embeddings.word_embeddings.weight.grad, rtol=0, atol=1e-12)


def test_reduced_model_is_a_plain_bert_that_round_trips(six_layer, tokenizer, tmp_path):
    model = six_layer
    reduced = remove_layers(model, (1, 4))
    assert type(reduced) is BertForSequenceClassification
    assert reduced.config.kept_layers == [0, 2, 3, 5]
    assert reduced.config.removed_layers == [1, 4]
    assert reduced.config.original_num_hidden_layers == 6
    assert [layer.attention.self.layer_idx for layer in reduced.bert.encoder.layer] == [0, 1, 2, 3]
    reduced.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is BertForSequenceClassification
    assert loaded.config.num_hidden_layers == 4 and loaded.config.kept_layers == [0, 2, 3, 5]
    inputs = encode(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, reduced.eval()(**inputs).logits, rtol=0, atol=0)


def test_removal_composes_in_original_numbering(six_layer, tokenizer):
    model = six_layer
    once = remove_layers(remove_layers(model, [4]), [0, 3])  # positions 0 and 3 of [0,1,2,3,5] = layers 0 and 3
    assert once.config.kept_layers == [1, 2, 5] and once.config.removed_layers == [0, 3, 4]
    assert once.config.original_num_hidden_layers == 6
    direct = remove_layers(model, [0, 3, 4])
    inputs = encode(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(once(**inputs).logits, direct(**inputs).logits, rtol=0, atol=0)


def test_remove_layers_rejects_bad_requests(six_layer):
    with pytest.raises(ValueError, match="keep at least one"):
        remove_layers(six_layer, range(6))
    with pytest.raises(ValueError, match="out of range 0..5"):
        remove_layers(six_layer, [6])
    with pytest.raises(ValueError, match="once"):
        remove_layers(six_layer, [1, 1])
    with pytest.raises(ValueError, match="integer"):
        remove_layers(six_layer, [1.0])
    with pytest.raises(ValueError, match="BERT-style"):
        remove_layers(torch.nn.Linear(2, 2), [0])


# --------------------------------------------------------------------------- candidate sets


def test_candidate_set_counts():
    sets = candidate_sets(6, 3)
    assert len(sets) == math.comb(6, 1) + math.comb(6, 2) + math.comb(6, 3) == 41
    assert sets == sorted(set(sets), key=lambda s: (len(s), s))
    assert sets[:6] == [(i,) for i in range(6)] and sets[-1] == (3, 4, 5)
    assert len(candidate_sets(12, 2)) == 12 + 66 == 78
    assert len(candidate_sets(2, 1)) == 2
    assert default_max_removed(6) == 3 and default_max_removed(12) == 2 and default_max_removed(2) == 1


def test_sampled_candidate_sets_keep_the_baselines_and_every_size():
    sample = candidate_sets(12, 3, limit=30, seed=3)
    assert len(sample) == len(set(sample)) == 30
    everything = set(candidate_sets(12, 3))
    assert set(sample) <= everything
    for k in (1, 2, 3):
        assert top_layers(12, k) in sample and evenly_spaced_layers(12, k) in sample
        assert sum(len(s) == k for s in sample) == 10  # the budget is spread evenly over sizes
    assert candidate_sets(12, 3, limit=30, seed=3) == sample
    assert candidate_sets(12, 3, limit=30, seed=4) != sample
    assert candidate_sets(12, 3, limit=10_000) == sorted(everything, key=lambda s: (len(s), s))
    with pytest.raises(ValueError, match="baseline sets"):
        candidate_sets(12, 3, limit=5)
    with pytest.raises(ValueError, match="remove between 1 and 5"):
        candidate_sets(6, 6)


def test_baseline_layer_sets():
    assert top_layers(6, 2) == (4, 5) and top_layers(12, 3) == (9, 10, 11)
    assert evenly_spaced_layers(6, 1) == (2,)
    assert evenly_spaced_layers(6, 2) == (1, 4)
    assert evenly_spaced_layers(6, 3) == (0, 2, 4)
    assert evenly_spaced_layers(12, 2) == (2, 8)
    assert evenly_spaced_layers(12, 6) == (0, 2, 4, 6, 8, 10)  # the authors' "every other layer"
    for n, k in itertools.product(range(2, 13), range(1, 12)):
        if k < n:
            layers = evenly_spaced_layers(n, k)
            assert len(set(layers)) == k and all(0 <= i < n for i in layers)


# --------------------------------------------------------------------------- freezing


def trainable_blocks(names):
    blocks = set()
    for name in names:
        parts = name.split(".")
        blocks.add(".".join(parts[:4]) if name.startswith("bert.encoder.layer.") else ".".join(parts[:2]))
    return blocks


HEAD = {"bert.pooler", "classifier.weight", "classifier.bias"}


@pytest.mark.parametrize(
    "removed, expected",
    [
        ((0,), {"bert.embeddings"}),                       # below layer 0: the embeddings
        ((2,), {"bert.encoder.layer.1"}),                  # original layer 1, still position 1
        ((2, 3), {"bert.encoder.layer.1"}),                # a run unfreezes only the layer below it
        ((5,), {"bert.encoder.layer.4"}),
        ((0, 1, 4), {"bert.embeddings", "bert.encoder.layer.1"}),  # kept [2, 3, 5]: layer 3 is position 1
        ((1, 3, 5), {"bert.encoder.layer.0", "bert.encoder.layer.1", "bert.encoder.layer.2"}),
    ],
)
def test_freeze_for_candidate(six_layer, removed, expected):
    reduced = remove_layers(six_layer, removed)
    names = freeze_for_candidate(reduced, removed)
    assert trainable_blocks(names) == expected | HEAD
    assert names == [n for n, p in reduced.named_parameters() if p.requires_grad]
    frozen = [n for n, p in reduced.named_parameters() if not p.requires_grad]
    assert frozen and not set(frozen) & set(names)
    assert all(p.requires_grad for p in six_layer.parameters())  # only the copy was touched


def test_freeze_for_a_plain_reduced_bert_and_bad_requests(tokenizer, six_layer):
    config = tiny_random_config(len(tokenizer))
    config.num_hidden_layers = 4
    plain = BertForSequenceClassification(config)  # no record of removal: kept = [0, 2, 4, 5] of 6
    names = freeze_for_candidate(plain, (1, 3))
    assert trainable_blocks(names) == {"bert.encoder.layer.0", "bert.encoder.layer.1"} | HEAD
    reduced = remove_layers(six_layer, (2,))
    with pytest.raises(ValueError, match="does not match"):
        freeze_for_candidate(reduced, (3,))
    six_layer.config.kept_layers, six_layer.config.removed_layers = [0, 1, 3, 4, 5], [2]
    with pytest.raises(ValueError, match="REDUCED model"):  # the full model passed with a candidate's record
        freeze_for_candidate(six_layer, (2,))
