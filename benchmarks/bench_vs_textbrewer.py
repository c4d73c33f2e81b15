"""ckdlab's distillation step against TextBrewer's, side by side, and the teacher in bf16/int8.

Throughput (default mode). One group of runs per configuration; every run lives in its own child
process (so its peak RSS is its own) and the parent interleaves them round by round
(A B C A B C ...), so drift in machine load hits all alike. Every run sees the same teacher, the
same student (built once, saved, loaded by each), the same batches (SST-2, batch 32, max length
64, one fixed sequence drawn once by ckdlab's loader), AdamW with the same settings, the same
linear schedule and gradient clipping, and the teacher forward on every step unless ckdlab's
teacher cache is on (its build pass is timed separately). Per run: samples/s per CPU-second of
its process (the robust figure on a shared machine), samples/s of wall time, median and spread
(min-max) over rounds, peak RSS.

Groups:
  kd   TextBrewer KD | ckdlab kd | ckdlab kd, cache | ckdlab ckd+kd
  mse  TextBrewer KD + hidden_mse | ckdlab tinybert+kd with only tinybert_hidden on (masked MSE of
       the mapped hidden states, a learned projection when widths differ: TextBrewer's
       hidden_mse with ``proj``) | the same with the cache
TextBrewer runs through its own ``GeneralDistiller.train``; the only shims (here, never in the
package): batches drop ckdlab's ``row`` column, and its end-of-run checkpoint write is skipped
(ckdlab's rounds write none either).

    python benchmarks/bench_vs_textbrewer.py --teacher RUN/best --rounds 3 --steps 8
    python benchmarks/bench_vs_textbrewer.py --teacher RUN/best --students 3x384 --groups kd
    python benchmarks/bench_vs_textbrewer.py --teacher RUN/best --precision     # bf16/int8 fidelity

``--precision``: the teacher's logits and hidden states on the SST-2 dev set in bf16 and int8
against float32 (max and mean absolute difference, argmax agreement, dev accuracy) and the time
of its forward pass per batch, interleaved.
"""
from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

STUDENTS = {"3x384": ("layers:0,2,4", "bert", [(2, 1), (4, 2), (6, 3)]),
            "4x256": ("config:L4-H256-A4-I1024", "slice", [(2, 1), (3, 2), (5, 3), (6, 4)])}
TRAIN = dict(batch_size=32, max_length=64, lr=5e-5, weight_decay=0.01, warmup_ratio=0.1, max_grad_norm=1.0,
             group_by_length=False, progress=False, log_every=10**9, eval_batch_size=64, dev_limit=8)
TEMPERATURE = 4.0
GROUPS = {"kd": [("textbrewer", "kd", False), ("ckdlab", "kd", False), ("ckdlab", "kd", True),
                 ("ckdlab", "ckd+kd", False)],
          "mse": [("textbrewer", "mse", False), ("ckdlab", "mse", False), ("ckdlab", "mse", True)],
          # ckdlab's teacher in bf16 (--teacher-precision bf16; fast where the CPU has AMX/AVX512-BF16)
          "bf16": [("textbrewer", "kd", False), ("ckdlab", "kd", False), ("ckdlab", "kd@bf16", False),
                   ("ckdlab", "mse@bf16", False)]}


def make(teacher: str, student: str, objective: str, cache: bool, examples: int, layer_map, precision: str = "fp32"):
    """A ckdlab distiller at the benchmark's settings (``objective`` 'mse' = tinybert+kd, hidden only)."""
    from ckdlab.studies.distillation import make_distiller

    spec, init, _ = STUDENTS[student]
    weights = None
    name = objective
    if objective == "mse":
        name, weights = "tinybert+kd", {"kd": 1.0, "tinybert_hidden": 1.0, "tinybert_attn": 0.0, "tinybert_emb": 0.0}
        # (0, 0) adds no term (TinyBERT ignores it) but keeps the teacher's embedding output in the
        # cache: TinyBERT checks widths on hidden state 0 even with its embedding term at weight 0.
        layer_map = [(0, 0), *layer_map]
    elif objective == "kd":
        layer_map = None
    return make_distiller("sst2", student=spec, objective=name, weights=weights, teacher=teacher, profile="quick",
                          temperature=TEMPERATURE, layer_map=layer_map,
                          student_init=init, cache_teacher=cache, teacher_precision=precision,
                          train_limit=examples, seed=0, **TRAIN)


def prepare(args, student: str, folder: Path) -> tuple[Path, Path]:
    """Draw the batch sequence and build the student once; saved for every run of the group."""
    distiller = make(args.teacher, student, "kd", False, args.steps * 32, None)
    distiller.setup()
    batches = [{k: v.clone() for k, v in distiller._next_batch().items()} for _ in range(args.steps)]
    torch.save(batches, folder / "batches.pt")
    torch.save(distiller.unwrapped_model().state_dict(), folder / "student.pt")
    return folder / "batches.pt", folder / "student.pt"


# ------------------------------------------------------------------------------------- runners
class CkdlabRun:
    def __init__(self, args, student: str, objective: str, cache: bool, batches, state) -> None:
        objective, _, precision = objective.partition("@")
        self.distiller = make(args.teacher, student, objective, cache, args.steps * 32, STUDENTS[student][2],
                              precision or "fp32")
        self.distiller.unwrapped_model().load_state_dict(state)
        # The schedule spans every round; all runs of a group are stepped over the same batches.
        self.distiller.config = self.distiller.config.replace(max_steps=args.steps * args.rounds)
        start = time.perf_counter()
        self.distiller.setup()
        self.setup_s = time.perf_counter() - start
        self.batches = batches
        self.distiller._next_batch = self._next

    def _next(self):
        return self.batches[self._i]

    def round(self) -> None:
        for self._i in range(len(self.batches)):
            self.distiller.step()


class TextBrewerRun:
    def __init__(self, args, student: str, objective: str, cache: bool, batches, state) -> None:
        from textbrewer import DistillationConfig, GeneralDistiller, TrainingConfig
        from transformers import AutoModelForSequenceClassification, get_linear_schedule_with_warmup

        from ckdlab.data import get_task
        from ckdlab.studies.distillation import make_student

        spec, init, layer_map = STUDENTS[student]
        teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
        model, _ = make_student(teacher, spec, get_task("sst2"), init, 0)
        model.load_state_dict(state)
        hidden = objective == "mse"
        for m in (teacher, model):
            m.config.output_hidden_states = hidden
        matches = []
        if hidden:
            d_t, d_s = teacher.config.hidden_size, model.config.hidden_size
            proj = None if d_t == d_s else ["linear", d_s, d_t]
            matches = [{"layer_T": t, "layer_S": s, "feature": "hidden", "loss": "hidden_mse", "weight": 1.0,
                        **({"proj": proj} if proj else {})} for t, s in layer_map]

        def adaptor(batch, outputs):
            found = {"logits": outputs.logits, "inputs_mask": batch["attention_mask"]}
            if hidden:
                found["hidden"] = outputs.hidden_states
            return found

        self.folder = tempfile.mkdtemp(prefix="tb-")
        self.distiller = GeneralDistiller(
            train_config=TrainingConfig(device="cpu", output_dir=self.folder, log_dir=None, ckpt_steps=args.steps),
            distill_config=DistillationConfig(temperature=TEMPERATURE, kd_loss_type="ce", kd_loss_weight=1,
                                              hard_label_weight=0, intermediate_matches=matches),
            model_T=teacher, model_S=model, adaptor_T=adaptor, adaptor_S=adaptor)
        # ckdlab's fused AdamW, decay on weights and not on biases/LayerNorm, for the student and
        # TextBrewer's projections alike.
        params = [p for p in self.distiller.model_S.parameters()] + [
            p for proj in getattr(self.distiller, "projs", []) if proj is not None for p in proj.parameters()]
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": TRAIN["weight_decay"]},
                                            {"params": rest, "weight_decay": 0.0}], lr=TRAIN["lr"], fused=True)
        total = args.steps * args.rounds
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(TRAIN["warmup_ratio"] * total), total)
        self.distiller.save_and_callback = lambda *a, **k: None  # shim: no checkpoint file per round
        self.batches = [{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                        for b in batches]
        self.setup_s = 0.0

    def round(self) -> None:
        self.distiller.train(self.optimizer, self.batches, scheduler=self.scheduler, num_steps=len(self.batches),
                             max_grad_norm=TRAIN["max_grad_norm"])


def child(conn, args, student: str, framework: str, objective: str, cache: bool, batches_path, state_path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batches = torch.load(batches_path)
    state = torch.load(state_path)
    runner = (TextBrewerRun if framework == "textbrewer" else CkdlabRun)(args, student, objective, cache, batches, state)
    conn.send(("ready", runner.setup_s))
    while conn.recv() == "round":
        wall, cpu = time.perf_counter(), time.process_time()
        runner.round()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        conn.send((wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    conn.close()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}-{max(values):.2f})"


def throughput(args) -> None:
    ctx = mp.get_context("spawn")
    print(f"# load average at start: {os.getloadavg()}; {args.rounds} rounds x {args.steps} steps of batch 32, "
          f"1 thread per process")
    for student in args.students.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            batches, state = prepare(args, student, Path(tmp))
            for group in args.groups.split(","):
                runs, pipes, setup = [], [], []
                for framework, objective, cache in GROUPS[group]:
                    parent, conn = ctx.Pipe()
                    proc = ctx.Process(target=child, args=(conn, args, student, framework, objective, cache, batches, state))
                    proc.start()
                    runs.append((framework, objective, cache, proc))
                    pipes.append(parent)
                    setup.append(parent.recv()[1])  # one at a time: builds do not compete with each other
                results = [[] for _ in runs]
                for _ in range(args.rounds):
                    for i, pipe in enumerate(pipes):
                        pipe.send("round")
                        results[i].append(pipe.recv())
                for pipe, (*_, proc) in zip(pipes, runs):
                    pipe.send("stop")
                    proc.join()
                report(student, group, runs, results, setup, args)


def report(student, group, runs, results, setup, args) -> None:
    samples = args.steps * 32
    per_cpu = [[samples / cpu for _, cpu, _ in r] for r in results]
    per_wall = [[samples / wall for wall, _, _ in r] for r in results]
    base = statistics.median(per_cpu[0]), statistics.median(per_wall[0])
    print(f"\n## {student}, {group} (load average {os.getloadavg()[0]:.1f})")
    print("| run | samples/CPU-s, median (min-max) | samples/wall-s | ratio to TextBrewer, CPU (wall) | peak RSS MB | "
          "setup s |")
    print("|---|---:|---:|---:|---:|---:|")
    for (framework, objective, cache, _), cpu, wall, r, s in zip(runs, per_cpu, per_wall, results, setup):
        name = f"{framework} {objective}{', cache' if cache else ''}"
        ratio = f"{statistics.median(cpu) / base[0]:.2f} ({statistics.median(wall) / base[1]:.2f})"
        print(f"| {name} | {spread(cpu)} | {spread(wall)} | {ratio} | {max(x[2] for x in r):.0f} | {s:.1f} |")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------- precision
def precision(args) -> None:
    from ckdlab.data import get_task, load_task, tokenize_dataset
    from ckdlab.data.collate import DynamicPaddingCollator
    from ckdlab.models.precision import cast_teacher
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(1)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    dev = tokenize_dataset(load_task("sst2", "dev"), tokenizer, get_task("sst2"), max_length=64)
    collate = DynamicPaddingCollator(tokenizer)
    loader = torch.utils.data.DataLoader(dev, batch_size=32, collate_fn=collate)
    models = {"fp32": teacher, "bf16": cast_teacher(copy.deepcopy(teacher), "bf16"),
              "int8": cast_teacher(copy.deepcopy(teacher), "int8")}
    outputs = {name: [] for name in models}
    times = {name: [] for name in models}
    labels = []
    with torch.no_grad():
        for batch in loader:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
            labels.append(batch["labels"])
            for name, model in models.items():  # interleaved per batch
                start = time.process_time()
                out = model(**inputs, output_hidden_states=True)
                times[name].append(time.process_time() - start)
                mask = batch["attention_mask"].bool()
                outputs[name].append((out.logits.float(), [h.float()[mask] for h in out.hidden_states]))
    labels = torch.cat(labels)
    ref_logits = torch.cat([o[0] for o in outputs["fp32"]])
    print(f"# SST-2 dev ({len(labels)} sentences, max length 64), 1 thread; load average {os.getloadavg()}")
    print("| teacher | forward CPU-s per batch, median | speed-up | logits max / mean abs diff | hidden max / mean abs "
          "diff | argmax agreement | dev accuracy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in models:
        logits = torch.cat([o[0] for o in outputs[name]])
        hidden = [torch.cat([h[i] for _, h in outputs[name]]) for i in range(len(outputs[name][0][1]))]
        ref_hidden = [torch.cat([h[i] for _, h in outputs["fp32"]]) for i in range(len(hidden))]
        diff_h = torch.cat([(a - b).abs().flatten() for a, b in zip(hidden, ref_hidden)])
        diff_l = (logits - ref_logits).abs()
        agree = (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean()
        acc = (logits.argmax(-1) == labels).float().mean()
        t = statistics.median(times[name])
        print(f"| {name} | {t:.3f} | {statistics.median(times['fp32']) / t:.2f} | {diff_l.max():.4f} / {diff_l.mean():.4f} "
              f"| {diff_h.max():.3f} / {diff_h.mean():.4f} | {agree:.4f} | {acc:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="a fine-tuned SST-2 teacher folder (minilm-l6)")
    parser.add_argument("--students", default="3x384,4x256")
    parser.add_argument("--groups", default="kd,mse", help="kd, mse, bf16 (ckdlab's teacher in bf16)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per round")
    parser.add_argument("--precision", action="store_true", help="the teacher-precision table instead")
    args = parser.parse_args()
    precision(args) if args.precision else throughput(args)


if __name__ == "__main__":
    main()
