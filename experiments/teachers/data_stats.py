"""Trivial baselines on the full dev sets and token-length distributions of the quick-profile tasks.

Baselines, computed from the data with the package's own metrics:
  * majority class: the most frequent TRAIN label predicted for every dev example (accuracy, and
    for MRPC also F1; MRPC's majority class is 'equivalent', so it coincides with all-positive);
  * CoLA: MCC of any constant prediction is 0 (the metric defines it so);
  * STS-B: Spearman of a constant is undefined (NaN); we use 0 as the trivial level and, as a
    stronger reference, the Spearman of a no-training lexical score (token-set Jaccard overlap).
Token lengths use the minilm-l6 WordPiece tokenizer with the task's text fields as one example
([CLS] a [SEP] b [SEP]), without truncation.

    python experiments/teachers/data_stats.py  > experiments/teachers/logs/data_stats.txt
"""
from __future__ import annotations

import numpy as np

from ckdlab.data import compute_metrics, get_task, load_task
from ckdlab.data.xnli import load_mnli_english_train
from ckdlab.models.backbones import load_tokenizer

TASKS = ("sst2", "mrpc", "rte", "cola", "stsb")
PERCENTILES = (50, 90, 95, 99, 100)


def token_lengths(dataset, fields, tokenizer) -> np.ndarray:
    texts = [list(dataset[field]) for field in fields]
    encoded = tokenizer(*texts, truncation=False)
    return np.array([len(ids) for ids in encoded["input_ids"]])


def jaccard(a: str, b: str, tokenizer) -> float:
    left, right = set(tokenizer.tokenize(a)), set(tokenizer.tokenize(b))
    return len(left & right) / max(1, len(left | right))


def main() -> None:
    tokenizer = load_tokenizer("minilm-l6")
    for name in TASKS:
        spec = get_task(name)
        train, dev = load_task(name, "train"), load_task(name, "dev")
        dev_labels = np.asarray(dev["label"])
        print(f"== {name}: train {len(train)}, dev {len(dev)}")
        if spec.is_regression:
            overlap = np.array([jaccard(a, b, tokenizer) for a, b in zip(dev["sentence1"], dev["sentence2"])])
            lexical = compute_metrics(spec, overlap, dev_labels)
            print(f"   constant prediction: spearman undefined (NaN) -> trivial level 0")
            print(f"   lexical Jaccard overlap (no training): pearson {lexical['pearson']:.3f} spearman {lexical['spearman']:.3f}")
        else:
            train_counts = np.bincount(np.asarray(train["label"]), minlength=spec.num_labels)
            dev_counts = np.bincount(dev_labels, minlength=spec.num_labels)
            majority = int(np.argmax(train_counts))
            constant = np.full(len(dev), majority)
            logits = np.eye(spec.num_labels)[constant]
            metrics = compute_metrics(spec, logits, dev_labels)
            print(f"   train label counts {dict(zip(spec.label_names, train_counts.tolist()))}")
            print(f"   dev   label counts {dict(zip(spec.label_names, dev_counts.tolist()))}")
            print(f"   predict train-majority '{spec.label_names[majority]}' on dev: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            print(f"   dev-majority accuracy {dev_counts.max() / dev_counts.sum():.4f}")
        for split, ds in (("train", train), ("dev", dev)):
            lengths = token_lengths(ds, spec.text_fields, tokenizer)
            pct = np.percentile(lengths, PERCENTILES)
            over = {m: float(np.mean(lengths > m)) for m in (64, 96, 128)}
            print(f"   {split:5s} tokens p50/p90/p95/p99/max = {'/'.join(str(int(p)) for p in pct)}; "
                  f"share > 64/96/128: {over[64]:.3f}/{over[96]:.3f}/{over[128]:.3f}; mean {lengths.mean():.1f}")
    mnli = load_mnli_english_train()
    spec = get_task("mnli")
    lengths = token_lengths(mnli, spec.text_fields, tokenizer)
    pct = np.percentile(lengths, PERCENTILES)
    print(f"== mnli 9k sample: {len(mnli)} pairs, labels {np.bincount(mnli['label']).tolist()}")
    print(f"   tokens p50/p90/p95/p99/max = {'/'.join(str(int(p)) for p in pct)}; share > 64/128: "
          f"{np.mean(lengths > 64):.3f}/{np.mean(lengths > 128):.3f}; mean {lengths.mean():.1f}")


if __name__ == "__main__":
    main()
