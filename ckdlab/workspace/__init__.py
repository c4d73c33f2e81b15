"""The workspace: the one owner of what is on disk.

Folders (:mod:`~ckdlab.workspace.folders`), run identity and run folders
(:mod:`~ckdlab.workspace.runs`), run records (:mod:`~ckdlab.workspace.records`), the teacher
lifecycle (:mod:`~ckdlab.workspace.teachers`) and the in-process pool of teacher outputs
(:mod:`~ckdlab.workspace.cache_pool`).
"""
from ckdlab.workspace.cache_pool import POOL, TeacherCachePool
from ckdlab.workspace.folders import (
    figure_path,
    figures_dir,
    project_root,
    results_dir,
    runs_dir,
    save_figure,
    save_table,
)
from ckdlab.workspace.records import git_commit, load_runs, read_record, record_run
from ckdlab.workspace.runs import RunIdentity, fingerprint, is_finished, open_run
from ckdlab.workspace.teachers import (
    data_identity,
    ensure_teacher,
    finetune_teacher,
    load_teacher,
    model_reference,
    teacher_dir,
    teacher_identity,
    teacher_ready,
    training_identity,
)

__all__ = [
    "POOL",
    "RunIdentity",
    "TeacherCachePool",
    "data_identity",
    "ensure_teacher",
    "figure_path",
    "figures_dir",
    "fingerprint",
    "finetune_teacher",
    "git_commit",
    "is_finished",
    "load_runs",
    "load_teacher",
    "model_reference",
    "open_run",
    "project_root",
    "read_record",
    "record_run",
    "results_dir",
    "runs_dir",
    "save_figure",
    "save_table",
    "teacher_dir",
    "teacher_identity",
    "teacher_ready",
    "training_identity",
]
