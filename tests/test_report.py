"""The report gathers every table and figure of a profile, with run times and versions, as a
self-contained HTML page and a Markdown twin; outputs are filed under the notebook that made them."""
from __future__ import annotations

import base64
import datetime as dt
import io
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ckdlab import cli  # noqa: E402
from ckdlab.errors import UserError  # noqa: E402
from ckdlab.report import MAX_ROWS, build_report, figure_folder  # noqa: E402
from ckdlab.workspace.runs import package_version  # noqa: E402


def png(path: Path) -> bytes:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=50)
    plt.close(fig)
    return path.read_bytes()


def touch_at(path: Path, when: dt.datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


@pytest.fixture
def outputs(tmp_path):
    """A smoke profile's outputs: two notebooks' run times, tables with and without a prefix, figures."""
    results, figures = tmp_path / "results" / "smoke", tmp_path / "figures" / "smoke"
    results.mkdir(parents=True)
    start = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone.utc)
    pd.DataFrame({"notebook": ["01_first.ipynb", "03_third.ipynb"], "profile": "smoke", "seconds": [120.0, 30.0],
                  "started": [start.isoformat(), (start + dt.timedelta(minutes=3)).isoformat()],
                  "finished": [(start + dt.timedelta(minutes=2)).isoformat(), (start + dt.timedelta(minutes=3, seconds=30)).isoformat()],
                  "cells": [5, 4]}).to_csv(results / "notebook_times_smoke.csv", index=False)
    pd.DataFrame({"task": ["sst2", "stsb"], "score": [0.8312345, 0.86]}).to_csv(results / "teachers.csv", index=False)
    touch_at(results / "teachers.csv", start + dt.timedelta(minutes=1))  # written while notebook 01 ran
    pd.DataFrame({"method": ["CKD + KD"], "sst2": [78.25]}).to_csv(results / "03_scores.csv", index=False)
    pd.DataFrame({"x": range(MAX_ROWS + 5)}).to_csv(results / "big.csv", index=False)
    touch_at(results / "big.csv", start + dt.timedelta(hours=5))  # no notebook was running
    figure = png(figures / "01_curves.png")
    png(figures / "03_bars.png")
    return tmp_path, figure


def sections_of(markdown: str) -> dict[str, list[str]]:
    """Second-level headings -> the third-level headings under them."""
    found: dict[str, list[str]] = {}
    current = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line[3:]
            found[current] = []
        elif line.startswith("### ") and current is not None:
            found[current].append(line[4:])
    return found


def test_report_files_outputs_under_their_notebooks(outputs):
    root, figure = outputs
    page, markdown = build_report("smoke", results=root / "results", figures=root / "figures")
    assert page == root / "results" / "smoke" / "report.html" and markdown == root / "results" / "smoke" / "report.md"
    text = markdown.read_text()
    assert sections_of(text) == {
        "Run times": [],
        "01_first (2.0 min)": ["Table teachers", "Figure 01_curves"],
        "03_third (0.5 min)": ["Table 03_scores", "Figure 03_bars"],
        "Other outputs": ["Table big"],
    }
    assert "| sst2 | 0.8312 |" in text and "| CKD + KD | 78.25 |" in text  # four significant digits
    assert f"{MAX_ROWS + 5} rows × 1 columns; the first {MAX_ROWS} shown" in text
    assert "| 01_first.ipynb | 2 | 2024-05-01T10:00:00+00:00 | 2024-05-01T10:02:00+00:00 | 5 |" in text
    assert "| total | 2.5 |  |  |  |" in text
    assert "![01_curves.png](../../figures/smoke/01_curves.png)" in text
    assert f"| ckdlab | {package_version()} |" in text and re.search(r"\| git commit \| [0-9a-f]{40}", text)


def test_html_is_self_contained(outputs):
    root, figure = outputs
    page, _ = build_report("smoke", results=root / "results", figures=root / "figures")
    html = page.read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', html)
    assert [name for name, _ in images] == ["01_curves.png", "03_bars.png"]
    assert base64.b64decode(images[0][1]) == figure
    assert not re.findall(r'(?:src|href)="(?!data:)', html), "the page links to a file"
    assert "<td>0.8312</td>" in html and "<h2>Other outputs</h2>" in html


def test_quick_figures_are_the_top_level_folder_and_nothing_to_report_is_an_error(tmp_path):
    assert figure_folder("quick", tmp_path) == tmp_path and figure_folder("smoke", tmp_path) == tmp_path / "smoke"
    png(tmp_path / "figures" / "01_top.png")
    png(tmp_path / "figures" / "smoke" / "01_smoke_only.png")
    _, markdown = build_report("quick", results=tmp_path / "results", figures=tmp_path / "figures")
    text = markdown.read_text()
    assert "01_top.png" in text and "01_smoke_only" not in text and "No run times" in text
    with pytest.raises(UserError, match="profile=.paper. has no tables"):
        build_report("paper", results=tmp_path / "results", figures=tmp_path / "figures")


def test_cli_report_prints_the_path(outputs, monkeypatch, capsys):
    root, _ = outputs
    monkeypatch.setenv("CKDLAB_RESULTS", str(root / "results"))
    monkeypatch.setenv("CKDLAB_FIGURES", str(root / "figures"))
    assert cli.main(["report", "--profile", "smoke"]) == 0
    assert capsys.readouterr().out.strip() == f"Report: {root / 'results' / 'smoke' / 'report.html'} (Markdown: {root / 'results' / 'smoke' / 'report.md'})"


@pytest.mark.slow
def test_report_of_a_smoke_notebook_run(tmp_path):
    from ckdlab.reproduce import run_notebooks

    printed = io.StringIO()
    run_notebooks("smoke", only=["01"], out_dir=tmp_path / "executed", stream=printed)
    report = tmp_path / "results" / "smoke" / "report.md"
    assert printed.getvalue().rstrip().endswith(f"Report: {report.with_suffix('.html')} (Markdown: {report})")
    found = sections_of(report.read_text())
    assert "Table teachers" in found[next(s for s in found if s.startswith("01_teacher_finetuning ("))]
    assert "Figure 01_teacher_learning_curves" in found[next(s for s in found if s.startswith("01_teacher_finetuning ("))]
