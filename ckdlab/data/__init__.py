"""Data: GLUE task registry, readers, metrics and batching.

    from ckdlab.data import load_task, tokenize_dataset, make_dataloader, compute_metrics
"""
from .collate import (
    DynamicPaddingCollator,
    LengthGroupedSampler,
    SeededShuffleSampler,
    make_dataloader,
    tokenize_dataset,
)
from .domains import (
    FAMILIES,
    ROLES,
    Domain,
    DomainPair,
    domain_pairs,
    ordered_pairs,
)
from .hub import DataNotFoundError, hub_split
from .glue import (
    HUB_DATASET,
    DataFormatError,
    find_glue_file,
    hub_to_task_dataset,
    load_task,
    read_glue_tsv,
    task_features,
    task_source,
)
from .metrics import (
    accuracy,
    average_ranks,
    binary_f1,
    compute_metrics,
    glue_score,
    matthews_corrcoef,
    pearson_corr,
    spearman_corr,
)
from .paths import candidate_roots, find_local
from .subsets import subset_indices, take_subset
from .tasks import TASKS, SplitSpec, TaskSpec, get_task

__all__ = [
    "FAMILIES",
    "ROLES",
    "TASKS",
    "HUB_DATASET",
    "DataFormatError",
    "DataNotFoundError",
    "Domain",
    "DomainPair",
    "DynamicPaddingCollator",
    "LengthGroupedSampler",
    "SeededShuffleSampler",
    "SplitSpec",
    "TaskSpec",
    "accuracy",
    "average_ranks",
    "binary_f1",
    "candidate_roots",
    "compute_metrics",
    "domain_pairs",
    "find_glue_file",
    "find_local",
    "get_task",
    "glue_score",
    "hub_split",
    "hub_to_task_dataset",
    "load_task",
    "make_dataloader",
    "matthews_corrcoef",
    "ordered_pairs",
    "pearson_corr",
    "read_glue_tsv",
    "spearman_corr",
    "subset_indices",
    "take_subset",
    "task_features",
    "task_source",
    "tokenize_dataset",
]
