"""``distill_grid``: which runs a grid makes, in which order, and one progress bar instead of one per run."""
from __future__ import annotations

from ckdlab.studies import distillation
from ckdlab.studies.distillation import GRID_COLUMNS, distill_grid


def test_grid_runs_every_cell_once_with_one_bar(monkeypatch, capsys):
    calls = []

    def fake_distill(task, **kwargs):
        calls.append((task, kwargs))
        return {column: kwargs.get(column) for column in GRID_COLUMNS} | {"task": task}

    monkeypatch.setattr(distillation, "distill", fake_distill)
    methods = {"logit KD": {"objective": "kd"}, "CoDIR + KD": {"objective": "codir+kd", "tasks": ["sst2"]}}
    frame = distill_grid(["sst2", "mrpc"], {"narrow": "config:L4-H256-A4-I1024"}, methods, profile="smoke", seeds=iter([0, 1]))
    runs = [(task, k["seed"], k["method"]) for task, k in calls]
    assert runs == [("sst2", 0, "logit KD"), ("sst2", 0, "CoDIR + KD"), ("sst2", 1, "logit KD"), ("sst2", 1, "CoDIR + KD"),
                    ("mrpc", 0, "logit KD"), ("mrpc", 1, "logit KD")]  # a method's `tasks` limits it; seeds may be an iterator
    assert all(k["progress"] is False and "tasks" not in k for _, k in calls)
    assert len(frame) == 6 and list(frame.columns) == list(GRID_COLUMNS)
    assert "runs" in capsys.readouterr().err  # the grid's own bar

    calls.clear()
    distill_grid(["sst2"], {"narrow": "x"}, {"logit KD": {"objective": "kd"}}, profile="smoke", progress=True)
    assert calls[0][1]["progress"] is True  # asked for: each run's bars too
