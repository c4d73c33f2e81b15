"""Every fault a user can cause: one clear message, exit status 2, nothing wrong on disk.

The table runs ``python -m ckdlab.cli`` in child processes (:mod:`cli_process`) with the smoke
profile and the runs/results/figures folders of each case in a temporary folder, and asserts: exit
status 2, no traceback, the key words of the fix in the message, and no run folder, record or
result file left behind (a folder the case started from is left exactly as it was). One smoke
teacher and one student run, trained once, serve every case; almost every case fails before any
training. Outside the table: a corrupt record is skipped with a one-line warning, logit KD across
vocabularies gives each model only its own token ids, and notebooks show a UserError as one line.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from cli_process import files_under, folders_env, shared_cli
from ckdlab.data import find_glue_file
from ckdlab.models import load_backbone, minilm_path

SMOKE = ["--profile", "smoke"]
STUDENT_RUN = ["distill", "--task", "sst2", *SMOKE, "--objective", "kd", "--max-steps", "2"]


# --------------------------------------------------------------------------- what the cases start from
def vocab_student(folder: Path, vocabulary: list[str]) -> Path:
    """A tiny BERT classifier with its own WordPiece vocabulary, saved with its tokenizer."""
    folder.mkdir(parents=True)
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocabulary)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def session(tmp_path_factory) -> dict[str, Path]:
    """A fine-tuned smoke SST-2 teacher, a finished student run beside it, and two students whose
    vocabularies differ from the teacher's (one larger, one smaller)."""
    root = tmp_path_factory.mktemp("cli")
    env = folders_env(root)
    cli = shared_cli()
    # --keep-checkpoint: broken_teacher_run makes copies of this run unfinished, which resume from the checkpoint
    teacher = cli.run(["finetune", "--task", "sst2", *SMOKE, "--keep-checkpoint", "--out", root / "teacher"], env=env)
    assert teacher.code == 0, teacher.stderr
    student = cli.run([*STUDENT_RUN, "--teacher", root / "teacher" / "best", "--student", "layers:0,1",
                       "--out", root / "student-run"], env=env)
    assert student.code == 0, student.stderr
    words = (minilm_path() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab_student(root / "larger-vocab", words[:1] + [f"extra{i}" for i in range(1000)] + words[1:])
    vocab_student(root / "smaller-vocab", words[:3000])
    return {"root": root, "teacher": root / "teacher", "student_run": root / "student-run", "results": root / "results",
            "larger": root / "larger-vocab", "smaller": root / "smaller-vocab"}


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def sst2_rows(n: int) -> list[str]:
    return [f"a {'fine' if i % 2 else 'dull'} film number {i} \t{i % 2}" for i in range(n)]


def data_dir(case: Path, train: bytes | str | None, dev: bytes | str | None = None) -> Path:
    """``<case>/data/glue_data/SST-2/`` with the given train and dev files (None: the file is absent)."""
    folder = case / "data" / "glue_data" / "SST-2"
    folder.mkdir(parents=True)
    dev = "sentence\tlabel\n" + "\n".join(sst2_rows(16)) + "\n" if dev is None else dev
    for name, content in (("train.tsv", train), ("dev.tsv", dev)):
        if content == "absent":
            continue
        data = content.encode("utf-8") if isinstance(content, str) else content
        (folder / name).write_bytes(data)
    return case / "data"


GOOD_TRAIN = "sentence\tlabel\n" + "\n".join(sst2_rows(32)) + "\n"


# --------------------------------------------------------------------------- the table
@dataclass
class Case:
    """``argv(session, case_dir)`` -> the command; ``words`` must all appear in stderr (any case)."""

    name: str
    argv: Callable[[dict[str, Path], Path], list]
    words: tuple[str, ...]
    env: Callable[[dict[str, Path], Path], dict[str, str]] = field(default=lambda s, c: {})
    skip: Callable[[], str | None] = field(default=lambda: None)


def finetune(*extra: object) -> Callable[[dict[str, Path], Path], list]:
    return lambda s, c: ["finetune", "--task", "sst2", *SMOKE, "--out", c / "out", *extra]


def distill(*extra: object, task: str = "sst2", teacher: bool = True) -> Callable[[dict[str, Path], Path], list]:
    def argv(s: dict[str, Path], c: Path) -> list:
        given = ["--teacher", s["teacher"] / "best"] if teacher else []
        options = list(extra) if "--student" in extra else ["--student", "layers:0,1", *extra]
        return ["distill", "--task", task, *SMOKE, *given, "--out", c / "out", *options]
    return argv


def broken_teacher_run(s: dict[str, Path], c: Path, damage: Callable[[Path], None]) -> list:
    """A copy of the teacher run, made unfinished (resumable) and then damaged; the same command resumes it."""
    run = copy_run(s["teacher"], c / "run")
    (run / "summary.json").unlink()
    damage(run)
    return ["finetune", "--task", "sst2", *SMOKE, "--out", run]


def under_a_file(c: Path) -> Path:
    (c / "a-file").write_text("not a folder\n", encoding="utf-8")
    return c / "a-file" / "sub"


def read_only(c: Path) -> Path:
    (c / "read-only").mkdir()
    (c / "read-only").chmod(0o555)
    return c / "read-only" / "run"


def qqp_is_local() -> str | None:
    return "QQP is available locally here, so the hub is not tried" if find_glue_file("qqp", "train") else None


def root_user() -> str | None:
    return "root ignores file permissions" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


CASES = [
    # names and values
    Case("unknown task", lambda s, c: ["finetune", "--task", "nosuch", *SMOKE], ("unknown GLUE task", "nosuch", "sst2")),
    Case("unknown profile", lambda s, c: ["finetune", "--task", "sst2", "--profile", "nosuch"], ("--profile", "nosuch", "smoke")),
    Case("epochs 0", finetune("--epochs", "0"), ("--epochs", "> 0")),
    Case("negative lr", finetune("--lr=-1e-3"), ("--lr", "> 0")),
    Case("batch size 0", finetune("--batch-size", "0"), ("--batch-size", ">= 1")),
    Case("max steps 0", distill("--max-steps", "0"), ("--max-steps", ">= 1")),
    Case("train limit 0", finetune("--train-limit", "0"), ("--train-limit",)),
    Case("mixed precision", finetune("--mixed-precision", "fp8"), ("--mixed-precision", "bf16")),
    Case("temperature 0", distill("--temperature", "0"), ("--temperature", "> 0")),
    Case("student init", distill("--student-init", "magic"), ("--student-init", "slice")),
    # models
    Case("unknown model name", finetune("--model", "no-such-model"), ("no-such-model", "embedded", "hub")),
    Case("missing model folder", finetune("--model", "./no/such/model"), ("./no/such/model", "does not exist")),
    Case("model folder without weights", lambda s, c: ["finetune", "--task", "sst2", *SMOKE, "--model",
         _without_weights(copy_run(s["teacher"] / "best", c / "model"))], ("model.safetensors", "save_pretrained")),
    Case("truncated teacher weights", lambda s, c: ["distill", "--task", "sst2", *SMOKE, "--student", "layers:0",
         "--teacher", _truncated(copy_run(s["teacher"] / "best", c / "model"))], ("model.safetensors", "truncated")),
    Case("truncated weights, evaluate", lambda s, c: ["evaluate", "--task", "sst2", "--model",
         _truncated(copy_run(s["teacher"] / "best", c / "model"))], ("model.safetensors", "truncated")),
    Case("missing teacher", distill("--teacher", "./no/teacher"), ("--teacher", "does not exist")),
    Case("SST-2 teacher for STS-B", distill(task="stsb"), ("fine-tuned for another task", "stsb", "regression")),
    Case("SST-2 teacher for MRPC", distill(task="mrpc"), ("fine-tuned for another task", "not_equivalent")),
    # students, layer maps, objectives
    Case("bad config spec, teacher untrained", distill("--student", "config:L4-H999-A7-I10", teacher=False),
         ("L4-H999-A7-I10", "not divisible by 7 heads")),
    Case("layers out of range", distill("--student", "layers:7"), ("layers:7", "out of range")),
    Case("unknown student spec", distill("--student", "nonsense"), ("nonsense", "neither an existing folder nor a student spec")),
    Case("missing student folder", distill("--student", "./no/such/student"), ("./no/such/student", "does not exist")),
    Case("slice larger than teacher", distill("--student", "config:L2-H128-A2-I64", "--student-init", "slice"),
         ("slice", "hidden_size")),
    Case("bad layer map", distill("--layer-map", "0-0,5-1"), ("--layer-map", "out of range")),
    Case("unknown objective", distill("--objective", "ckd+magic"), ("--objective", "unknown objective", "magic")),
    Case("malformed weights", distill("--weights", "wr_pair:1"), ("--weights", "name=number")),
    Case("weight of an absent term", distill("--objective", "kd", "--weights", "wr_pair=1"), ("--weights", "wr_pair", "kd")),
    Case("negative weight", distill("--objective", "kd", "--weights", "kd=-1"), ("--weights", ">= 0")),
    Case("unknown objective option", distill("--objective-options", "nope=1"), ("--objective-options", "nope")),
    Case("bad objective option value", distill("--objective-options", "pair_metric=bogus"), ("pair_metric", "bogus")),
    Case("token-aligned KD across vocabularies", lambda s, c: ["distill", "--task", "sst2", *SMOKE, "--teacher",
         s["teacher"] / "best", "--student", s["larger"], "--objective", "ckd+kd", "--out", c / "out"],
         ("tokenizer", "larger-vocab", "31522", "30522", "kd, ce")),
    # folders
    Case("--out under a file", lambda s, c: ["finetune", "--task", "sst2", *SMOKE, "--out", under_a_file(c)],
         ("--out", "is a file")),
    Case("--out read-only", lambda s, c: ["finetune", "--task", "sst2", *SMOKE, "--out", read_only(c)],
         ("--out", "not a writable folder"), skip=root_user),
    Case("results folder under a file", finetune(), ("results folder", "CKDLAB_RESULTS"),
         env=lambda s, c: {"CKDLAB_RESULTS": str(under_a_file(c))}),
    Case("results folder under a file, distill", distill(), ("results folder", "CKDLAB_RESULTS"),
         env=lambda s, c: {"CKDLAB_RESULTS": str(under_a_file(c))}),
    Case("--out holds another student", lambda s, c: [*STUDENT_RUN, "--teacher", s["teacher"] / "best", "--student",
         "layers:1", "--out", s["student_run"]], ("holds another run", "student", "--no-resume")),
    Case("corrupt run.json", lambda s, c: broken_teacher_run(s, c, lambda run: (run / "run.json").write_text("{oops")),
         ("run.json", "unreadable", "--no-resume")),
    Case("corrupt trainer_state.json", lambda s, c: broken_teacher_run(
         s, c, lambda run: (run / "checkpoint" / "trainer_state.json").write_text("{oops")),
         ("trainer_state.json", "unreadable", "--no-resume")),
    Case("truncated optimizer.bin", lambda s, c: broken_teacher_run(s, c, lambda run: truncate(run / "checkpoint" / "optimizer.bin")),
         ("optimizer.bin", "unreadable", "--no-resume")),
    Case("NaN loss", finetune("--lr", "1e30", "--max-grad-norm", "0"), ("'ce' is nan", "lower the learning rate")),
    # data
    Case("malformed TSV row", lambda s, c: ["finetune", "--task", "sst2", *SMOKE, "--out", c / "out", "--data-dir",
         data_dir(c, GOOD_TRAIN + "only one column\n")], ("train.tsv", "line 34", "expected 2 tab-separated columns")),
    Case("unknown label", lambda s, c: ["finetune", "--task", "sst2", *SMOKE, "--out", c / "out", "--data-dir",
         data_dir(c, GOOD_TRAIN + "a film\t2\n")], ("train.tsv", "line 34", "bad sst2 label '2'")),
    Case("empty split", lambda s, c: ["finetune", "--task", "sst2", *SMOKE, "--out", c / "out", "--data-dir",
         data_dir(c, "sentence\tlabel\n")], ("train.tsv", "no data rows")),
    Case("bad encoding", lambda s, c: ["finetune", "--task", "sst2", *SMOKE, "--out", c / "out", "--data-dir",
         data_dir(c, GOOD_TRAIN.encode() + "caf\u00e9\t1\n".encode("latin-1"))], ("train.tsv", "not valid UTF-8")),
    Case("--data-dir lacks a split", lambda s, c: ["distill", "--task", "sst2", *SMOKE, "--student", "layers:0", "--teacher",
         s["teacher"] / "best", "--out", c / "out", "--data-dir", data_dir(c, GOOD_TRAIN, dev="absent")],
         ("--data-dir", "SST-2/dev.tsv", "would come from")),
    Case("missing data, hub offline", lambda s, c: ["finetune", "--task", "qqp", *SMOKE, "--out", c / "out"],
         ("qqp", "not found", "Fix"), skip=qqp_is_local),
    Case("unknown split", lambda s, c: ["evaluate", "--task", "sst2", "--model", s["teacher"] / "best", "--split", "test"],
         ("unknown split", "test")),
    Case("evaluate another task's model", lambda s, c: ["evaluate", "--task", "stsb", "--model", s["teacher"] / "best"],
         ("classification head with 2 output(s)", "regression")),
    Case("limit 0", lambda s, c: ["evaluate", "--task", "sst2", "--model", s["teacher"] / "best", "--limit", "0"], ("limit=0",)),
    # other commands
    Case("table without records", lambda s, c: ["table", "--kind", "distill"], ("no run records", "--results")),
    Case("table of an unknown field", lambda s, c: ["table", "--results", s["results"], "--rows", "nope"], ("--rows", "nope")),
    Case("zero-shot setting", lambda s, c: ["zero-shot", *SMOKE, "--settings", "a,z"], ("--settings", "'z'")),
    Case("paper task", lambda s, c: ["paper", "--tasks", "nosuch", "--dry-run"], ("unknown GLUE task", "nosuch")),
    Case("notebooks prefix", lambda s, c: ["notebooks", "--only", "99"], ("--only", "99")),
    Case("notebook parameter", lambda s, c: ["notebooks", "--only", "01", "--param", "grid"], ("--param", "name=value")),
    Case("report before any notebook ran", lambda s, c: ["report", "--profile", "paper"], ("no tables", "ckdlab notebooks")),
]


def _without_weights(folder: Path) -> Path:
    (folder / "model.safetensors").unlink()
    return folder


def _truncated(folder: Path) -> Path:
    truncate(folder / "model.safetensors")
    return folder


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {path: (os.stat(path).st_size, os.stat(path).st_mtime_ns) for path in files_under(*folders)}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_user_fault_is_one_message_exit_2_and_nothing_on_disk(case: Case, session, tmp_path):
    reason = case.skip()
    if reason:
        pytest.skip(reason)
    argv = [str(a) for a in case.argv(session, tmp_path)]
    env = {**folders_env(tmp_path), **case.env(session, tmp_path)}
    before = snapshot(tmp_path, session["student_run"], session["results"])
    result = shared_cli().run(argv, env=env)
    assert result.code == 2, f"{argv}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr.split(f"ckdlab {argv[0]}: error: ", 1)[-1]
    assert f"ckdlab {argv[0]}: error: " in result.stderr, result.stderr
    for word in case.words:
        assert word.lower() in message.lower(), f"{word!r} not in: {message}"
    assert snapshot(tmp_path, session["student_run"], session["results"]) == before, "files were written or changed"


# --------------------------------------------------------------------------- outside the table
def test_a_corrupt_record_is_named_and_skipped_with_one_warning_line(session, tmp_path):
    results = copy_run(session["results"], tmp_path / "results")
    bad = results / "records" / "distill-broken.json"
    bad.write_text('{"kind": "distill", "task"', encoding="utf-8")
    result = shared_cli().run(["table", "--results", results, "--kind", "distill"], env=folders_env(tmp_path))
    assert result.code == 0 and "| student | method |" in result.stdout, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "skipping" in warnings[0], result.stderr
    assert "Traceback" not in result.stderr and "warnings.warn" not in result.stderr


@pytest.mark.parametrize("vocabulary", ["larger", "smaller"])
def test_logit_kd_across_vocabularies_runs_and_records_its_data(vocabulary, session, tmp_path):
    out = tmp_path / "out"
    result = shared_cli().run(["distill", "--task", "sst2", *SMOKE, "--teacher", session["teacher"] / "best", "--student",
                               session[vocabulary], "--objective", "kd", "--max-steps", "2", "--out", out],
                              env=folders_env(tmp_path))
    assert result.code == 0, result.stderr
    record = json.loads(next((tmp_path / "results" / "records").glob("*.json")).read_text())
    assert set(record["data"]) == {"train", "dev"} and all(Path(source["path"]).is_file() for source in record["data"].values())
    saved = BertTokenizerFast.from_pretrained(out / "best")
    assert saved.get_vocab() == BertTokenizerFast.from_pretrained(session[vocabulary]).get_vocab()


@pytest.mark.parametrize("vocabulary", ["larger", "smaller"])
@pytest.mark.parametrize("cached", [True, False])
def test_each_model_reads_only_its_own_token_ids(vocabulary, cached, session):
    """The teacher sees the ids of its tokenizer and the student those of its own, for the same
    examples, whether the teacher's logits come from its cache or a live forward pass."""
    from ckdlab.data import load_task
    from ckdlab.engine import Distiller, TrainConfig

    teacher, teacher_tokenizer = load_backbone(session["teacher"] / "best", num_labels=2)
    student, student_tokenizer = load_backbone(session[vocabulary], num_labels=2)
    data = load_task("sst2", "dev", limit=12, seed=0)
    seen: dict[str, list[torch.Tensor]] = {"teacher": [], "student": []}
    for name, model in (("teacher", teacher), ("student", student)):
        model.get_input_embeddings().register_forward_pre_hook(lambda module, args, who=name: seen[who].append(args[0]))
    distiller = Distiller(teacher, student, student_tokenizer, "sst2", objective="kd", teacher_tokenizer=teacher_tokenizer,
                          config=TrainConfig(batch_size=4, max_length=32, progress=False), train_dataset=data,
                          dev_datasets={"dev": data}, cache_teacher=cached)
    distiller.setup()
    seen["teacher"].clear()
    batch = distiller._next_batch()
    terms = distiller.compute_terms(batch)
    assert torch.isfinite(terms["kd"])
    texts = [data[int(row)]["sentence"] for row in batch["row"]]
    expected_student = student_tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")["input_ids"]
    assert torch.equal(seen["student"][-1], expected_student)
    expected_teacher = teacher_tokenizer(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")["input_ids"]
    if cached:
        assert not seen["teacher"]  # the cache was built from the teacher's own ids at setup
        rows = batch["row"].tolist()
        live = teacher(input_ids=expected_teacher, attention_mask=(expected_teacher != 0).long()).logits
        torch.testing.assert_close(distiller.teacher_cache.logits[rows], live.float(), rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(seen["teacher"][-1], expected_teacher)


def test_notebooks_show_a_user_error_as_one_line(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from ckdlab.errors import UserError, show_user_errors_in_ipython

    shell = InteractiveShell.instance()
    try:
        assert show_user_errors_in_ipython()
        result = shell.run_cell("from ckdlab.data import get_task\nget_task('nosuch')")
        out = capsys.readouterr().out
        assert isinstance(result.error_in_exec, UserError)  # the cell still fails (papermill stops there)
        assert "UserError: unknown GLUE task 'nosuch'" in out and "Traceback" not in out
        result = shell.run_cell("1 / 0")
        assert "Traceback" in capsys.readouterr().out  # a bug keeps its traceback
    finally:
        InteractiveShell.clear_instance()


def test_a_record_that_cannot_be_written_keeps_the_model_and_the_same_call_records_it(session, tmp_path, monkeypatch):
    """A results folder that fills up during training: the error says where the model is, and the
    same call afterwards records the finished run without training it again."""
    import errno

    from ckdlab import api
    from ckdlab.errors import UserError
    from ckdlab.workspace import records

    def full_disk(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    arguments = dict(student="layers:0", objective="kd", teacher=session["teacher"] / "best", profile="smoke", max_steps=2,
                     out_dir=tmp_path / "run")
    with monkeypatch.context() as patch:
        patch.setattr(records, "atomic_write_json", full_disk)
        with pytest.raises(UserError, match=r"its model is saved in .*run/best.*No space left on device.*same command again"):
            api.distill("sst2", **arguments)
    trained = (tmp_path / "run" / "best" / "model.safetensors").stat().st_mtime_ns
    row = api.distill("sst2", **arguments)
    assert (tmp_path / "results" / "records" / f"{row['run_id']}.json").exists()
    assert (tmp_path / "run" / "best" / "model.safetensors").stat().st_mtime_ns == trained  # not trained again
