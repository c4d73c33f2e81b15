"""Execute the notebooks headless, in order, with papermill (``make reproduce``), legibly.

Each notebook has a ``parameters`` cell (``profile = "quick"`` ...); papermill injects the
profile and writes an executed copy under ``notebooks/executed/`` (a build product, not
committed). While it runs, one line per notebook gives its expected time (from the last measured
run, ``results/<profile>/notebook_times_<profile>.csv``; on a fresh checkout from the reference run
shipped in ``notebooks/reference_times_<profile>.csv``, measured on a 2-core CPU), a bar counts its code cells and names the
one running (redrawn every second on a terminal, so the elapsed time moves during a long cell),
and a closing line gives its time, the total so far and the expected remainder. A failing cell
stops the run with :class:`NotebookFailed`: notebook, cell, the error's one line, the path of the
partially executed copy. At the end the report (:mod:`ckdlab.report`) gathers every table and
figure of the profile.
"""
from __future__ import annotations

import datetime as _dt
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, TextIO

import pandas as pd

from ckdlab.io import atomic_write_frame

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
TICK_SECONDS = 1.0  # redraw interval of the bar on a terminal
# A log file gets a line per cell, and one every HEARTBEAT_SECONDS while a long cell (a grid of runs) works,
# so that `make reproduce > log` never looks hung.
HEARTBEAT_SECONDS = 300.0


def notebooks(only: Iterable[str] | None = None) -> list[Path]:
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        prefixes = tuple(only)
        paths = [p for p in paths if p.name.startswith(prefixes)]
        if not paths:
            raise ValueError(f"--only {','.join(prefixes)} matches no notebook in {NOTEBOOK_DIR}")
    return paths


def timings_path(profile: str) -> Path:
    """Where the measured notebook times of ``profile`` live (the report reads them too)."""
    from ckdlab.workspace import results_dir

    return results_dir() / profile / f"notebook_times_{profile}.csv"


def reference_times_path(profile: str) -> Path:
    """The notebook times of a measured ``make reproduce`` shipped with the notebooks (2-core CPU), so that
    a first run already knows what to expect."""
    return NOTEBOOK_DIR / f"reference_times_{profile}.csv"


LAST_RUN, REFERENCE_RUN = "last measured run", "reference run, 2-core CPU"


def expected_seconds(profile: str, timings_csv: str | Path | None = None) -> tuple[dict[str, float], str]:
    """Seconds each notebook of ``profile`` took, and where they come from: the first that exists of
    ``timings_csv``, the last measured run (``results/<profile>/``; older checkouts kept the file in
    ``results/``) and the reference run shipped with the notebooks. ``({}, "")`` when none does."""
    from ckdlab.workspace import results_dir

    candidates = [(Path(timings_csv), LAST_RUN)] if timings_csv else []
    candidates += [(timings_path(profile), LAST_RUN), (results_dir() / f"notebook_times_{profile}.csv", LAST_RUN),
                   (reference_times_path(profile), REFERENCE_RUN)]
    for path, source in candidates:
        if path.exists():
            frame = pd.read_csv(path)
            return {str(row.notebook): float(row.seconds) for row in frame.itertuples()}, source
    return {}, ""


def parameter_warnings(path: str | Path) -> list[str]:
    """What papermill says when it reads the ``parameters`` cell of a notebook (e.g. "Unable to parse
    line 3", caused by an ``=`` inside a comment); [] for a clean cell. Uses papermill's own parser."""
    from papermill.inspection import _infer_parameters
    from papermill.iorw import load_notebook_node

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("papermill"), Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        _infer_parameters(load_notebook_node(str(path)), name="python3")
    finally:
        logger.removeHandler(handler)
    return messages


def kernel_config() -> Any:
    """The notebook client's configuration: CurveZMQ-encrypted kernel channels where pyzmq and the
    kernelspec support them, which also ends ipykernel's "Kernel is running over TCP without
    encryption" warning on the terminal for every notebook."""
    import zmq
    from traitlets.config import Config

    return Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()


def duration(seconds: float) -> str:
    """``42 s`` under a minute and a half, else ``3.4 min``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def clock(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from an hour on."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class NotebookFailed(RuntimeError):
    """A notebook stopped on an error: where, why (one line), and the partially executed copy."""

    def __init__(self, notebook: str, position: str, error: str, output_path: Path, seconds: float, source: str = "") -> None:
        self.notebook, self.position, self.error = notebook, position, error
        self.output_path, self.seconds, self.source = Path(output_path), seconds, source
        super().__init__(self.describe())

    def describe(self) -> str:
        first_line = next((line for line in self.source.splitlines() if line.strip()), "")
        lines = [f"{self.notebook} failed after {duration(self.seconds)} in {self.position}: {self.error}"]
        if first_line:
            lines.append(f"  the cell begins: {first_line.strip()[:100]}")
        lines.append(f"  partially executed notebook: {_shown(self.output_path)}")
        return "\n".join(lines)


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (shorter to read), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class CellProgress:
    """Progress over one notebook's code cells, fed by the notebook client's hooks. On a terminal: a
    bar naming the running cell, redrawn every :data:`TICK_SECONDS` so that the elapsed time moves
    during long cells. Elsewhere (a log file): one line as each cell starts, and one every
    :data:`HEARTBEAT_SECONDS` while it runs."""

    def __init__(self, name: str, stream: TextIO) -> None:
        self.name, self.stream = name, stream
        self.cell_index: int | None = None
        self.source, self.done, self.total = "", 0, 0
        self.start = time.perf_counter()
        self.bar = None
        self.label, self.last_line = "", time.perf_counter()
        self._stop = threading.Event()
        if getattr(stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=None, desc=f"  {name}", unit="cell", file=stream, leave=False, dynamic_ncols=True,
                            bar_format="{desc}: {n_fmt}/{total_fmt} cells |{bar:16}| {elapsed}{postfix}")
        self._ticker = threading.Thread(target=self._tick, name=f"progress-{name}", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(min(TICK_SECONDS, HEARTBEAT_SECONDS)):
            if self.bar is not None:
                self.bar.refresh()
            elif self.label and time.perf_counter() - self.last_line >= HEARTBEAT_SECONDS:
                self._line(f"{self.done}/{self.total} cells done, {clock(time.perf_counter() - self.start)} · still in {self.label}")

    def _line(self, text: str) -> None:
        self.last_line = time.perf_counter()
        print(f"  {self.name}: {text}", file=self.stream, flush=True)

    def hooks(self) -> dict[str, Any]:
        """nbclient's hooks, passed through papermill to the notebook client."""
        return {"on_notebook_start": self.notebook_started, "on_cell_execute": self.cell_started,
                "on_cell_executed": self.cell_finished}

    def notebook_started(self, notebook: Any) -> None:
        self.total = sum(1 for c in notebook.cells if c.cell_type == "code" and c.source.strip())
        if self.bar is not None:  # not reset(): the clock keeps counting from the kernel's start
            self.bar.total = self.total
            self.bar.refresh()

    def cell_started(self, cell: Any, cell_index: int) -> None:
        self.cell_index, self.source = cell_index, cell.source
        first = next((line.strip() for line in cell.source.splitlines() if line.strip() and not line.strip().startswith("#")), "")
        # In a notebook run top to bottom, the k-th code cell is In [k].
        label = f"In [{self.done + 1}] {first[:60]}"
        if self.bar is not None:
            self.bar.set_postfix_str(label)
        else:
            self._line(f"{self.done}/{self.total} cells done, {clock(time.perf_counter() - self.start)} · {label}")
        self.label = label

    def cell_finished(self, cell: Any, cell_index: int, execute_reply: Any = None) -> None:
        self.done += 1
        self.label = ""
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        self._stop.set()
        self._ticker.join()
        if self.bar is not None:
            self.bar.close()


def _failure(error: Exception, path: Path, output: Path, progress: CellProgress, seconds: float) -> NotebookFailed:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        # In [k] is what the executed copy shows; cell_index would count its markdown cells too
        position = f"In [{error.exec_count}]" if error.exec_count else f"cell {error.cell_index} of the executed copy"
        message = f"{error.ename}: {error.evalue}".strip().rstrip(":")
        return NotebookFailed(path.name, position, message.splitlines()[0] if message else error.ename, output, seconds, error.source)
    position = f"In [{progress.done + 1}]" if progress.cell_index is not None else "kernel start-up"
    text = str(error).strip().splitlines()
    return NotebookFailed(path.name, position, f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": "), output, seconds,
                          progress.source)


def _remaining(names: list[str], expected: dict[str, float]) -> str:
    if not names:
        return "nothing left"
    known = sum(expected[n] for n in names if n in expected)
    unknown = sum(n not in expected for n in names)
    text = f"expected remaining ~{duration(known)}" if known else "expected remaining unknown"
    if known and unknown:
        text += f" + {unknown} notebook{'s' * (unknown > 1)} without a timing"
    return f"{text} ({len(names)} notebook{'s' * (len(names) > 1)})"


def _save_timings(rows: list[dict[str, Any]], timings_csv: Path) -> None:
    # Merge with earlier timings so that running notebooks one at a time keeps every row.
    frame = pd.DataFrame(rows)
    if timings_csv.exists():
        earlier = pd.read_csv(timings_csv)
        frame = pd.concat([earlier[~earlier["notebook"].isin(frame["notebook"])], frame]).sort_values("notebook")
    atomic_write_frame(timings_csv, frame)


def run_notebooks(
    profile: str = "quick",
    only: Iterable[str] | None = None,
    out_dir: str | Path = NOTEBOOK_DIR / "executed",
    parameters: dict[str, Any] | None = None,
    timings_csv: str | Path | None = None,
    stream: TextIO | None = None,
    paths: Iterable[str | Path] | None = None,
    report: bool = True,
) -> list[dict[str, Any]]:
    """Execute the notebooks (``paths``, default those of ``only``) with ``profile``, printing progress
    to ``stream`` (default stdout); raise :class:`NotebookFailed` on the first failing cell.

    Returns one row per notebook (notebook, profile, seconds, started, finished, cells), also merged
    into the timings CSV after each notebook. ``report`` writes ``results/<profile>/report.html`` and
    ``report.md`` at the end and prints their path.
    """
    import papermill

    stream = stream or sys.stdout
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings_csv = Path(timings_csv) if timings_csv else timings_path(profile)
    chosen = [Path(p) for p in paths] if paths is not None else notebooks(only)
    expected, source = expected_seconds(profile, timings_csv)
    names = [p.name for p in chosen]
    total_known = sum(expected.get(n, 0.0) for n in names)
    header = f"ckdlab notebooks: {len(chosen)} notebook{'s' * (len(chosen) > 1)}, profile {profile}"
    header += f", expected total ~{duration(total_known)} ({source})" if total_known else ", no earlier timing"
    print(f"{header}; executed copies in {_shown(out_dir)}", file=stream, flush=True)
    rows: list[dict[str, Any]] = []
    begin = time.perf_counter()
    for k, path in enumerate(chosen, start=1):
        tag = f"[{k}/{len(chosen)}] {path.stem}"
        hint = f"expected ~{duration(expected[path.name])} ({source})" if path.name in expected else "no earlier timing"
        print(f"{tag} · {hint}", file=stream, flush=True)
        output = out_dir / path.name
        started, start = _dt.datetime.now().astimezone(), time.perf_counter()
        progress = CellProgress(path.stem, stream)
        try:
            papermill.execute_notebook(
                str(path), str(output), parameters={"profile": profile, **(parameters or {})}, cwd=str(path.parent),
                progress_bar=False, kernel_name="python3", config=kernel_config(), **progress.hooks(),
            )
        except Exception as error:
            progress.close()
            failed = _failure(error, path, output, progress, time.perf_counter() - start)
            print(f"{tag} FAILED\n{failed.describe()}", file=stream, flush=True)
            raise failed from error
        progress.close()
        seconds = time.perf_counter() - start
        rows.append({"notebook": path.name, "profile": profile, "seconds": round(seconds, 1), "started": started.isoformat(timespec="seconds"),
                     "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "cells": progress.total})
        _save_timings(rows, timings_csv)
        print(f"{tag} done in {duration(seconds)} · elapsed {duration(time.perf_counter() - begin)} · "
              f"{_remaining(names[k:], expected)}", file=stream, flush=True)
    print(f"All {len(chosen)} notebook{'s' * (len(chosen) > 1)} ran in {duration(time.perf_counter() - begin)}; "
          f"times in {_shown(timings_csv)}", file=stream, flush=True)
    if report:
        from ckdlab.report import build_report

        html, markdown = build_report(profile)
        print(f"Report: {_shown(html)} (Markdown: {_shown(markdown)})", file=stream, flush=True)
    return rows
