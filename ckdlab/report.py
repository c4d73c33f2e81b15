"""One report of a profile's results: every table and figure the notebooks wrote, with run times,
the package version and the git commit, as ``results/<profile>/report.html`` (self-contained:
figures inlined as base64 PNG) and its Markdown twin ``report.md`` (figures linked by relative path).

Layout: a header (profile, date, ckdlab version, commit, Python / torch / transformers versions,
CPUs), the notebooks' run times, then one section per notebook holding its tables (each CSV of
``results/<profile>/``) and figures (the profile's figure folder, see
:func:`ckdlab.workspace.figure_path`), and a last section for outputs no notebook claims. An output
belongs to the notebook whose two-digit prefix it carries (``03_ckd_scores.png``), else to the
notebook that was running when the file was last written (from the run times), else to "Other
outputs". ``ckdlab report --profile P`` writes it; ``make reproduce`` writes it at the end.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd

from ckdlab.errors import UserError
from ckdlab.io import atomic_write_text

MAX_ROWS = 200  # rows shown per table; the CSV beside the report holds the rest
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg")
TIMINGS_PREFIX = "notebook_times_"
OTHER = "Other outputs"


@dataclass
class Section:
    title: str
    seconds: float | None = None
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def figure_folder(profile: str, figures: str | Path | None = None) -> Path:
    """Where the notebooks of ``profile`` save figures (the rule of :func:`ckdlab.workspace.figure_path`)."""
    from ckdlab.workspace.folders import README_PROFILE, figures_dir

    root = Path(figures) if figures is not None else figures_dir()
    return root if profile == README_PROFILE else root / profile


def environment() -> dict[str, str]:
    """Versions and machine the numbers came from."""
    from ckdlab.workspace.records import git_commit
    from ckdlab.workspace.runs import package_version

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "ckdlab": package_version(), "git commit": git_commit() or "unknown (not a git checkout)",
        "python": platform.python_version(), "torch": version("torch"), "transformers": version("transformers"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "generated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return "" if value is None else str(value)


def table_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and at most :data:`MAX_ROWS` rows of text (floats to four significant digits)."""
    header = [str(c) for c in frame.columns]
    rows = [[_cell(v) for v in row] for row in frame.head(MAX_ROWS).itertuples(index=False)]
    return header, rows


def assign_sections(tables: list[Path], figures: list[Path], timings: pd.DataFrame | None) -> list[Section]:
    """Group outputs by notebook (prefix, else the notebook running when the file was written)."""
    sections: dict[str, Section] = {}
    windows = []
    if timings is not None:
        for row in timings.itertuples():
            stem = Path(str(row.notebook)).stem
            sections[stem] = Section(stem, float(row.seconds))
            if {"started", "finished"} <= set(timings.columns) and isinstance(row.started, str) and isinstance(row.finished, str):
                windows.append((_dt.datetime.fromisoformat(row.started), _dt.datetime.fromisoformat(row.finished), stem))

    def owner(path: Path) -> str:
        if path.name[:2].isdigit() and path.name[2:3] == "_":
            return next((s for s in sections if s.startswith(path.name[:3])), f"{path.name[:2]} (no run time)")
        written = _dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone()
        return next((stem for start, end, stem in windows if start <= written <= end), OTHER)

    for kind, paths in (("tables", tables), ("figures", figures)):
        for path in paths:
            name = owner(path)
            getattr(sections.setdefault(name, Section(name)), kind).append(path)
    ordered = sorted((s for key, s in sections.items() if key != OTHER), key=lambda s: s.title)
    return ordered + ([sections[OTHER]] if OTHER in sections else [])


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|"] + [line(r) for r in rows])


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _minutes(seconds: float | None) -> str:
    return "" if seconds is None or math.isnan(seconds) else f"{seconds / 60:.1f} min"


class _Writer:
    """Builds the HTML and the Markdown side by side, so the two never disagree."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.md, self.html = folder, [], []

    def heading(self, level: int, text: str) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self.md.append(f"{text}\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.md.append(_markdown_table(header, rows) + "\n")
        self.html.append(_html_table(header, rows))

    def figure(self, path: Path) -> None:
        self.md.append(f"![{path.name}]({Path(os.path.relpath(path, self.folder)).as_posix()})\n")
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        kind = "png" if path.suffix.lower() == ".png" else "jpeg"
        self.html.append(f'<figure><img alt="{html.escape(path.name)}" src="data:image/{kind};base64,{data}">'
                         f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:2px 6px;"
         "text-align:right}th{background:#f3f3f3}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:12px;color:#555}")


def build_report(profile: str, results: str | Path | None = None, figures: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``<results>/<profile>/report.html`` and ``report.md``; returns both paths.

    ``results`` / ``figures`` default to the workspace folders (``$CKDLAB_RESULTS``, ``$CKDLAB_FIGURES``).
    """
    from ckdlab.workspace.folders import results_dir

    folder = (Path(results) if results is not None else results_dir()) / profile
    figure_dir = figure_folder(profile, figures)
    csvs = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    tables = [p for p in csvs if not p.name.startswith(TIMINGS_PREFIX)]
    timings_file = next((p for p in csvs if p.name == f"{TIMINGS_PREFIX}{profile}.csv"), None)
    pictures = sorted(p for p in figure_dir.glob("*") if p.suffix.lower() in FIGURE_SUFFIXES) if figure_dir.is_dir() else []
    if not tables and not pictures:
        raise UserError(f"profile={profile!r} has no tables in {folder} and no figures in {figure_dir}; "
                         f"run the notebooks first (ckdlab notebooks --profile {profile})")
    timings = pd.read_csv(timings_file) if timings_file is not None else None
    folder.mkdir(parents=True, exist_ok=True)
    out = _Writer(folder)
    out.heading(1, f"ckdlab results: profile {profile}")
    out.table(["", "value"], [[k, v] for k, v in environment().items()])
    out.heading(2, "Run times")
    if timings is None:
        out.paragraph(f"No run times: {TIMINGS_PREFIX}{profile}.csv is written by `ckdlab notebooks --profile {profile}`.")
    else:
        times = timings.assign(minutes=(timings["seconds"] / 60).round(1))
        shown = [c for c in ("notebook", "minutes", "started", "finished", "cells") if c in times.columns]
        header, rows = table_rows(times[shown])
        out.table(header, rows + [["total", f"{timings['seconds'].sum() / 60:.1f}"] + [""] * (len(header) - 2)])
    for section in assign_sections(tables, pictures, timings):
        out.heading(2, section.title + (f" ({_minutes(section.seconds)})" if section.seconds is not None else ""))
        if not section.tables and not section.figures:
            out.paragraph("No tables or figures.")
        for path in section.tables:
            frame = pd.read_csv(path)
            out.heading(3, f"Table {path.stem}")
            more = f"; the first {MAX_ROWS} shown" if len(frame) > MAX_ROWS else ""
            out.paragraph(f"{path.name}: {len(frame)} rows × {len(frame.columns)} columns{more}.")
            out.table(*table_rows(frame))
        for path in section.figures:
            out.heading(3, f"Figure {path.stem}")
            out.figure(path)
    markdown, page = folder / "report.md", folder / "report.html"
    atomic_write_text(markdown, "\n".join(out.md))
    atomic_write_text(page, f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ckdlab results: {html.escape(profile)}</title>"
                            f"<style>{STYLE}</style></head><body>{''.join(out.html)}</body></html>\n")
    return page, markdown
