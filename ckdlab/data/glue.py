"""Loading GLUE splits as ``datasets.Dataset`` objects, from local TSVs or the Hugging Face hub.

Where a split comes from, first match wins:

1. ``<root>/glue_data/<TASK>/<file>`` for each data root of :func:`ckdlab.data.paths.candidate_roots`:
   the ``data_dir`` argument (the CLI's ``--data-dir``), ``$CKDLAB_DATA``, the project's ``data/``,
   ``../shared/data``. ``data_dir`` may also point at the ``glue_data`` folder or the task folder itself.
2. the hub dataset ``nyu-mll/glue`` through ``datasets.load_dataset`` (needs network or a warm cache).

If neither works, :class:`DataNotFoundError` lists every place tried and how to fix it.

Local files are read exactly as GLUE's ``download_glue_data.py`` wrote them: UTF-8, a byte-order
mark allowed at the start (MRPC has one), one row per ``\\n``-terminated line, fields split on
``\\t`` with no quoting at all (QNLI sentences start with unbalanced ``"``; a csv reader with
quoting on would glue rows together), CoLA without a header. Every row is validated; a bad one
raises :class:`DataFormatError` naming the file and line.

Both sources give the same schema: the task's text columns (HF names), ``label`` (a ``ClassLabel``
in HF order, or ``float32`` for STS-B) and ``idx`` (``int32``). Locally ``idx`` is the 0-based data
row number in the file; on the hub it is whatever the hub stores (for MRPC that is the row number
in Microsoft's original file, so MRPC ``idx`` values differ between the two sources).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value

from ckdlab.errors import UserError

from .hub import hub_split
from .paths import candidate_roots, find_local
from .subsets import check_subset_args, take_subset
from .tasks import TaskSpec, get_task

HUB_DATASET = "nyu-mll/glue"

HubLoader = Callable[..., Any]
"""``loader(path, name, split=...)`` with the signature of ``datasets.load_dataset``."""


class DataFormatError(UserError):
    """A data file (or hub dataset) does not have the layout or label values GLUE defines."""


@dataclass(frozen=True)
class _TsvLayout:
    """How one task's TSV files are laid out.

    ``header`` is the header line GLUE writes (``None``: no header, columns are positions and the
    row width is ``n_columns``). With ``exact_header`` the header must match exactly; otherwise it
    must only contain the named columns (MNLI: train and dev have different extra columns).
    ``text_columns`` are given in the order of ``TaskSpec.text_fields``. ``label_values`` maps the
    label strings in the file to class ids; ``None`` means a float score (STS-B).
    """

    header: tuple[str, ...] | None
    text_columns: tuple[str | int, ...]
    label_column: str | int
    label_values: Mapping[str, int] | None
    exact_header: bool = True
    n_columns: int | None = None


_BINARY_DIGITS = {"0": 0, "1": 1}
_RTE_QNLI = {"entailment": 0, "not_entailment": 1}
_PAIR_HEADER = ("index", "sentence1", "sentence2", "label")

_LAYOUTS: dict[str, _TsvLayout] = {
    "cola": _TsvLayout(None, (3,), 1, _BINARY_DIGITS, n_columns=4),
    "sst2": _TsvLayout(("sentence", "label"), ("sentence",), "label", _BINARY_DIGITS),
    "mrpc": _TsvLayout(
        ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        ("#1 String", "#2 String"), "Quality", _BINARY_DIGITS,
    ),
    "stsb": _TsvLayout(
        ("index", "genre", "filename", "year", "old_index", "source1", "source2",
         "sentence1", "sentence2", "score"),
        ("sentence1", "sentence2"), "score", None,
    ),
    "qqp": _TsvLayout(
        ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
        ("question1", "question2"), "is_duplicate", _BINARY_DIGITS,
    ),
    "mnli": _TsvLayout(
        ("sentence1", "sentence2", "gold_label"), ("sentence1", "sentence2"), "gold_label",
        {"entailment": 0, "neutral": 1, "contradiction": 2}, exact_header=False,
    ),
    "qnli": _TsvLayout(("index", "question", "sentence", "label"), ("question", "sentence"), "label", _RTE_QNLI),
    "rte": _TsvLayout(_PAIR_HEADER, ("sentence1", "sentence2"), "label", _RTE_QNLI),
    "wnli": _TsvLayout(_PAIR_HEADER, ("sentence1", "sentence2"), "label", _BINARY_DIGITS),
}


def task_features(task: str | TaskSpec) -> Features:
    """The schema every GLUE split of ``task`` is returned in (same as the HF hub's)."""
    spec = get_task(task)
    columns: dict[str, Any] = {field: Value("string") for field in spec.text_fields}
    columns["label"] = Value("float32") if spec.is_regression else ClassLabel(names=list(spec.label_names))
    columns["idx"] = Value("int32")
    return Features(columns)


def _read_lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFormatError(
            f"{path}, line {line}: not valid UTF-8 ({err.reason} at byte {err.start}); "
            "GLUE files are UTF-8, re-download or re-encode the file"
        ) from err
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final line ending, not an empty row
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _column_positions(path: Path, header: list[str], layout: _TsvLayout, spec: TaskSpec) -> dict[str, int]:
    assert layout.header is not None
    if layout.exact_header and tuple(header) != layout.header:
        raise DataFormatError(
            f"{path}, line 1: header {header!r} is not GLUE's {spec.glue_dir} header "
            f"{list(layout.header)!r}; is this the {spec.glue_dir} file?"
        )
    missing = [name for name in layout.header if name not in header]
    if missing:
        raise DataFormatError(
            f"{path}, line 1: header lacks column(s) {missing!r} that GLUE's {spec.glue_dir} files have "
            f"(found {header!r}); is this the {spec.glue_dir} file?"
        )
    return {name: header.index(name) for name in layout.header}


def _parse_score(raw: str, low: float, high: float) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and low <= value <= high else None


def read_glue_tsv(path: str | os.PathLike, task: str | TaskSpec) -> Dataset:
    """Read one GLUE TSV file of ``task`` into a ``Dataset`` (text columns, ``label``, ``idx``).

    Raises :class:`DataFormatError` naming the file and line for a wrong header, a row with the
    wrong number of columns, a label outside the task's label set (or an STS-B score outside
    [0, 5]), and for a file with no data rows.
    """
    spec = get_task(task)
    layout = _LAYOUTS[spec.name]
    path = Path(path)
    lines = _read_lines(path)

    if layout.header is None:
        n_columns = layout.n_columns
        text_positions = [int(col) for col in layout.text_columns]
        label_position = int(layout.label_column)
        first_data_line = 0
    else:
        if not lines:
            raise DataFormatError(f"{path}: file is empty, expected a header line and data rows (empty split)")
        header = lines[0].split("\t")
        positions = _column_positions(path, header, layout, spec)
        n_columns = len(header)
        text_positions = [positions[str(col)] for col in layout.text_columns]
        label_position = positions[str(layout.label_column)]
        first_data_line = 1

    texts: list[list[str]] = [[] for _ in text_positions]
    labels: list[int | float] = []
    low, high = spec.label_range or (0.0, 0.0)
    for lineno, line in enumerate(lines[first_data_line:], start=first_data_line + 1):
        fields = line.split("\t")
        if len(fields) != n_columns:
            raise DataFormatError(
                f"{path}, line {lineno}: expected {n_columns} tab-separated columns, found "
                f"{len(fields)} in {line[:120]!r}"
            )
        raw_label = fields[label_position]
        if layout.label_values is None:
            label = _parse_score(raw_label, low, high)
            expected = f"a number in [{low:g}, {high:g}]"
        else:
            label = layout.label_values.get(raw_label)
            expected = f"one of {sorted(layout.label_values)!r}"
        if label is None:
            raise DataFormatError(
                f"{path}, line {lineno}: bad {spec.name} label {raw_label!r}; expected {expected}"
            )
        labels.append(label)
        for column, position in zip(texts, text_positions):
            column.append(fields[position])

    if not labels:
        raise DataFormatError(f"{path}: no data rows (empty split); re-download the {spec.glue_dir} files")
    data: dict[str, list] = dict(zip(spec.text_fields, texts))
    data["label"] = labels
    data["idx"] = list(range(len(labels)))
    return Dataset.from_dict(data, features=task_features(spec))


def _relative_file(spec: TaskSpec, split: str) -> Path:
    return Path("glue_data", spec.glue_dir, spec.splits[split].file)


def find_glue_file(task: str | TaskSpec, split: str, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local TSV for ``task``/``split`` by the search order of ``paths.find_local``, or ``None``."""
    spec = get_task(task)
    split = spec.resolve_split(split)
    found = find_local(_relative_file(spec, split), data_dir)
    # find_local also accepts a bare "<data_dir>/train.tsv"; only trust that when data_dir is this
    # task's folder, or --data-dir ~/glue_data/SST-2 would serve SST-2 rows as CoLA.
    if found is not None and found.parent.name != spec.glue_dir:
        return None
    return found


def task_source(task: str | TaskSpec, split: str, data_dir: str | os.PathLike | None = None) -> dict[str, object]:
    """Where ``load_task(task, split, data_dir)`` reads from: ``{"file": <relative path>, "path": <file>,
    "bytes": <size>}`` for a local TSV, ``{"hub": "nyu-mll/glue/<config>:<split>"}`` otherwise. Run
    records store it, so a result says which data it came from."""
    spec = get_task(task)
    split = spec.resolve_split(split)
    found = find_glue_file(spec, split, data_dir)
    if found is None:
        return {"hub": f"{HUB_DATASET}/{spec.hub_config}:{spec.splits[split].hub_split}"}
    return {"file": f"{spec.glue_dir}/{found.name}", "path": str(found), "bytes": found.stat().st_size}


def _tried_locations(spec: TaskSpec, split: str, data_dir: str | os.PathLike | None) -> list[Path]:
    relative = _relative_file(spec, split)
    tried = [root / relative for root in candidate_roots(data_dir)]
    if data_dir is not None:
        root = Path(data_dir).expanduser().resolve()
        tried.append(root / spec.glue_dir / relative.name)
        if root.name == spec.glue_dir:
            tried.append(root / relative.name)
    return tried


def _not_found(spec: TaskSpec, split: str, data_dir: str | os.PathLike | None) -> tuple[str, str]:
    """``(missing, fix)`` for :func:`ckdlab.data.hub.hub_split`."""
    tried = "\n".join(f"  - {location}" for location in _tried_locations(spec, split, data_dir))
    return (
        f"GLUE {spec.name} split {split!r} not found.\nLocal files tried:\n{tried}",
        f"put GLUE's {spec.glue_dir}/{spec.splits[split].file} under <dir>/glue_data/ "
        "(the layout download_glue_data.py writes) and pass data_dir=<dir> (CLI: --data-dir <dir>) "
        "or set CKDLAB_DATA=<dir>; or give this machine network access to the hub.",
    )


def hub_to_task_dataset(ds: Any, task: str | TaskSpec, source: str = HUB_DATASET) -> Dataset:
    """Map a hub ``nyu-mll/glue`` split to the schema of :func:`task_features`, checking labels.

    Raises :class:`DataFormatError` (naming ``source``) if columns are missing, the label names
    differ from the task's, labels are missing (``-1``, as in GLUE test splits) or out of range,
    or the split is empty.
    """
    spec = get_task(task)
    if not isinstance(ds, Dataset):
        raise DataFormatError(f"{source}: expected a datasets.Dataset for one split, got {type(ds).__name__}")
    missing = [col for col in (*spec.text_fields, "label") if col not in ds.column_names]
    if missing:
        raise DataFormatError(f"{source}: missing column(s) {missing!r}; found {ds.column_names!r}")
    if len(ds) == 0:
        raise DataFormatError(f"{source}: no rows (empty split)")

    feature = ds.features["label"]
    labels = np.asarray(ds["label"])
    if spec.is_regression:
        low, high = spec.label_range or (-math.inf, math.inf)
        bad = ~(np.isfinite(labels) & (labels >= low) & (labels <= high))
        expected = f"scores in [{low:g}, {high:g}]"
    else:
        if isinstance(feature, ClassLabel) and tuple(feature.names) != spec.label_names:
            raise DataFormatError(
                f"{source}: label names {feature.names!r} differ from ckdlab's {list(spec.label_names)!r}; "
                "class ids would be mixed up"
            )
        bad = (labels < 0) | (labels >= spec.num_labels)
        expected = f"class ids 0..{spec.num_labels - 1} (-1 marks an unlabelled test split)"
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"{source}: row {first} has label {labels[first].item()!r}; expected {expected}")

    if "idx" not in ds.column_names:
        ds = ds.add_column("idx", list(range(len(ds))))
    ds = ds.select_columns([*spec.text_fields, "label", "idx"])
    return ds.cast(task_features(spec))


def load_task(
    task: str | TaskSpec,
    split: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    *,
    hub_loader: HubLoader | None = None,
) -> Dataset:
    """One GLUE split as a ``Dataset`` with the task's text columns, ``label`` and ``idx``.

    ``task``: ``cola sst2 mrpc stsb qqp mnli qnli rte wnli`` (case-insensitive; ``SST-2`` etc. too).
    ``split``: ``train``, ``dev`` (alias ``validation``); MNLI: ``dev_matched`` (aliases ``dev``,
    ``validation``, ``validation_matched``) and ``dev_mismatched`` (``validation_mismatched``).
    ``limit``/``seed``: see :func:`take_subset`. ``hub_loader`` replaces ``datasets.load_dataset``
    for the hub fallback (for tests, or a mirror).
    """
    spec = get_task(task)
    split = spec.resolve_split(split)
    check_subset_args(limit, seed)
    path = find_glue_file(spec, split, data_dir)
    if path is not None:
        ds = read_glue_tsv(path, spec)
    else:
        missing, fix = _not_found(spec, split, data_dir)
        raw = hub_split(HUB_DATASET, spec.hub_config, spec.splits[split].hub_split, missing=missing, fix=fix, loader=hub_loader)
        ds = hub_to_task_dataset(raw, spec, source=f"{HUB_DATASET}/{spec.hub_config} split {spec.splits[split].hub_split!r}")
    return take_subset(ds, limit, seed)
