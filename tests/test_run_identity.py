"""Run identity through the API (smoke profile): a folder holds one run, finished runs are reused,
tables pool only seeds of one configuration."""
from __future__ import annotations

import json
import warnings

import pytest

from ckdlab import api
from ckdlab.errors import UserError

STUDENT = "layers:0,1"
SMALL = {"profile": "smoke", "max_steps": 2}


def _records():
    return api.load_runs(kind="distill")


def test_a_finished_identical_run_is_reused_and_adds_no_record(tmp_path):
    first = api.distill("sst2", student=STUDENT, objective="kd", out_dir=tmp_path / "run", **SMALL)
    mtime = (tmp_path / "run" / "best" / "model.safetensors").stat().st_mtime_ns
    again = api.distill("sst2", student=STUDENT, objective="kd", out_dir=tmp_path / "run", **SMALL)
    assert again["score"] == first["score"] and again["run_id"] == first["run_id"]
    assert (tmp_path / "run" / "best" / "model.safetensors").stat().st_mtime_ns == mtime  # nothing trained
    assert len(_records()) == 1
    stored = json.loads((tmp_path / "run" / "run.json").read_text())
    assert stored["config"]["task"] == "sst2" and stored["config"]["objective"] == "kd"


def test_another_config_in_the_same_folder_is_refused_naming_the_differences(tmp_path):
    api.distill("sst2", student=STUDENT, objective="kd", out_dir=tmp_path / "run", **SMALL)
    with pytest.raises(UserError, match=r"temperature: .* -> 4\.0.*--no-resume") as error:
        api.distill("sst2", student=STUDENT, objective="kd", out_dir=tmp_path / "run", temperature=4.0, **SMALL)
    assert "--out" in str(error.value)
    replaced = api.distill("sst2", student=STUDENT, objective="kd", out_dir=tmp_path / "run", temperature=4.0,
                           resume=False, **SMALL)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["temperature"] == 4.0
    assert replaced["run_id"] in set(_records()["run_id"]) and _records()["run_id"].nunique() == 2


def test_default_folders_carry_the_identity_and_tables_pool_only_one_configuration():
    for seed in (0, 1):
        api.distill("sst2", student=STUDENT, objective="kd", seed=seed, **SMALL)
    # Same labels (student, method, task), another configuration: a fresh folder, not an error ...
    api.distill("sst2", student=STUDENT, objective="kd", seed=0, lr=3e-4, **SMALL)
    runs = _records()
    assert len(runs) == 3 and runs["config_id"].nunique() == 2 and runs["run_id"].nunique() == 3
    # ... and never averaged in as if it were another seed: the table keeps the newest configuration.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = api.table(runs)
    assert any("left out 2 run(s) of older configurations" in str(w.message) for w in caught)
    tidy = result.tidy()
    assert set(tidy.loc[tidy["column"] == "sst2", "n"]) == {1}


def test_the_weighting_scheme_is_part_of_a_run_only_when_it_weights_something(tmp_path):
    """A KD run has no term the weighting sets, so --balance does not make it another run; CKD + KD has."""
    kd = api.distill("sst2", student=STUDENT, objective="kd", out_dir=tmp_path / "kd", **SMALL)
    again = api.distill("sst2", student=STUDENT, objective="kd", out_dir=tmp_path / "kd", balance="grad", **SMALL)
    assert again["run_id"] == kd["run_id"] and len(_records()) == 1
    ckd = api.distill("sst2", student=STUDENT, objective="ckd+kd", out_dir=tmp_path / "ckd", **SMALL)
    with pytest.raises(UserError, match="balance"):
        api.distill("sst2", student=STUDENT, objective="ckd+kd", out_dir=tmp_path / "ckd", balance="grad", **SMALL)
    # Every CKD weight named: nothing is balanced, so the scheme is again not part of the run.
    fixed = {"wr_pair": 1.0, "wr_triplet": 1.0, "ltr_pair": 1.0, "ltr_triplet": 1.0}
    named = api.distill("sst2", student=STUDENT, objective="ckd+kd", weights=fixed, out_dir=tmp_path / "named", **SMALL)
    assert api.distill("sst2", student=STUDENT, objective="ckd+kd", weights=fixed, out_dir=tmp_path / "named",
                       balance="grad", **SMALL)["run_id"] == named["run_id"] != ckd["run_id"]
