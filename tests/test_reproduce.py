"""``ckdlab notebooks`` says what it does while it runs, stops legibly on a failing cell, and every
notebook's parameters cell reads cleanly (no papermill "Unable to parse line" warning)."""
from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from ckdlab import cli, reproduce
from ckdlab.reproduce import NotebookFailed, notebooks, parameter_warnings, run_notebooks


def tiny_notebook(folder: Path, name: str, *sources: str, parameters: str = 'profile = "quick"') -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), cell]
    nb.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


FAILING = ("x = 1", 'raise ValueError(f"the tiny notebook fails on purpose in profile {profile}")', "never = True")


def test_a_failing_cell_names_notebook_cell_error_and_partial_copy(tmp_path):
    path = tiny_notebook(tmp_path / "nb", "98_failing", *FAILING)
    printed = io.StringIO()
    with pytest.raises(NotebookFailed) as caught:
        run_notebooks("smoke", paths=[path], out_dir=tmp_path / "executed", stream=printed, report=False)
    failed = caught.value
    assert failed.notebook == "98_failing.ipynb"
    # cells: markdown, parameters (In [1]), injected parameters (In [2]), x = 1 (In [3]), the raise (In [4])
    assert failed.position == "In [4]"
    assert failed.error == "ValueError: the tiny notebook fails on purpose in profile smoke"
    assert failed.output_path == tmp_path / "executed" / "98_failing.ipynb"
    partial = nbformat.read(failed.output_path, as_version=4)
    errors = [o for c in partial.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ValueError"]
    assert not any(c.source == "never = True" and c.get("execution_count") for c in partial.cells)
    text = printed.getvalue()
    assert "[1/1] 98_failing · no earlier timing" in text and "[1/1] 98_failing FAILED" in text
    assert "98_failing.ipynb failed after" in text and "in In [4]: ValueError: the tiny notebook fails" in text
    assert "the cell begins: raise ValueError(" in text and f"partially executed notebook: {failed.output_path}" in text
    assert not reproduce.timings_path("smoke").exists(), "a failed notebook has no run time"


def test_the_cli_exits_non_zero_on_a_failing_notebook(tmp_path, monkeypatch, capfd):
    tiny_notebook(tmp_path / "nb", "98_failing", *FAILING)
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", tmp_path / "nb")
    assert cli.main(["notebooks", "--profile", "smoke", "--out", str(tmp_path / "executed")]) == 1
    out, err = capfd.readouterr()
    assert "98_failing.ipynb failed after" in out
    assert "without encryption" not in out + err, "the kernel's start-up warning reached the terminal"


def test_progress_lines_timings_and_expected_times(tmp_path):
    first = tiny_notebook(tmp_path / "nb", "01_first", "a = 1", "b = a + 1")
    second = tiny_notebook(tmp_path / "nb", "02_second", "c = 3")
    printed = io.StringIO()
    rows = run_notebooks("smoke", paths=[first, second], out_dir=tmp_path / "executed", stream=printed, report=False)
    assert [r["notebook"] for r in rows] == ["01_first.ipynb", "02_second.ipynb"] and [r["cells"] for r in rows] == [4, 3]
    text = printed.getvalue()
    assert text.startswith("ckdlab notebooks: 2 notebooks, profile smoke, no earlier timing; executed copies in ")
    assert "[1/2] 01_first · no earlier timing" in text and "[2/2] 02_second · no earlier timing" in text
    assert "[1/2] 01_first done in" in text and "expected remaining unknown (1 notebook)" in text
    assert "[2/2] 02_second done in" in text and "nothing left" in text
    # not a terminal: one line per cell as it starts (a terminal gets a bar redrawn every second)
    assert re.search(r"\n  01_first: 0/4 cells done, \d\d:\d\d · In \[1\] profile = ", text) and "  01_first: 3/4 cells done" in text
    assert "In [4] b = a + 1" in text and "  02_second: 2/3 cells done" in text
    timings = pd.read_csv(reproduce.timings_path("smoke"))
    assert list(timings.columns) == ["notebook", "profile", "seconds", "started", "finished", "cells"]
    assert list(timings["notebook"]) == ["01_first.ipynb", "02_second.ipynb"]

    again = io.StringIO()
    run_notebooks("smoke", paths=[first], out_dir=tmp_path / "executed", stream=again, report=False)
    seconds = dict(zip(timings["notebook"], timings["seconds"]))
    assert f"[1/1] 01_first · expected ~{reproduce.duration(seconds['01_first.ipynb'])} (last measured run)" in again.getvalue()
    merged = pd.read_csv(reproduce.timings_path("smoke"))
    assert list(merged["notebook"]) == ["01_first.ipynb", "02_second.ipynb"], "a partial run keeps the other rows"


def test_a_log_file_hears_from_a_long_cell(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "HEARTBEAT_SECONDS", 0.4)
    slow = tiny_notebook(tmp_path / "nb", "01_slow", "import time\ntime.sleep(2.5)", "done = True")
    printed = io.StringIO()
    run_notebooks("smoke", paths=[slow], out_dir=tmp_path / "executed", stream=printed, report=False)
    beats = re.findall(r"  01_slow: 2/4 cells done, \d\d:\d\d · still in In \[3\] import time", printed.getvalue())
    assert len(beats) >= 2, printed.getvalue()
    assert reproduce.clock(59) == "00:59" and reproduce.clock(3725) == "1:02:05"


def test_a_fresh_checkout_expects_the_shipped_reference_times(tmp_path, monkeypatch):
    first = tiny_notebook(tmp_path / "nb", "01_first", "a = 1")
    reference = tmp_path / "reference_times_smoke.csv"
    pd.DataFrame([{"notebook": "01_first.ipynb", "profile": "smoke", "seconds": 1500.0}]).to_csv(reference, index=False)
    monkeypatch.setattr(reproduce, "reference_times_path", lambda profile: reference)
    printed = io.StringIO()
    run_notebooks("smoke", paths=[first], out_dir=tmp_path / "executed", stream=printed, report=False,
                  timings_csv=tmp_path / "none_yet.csv")
    text = printed.getvalue()
    assert "profile smoke, expected total ~25.0 min (reference run, 2-core CPU)" in text
    assert "[1/1] 01_first · expected ~25.0 min (reference run, 2-core CPU)" in text
    again = io.StringIO()  # once this checkout has measured a run, its own times win
    run_notebooks("smoke", paths=[first], out_dir=tmp_path / "executed", stream=again, report=False,
                  timings_csv=tmp_path / "none_yet.csv")
    assert "(last measured run)" in again.getvalue() and "reference" not in again.getvalue()


def test_remaining_time_counts_known_and_unknown_notebooks():
    expected = {"a.ipynb": 120.0, "b.ipynb": 30.0}
    assert reproduce._remaining(["a.ipynb", "b.ipynb"], expected) == "expected remaining ~2.5 min (2 notebooks)"
    assert reproduce._remaining(["b.ipynb", "c.ipynb"], expected) == "expected remaining ~30 s + 1 notebook without a timing (2 notebooks)"
    assert reproduce.duration(89) == "89 s" and reproduce.duration(600) == "10.0 min"


def test_every_notebook_parameters_cell_parses_without_warnings(tmp_path):
    bad = tiny_notebook(tmp_path, "bad", parameters='profile = "smoke"\ntasks = None  # None means tasks=all')
    assert parameter_warnings(bad) == ["Unable to parse line 2 'tasks = None  # None means tasks=all'."]
    found = {path.name: parameter_warnings(path) for path in notebooks()}
    assert len(found) >= 5 and not any(found.values()), {k: v for k, v in found.items() if v}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_bar_names_the_cell_and_its_clock_moves_during_a_long_cell(tmp_path):
    path = tiny_notebook(tmp_path / "nb", "01_slow", "import time", "time.sleep(2.5)")
    screen = Terminal()
    run_notebooks("smoke", paths=[path], out_dir=tmp_path / "executed", stream=screen, report=False)
    frames = screen.getvalue().split("\r")
    during = [f for f in frames if "01_slow: 3/4 cells" in f and "In [4] time.sleep(2.5)" in f]
    clocks = {re.search(r"\| (\d\d:\d\d)", f).group(1) for f in during}
    assert len(clocks) >= 2, f"the bar was not redrawn while the cell ran: {during}"
    assert not [t for t in threading.enumerate() if t.name.startswith("progress-")], "the redraw thread outlived the notebook"
