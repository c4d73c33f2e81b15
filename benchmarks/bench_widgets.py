"""Benchmark of the notebook panels on CPU.

1. Relation explorer: redraw latency for a 64-token sentence (target: < 1 s), for
   * a slider move (the sentence's hidden states are cached: relation + figure + PNG), and
   * a new sentence (the model runs too),
   with one model and in comparison mode (reference | model | difference), per relation kind.
2. Live distillation panel: time per distillation step without the panel (``trainer.step()``)
   and with it (``panel.run_steps``: the same step plus the figure refresh every N steps),
   side by side. Both runs use identically built distillers; set-up and one warm-up step are
   excluded.

Default models: the offline MiniLM-L6 (6 x 384) as teacher and a fresh 4 x 256 student, as in the
quick profile (the teacher is not fine-tuned here: speed does not depend on it). ``--quick`` uses
tiny-random for a fast smoke check. Times are medians of ``--reps`` repetitions.

Usage: python benchmarks/bench_widgets.py [--quick] [--reps 5] [--steps 10] [--refresh-every 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from ckdlab.data import load_task  # noqa: E402
from ckdlab.engine import TrainConfig  # noqa: E402
from ckdlab.engine.distill import Distiller  # noqa: E402
from ckdlab.models import build_student, load_backbone  # noqa: E402
from ckdlab.widgets import LiveDistillationPanel, RelationExplorer  # noqa: E402

WORDS = (
    "the film opens with a long , quiet shot of an unremarkable town , and for a while nothing much happens ; "
    "then the story turns , the characters reveal unexpected depths and the ending lands with real force ."
).split()


def sentence_of(tokenizer, n_tokens: int) -> str:
    """A sentence that tokenises to exactly ``n_tokens`` tokens ([CLS] and [SEP] included)."""
    words: list[str] = []
    while len(tokenizer(" ".join(words))["input_ids"]) < n_tokens:
        words.append(WORDS[len(words) % len(WORDS)])
    while len(tokenizer(" ".join(words))["input_ids"]) > n_tokens:
        words.pop()
    text = " ".join(words)
    if len(tokenizer(text)["input_ids"]) != n_tokens:
        raise RuntimeError(f"could not build a {n_tokens}-token sentence")
    return text


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def bench_explorer(teacher, student, tokenizer, length: int, reps: int) -> list[tuple[str, str, float, float]]:
    base = sentence_of(tokenizer, length)
    shorter = sentence_of(tokenizer, length - 1)
    # one single-token word in front: new sentences of the same length
    variants = [f"{word} {shorter}" for word in ("good", "bad", "new", "old", "big", "small", "long", "short", "fine", "odd") * reps]
    explorer = RelationExplorer({"teacher": (teacher, tokenizer), "student": (student, tokenizer)}, sentence=base, max_length=length)
    assert explorer.state()["matrix_shape"] == (length, length)
    rows = []
    for mode in ("single", "compare"):
        explorer.model.value = "student"
        explorer.reference.value = "teacher" if mode == "compare" else "(none)"
        for kind in ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet"):
            explorer.relation.value = kind
            choices = explorer.state()["layer_choices"]
            moves = []
            for k in range(reps):
                if kind == "ltr_pair":  # no layer slider: move the token instead
                    explorer.token.value = 1 + k % (length - 2)
                else:
                    target = choices[k % len(choices)]
                    explorer.layer.value = target if target != explorer.layer.value else choices[(k + 1) % len(choices)]
                moves.append(explorer.last_redraw_s)
            sentences = []
            for k in range(reps):
                explorer.text.value = variants.pop()
                sentences.append(explorer.last_redraw_s)
            state = explorer.state()
            if state["error"] or state["matrix_shape"][0] != (length if kind.startswith("wr") else len(choices)):
                raise RuntimeError(f"unexpected explorer state: {state}")
            rows.append((mode, kind, median_ms(moves), median_ms(sentences)))
    return rows


def make_distiller(teacher, tokenizer, spec: str, train, dev, max_length: int, batch_size: int) -> Distiller:
    student = build_student(teacher, spec, num_labels=2, seed=0)
    config = TrainConfig(epochs=1, batch_size=batch_size, eval_batch_size=64, lr=1e-4, max_length=max_length, log_every=10**6,
                         progress=False, max_steps=1000)
    return Distiller(teacher, student, tokenizer, "sst2", objective="ckd+kd", temperature=2.0, config=config,
                     train_dataset=train, dev_datasets=dev)


def bench_live(teacher, tokenizer, spec: str, steps: int, refresh_every: int, max_length: int, batch_size: int):
    train = load_task("sst2", "train", limit=batch_size * (steps + 2))
    dev = {"dev": load_task("sst2", "dev", limit=16)}
    bare = make_distiller(teacher, tokenizer, spec, train, dev, max_length, batch_size)
    bare.setup()
    bare.step()  # warm-up
    bare_times = []
    for _ in range(steps):
        start = time.perf_counter()
        bare.step()
        bare_times.append(time.perf_counter() - start)

    live = make_distiller(teacher, tokenizer, spec, train, dev, max_length, batch_size)
    live.setup()
    panel = LiveDistillationPanel(live, refresh_every=refresh_every)
    panel.run_steps(1)  # warm-up
    panel.step_seconds.clear()
    panel.refresh_seconds.clear()
    start = time.perf_counter()
    panel.run_steps(steps)
    with_panel = (time.perf_counter() - start) / steps
    return {
        "bare_ms": median_ms(bare_times),
        "panel_step_ms": median_ms(panel.step_seconds),
        "refresh_ms": median_ms(panel.refresh_seconds),
        "refreshes": len(panel.refresh_seconds),
        "panel_per_step_ms": 1000 * with_panel,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny-random models (seconds), instead of MiniLM-L6")
    parser.add_argument("--length", type=int, default=64, help="sentence length in tokens for the explorer")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="distillation steps timed with and without the panel")
    parser.add_argument("--refresh-every", type=int, default=5, help="as in notebook 02")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine, 2 threads that wait on each other "
                             "at every OpenMP barrier made a MiniLM forward 25x slower)")
    args = parser.parse_args()
    if args.steps < args.refresh_every:
        parser.error("--steps must be at least --refresh-every, so that the panel refreshes during the timed steps")
    torch.set_num_threads(args.threads)

    name, spec = ("tiny-random", "config:L2-H32-A2-I64") if args.quick else ("minilm-l6", "config:L4-H256-A4-I1024")
    teacher, tokenizer = load_backbone(name, num_labels=2)
    student = build_student(teacher, spec, num_labels=2, seed=0)
    print(f"teacher {name}, student {spec}, torch threads {torch.get_num_threads()}, CPU")

    print(f"\nRelation explorer, {args.length}-token sentence (median of {args.reps}; target < 1000 ms)")
    print(f"{'mode':<8} {'relation':<12} {'slider move ms':>15} {'new sentence ms':>16}")
    for mode, kind, move, new in bench_explorer(teacher, student, tokenizer, args.length, args.reps):
        print(f"{mode:<8} {kind:<12} {move:>15.0f} {new:>16.0f}")

    result = bench_live(teacher, tokenizer, spec, args.steps, args.refresh_every, max_length=64, batch_size=args.batch_size)
    print(f"\nLive panel, CKD + KD, batch {args.batch_size} x 64 tokens, refresh every {args.refresh_every} steps "
          f"({args.steps} timed steps)")
    print(f"{'':<34} {'ms / step':>10}")
    print(f"{'trainer.step() alone':<34} {result['bare_ms']:>10.0f}")
    print(f"{'trainer.step() inside the panel':<34} {result['panel_step_ms']:>10.0f}")
    print(f"{'panel, refresh included (mean)':<34} {result['panel_per_step_ms']:>10.0f}")
    print(f"{'one refresh (curves + probe map)':<34} {result['refresh_ms']:>10.0f}   ({result['refreshes']} refreshes)")
    # The step itself is the same code with and without the panel, so on a shared machine the
    # difference of the two measured step times is mostly noise; the refresh is the real cost.
    overhead = result["refresh_ms"] / args.refresh_every
    print(f"panel overhead per step (refresh / {args.refresh_every}): {overhead:.0f} ms "
          f"= {100 * overhead / result['bare_ms']:.1f} % of a bare step")


if __name__ == "__main__":
    main()
