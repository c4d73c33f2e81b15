"""What every figure checks first: the table it was given has the columns it draws."""
from __future__ import annotations

import pandas as pd


def need_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    """A ValueError naming ``what`` when ``frame`` lacks one of ``columns`` or holds no rows."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing}; the frame has {list(frame.columns)}")
    if frame.empty:
        raise ValueError(f"{what}: the frame is empty")
