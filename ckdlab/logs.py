"""The one place that sets how loud the libraries under ckdlab are (notebooks and the CLI).

:func:`quiet_libraries` runs when :mod:`ckdlab.api` is imported (so every notebook) and at the start
of :func:`ckdlab.cli.main`. It

* turns off transformers' progress bars ("Loading weights", "Writing model shards"; their switch
  also turns off the hub's download bars) and ``datasets``' bars ("Map", "Filter", "tokenize"),
  which print one bar per model load or dataset pass: dozens per grid cell of a notebook;
* replaces transformers' multi-line, ANSI-coloured ``LOAD REPORT`` by nothing when it only says
  that a task head was added, dropped or re-sized (``classifier.*`` missing, ``cls.predictions.*``
  unexpected: expected whenever a backbone gets a new head; a size mismatch is reported only when
  the caller allowed it), and by one plain line otherwise, because a missing or unexpected encoder
  weight is a real fault that must stay visible.

Warnings other than the load report keep their level, and ckdlab's own training bars (tqdm in the
engine) are untouched. ``CKDLAB_VERBOSE=1`` in the environment leaves every library as it was.
"""
from __future__ import annotations

import logging
import os
import re

VERBOSE_ENV = "CKDLAB_VERBOSE"
# The logger transformers' from_pretrained hands to its load report (transformers/modeling_utils.py).
LOAD_REPORT_LOGGER = "transformers.modeling_utils"
# Parts of a parameter name that belong to a task head or pooler, not to the encoder.
HEAD_PARTS = frozenset({"classifier", "pooler", "cls", "lm_head", "qa_outputs", "score", "predictions"})
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STATUSES = ("MISSING", "UNEXPECTED", "MISMATCH", "CONVERSION")


def _is_head_key(key: str) -> bool:
    return bool(HEAD_PARTS & set(key.split(".")))


def summarise_load_report(message: str) -> str | None:
    """The one line a transformers ``LOAD REPORT`` deserves, or None when it only concerns task heads.

    ``message`` is the report as transformers logs it: a title line, then a ``Key | Status | ...``
    table. Rows about heads (:data:`HEAD_PARTS`) are expected; any other key and any conversion
    error is kept, listed by status.
    """
    lines = _ANSI.sub("", message).splitlines()
    title = lines[0].replace(" LOAD REPORT", "").strip() if lines else "model"
    faults: dict[str, list[str]] = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 2 or cells[1] not in _STATUSES:
            continue
        key, status = cells[0], cells[1]
        if status != "CONVERSION" and _is_head_key(key):
            continue
        faults.setdefault(status, []).append(key)
    if not faults:
        return None
    listed = "; ".join(f"{status.lower()} {', '.join(keys)}" for status, keys in faults.items())
    return f"loaded {title} with {listed}"


class _LoadReportFilter(logging.Filter):
    """Drops head-only load reports and shortens the others to :func:`summarise_load_report`'s line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        line = summarise_load_report(message)
        if line is None:
            return False
        record.msg, record.args = line, ()
        return True


def quiet_libraries() -> None:
    """Silence library progress bars and head-only load reports (see the module docstring); idempotent."""
    if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0"):
        return
    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    logger = logging.getLogger(LOAD_REPORT_LOGGER)
    if not any(isinstance(f, _LoadReportFilter) for f in logger.filters):
        logger.addFilter(_LoadReportFilter())
