"""Notebooks run headless in the smoke profile (papermill), and are committed without outputs."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, tmp_path: Path, **parameters) -> nbformat.NotebookNode:
    import papermill

    out = tmp_path / name
    papermill.execute_notebook(
        str(NOTEBOOKS / name), str(out), parameters={"profile": "smoke", **parameters},
        cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False,
    )
    return nbformat.read(out, as_version=4)


def test_notebooks_are_committed_clean_and_parameterised():
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert paths, "no notebooks found"
    for path in paths:
        nb = json.loads(path.read_text())
        assert not any(c.get("outputs") for c in nb["cells"]), f"{path.name} has outputs"
        tags = [c.get("metadata", {}).get("tags", []) for c in nb["cells"]]
        assert any("parameters" in t for t in tags), f"{path.name} has no parameters cell"


@pytest.mark.slow
def test_notebook_01_smoke(tmp_path):
    nb = execute("01_teacher_finetuning.ipynb", tmp_path)
    figures = Path(tmp_path / "figures" / "smoke")
    assert (figures / "01_teacher_learning_curves.png").exists()
    teachers = (tmp_path / "results" / "smoke" / "teachers.csv").read_text().splitlines()
    assert teachers[0].startswith("task,") and "params" in teachers[0] and "latency_ms" in teachers[0] and len(teachers) == 6
    assert sum(1 for c in nb.cells if c.cell_type == "code" and c.outputs) >= 3


@pytest.mark.slow
def test_notebook_03_smoke(tmp_path):
    execute("03_ckd_distillation.ipynb", tmp_path, tasks=["sst2", "rte"])
    table = (tmp_path / "results" / "smoke" / "ckd_distillation_table_mean.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 4  # header + 2 students x 4 methods (no KD, logit KD, CKD + KD, CoDIR + KD)
    assert (tmp_path / "figures" / "smoke" / "03_ckd_scores.png").exists()
    assert (tmp_path / "figures" / "smoke" / "03_ckd_loss_terms.png").exists()


@pytest.mark.slow
def test_notebook_02_smoke(tmp_path):
    nb = execute("02_relation_visualisation.ipynb", tmp_path)
    figures = sorted(p.name for p in (tmp_path / "figures" / "smoke").glob("02_*.png"))
    assert figures, "notebook 02 saved no figures"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
