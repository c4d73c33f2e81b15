"""Run records and paper tables: atomic records, mean ± std over seeds, bold best, averages, rendering."""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from ckdlab.io import atomic_directory, atomic_write_json
from ckdlab.results import table
from ckdlab.workspace import load_runs, record_run


def make_runs(tmp_path):
    scores = {("4L", "KD", "sst2"): [0.80, 0.82], ("4L", "KD", "rte"): [0.60, 0.62],
              ("4L", "CKD", "sst2"): [0.84, 0.86], ("4L", "CKD", "rte"): [0.61, 0.65],
              ("3L", "KD", "sst2"): [0.83, 0.83]}
    for (student, method, task), values in scores.items():
        for seed, score in enumerate(values):
            record_run({"kind": "distill", "task": task, "student": student, "method": method, "seed": seed,
                        "score": score, "metrics": {"accuracy": score}}, tmp_path)
    return load_runs(tmp_path)


def test_records_round_trip_with_commit_and_metrics(tmp_path):
    path = record_run({"kind": "finetune", "task": "sst2", "metrics": {"accuracy": 0.9}, "score": 0.9}, tmp_path)
    record = json.loads(path.read_text())
    assert record["run_id"] and record["time"] and "git_commit" in record
    runs = load_runs(tmp_path)
    assert runs.loc[0, "metric.accuracy"] == 0.9 and len(load_runs(tmp_path, task="rte")) == 0
    with pytest.raises(ValueError, match="needs 'metrics'"):
        record_run({"kind": "x", "task": "sst2"}, tmp_path)


def test_table_mean_std_best_and_average(tmp_path):
    result = table(make_runs(tmp_path), rows=("student", "method"))
    assert result.mean.loc[("4L", "CKD"), "sst2"] == pytest.approx(0.85)
    assert result.std.loc[("4L", "CKD"), "rte"] == pytest.approx(np.std([0.61, 0.65], ddof=1))
    # avg: per seed, mean over tasks, then mean over seeds; only rows with every task
    assert result.mean.loc[("4L", "KD"), "avg"] == pytest.approx(np.mean([(0.80 + 0.60) / 2, (0.82 + 0.62) / 2]))
    assert np.isnan(result.mean.loc[("3L", "KD"), "avg"])
    markdown = result.to_markdown()
    assert "**85.0 ± 1.4**" in markdown and "| 3L | KD |" in markdown and "–" in markdown
    assert "\\textbf{85.0 $\\pm$ 1.4}" in result.to_latex()


def test_table_errors(tmp_path):
    with pytest.raises(ValueError, match="no runs"):
        table(pd.DataFrame())
    with pytest.raises(ValueError, match="lack the column"):
        table(make_runs(tmp_path), rows=("nope",))


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "weights").write_text("partial")
            raise RuntimeError("interrupted")
    assert not (tmp_path / "model").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("v1")
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("v2")
    assert (tmp_path / "model" / "weights").read_text() == "v2"
    # The folder gets the umask's permissions, not mkdtemp's owner-only 0700.
    mask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "perms" / "shared") as tmp:
            (tmp / "weights").write_text("v1")
    finally:
        os.umask(mask)
    assert (tmp_path / "perms" / "shared").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "model", "perms"]


def test_cli_table_and_info(tmp_path, capsys, monkeypatch):
    from ckdlab.cli import main

    make_runs(tmp_path)
    assert main(["table", "--results", str(tmp_path), "--kind", "distill"]) == 0
    assert "| student | method |" in capsys.readouterr().out
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "minilm-l6" in info["models"] and "sst2" in info["tasks"]


def test_rows_are_grouped_by_student_size(tmp_path):
    for student, params in (("small", 10), ("big", 100), ("mid", 50)):
        for method in ("KD", "CKD"):
            record_run({"kind": "distill", "task": "sst2", "student": student, "method": method, "seed": 0,
                        "score": 0.5, "params": params, "metrics": {}}, tmp_path)
    result = table(load_runs(tmp_path), average=False)
    assert [k[0] for k in result.mean.index] == ["big", "big", "mid", "mid", "small", "small"]
