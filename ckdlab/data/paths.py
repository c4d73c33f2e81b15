"""Where local data lives.

Search order for a data root (a folder holding ``glue_data/``, ``xnli/``, ``umsab_sentiment/``):

1. an explicit ``data_dir`` argument (the CLI's ``--data-dir``);
2. the environment variable ``CKDLAB_DATA``;
3. the project's own ``data/`` folder (for data a user drops in);
4. ``../shared/data`` beside the checkout, and ``./shared/data`` / ``../shared/data`` from the
   working directory (the offline copy used in development and CI).

If none of these has what a reader needs, readers fall back to the Hugging Face hub.
Nothing is ever copied out of these folders.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "CKDLAB_DATA"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def candidate_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """All data roots to try, in priority order (duplicates removed, existence not checked)."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        roots.append(Path(os.environ[ENV_VAR]).expanduser())
    roots.append(PROJECT_ROOT / "data")
    roots.append(PROJECT_ROOT.parent / "shared" / "data")
    cwd = Path.cwd()
    roots += [cwd / "shared" / "data", cwd.parent / "shared" / "data"]
    unique: list[Path] = []
    for root in roots:
        resolved = root.resolve()
        if resolved not in unique:
            unique.append(resolved)
    return unique


def find_local(relative: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first ``<root>/<relative>`` that exists, or ``None``.

    When ``data_dir`` is given explicitly it may also point straight at the sub-folder itself
    (e.g. ``--data-dir ~/glue_data`` for ``relative='glue_data/SST-2'`` also checks ``~/glue_data/SST-2``).
    """
    relative = Path(relative)
    for root in candidate_roots(data_dir):
        if (root / relative).exists():
            return root / relative
    if data_dir is not None:
        root = Path(data_dir).expanduser().resolve()
        for k in range(1, len(relative.parts)):
            tail = Path(*relative.parts[k:])
            if (root / tail).exists():
                return root / tail
    return None
