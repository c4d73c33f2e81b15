"""Execute the notebooks headless, in order, with papermill (``make reproduce``).

Each notebook has a ``parameters`` cell (``profile = "quick"`` ...); papermill injects the
profile and writes an executed copy under ``notebooks/executed/`` (a build product, not
committed). Timings are appended to ``results/notebook_times.csv``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ckdlab.io import atomic_write_frame

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def notebooks(only: Iterable[str] | None = None) -> list[Path]:
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if only:
        prefixes = tuple(only)
        paths = [p for p in paths if p.name.startswith(prefixes)]
        if not paths:
            raise ValueError(f"--only {','.join(prefixes)} matches no notebook in {NOTEBOOK_DIR}")
    return paths


def run_notebooks(
    profile: str = "quick",
    only: Iterable[str] | None = None,
    out_dir: str | Path = NOTEBOOK_DIR / "executed",
    parameters: dict[str, Any] | None = None,
    timings_csv: str | Path | None = None,
) -> list[dict[str, Any]]:
    import papermill

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in notebooks(only):
        start = time.perf_counter()
        papermill.execute_notebook(
            str(path), str(out_dir / path.name), parameters={"profile": profile, **(parameters or {})},
            cwd=str(path.parent), progress_bar=False, kernel_name="python3",
        )
        rows.append({"notebook": path.name, "profile": profile, "seconds": round(time.perf_counter() - start, 1)})
    if timings_csv is None:
        from ckdlab.workspace import results_dir

        timings_csv = results_dir() / f"notebook_times_{profile}.csv"
    # Merge with earlier timings so that running notebooks one at a time keeps every row.
    frame = pd.DataFrame(rows)
    if Path(timings_csv).exists():
        earlier = pd.read_csv(timings_csv)
        frame = pd.concat([earlier[~earlier["notebook"].isin(frame["notebook"])], frame]).sort_values("notebook")
    atomic_write_frame(timings_csv, frame)
    return rows
