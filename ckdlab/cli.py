"""``ckdlab`` command line: mirrors :mod:`ckdlab.api`.

    ckdlab finetune --task sst2 --model minilm-l6 --profile quick --out runs/teacher-sst2
    ckdlab distill  --task sst2 --teacher runs/teacher-sst2/best --student layers:0,2,4 \\
                    --objective ckd+kd --weights wr_pair=1,wr_triplet=1,ltr_pair=1,ltr_triplet=1,kd=1
    ckdlab teachers --profile quick            # fine-tune (or reuse) every profile teacher
    ckdlab table    --kind distill             # a paper-style table from results/records
    ckdlab notebooks --profile quick           # execute the notebooks headless (make reproduce)
    ckdlab zero-shot --profile quick --languages en,de,sw   # notebook 04's zero-shot table
    ckdlab info                                # models, tasks, where data is found

Several GPUs: ``accelerate launch -m ckdlab.cli finetune ...``. Errors in the input print one
line that names the option and the fix, and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TRAIN_OPTIONS = {
    "epochs": float,
    "lr": float,
    "batch_size": int,
    "max_length": int,
    "train_limit": int,
    "dev_limit": int,
    "max_steps": int,
    "eval_every": int,
    "save_every": int,
    "mixed_precision": str,
}


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training options (override the profile)")
    for name, kind in TRAIN_OPTIONS.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    parser.add_argument("--profile", default="quick", help="smoke | quick | paper | path to a YAML profile")
    parser.add_argument("--data-dir", default=None, help="folder with glue_data/ (else $CKDLAB_DATA, data/, ../shared/data, the hub)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in TRAIN_OPTIONS if getattr(args, name) is not None}


def parse_weights(text: str | None) -> dict[str, float]:
    """``'wr_pair=1,kd=0.5'`` -> ``{'wr_pair': 1.0, 'kd': 0.5}``."""
    weights: dict[str, float] = {}
    for item in filter(None, (text or "").split(",")):
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"--weights item '{item}' must look like name=number, e.g. wr_pair=1,kd=0.5")
    return weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ckdlab", description="Knowledge-distillation workbench (CKD and baselines).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune", help="fine-tune a teacher on a task")
    p.add_argument("--task", required=True)
    p.add_argument("--model", default=None, help="minilm-l6 | tiny-random | me5-small | hub id | folder (default: the profile's teacher)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<profile>/teachers/<task>)")
    _add_train_options(p)

    p = sub.add_parser("distill", help="distil a fine-tuned teacher into a student")
    p.add_argument("--task", required=True)
    p.add_argument("--teacher", default=None, help="fine-tuned teacher folder (default: the profile's teacher for the task, trained if absent)")
    p.add_argument("--student", required=True, help="layers:0,2,4 | first:k | every-other | skip:k | config:L4-H256-A4-I1024")
    p.add_argument("--student-init", default=None, choices=["bert", "slice"], help="init of config: students (default: the profile's)")
    p.add_argument("--objective", default="ckd+kd", help="'+'-joined objectives, e.g. ckd+kd, kd, pkd+kd, tinybert, minilm, ce")
    p.add_argument("--weights", default=None, help="term=weight list, e.g. wr_pair=1,wr_triplet=1,ltr_pair=1,ltr_triplet=1,kd=1")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--layer-map", default="uniform", help="uniform | last | skip | explicit '0-0,2-1,4-2'")
    p.add_argument("--out", default=None)
    _add_train_options(p)

    p = sub.add_parser("evaluate", help="evaluate a saved model on a task's dev split")
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--split", default="dev")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None)

    p = sub.add_parser("teachers", help="fine-tune (or reuse) the profile's teachers")
    p.add_argument("--profile", default="quick")
    p.add_argument("--tasks", default=None, help="comma-separated (default: the profile's tasks)")
    p.add_argument("--data-dir", default=None)

    p = sub.add_parser("table", help="paper-style table from the results registry")
    p.add_argument("--results", default=None, help="results folder (default: results/)")
    p.add_argument("--kind", default=None, help="finetune | distill | ...")
    p.add_argument("--profile", default=None)
    p.add_argument("--rows", default="student,method")
    p.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"])

    p = sub.add_parser("notebooks", help="execute the notebooks headless with papermill")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    p.add_argument("--only", default=None, help="comma-separated notebook name prefixes, e.g. 01,03")
    p.add_argument("--out", default="notebooks/executed")
    p.add_argument("--param", action="append", default=[], help="extra notebook parameter name=value (e.g. grid=full); repeatable")

    p = sub.add_parser("paper", help="run every configs/paper distillation (GPU work; use accelerate launch)")
    p.add_argument("--tasks", default=None, help="comma-separated (default: every paper config)")
    p.add_argument("--dry-run", action="store_true", help="build every run with tiny stand-ins and take one step (CPU check)")
    p.add_argument("--data-dir", default=None)

    p = sub.add_parser("zero-shot", help="zero-shot cross-lingual transfer: teacher + settings (a)-(d), per-language table")
    p.add_argument("--profile", default="quick", help="smoke | quick | paper (configs/profiles/multilingual.yaml) or a YAML file")
    p.add_argument("--task", default="xnli", help="xnli | sentiment")
    p.add_argument("--languages", default=None, help="comma-separated, e.g. en,de,sw (default: the profile's)")
    p.add_argument("--settings", default="a,b,c,d", help="a: pre-training KD, b: fine-tuning KD, c: both, d: none")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)

    sub.add_parser("info", help="embedded models, tasks and where data is found")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"ckdlab {args.command}: error: {message}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from ckdlab import api

    if args.command == "finetune":
        summary = api.finetune_teacher(
            args.task, profile=args.profile, model=args.model, out_dir=args.out, data_dir=args.data_dir,
            seed=args.seed, resume=not args.no_resume, **_overrides(args),
        )
        print(json.dumps({k: v for k, v in summary.items() if k != "final_metrics"}, indent=2, default=str))
    elif args.command == "distill":
        summary = api.distill(
            args.task, student=args.student, objective=args.objective, weights=parse_weights(args.weights),
            teacher=args.teacher, profile=args.profile, temperature=args.temperature, layer_map=args.layer_map,
            student_init=args.student_init, out_dir=args.out, data_dir=args.data_dir, seed=args.seed,
            resume=not args.no_resume, **_overrides(args),
        )
        print(json.dumps(summary, indent=2, default=str))
    elif args.command == "evaluate":
        print(json.dumps(api.evaluate(args.model, args.task, split=args.split, data_dir=args.data_dir, limit=args.limit), indent=2))
    elif args.command == "teachers":
        tasks = args.tasks.split(",") if args.tasks else None
        print(api.finetune_teachers(tasks, profile=args.profile, data_dir=args.data_dir).to_string(index=False))
    elif args.command == "table":
        from ckdlab.results import load_runs, table

        filters = {k: v for k, v in (("kind", args.kind), ("profile", args.profile)) if v}
        runs = load_runs(args.results or api.results_dir(), **filters)
        result = table(runs, rows=args.rows.split(","))
        print({"markdown": result.to_markdown, "latex": result.to_latex, "csv": lambda: result.mean.to_csv()}[args.format]())
    elif args.command == "notebooks":
        from ckdlab.reproduce import run_notebooks

        only = args.only.split(",") if args.only else None
        parameters = {}
        for item in args.param:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise ValueError(f"--param '{item}' must look like name=value, e.g. grid=full")
            parameters[name] = value
        for row in run_notebooks(args.profile, only=only, out_dir=Path(args.out), parameters=parameters):
            print(f"{row['notebook']}: {row['seconds']:.0f} s")
    elif args.command == "zero-shot":
        languages = args.languages.split(",") if args.languages else None
        result = api.zero_shot(args.profile, task=args.task, languages=languages, settings=args.settings.split(","),
                               seed=args.seed, data_dir=args.data_dir)
        print((result.table * 100).round(1).to_string())
    elif args.command == "paper":
        tasks = args.tasks.split(",") if args.tasks else None
        print(api.paper_runs(tasks, dry_run=args.dry_run, data_dir=args.data_dir).to_string(index=False))
    elif args.command == "info":
        print(json.dumps(api.info(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
