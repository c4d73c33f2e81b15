"""Kill or interrupt a run at a random step, run the same command again: the same final weights.

Each run is ``python -m ckdlab.cli`` in a child process (:mod:`cli_process`) on the smoke
profile (16 steps, a checkpoint every 3, evaluations every 5). A hook in the child sends the
signal at the chosen step from inside, so the moment is exact: SIGKILL after a step, while the
checkpoint files are being written, or between the two renames that put a new checkpoint in place;
SIGINT (Ctrl-C) in the middle of a step, which must finish that step, checkpoint it, print one
line naming it and exit 130. The step and the kill point are drawn at random (printed on failure).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_process import folders_env, shared_cli

STEPS = 16
# --keep-checkpoint: the final weights (not only best/) of two runs are compared
TRAIN = ["--profile", "smoke", "--batch-size", "4", "--eval-every", "5", "--save-every", "3", "--keep-checkpoint"]
FINETUNE = ["finetune", "--task", "sst2", *TRAIN]

HOOK = """
import os, signal
from ckdlab.engine import checkpoints
from ckdlab.engine.trainer import Trainer
K, WHERE, SIGNAL = {step}, {where!r}, signal.{signal}
step, save, write_state, replace = Trainer.step, checkpoints.save, checkpoints.atomic_write_json, os.replace
armed = [False]

def send():
    os.kill(os.getpid(), SIGNAL)

def hooked_step(self):
    if WHERE == "in a step" and self.global_step + 1 == K:
        send()
    logs = step(self)
    if WHERE == "after a step" and self.global_step == K:
        send()
    return logs

def hooked_save(accelerator, out_dir, loop_state):
    armed[0] = loop_state["global_step"] == K
    return save(accelerator, out_dir, loop_state)

def hooked_write_state(path, obj):
    result = write_state(path, obj)  # the checkpoint's files are all in its temporary folder, not yet renamed
    if WHERE == "writing a checkpoint" and armed[0]:
        send()
    return result

def hooked_replace(source, target, *args, **kwargs):
    replace(source, target, *args, **kwargs)
    if WHERE == "between the renames" and armed[0] and str(target).endswith(".checkpoint.old"):
        send()

Trainer.step, checkpoints.save, checkpoints.atomic_write_json, os.replace = hooked_step, hooked_save, hooked_write_state, hooked_replace
"""
# Where a SIGKILL may land, and the steps at which each point exists (checkpoints at 3, 6, ...;
# a checkpoint replaces an older one from step 6 on).
KILL_POINTS = {"after a step": range(1, STEPS), "writing a checkpoint": range(3, STEPS, 3),
               "between the renames": range(6, STEPS, 3)}


def last_complete_checkpoint(where: str, step: int) -> int:
    """The step of the checkpoint a resume must find (0: none, the run starts again)."""
    # "after a step": the kill comes before that step's own checkpoint is written.
    return 3 * ((step - 1) // 3) if where == "after a step" else step - 3


def resumed_from(run: Path) -> int:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()] if (run / "events.jsonl").exists() else []
    return next((event["step"] for event in events if event["event"] == "resumed"), 0)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return {**{f"best.{k}": v for k, v in load_file(run / "best" / "model.safetensors").items()},
            **{f"last.{k}": v for k, v in load_file(run / "checkpoint" / "model.safetensors").items()}}


def assert_same_weights(run: Path, reference: Path, label: str) -> None:
    got, want = final_weights(run), final_weights(reference)
    assert got.keys() == want.keys(), label
    different = [name for name in want if not torch.equal(got[name], want[name])]
    assert not different, f"{label}: {len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A smoke teacher, and the uninterrupted fine-tuning and distillation runs to compare with."""
    root = tmp_path_factory.mktemp("resume")
    cli, env = shared_cli(), folders_env(root)
    for argv in ([*FINETUNE, "--out", root / "finetune"],
                 ["finetune", "--task", "sst2", "--profile", "smoke", "--out", root / "teacher"]):
        result = cli.run(argv, env=env)
        assert result.code == 0, result.stderr
    distill = ["distill", "--task", "sst2", *TRAIN, "--teacher", root / "teacher" / "best", "--student", "layers:0,1",
               "--objective", "ckd+kd"]
    result = cli.run([*distill, "--out", root / "distill"], env=env)
    assert result.code == 0, result.stderr
    return {"root": root, "finetune": root / "finetune", "distill": root / "distill", "distill_argv": distill}


@pytest.mark.parametrize("kind", ["finetune", "distill"])
def test_sigkill_at_a_random_point_then_the_same_command_gives_the_same_weights(kind, runs, tmp_path):
    rng = random.Random()
    where = rng.choice(sorted(KILL_POINTS))
    step = rng.choice(list(KILL_POINTS[where]))
    label = f"{kind}: SIGKILL {where} at step {step}"
    argv = [*(FINETUNE if kind == "finetune" else runs["distill_argv"]), "--out", tmp_path / "run"]
    env = folders_env(tmp_path)
    killed = shared_cli().run(argv, env=env, hook=HOOK.format(step=step, where=where, signal="SIGKILL"))
    assert killed.code == -9, f"{label}: {killed.stderr}"
    assert not (tmp_path / "results" / "records").exists(), label
    resumed = shared_cli().run(argv, env=env)
    assert resumed.code == 0, f"{label}: {resumed.stderr}"
    assert resumed_from(tmp_path / "run") == last_complete_checkpoint(where, step), label
    assert_same_weights(tmp_path / "run", runs[kind], label)
    assert not list((tmp_path / "run").glob(".checkpoint*")) and not list((tmp_path / "run").glob(".best*")), label
    assert len(list((tmp_path / "results" / "records").glob("*.json"))) == 1, label


def test_ctrl_c_finishes_the_step_says_where_to_resume_and_exits_130(runs, tmp_path):
    step = random.Random().randrange(2, STEPS)
    argv = [*runs["distill_argv"], "--out", tmp_path / "run"]
    env = folders_env(tmp_path)
    stopped = shared_cli().run(argv, env=env, hook=HOOK.format(step=step, where="in a step", signal="SIGINT"))
    assert stopped.code == 130, f"Ctrl-C at step {step}: {stopped.stderr}"
    assert "Traceback" not in stopped.stderr
    assert f"ckdlab distill: interrupted; run the same command to resume from step {step}" in stopped.stderr.splitlines()
    assert (tmp_path / "run" / "checkpoint" / "trainer_state.json").exists()
    assert not (tmp_path / "results" / "records").exists()
    resumed = shared_cli().run(argv, env=env)
    assert resumed.code == 0, resumed.stderr
    assert resumed_from(tmp_path / "run") == step
    assert_same_weights(tmp_path / "run", runs["distill"], f"Ctrl-C at step {step}")
