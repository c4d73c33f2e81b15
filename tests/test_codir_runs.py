"""CoDIR + KD in the workbench: the profile's notebook-03 row end to end through ``api.distill``, the memory
bank in checkpoints and bit-exact resume through the real engine, the notebook-05 ablation group, and the
paper configs' CoDIR runs (dry run)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from ckdlab import api
from ckdlab.objectives.codir import CoDIR
from ckdlab.objectives.registry import check_options, parse_objective
from ckdlab.profiles import load_profile
from ckdlab.studies import ablations as ab

NARROW = "config:L2-H32-A2-I64"
METHOD = "CoDIR + KD"


def codir_method(profile: str) -> dict:
    options = dict(load_profile(profile)["distill"]["methods"][METHOD])
    options.pop("tasks", None)
    return options


def checkpoint_tensor(run_dir: Path, key: str) -> torch.Tensor:
    """``key`` from whichever of the checkpoint's module files holds it (Accelerate numbers them)."""
    found = [tensors[key] for path in sorted((run_dir / "checkpoint").glob("model*.safetensors"))
             if key in (tensors := load_file(str(path)))]
    assert len(found) == 1, f"{key} is in {len(found)} checkpoint files"
    return found[0]


def test_profile_row_trains_end_to_end_and_checkpoints_the_bank(tmp_path):
    options = codir_method("smoke")
    assert parse_objective(options["objective"]) == ["codir", "kd"]
    row = api.distill("sst2", student=NARROW, student_name="narrow", method=METHOD, profile="smoke",
                      out_dir=tmp_path / "run", keep_checkpoint=True, **options)
    assert row["method"] == METHOD and row["objective"] == "codir+kd" and 0.0 <= row["score"] <= 1.0
    assert row["weights"]["codir"] == options["weights"]["codir"] > 0
    assert row["weights"]["ce"] == row["weights"]["kd"] == 0.5  # the official KD mixing
    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    assert {"ce", "kd", "codir"} <= set(log["name"])
    codir = log.loc[log["name"] == "codir", "value"]
    assert codir.notna().all() and (codir > 0).all()
    assert (api.results_dir() / "records" / f"{row['run_id']}.json").exists()

    # The bank is part of the run: one unit row per training example, every row written in the epoch.
    bank = checkpoint_tensor(tmp_path / "run", "bank")
    n = row["train_examples"]
    assert bank.shape == (n, 128)
    assert torch.allclose(bank.norm(dim=-1), torch.ones(n), atol=1e-5)
    fresh = CoDIR([2], [2], 64, 32, seed=row["seed"])
    fresh.bind_training_set(checkpoint_tensor(tmp_path / "run", "labels"), regression=False)
    assert fresh.bank.shape == bank.shape
    assert not torch.isclose(fresh.bank, bank).all(dim=-1).any(), "a bank row was never written"
    assert int(checkpoint_tensor(tmp_path / "run", "draws")) == 4  # one draw per training step


@pytest.mark.parametrize("symmetric", [False, True])
def test_resume_restores_the_bank_bit_exactly(symmetric, tmp_path):
    """Interrupt mid-epoch 1 (3 of 8 steps), resume in a fresh distiller, compare with a straight run."""
    options = codir_method("smoke")
    options["objective_options"] = {**options.get("objective_options", {}), "symmetric": symmetric}

    def distiller(name: str):
        return api.make_distiller("rte", student=NARROW, profile="smoke", out_dir=tmp_path / name, epochs=2, **options)

    straight = distiller("straight")
    straight.train()
    first = distiller("resumed")
    partial = first.train(stop_after=3)
    assert partial["steps"] == 3 and not partial["finished"]
    again = distiller("resumed")
    again.setup()
    assert again.load_checkpoint()
    stopped, restored = first.objectives["codir"], again.objectives["codir"]
    for name in ("bank", "student_bank", "labels", "draws"):
        assert torch.equal(getattr(stopped, name), getattr(restored, name)), name
    assert restored.student_bank.shape[0] == (again.train_size if symmetric else 0)
    summary = again.train(resume=True)
    assert summary["steps"] == 8 and summary["finished"]

    a = pd.read_csv(tmp_path / "straight" / "train_log.csv")
    b = pd.read_csv(tmp_path / "resumed" / "train_log.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    ended, resumed = straight.objectives["codir"], again.objectives["codir"]
    for name in ("bank", "student_bank", "draws"):
        assert torch.equal(getattr(ended, name), getattr(resumed, name)), name
    for (key, p), (_, q) in zip(straight.unwrapped_model().state_dict().items(), again.unwrapped_model().state_dict().items()):
        assert torch.equal(p, q), key
    assert torch.equal(ended.student_head.weight, resumed.student_head.weight)


def test_quick_profile_runs_codir_on_its_own_tasks():
    quick = load_profile("quick")
    method = quick["distill"]["methods"][METHOD]
    assert set(method.get("tasks", quick["tasks"])) <= set(quick["tasks"])
    smoke = load_profile("smoke")["distill"]["methods"][METHOD]
    assert "tasks" not in smoke  # the smoke profile (tests, notebook 03's smoke run) has every task


def test_ablation_group_variants_are_valid_and_run(tmp_path):
    for profile in ("smoke", "quick", "paper"):
        group = [(variant, options) for g, variant, options, _ in ab.variants(profile, "full") if g == "CoDIR"]
        assert [v for v, _ in group] == ["cls, K=100", "without CoDIR", "mean", "K=20", "K=500"]
        for _, options in group:
            # The CKD base's options are gone, CoDIR's own stay.
            check_options(parse_objective(options["objective"]), options["objective_options"])
    group = dict((v, o) for g, v, o, _ in ab.variants("smoke", "full") if g == "CoDIR")
    assert group["mean"]["objective_options"] == {"pooling": "mean"}
    assert group["K=500"]["objective_options"] == {"negatives": 500}
    assert group["without CoDIR"]["weights"] == {"ce": 0.5, "kd": 0.5}
    distiller = api.make_distiller("sst2", student="layers:0,1", profile="smoke", max_steps=1, **group["K=500"])
    distiller.step()
    assert distiller.objectives["codir"].negatives == 500
    distiller = api.make_distiller("sst2", student="layers:0,1", profile="smoke", max_steps=1, **group["mean"])
    assert distiller.objectives["codir"].pooling == "mean" and set(distiller.step()) >= {"ce", "kd", "codir"}


def test_an_option_no_objective_reads_still_fails_in_an_ablation_variant():
    settings = load_profile("smoke")
    settings["ablations"]["groups"]["CoDIR"]["typo"] = {"objective": "codir+kd", "objective_options": {"pooling_": "mean"}}
    options = next(o for g, v, o, _ in ab.variants(settings, "full") if v == "typo")
    assert options["objective_options"] == {"pooling_": "mean"}
    with pytest.raises(ValueError, match="pooling_"):
        check_options(parse_objective(options["objective"]), options["objective_options"])


def test_paper_configs_carry_codir_for_the_six_layer_students():
    for task, config in api.paper_configs().items():
        codir = config["codir"]
        six_layer = {name for name, spec in config["students"].items() if name.startswith("6L")}
        assert set(codir["students"]) == six_layer == {"6L-768", "6L-384"}, task
        assert codir["objective"] == "codir+kd" and codir["temperature"] == 2
        assert codir["weights"]["ce"] == codir["weights"]["kd"] == 0.5
        check_options(parse_objective(codir["objective"]), codir["objective_options"])
    frame = api.paper_runs(["sst2", "stsb"], dry_run=True, methods=[METHOD])
    assert len(frame) == 2 * 2 and set(frame["method"]) == {METHOD}
    assert (frame["terms"] == "ce,codir,kd").all()
    assert frame["loss"].map(lambda v: v == v and abs(v) < float("inf")).all()
    assert set(frame["layer_pairs"]) == {7}  # uniform 12 -> 6: embeddings + 6 pairs; CoDIR takes the 6
    with pytest.raises(ValueError, match="methods"):
        api.paper_runs(["sst2"], dry_run=True, methods=["CoDIR"])


def test_cli_distills_codir_with_its_options(tmp_path, capsys):
    import json

    from ckdlab.cli import main

    code = main(["distill", "--task", "mrpc", "--student", NARROW, "--objective", "codir+kd", "--profile", "smoke",
                 "--weights", "ce=0.5,kd=0.5,codir=0.2", "--objective-options", "pooling=mean,negatives=7,symmetric=true",
                 "--max-steps", "2", "--keep-checkpoint", "--out", str(tmp_path / "cli")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objective"] == "codir+kd" and out["weights"]["codir"] == 0.2
    assert out["objective_options"] == {"pooling": "mean", "negatives": 7, "symmetric": True}
    assert checkpoint_tensor(tmp_path / "cli", "student_bank").shape == checkpoint_tensor(tmp_path / "cli", "bank").shape
    assert main(["distill", "--task", "mrpc", "--student", NARROW, "--objective", "codir+kd", "--profile", "smoke",
                 "--objective-options", "pooling=max", "--max-steps", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "pooling must be one of" in capsys.readouterr().err
