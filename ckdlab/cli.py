"""``ckdlab`` command line: mirrors :mod:`ckdlab.api`.

    ckdlab finetune --task sst2 --model minilm-l6 --profile quick --out runs/teacher-sst2
    ckdlab distill  --task sst2 --teacher runs/teacher-sst2/best --student layers:0,2,4 \\
                    --objective ckd+kd --weights wr_pair=1,wr_triplet=1,ltr_pair=1,ltr_triplet=1,kd=1
    ckdlab evaluate --model runs/teacher-sst2/best --task sst2
    ckdlab teachers --profile quick            # fine-tune (or reuse) every profile teacher
    ckdlab table    --kind distill             # a paper-style table from results/records
    ckdlab notebooks --profile quick           # execute the notebooks headless (make reproduce)
    ckdlab report --profile quick              # results/quick/report.html (+ .md): every table and figure
    ckdlab zero-shot --profile quick --languages en,de,sw   # notebook 04's zero-shot table
    ckdlab paper --dry-run                     # every paper config, one step on tiny stand-ins
    ckdlab info                                # models, tasks, where data is found

Training and distillation options are built from :class:`~ckdlab.engine.config.TrainConfig` and
:class:`~ckdlab.engine.config.DistillConfig`, so every field there is an option here with the same
default. Several GPUs: ``accelerate launch -m ckdlab.cli finetune ...``.

Exit status: 0 on success; 2 for a fault the user can fix (a :class:`~ckdlab.errors.UserError`:
one paragraph naming the option or file and the fix, no traceback; argparse uses 2 for bad
usage too); 130 after Ctrl-C, with the step the same command resumes from. Any other exception
is a bug in ckdlab and keeps its traceback. Warnings (a skipped corrupt record) are one line each.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from ckdlab.engine.config import DistillConfig, TrainConfig
from ckdlab.errors import UserError, user_input

_CONVERTERS = {"float": float, "int": int, "int | None": int, "str": str}
# DistillConfig fields given as text on the command line, and how the text becomes a value.
_DISTILL_TEXT_OPTIONS = ("weights", "objective_options", "layer_map")


def parse_assignments(text: str | None, option: str, number: bool = True) -> dict[str, Any]:
    """``'wr_pair=1,kd=0.5'`` -> ``{'wr_pair': 1.0, 'kd': 0.5}`` (values as numbers, or as YAML scalars)."""
    import yaml

    values: dict[str, Any] = {}
    for item in filter(None, (text or "").split(",")):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            kind, example = ("number", "wr_pair=1,kd=0.5") if number else ("value", "window=10")
            raise UserError(f"{option} item '{item}' must look like name={kind}, e.g. {example}")
        if number:
            try:
                values[name.strip()] = float(value)
            except ValueError as err:
                raise UserError(f"{option} item '{item}': '{value}' is not a number") from err
        else:
            values[name.strip()] = yaml.safe_load(value)
    return values


def parse_parameter(item: str) -> tuple[str, Any]:
    """One ``--param name=value`` (the value read as YAML, so ``seeds=[0,1,2]`` is a list)."""
    import yaml

    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise UserError(f"--param '{item}' must look like name=value, e.g. grid=full")
    return name.strip(), yaml.safe_load(value)


def parse_weights(text: str | None) -> dict[str, float]:
    """``'wr_pair=1,kd=0.5'`` -> ``{'wr_pair': 1.0, 'kd': 0.5}``."""
    return parse_assignments(text, "--weights")


def _add_fields(parser: argparse.ArgumentParser, config: type, title: str, skip: tuple[str, ...] = ()) -> None:
    """One option per field of the ``config`` dataclass (``--batch-size`` for ``batch_size``), default None
    so that only what the user gives overrides the profile."""
    group = parser.add_argument_group(title)
    for spec in dataclasses.fields(config):
        help_text = spec.metadata.get("help")
        if spec.name in skip or help_text is None:
            continue
        flag = f"--{spec.name.replace('_', '-')}"
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        text = f"{help_text} (default: the profile's, else {default})"
        if spec.type == "bool":
            group.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif spec.name in _DISTILL_TEXT_OPTIONS or spec.type not in _CONVERTERS:
            group.add_argument(flag, dest=spec.name, default=None, help=text)
        else:
            group.add_argument(flag, dest=spec.name, type=_CONVERTERS[spec.type], default=None, help=text)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    _add_fields(parser, TrainConfig, "training options (override the profile)", skip=("seed",))
    parser.add_argument("--profile", default="quick", help="smoke | quick | paper | path to a YAML profile")
    parser.add_argument("--data-dir", default=None, help="folder with glue_data/ (else $CKDLAB_DATA, data/, ../shared/data, the hub)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (data order, subsets, initialisation)")
    parser.add_argument("--no-resume", action="store_true", help="discard what --out holds and start afresh")


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("seed", "extra")]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def distill_options(args: argparse.Namespace) -> dict[str, Any]:
    """The DistillConfig fields the user gave, parsed."""
    options: dict[str, Any] = {}
    for spec in dataclasses.fields(DistillConfig):
        value = getattr(args, spec.name, None)
        if value is None:
            continue
        if spec.name == "weights":
            value = value.strip() if value.strip() == "official" else parse_weights(value)
        elif spec.name == "objective_options":
            value = parse_assignments(value, "--objective-options", number=False)
        options[spec.name] = value
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ckdlab", description="Knowledge-distillation workbench (CKD and baselines).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune", help="fine-tune a teacher on a task")
    p.add_argument("--task", required=True)
    p.add_argument("--model", default=None, help="minilm-l6 | tiny-random | me5-small | hub id | folder (default: the profile's teacher)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<profile>/teachers/<task>-<id>)")
    _add_run_options(p)

    p = sub.add_parser("distill", help="distil a fine-tuned teacher into a student")
    p.add_argument("--task", required=True)
    p.add_argument("--teacher", default=None, help="fine-tuned teacher folder (default: the profile's teacher for the task, trained if absent)")
    p.add_argument("--student", required=True, help="layers:0,2,4 | first:k | every-other | skip:k | config:L4-H256-A4-I1024 | a folder")
    p.add_argument("--method", default=None, help="label of the run in tables (default: the objective)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<profile>/students/<task>/<student>/<method>/seed<k>-<id>)")
    _add_fields(p, DistillConfig, "distillation options (override the profile)")
    _add_run_options(p)

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
    p.add_argument("--kind", default=None, help="finetune | distill | dynabert | zero-shot")
    p.add_argument("--profile", default=None)
    p.add_argument("--rows", default="student,method")
    p.add_argument("--format", default="markdown", choices=["markdown", "latex", "csv"])

    p = sub.add_parser("notebooks", help="execute the notebooks headless with papermill")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "paper"])
    p.add_argument("--only", default=None, help="comma-separated notebook name prefixes, e.g. 01,03")
    p.add_argument("--out", default="notebooks/executed")
    p.add_argument("--param", action="append", default=[], help="extra notebook parameter name=value (e.g. grid=full); repeatable")

    p = sub.add_parser("report", help="one report (HTML, self-contained, and Markdown) of a profile's tables, figures and run times")
    p.add_argument("--profile", default="quick", help="whose results/<profile>/ tables and figures to gather")

    p = sub.add_parser("paper", help="run every configs/paper distillation (GPU work; use accelerate launch)")
    p.add_argument("--tasks", default=None, help="comma-separated (default: every paper config)")
    p.add_argument("--dry-run", action="store_true", help="build every run with tiny stand-ins and take one step (CPU check)")
    p.add_argument("--data-dir", default=None)

    p = sub.add_parser("zero-shot", help="zero-shot cross-lingual transfer: teacher + settings (a)-(d), per-language table")
    p.add_argument("--profile", default="quick", help="smoke | quick | paper or a profile YAML file (its zero_shot section)")
    p.add_argument("--task", default="xnli", help="xnli | sentiment")
    p.add_argument("--languages", default=None, help="comma-separated, e.g. en,de,sw (default: the profile's)")
    p.add_argument("--settings", default="a,b,c,d", help="a: pre-training KD, b: fine-tuning KD, c: both, d: none")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)

    sub.add_parser("info", help="embedded models, tasks and where data is found")
    return parser


def interrupted_message(err: KeyboardInterrupt) -> str:
    """The one line printed after Ctrl-C: where the same command resumes."""
    step = getattr(err, "step", None)
    if step is None:
        return "interrupted; run the same command to resume (finished runs are not trained again)"
    return f"interrupted; run the same command to resume from step {step}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ckdlab.logs import quiet_libraries

    quiet_libraries()
    prefix = f"ckdlab {args.command}"

    def one_line(message: Warning | str, category: type[Warning], *where: Any, **more: Any) -> None:
        print(f"{prefix}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():  # restores the usual warning display afterwards
        warnings.showwarning = one_line
        try:
            return _dispatch(args)
        except UserError as err:
            print(f"{prefix}: error: {err}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as err:
            print(f"{prefix}: {interrupted_message(err)}", file=sys.stderr)
            return 130


def _dispatch(args: argparse.Namespace) -> int:
    from ckdlab import api

    if args.command == "finetune":
        summary = api.finetune_teacher(
            args.task, profile=args.profile, model=args.model, out_dir=args.out, data_dir=args.data_dir,
            seed=args.seed, resume=not args.no_resume, **train_overrides(args),
        )
        print(json.dumps({k: v for k, v in summary.items() if k != "final_metrics"}, indent=2, default=str))
    elif args.command == "distill":
        summary = api.distill(
            args.task, student=args.student, teacher=args.teacher, profile=args.profile, method=args.method, out_dir=args.out,
            data_dir=args.data_dir, seed=args.seed, resume=not args.no_resume, **distill_options(args), **train_overrides(args),
        )
        print(json.dumps(summary, indent=2, default=str))
    elif args.command == "evaluate":
        print(json.dumps(api.evaluate(args.model, args.task, split=args.split, data_dir=args.data_dir, limit=args.limit), indent=2))
    elif args.command == "teachers":
        tasks = args.tasks.split(",") if args.tasks else None
        print(api.finetune_teachers(tasks, profile=args.profile, data_dir=args.data_dir).to_string(index=False))
    elif args.command == "table":
        print(_table(api, args))
    elif args.command == "notebooks":
        from ckdlab.reproduce import NotebookFailed, notebooks, run_notebooks

        only = args.only.split(",") if args.only else None
        with user_input():  # its message names --only
            notebooks(only)
        parameters = dict(parse_parameter(item) for item in args.param)
        try:
            run_notebooks(args.profile, only=only, out_dir=Path(args.out), parameters=parameters)
        except NotebookFailed:
            return 1  # run_notebooks has printed which notebook and cell failed, why, and where the copy is
    elif args.command == "report":
        from ckdlab.report import build_report

        page, markdown = build_report(args.profile)
        print(f"Report: {page} (Markdown: {markdown})")
    elif args.command == "zero-shot":
        from ckdlab.studies.zero_shot import SETTINGS, load_zero_shot_profile

        languages = args.languages.split(",") if args.languages else None
        settings = args.settings.split(",")
        unknown = [s for s in settings if s.strip().lower().strip("()") not in SETTINGS]
        if unknown:
            raise UserError(f"--settings {unknown} are not known; choose from {', '.join(SETTINGS)} (a: pre-training KD, "
                            "b: fine-tuning KD, c: both, d: none)")
        with user_input("--profile", (ValueError, FileNotFoundError)):
            load_zero_shot_profile(args.profile)
        result = api.zero_shot(args.profile, task=args.task, languages=languages, settings=settings,
                               seed=args.seed, data_dir=args.data_dir)
        print((result.table * 100).round(1).to_string())
    elif args.command == "paper":
        tasks = args.tasks.split(",") if args.tasks else None
        with user_input("--tasks"):
            api.paper_configs(tasks)
        print(api.paper_runs(tasks, dry_run=args.dry_run, data_dir=args.data_dir).to_string(index=False))
    elif args.command == "info":
        print(json.dumps(api.info(), indent=2, default=str))
    return 0


def _table(api: Any, args: argparse.Namespace) -> str:
    """``ckdlab table``: the records under ``--results`` as a table, with a message for what is missing."""
    filters = {k: v for k, v in (("kind", args.kind), ("profile", args.profile)) if v}
    runs = api.load_runs(args.results, **filters)
    folder = Path(args.results) if args.results else api.results_dir()
    if runs.empty:
        which = " ".join(f"--{k} {v}" for k, v in filters.items())
        raise UserError(f"no run records in {folder / 'records'}{' matching ' + which if which else ''}; run some first "
                        "(ckdlab finetune / distill), or point --results at the folder that holds records/")
    rows = args.rows.split(",")
    missing = [row for row in rows if row not in runs.columns]
    if missing:
        raise UserError(f"--rows {missing} are not fields of these records; choose from {sorted(c for c in runs.columns if '.' not in c)}")
    result = api.table(runs, rows=rows)
    return {"markdown": result.to_markdown, "latex": result.to_latex, "csv": lambda: result.tidy().to_csv(index=False)}[args.format]()


if __name__ == "__main__":
    sys.exit(main())
