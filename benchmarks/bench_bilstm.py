"""CPU cost of the default BiLSTM student against its teacher, measured side by side in one process.

Teacher: the offline ``minilm-l6`` (BERT 6 x 384) with a 2-label classification head. Student:
``build_student(teacher, "bilstm", num_labels=2)`` (2 layers x 150 units per direction, 300-wide
PCA embeddings, max+mean pooling, MLP classifier), the same student built for sentence pairs, and
(``--specs``, default ``bilstm:L2-H300``) other sizes, e.g. the 2 x 300 BiLSTM that was the first default.
Inputs are BERT encodings of random word pieces with every position valid: ``[CLS] w... [SEP]``
(single) or ``[CLS] a [SEP] b [SEP]`` with halves of equal length (pair).

- latency: one forward (no gradients, eval mode) of a batch of 1 at 64 tokens, 1 thread; the
  models run in alternation (teacher, student, pair student, teacher, ...) so that load drift on a
  shared machine hits all alike; median and 90th percentile of ``--repeats`` rounds;
- throughput: sentences per second for batches of 32 at 64 tokens, also alternated;
- parameters: total, embedding table(s), and the rest.

Target: the student's median latency at most 1/3 of the teacher's.

    python benchmarks/bench_bilstm.py
    python benchmarks/bench_bilstm.py --repeats 400 --tokens 128 --threads 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ckdlab.models import build_student, count_parameters, load_backbone  # noqa: E402


def bert_inputs(batch: int, tokens: int, pair: bool, vocab_size: int, cls_id: int, sep_id: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (batch, tokens), generator=generator)
    types = torch.zeros_like(ids)
    ids[:, 0], ids[:, -1] = cls_id, sep_id
    if pair:
        middle = tokens // 2
        ids[:, middle - 1] = sep_id
        types[:, middle:] = 1
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": types}


@torch.no_grad()
def alternate(models: dict[str, tuple[torch.nn.Module, dict]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per forward of each model, the models called in turn ``repeats`` times."""
    for _ in range(warmup):
        for model, inputs in models.values():
            model(**inputs)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, (model, inputs) in models.items():
            start = time.perf_counter()
            model(**inputs)
            times[name].append(time.perf_counter() - start)
    return times


def p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200, help="latency rounds (batch 1)")
    parser.add_argument("--throughput-batch", type=int, default=32)
    parser.add_argument("--throughput-repeats", type=int, default=20)
    parser.add_argument("--specs", default="bilstm:L2-H300", help="more student specs to line up (comma-separated), "
                        "e.g. bilstm:L2-H300,bilstm:L1-H300; '' for none")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    teacher, tokenizer = load_backbone("minilm-l6", num_labels=2)
    student = build_student(teacher, "bilstm", num_labels=2)
    pair_student = build_student(teacher, "bilstm", num_labels=2, sentence_pair=True)
    extra = {spec: build_student(teacher, spec, num_labels=2) for spec in filter(None, args.specs.split(","))}
    for model in (teacher, student, pair_student, *extra.values()):
        model.eval()
    make = dict(vocab_size=teacher.config.vocab_size, cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id)

    def lineup(batch: int) -> dict[str, tuple[torch.nn.Module, dict]]:
        single, pair = bert_inputs(batch, args.tokens, False, **make), bert_inputs(batch, args.tokens, True, **make)
        return {
            "teacher minilm-l6": (teacher, single),
            "BiLSTM student": (student, single),
            "BiLSTM student, pair": (pair_student, pair),
            **{spec: (model, single) for spec, model in extra.items()},
        }

    latency = alternate(lineup(1), args.repeats, warmup=10)
    batch = args.throughput_batch
    throughput = alternate(lineup(batch), args.throughput_repeats, warmup=2)

    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.tokens} tokens; latency: batch 1, "
          f"{args.repeats} alternated rounds; throughput: batch {batch}, {args.throughput_repeats} rounds\n")
    header = f"{'model':<24} {'median ms':>10} {'p90 ms':>8} {'x teacher':>10} {'sent/s @' + str(batch):>12} {'params':>12} {'embedding':>11} {'non-emb.':>11}"
    print(header)
    print("-" * len(header))
    teacher_median = statistics.median(latency["teacher minilm-l6"])
    for name, (model, _) in lineup(1).items():
        median = statistics.median(latency[name])
        rate = batch / statistics.median(throughput[name])
        counts = count_parameters(model)
        print(
            f"{name:<24} {1000 * median:>10.2f} {1000 * p90(latency[name]):>8.2f} {median / teacher_median:>10.3f} "
            f"{rate:>12.0f} {counts['total']:>12,} {counts['embedding']:>11,} {counts['non_embedding']:>11,}"
        )
    ratio = statistics.median(latency["BiLSTM student"]) / teacher_median
    verdict = "met" if ratio <= 1 / 3 else "NOT met"
    print(f"\nstudent / teacher median latency = {ratio:.3f} (target <= 0.333: {verdict})")


if __name__ == "__main__":
    main()
