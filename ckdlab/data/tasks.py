"""The GLUE task registry: what each task's examples look like and how GLUE scores it.

One :class:`TaskSpec` per task holds everything the rest of ckdlab needs to know about a task
without reading data: the text columns (named as in the Hugging Face ``nyu-mll/glue`` dataset),
the label set (ids in HF order), the metrics GLUE reports, the single "headline" metric notebooks
use as "the task score", and the splits with their file and hub names.

How a task's TSV file is laid out on disk is a reader concern and lives in ``glue.py``.

    >>> spec = get_task("SST-2")
    >>> spec.name, spec.text_fields, spec.headline
    ('sst2', ('sentence',), 'accuracy')
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from ckdlab.errors import UserError

METRIC_NAMES = ("accuracy", "f1", "mcc", "pearson", "spearman")


@dataclass(frozen=True)
class SplitSpec:
    """Where one split lives: its file in the GLUE download and its split name on the hub."""

    file: str
    hub_split: str


@dataclass(frozen=True)
class TaskSpec:
    """Everything about a GLUE task that does not depend on where the data is read from.

    ``label_names[i]`` is the name of class id ``i`` (HF ``nyu-mll/glue`` order, e.g. RTE/QNLI
    entailment=0). For the one regression task (STS-B) ``label_names`` is empty, ``num_labels``
    is 1 and labels are similarity scores in ``label_range``.

    ``metrics`` are the ones the GLUE leaderboard reports for the task, in its column order;
    ``headline`` is the single one of them notebooks use as "the task score".
    ``splits`` maps canonical split names to files/hub splits; ``split_aliases`` maps the other
    accepted spellings (``validation`` etc.) to canonical names.
    """

    name: str
    glue_dir: str
    hub_config: str
    text_fields: tuple[str, ...]
    num_labels: int
    label_names: tuple[str, ...]
    is_regression: bool
    metrics: tuple[str, ...]
    headline: str
    splits: Mapping[str, SplitSpec]
    split_aliases: Mapping[str, str]
    label_range: tuple[float, float] | None = None

    @property
    def is_pair(self) -> bool:
        """True when an example is a sentence pair (two text fields)."""
        return len(self.text_fields) == 2

    def resolve_split(self, split: str) -> str:
        """The canonical split name for ``split`` (e.g. ``'validation'`` -> ``'dev'``)."""
        if not isinstance(split, str):
            raise TypeError(f"split must be a string such as 'train' or 'dev', got {split!r}")
        key = split.strip().lower()
        if key in self.splits:
            return key
        if key in self.split_aliases:
            return self.split_aliases[key]
        accepted = sorted(set(self.splits) | set(self.split_aliases))
        raise UserError(
            f"unknown split {split!r} for task {self.name!r}; use one of: {', '.join(accepted)}"
        )


# The GLUE test splits carry no labels, so they are deliberately not offered here.
_STANDARD_SPLITS = MappingProxyType({
    "train": SplitSpec("train.tsv", "train"),
    "dev": SplitSpec("dev.tsv", "validation"),
})
_STANDARD_ALIASES = MappingProxyType({"validation": "dev"})

_MNLI_SPLITS = MappingProxyType({
    "train": SplitSpec("train.tsv", "train"),
    "dev_matched": SplitSpec("dev_matched.tsv", "validation_matched"),
    "dev_mismatched": SplitSpec("dev_mismatched.tsv", "validation_mismatched"),
})
# Plain "dev" means matched: it is the split MNLI results are quoted on by default.
_MNLI_ALIASES = MappingProxyType({
    "dev": "dev_matched",
    "validation": "dev_matched",
    "validation_matched": "dev_matched",
    "validation_mismatched": "dev_mismatched",
})


def _classification(
    name: str,
    glue_dir: str,
    text_fields: tuple[str, ...],
    label_names: tuple[str, ...],
    metrics: tuple[str, ...] = ("accuracy",),
    headline: str = "accuracy",
    mnli_splits: bool = False,
) -> TaskSpec:
    return TaskSpec(
        name=name,
        glue_dir=glue_dir,
        hub_config=name,
        text_fields=text_fields,
        num_labels=len(label_names),
        label_names=label_names,
        is_regression=False,
        metrics=metrics,
        headline=headline,
        splits=_MNLI_SPLITS if mnli_splits else _STANDARD_SPLITS,
        split_aliases=_MNLI_ALIASES if mnli_splits else _STANDARD_ALIASES,
    )


TASKS: Mapping[str, TaskSpec] = MappingProxyType({
    "cola": _classification(
        "cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), ("mcc",), "mcc"
    ),
    "sst2": _classification("sst2", "SST-2", ("sentence",), ("negative", "positive")),
    "mrpc": _classification(
        "mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
        ("f1", "accuracy"), "f1",
    ),
    "stsb": TaskSpec(
        name="stsb",
        glue_dir="STS-B",
        hub_config="stsb",
        text_fields=("sentence1", "sentence2"),
        num_labels=1,
        label_names=(),
        is_regression=True,
        metrics=("pearson", "spearman"),
        headline="spearman",
        splits=_STANDARD_SPLITS,
        split_aliases=_STANDARD_ALIASES,
        label_range=(0.0, 5.0),
    ),
    "qqp": _classification(
        "qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
        ("f1", "accuracy"), "f1",
    ),
    "mnli": _classification(
        "mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
        mnli_splits=True,
    ),
    "qnli": _classification(
        "qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment")
    ),
    "rte": _classification("rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
    "wnli": _classification(
        "wnli", "WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment")
    ),
})


def _normalise(name: str) -> str:
    # "SST-2", "sst_2", "Sst2" and "STS-B" all name a task; compare without case and separators.
    return "".join(ch for ch in name.lower() if ch.isalnum())


_BY_NORMALISED_NAME = {
    **{_normalise(spec.glue_dir): spec for spec in TASKS.values()},
    **{_normalise(spec.name): spec for spec in TASKS.values()},
}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The :class:`TaskSpec` for a task name (case-insensitive; GLUE folder names such as
    ``'SST-2'`` or ``'STS-B'`` are accepted too). A ``TaskSpec`` is returned unchanged."""
    if isinstance(name, TaskSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"task must be a task name string such as 'sst2', got {name!r}")
    spec = _BY_NORMALISED_NAME.get(_normalise(name))
    if spec is None:
        valid = ", ".join(TASKS)
        raise UserError(
            f"unknown GLUE task {name!r}; use one of: {valid} "
            "(case-insensitive; GLUE folder names such as 'SST-2' also work)"
        )
    return spec


# --------------------------------------------------------------------------- cross-lingual tasks
# Not GLUE tasks (``get_task`` does not know them): their readers live in ``crosslingual.py``;
# ``SplitSpec.file`` documents where each split lives.


def _crosslingual(name: str, hub: str, text_fields: tuple[str, ...], labels: tuple[str, ...],
                  files: Mapping[str, str]) -> TaskSpec:
    return TaskSpec(
        name=name,
        glue_dir=name,
        hub_config=hub,
        text_fields=text_fields,
        num_labels=len(labels),
        label_names=labels,
        is_regression=False,
        metrics=("accuracy",),
        headline="accuracy",
        splits=MappingProxyType({split: SplitSpec(file, split) for split, file in files.items()}),
        split_aliases=_STANDARD_ALIASES,
    )


XNLI_TASK = _crosslingual(
    "xnli", "facebook/xnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
    {"train": "xnli/hf/train-en-sample9k.jsonl", "dev": "xnli/xtreme/dev-<lang>.tsv", "test": "xnli/xtreme/test-<lang>.tsv"},
)
SENTIMENT_TASK = _crosslingual(
    "sentiment", "cardiffnlp/tweet_sentiment_multilingual", ("text",), ("negative", "neutral", "positive"),
    {"train": "umsab_sentiment/english/train_*", "dev": "umsab_sentiment/<lang>/val_*", "test": "umsab_sentiment/<lang>/test_*"},
)

# Unlabeled sentences (one ``text`` column) for task-agnostic distillation: no labels, no metric.
TEXT_TASK = TaskSpec(
    name="text",
    glue_dir="text",
    hub_config="text",
    text_fields=("text",),
    num_labels=0,
    label_names=(),
    is_regression=False,
    metrics=(),
    headline="",
    splits=MappingProxyType({"train": SplitSpec("(given sentences)", "train")}),
    split_aliases=_STANDARD_ALIASES,
)
