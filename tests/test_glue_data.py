"""GLUE registry and readers: real shared files, synthetic bad files, the hub fallback (faked)."""
from __future__ import annotations

import csv
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from ckdlab.data import paths
from ckdlab.data.glue import (
    DataFormatError,
    find_glue_file,
    load_task,
    read_glue_tsv,
    take_subset,
    task_features,
)
from ckdlab.data.hub import DataNotFoundError
from ckdlab.data.tasks import TASKS, get_task

SHARED = paths.PROJECT_ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED / "glue_data").is_dir(), reason=f"offline GLUE copy not at {SHARED}/glue_data"
)

OFFICIAL_COUNTS = [
    ("cola", "train", 8551), ("cola", "dev", 1043),
    ("sst2", "train", 67349), ("sst2", "dev", 872),
    ("mrpc", "train", 3668), ("mrpc", "dev", 408),
    ("stsb", "train", 5749), ("stsb", "dev", 1500),
    ("rte", "train", 2490), ("rte", "dev", 277),
    ("wnli", "train", 635), ("wnli", "dev", 71),
    ("qnli", "dev", 5463),
]


def no_hub(*args, **kwargs):
    raise AssertionError(f"the hub must not be used here (called with {args}, {kwargs})")


def offline_hub(*args, **kwargs):
    raise ConnectionError("no network in this test")


class FakeHub:
    """Stands in for datasets.load_dataset; records calls and returns a prepared Dataset."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.calls = []

    def __call__(self, path, name=None, split=None, **kwargs):
        self.calls.append((path, name, split))
        return self.dataset


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """An empty data root that is the ONLY data source: no $CKDLAB_DATA, no project data/, no shared copy."""
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path / "project")
    monkeypatch.chdir(tmp_path)  # the cwd-relative shared/data candidates now point into tmp_path
    data_root = tmp_path / "root"
    data_root.mkdir()
    assert [r for r in paths.candidate_roots(data_root) if r.exists()] == [data_root.resolve()]
    return data_root


def write_tsv(root: Path, glue_dir: str, name: str, lines: list[str], bom: bool = False, ending: str = "\n") -> Path:
    path = root / "glue_data" / glue_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(line + ending for line in lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


RTE_HEADER = "index\tsentence1\tsentence2\tlabel"


# --- registry ---------------------------------------------------------------------------------

def test_registry_matches_glue_reporting():
    assert list(TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    reported = {name: (spec.metrics, spec.headline) for name, spec in TASKS.items()}
    assert reported == {
        "cola": (("mcc",), "mcc"),
        "sst2": (("accuracy",), "accuracy"),
        "mrpc": (("f1", "accuracy"), "f1"),
        "stsb": (("pearson", "spearman"), "spearman"),
        "qqp": (("f1", "accuracy"), "f1"),
        "mnli": (("accuracy",), "accuracy"),
        "qnli": (("accuracy",), "accuracy"),
        "rte": (("accuracy",), "accuracy"),
        "wnli": (("accuracy",), "accuracy"),
    }
    assert TASKS["stsb"].num_labels == 1 and TASKS["stsb"].is_regression
    assert TASKS["mnli"].label_names == ("entailment", "neutral", "contradiction")
    assert TASKS["rte"].label_names[0] == TASKS["qnli"].label_names[0] == "entailment"
    assert TASKS["mnli"].text_fields == ("premise", "hypothesis")
    assert TASKS["qqp"].text_fields == ("question1", "question2")
    assert TASKS["qnli"].text_fields == ("question", "sentence")


@pytest.mark.parametrize("alias,name", [("SST-2", "sst2"), ("sst2", "sst2"), ("STS-B", "stsb"), ("CoLA", "cola"),
                                        ("MNLI", "mnli"), (" qnli ", "qnli"), ("Sts_b", "stsb")])
def test_get_task_accepts_names_and_folders(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="unknown GLUE task 'sst5'.*cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli"):
        get_task("sst5")
    with pytest.raises(ValueError, match="unknown GLUE task"):
        load_task("imdb", "train", hub_loader=no_hub)


def test_split_aliases():
    mnli = get_task("mnli")
    for alias in ("dev", "validation", "validation_matched", "dev_matched", "DEV"):
        assert mnli.resolve_split(alias) == "dev_matched"
    assert mnli.resolve_split("validation_mismatched") == "dev_mismatched"
    assert get_task("rte").resolve_split("validation") == "dev"
    with pytest.raises(ValueError, match="unknown split 'test'.*dev, train, validation"):
        get_task("rte").resolve_split("test")
    with pytest.raises(ValueError, match="unknown split 'dev_mismatched' for task 'rte'"):
        load_task("rte", "dev_mismatched", hub_loader=no_hub)


# --- the real shared files ---------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("task,split,count", OFFICIAL_COUNTS)
def test_official_row_counts_and_schema(task, split, count):
    ds = load_task(task, split, data_dir=SHARED, hub_loader=no_hub)
    spec = get_task(task)
    assert len(ds) == count
    assert ds.column_names == [*spec.text_fields, "label", "idx"]
    assert ds.features == task_features(task)
    assert ds["idx"][:3] == [0, 1, 2] and ds["idx"][-1] == count - 1


def reference_rows(path: Path, text_cols: list[int], label_col: int, has_header: bool) -> list[tuple]:
    """Slow, obvious reader: the csv module with quoting off, BOM removed by the codec."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if has_header:
        rows = rows[1:]
    return [(*[row[c] for c in text_cols], row[label_col]) for row in rows]


REFERENCE_LAYOUT = {  # columns by position, written from the GLUE files' headers
    "cola": ([3], 1, False), "sst2": ([0], 1, True), "mrpc": ([3, 4], 0, True), "stsb": ([7, 8], 9, True),
    "rte": ([1, 2], 3, True), "wnli": ([1, 2], 3, True), "qnli": ([1, 2], 3, True),
}


@needs_shared
@pytest.mark.parametrize("task,split,count", OFFICIAL_COUNTS)
def test_reader_matches_reference_reader(task, split, count):
    spec = get_task(task)
    path = SHARED / "glue_data" / spec.glue_dir / f"{split}.tsv"
    ds = read_glue_tsv(path, task)
    expected = reference_rows(path, *REFERENCE_LAYOUT[task])
    label_feature = ds.features["label"]
    if spec.is_regression:
        got = [(*texts, label) for *texts, label in zip(*[ds[f] for f in spec.text_fields], ds["label"])]
        assert [row[:-1] for row in got] == [row[:-1] for row in expected]
        assert [round(row[-1], 3) for row in got] == [round(float(row[-1]), 3) for row in expected]
    else:
        if task in ("rte", "qnli"):  # the files hold label names
            got_labels = [label_feature.names[i] for i in ds["label"]]
        else:  # the files hold the class ids 0/1 themselves
            got_labels = [str(i) for i in ds["label"]]
        got = list(zip(*[ds[f] for f in spec.text_fields], got_labels))
        assert got == expected


@needs_shared
def test_mrpc_bom_is_not_part_of_the_first_column():
    path = SHARED / "glue_data" / "MRPC" / "dev.tsv"
    assert path.read_bytes().startswith(b"\xef\xbb\xbfQuality\t")
    ds = load_task("MRPC", "dev", data_dir=SHARED, hub_loader=no_hub)
    assert ds[0]["label"] == 1
    assert ds[0]["sentence1"].startswith("He said the foodservice pie business")
    assert "\ufeff" not in "".join(ds["sentence1"][:5])


@needs_shared
def test_qnli_stray_quotes_stay_text():
    ds = load_task("qnli", "dev", data_dir=SHARED, hub_loader=no_hub)
    for row in (694, 3428, 3479, 3529, 4080):
        assert ds[row]["sentence"].startswith('"'), row
    assert ds[694]["sentence"].startswith('" Luis Walter Alvarez')
    # Why quoting must be off: a default csv reader glues rows together at those quotes.
    with open(SHARED / "glue_data" / "QNLI" / "dev.tsv", encoding="utf-8", newline="") as f:
        assert len(list(csv.reader(f, delimiter="\t"))) - 1 < len(ds)


@needs_shared
def test_cola_has_no_header_line():
    ds = load_task("cola", "train", data_dir=SHARED, hub_loader=no_hub)
    assert ds[0]["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert ds["label"].count(1) == 6023 and ds["label"].count(0) == 2528


@needs_shared
def test_stsb_scores_are_floats_in_range():
    ds = load_task("STS-B", "dev", data_dir=SHARED, hub_loader=no_hub)
    scores = ds["label"]
    assert ds[0]["label"] == 5.0 and ds[1]["label"] == 4.75
    assert all(isinstance(s, float) and 0.0 <= s <= 5.0 for s in scores)
    assert ds[0]["sentence1"] == "A man with a hard hat is dancing."


@needs_shared
def test_local_qnli_train_absent_falls_through_to_hub(monkeypatch):
    # shared has QNLI/dev.tsv only: train must come from the hub, dev must not.
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    hub = FakeHub(Dataset.from_dict(
        {"question": ["q?"], "sentence": ["s."], "label": [1], "idx": [0]},
        features=Features({"question": Value("string"), "sentence": Value("string"),
                           "label": ClassLabel(names=["entailment", "not_entailment"]), "idx": Value("int32")}),
    ))
    assert find_glue_file("qnli", "dev", SHARED) == SHARED / "glue_data" / "QNLI" / "dev.tsv"
    assert find_glue_file("qnli", "train", SHARED) is None
    ds = load_task("qnli", "train", data_dir=SHARED, hub_loader=hub)
    assert hub.calls == [("nyu-mll/glue", "qnli", "train")]
    assert ds[0] == {"question": "q?", "sentence": "s.", "label": 1, "idx": 0}


# --- synthetic files: where data comes from -----------------------------------------------------

def test_data_dir_beats_env_beats_project_data(root, tmp_path, monkeypatch):
    def make(base: Path, n: int) -> None:
        write_tsv(base, "RTE", "dev.tsv", [RTE_HEADER] + [f"{i}\ta\tb\tentailment" for i in range(n)])

    explicit, env, project = tmp_path / "explicit", tmp_path / "env", tmp_path / "project" / "data"
    make(explicit, 1)
    make(env, 2)
    make(project, 3)
    monkeypatch.setenv(paths.ENV_VAR, str(env))
    assert len(load_task("rte", "dev", data_dir=explicit, hub_loader=no_hub)) == 1
    assert len(load_task("rte", "dev", hub_loader=no_hub)) == 2
    monkeypatch.delenv(paths.ENV_VAR)
    assert len(load_task("rte", "dev", hub_loader=no_hub)) == 3


def test_data_dir_may_point_at_glue_data_or_the_task_folder(root):
    write_tsv(root, "RTE", "dev.tsv", [RTE_HEADER, "0\ta\tb\tnot_entailment"])
    for data_dir in (root, root / "glue_data", root / "glue_data" / "RTE"):
        assert load_task("rte", "dev", data_dir=data_dir, hub_loader=no_hub)["label"] == [1]


def test_task_folder_of_another_task_is_not_used(root):
    write_tsv(root, "SST-2", "train.tsv", ["sentence\tlabel", "good .\t1"])
    with pytest.raises(DataNotFoundError):
        load_task("cola", "train", data_dir=root / "glue_data" / "SST-2", hub_loader=offline_hub)


def test_data_not_found_lists_what_was_tried(root):
    with pytest.raises(DataNotFoundError) as info:
        load_task("rte", "train", data_dir=root, hub_loader=offline_hub)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(root.resolve() / "glue_data" / "RTE" / "train.tsv") in message
    assert str(paths.PROJECT_ROOT / "data" / "glue_data" / "RTE" / "train.tsv") in message
    assert "load_dataset('nyu-mll/glue', 'rte', split='train')" in message
    assert "ConnectionError: no network in this test" in message
    assert "CKDLAB_DATA" in message and "--data-dir" in message
    assert isinstance(info.value.__cause__, ConnectionError)


# --- synthetic files: validation errors ---------------------------------------------------------

def test_wrong_column_count_names_file_and_line(root):
    write_tsv(root, "RTE", "train.tsv", [RTE_HEADER, "0\ta\tb\tentailment", "1\ta\tentailment"])
    with pytest.raises(DataFormatError, match=r"train\.tsv, line 3: expected 4 tab-separated columns, found 3"):
        load_task("rte", "train", data_dir=root, hub_loader=no_hub)


def test_blank_line_inside_file_is_a_bad_row(root):
    write_tsv(root, "CoLA", "dev.tsv", ["gj04\t1\t\tFine.", "", "gj04\t0\t*\tBad."])
    with pytest.raises(DataFormatError, match=r"dev\.tsv, line 2: expected 4"):
        load_task("cola", "dev", data_dir=root, hub_loader=no_hub)


@pytest.mark.parametrize("task,glue_dir,lines,bad", [
    ("rte", "RTE", [RTE_HEADER, "0\ta\tb\tentailment", "1\ta\tb\tmaybe"], "'maybe'"),
    ("wnli", "WNLI", [RTE_HEADER, "0\ta\tb\t2"], "'2'"),
    ("sst2", "SST-2", ["sentence\tlabel", "fine .\t1", "ok .\t"], "''"),
    ("cola", "CoLA", ["gj04\tyes\t\tA sentence."], "'yes'"),
    ("stsb", "STS-B", ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                       "0\tg\tf\ty\t0\tn\tn\ta\tb\t5.5"], "'5.5'"),
    ("stsb", "STS-B", ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
                       "0\tg\tf\ty\t0\tn\tn\ta\tb\tnan"], "'nan'"),
])
def test_bad_label_names_file_line_and_value(root, task, glue_dir, lines, bad):
    path = write_tsv(root, glue_dir, "dev.tsv", lines)
    bad_line = len(lines)
    with pytest.raises(DataFormatError, match=rf"dev\.tsv, line {bad_line}: bad {task} label {bad}") as info:
        load_task(task, "dev", data_dir=root, hub_loader=no_hub)
    assert str(path) in str(info.value)


def test_empty_split_is_an_error(root):
    write_tsv(root, "RTE", "dev.tsv", [RTE_HEADER])
    with pytest.raises(DataFormatError, match="no data rows"):
        load_task("rte", "dev", data_dir=root, hub_loader=no_hub)
    write_tsv(root, "CoLA", "dev.tsv", [])
    with pytest.raises(DataFormatError, match="no data rows"):
        load_task("cola", "dev", data_dir=root, hub_loader=no_hub)
    write_tsv(root, "SST-2", "dev.tsv", [])
    with pytest.raises(DataFormatError, match="file is empty"):
        load_task("sst2", "dev", data_dir=root, hub_loader=no_hub)


def test_wrong_header_is_an_error(root):
    write_tsv(root, "QNLI", "dev.tsv", [RTE_HEADER, "0\ta\tb\tentailment"])  # an RTE file in QNLI's place
    with pytest.raises(DataFormatError, match=r"dev\.tsv, line 1: header .* is not GLUE's QNLI header"):
        load_task("qnli", "dev", data_dir=root, hub_loader=no_hub)


def test_invalid_utf8_names_the_line(root):
    path = root / "glue_data" / "RTE" / "dev.tsv"
    path.parent.mkdir(parents=True)
    path.write_bytes(f"{RTE_HEADER}\n0\ta\tb\tentailment\n1\ta\xff\tb\tentailment\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"dev\.tsv, line 3: not valid UTF-8"):
        load_task("rte", "dev", data_dir=root, hub_loader=no_hub)


def test_bom_crlf_and_quotes_in_synthetic_mrpc(root):
    write_tsv(root, "MRPC", "train.tsv", [
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        '1\t11\t12\t"Open quote never closed\tSecond "sentence"',
        "0\t13\t14\tThird\tFourth",
    ], bom=True, ending="\r\n")
    ds = load_task("mrpc", "train", data_dir=root, hub_loader=no_hub)
    assert ds["sentence1"] == ['"Open quote never closed', "Third"]
    assert ds["sentence2"] == ['Second "sentence"', "Fourth"]  # no "\r" left at the line end
    assert ds["label"] == [1, 0]


def test_mnli_columns_located_by_header_name(root):
    train_header = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
    dev_header = train_header.replace("label1\tgold_label", "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label")
    write_tsv(root, "MNLI", "train.tsv", [train_header, "0\tp\tq\tg\tb1\tb2\tp1\tp2\tPrem.\tHyp.\tneutral\tneutral"])
    write_tsv(root, "MNLI", "dev_matched.tsv", [dev_header, "0\tp\tq\tg\tb1\tb2\tp1\tp2\tM1\tM2\tn\tn\tn\tn\tn\tcontradiction"])
    write_tsv(root, "MNLI", "dev_mismatched.tsv", [dev_header, "0\tp\tq\tg\tb1\tb2\tp1\tp2\tX1\tX2\te\te\te\te\te\tentailment"])
    train = load_task("mnli", "train", data_dir=root, hub_loader=no_hub)
    assert train[0] == {"premise": "Prem.", "hypothesis": "Hyp.", "label": 1, "idx": 0}
    assert load_task("mnli", "dev", data_dir=root, hub_loader=no_hub)[0]["label"] == 2
    mismatched = load_task("mnli", "validation_mismatched", data_dir=root, hub_loader=no_hub)
    assert mismatched[0]["premise"] == "X1" and mismatched[0]["label"] == 0
    write_tsv(root, "MNLI", "train.tsv", [train_header.replace("gold_label", "gold"), "0\t" * 11 + "neutral"])
    with pytest.raises(DataFormatError, match=r"header lacks column\(s\) \['gold_label'\]"):
        load_task("mnli", "train", data_dir=root, hub_loader=no_hub)


# --- the hub path (faked) -----------------------------------------------------------------------

def hf_mnli(labels: list[int], names=("entailment", "neutral", "contradiction")) -> Dataset:
    """What nyu-mll/glue's mnli split looks like (features as the hub declares them)."""
    n = len(labels)
    return Dataset.from_dict(
        {"premise": [f"p{i}" for i in range(n)], "hypothesis": [f"h{i}" for i in range(n)],
         "label": labels, "idx": list(range(100, 100 + n))},
        features=Features({"premise": Value("string"), "hypothesis": Value("string"),
                           "label": ClassLabel(names=list(names)), "idx": Value("int32")}),
    )


def test_hub_mapping_mnli_mismatched(root):
    hub = FakeHub(hf_mnli([0, 2, 1]))
    ds = load_task("mnli", "dev_mismatched", data_dir=root, hub_loader=hub)
    assert hub.calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    assert ds.features == task_features("mnli")
    assert ds["label"] == [0, 2, 1] and ds["premise"] == ["p0", "p1", "p2"] and ds["idx"] == [100, 101, 102]


def test_hub_mapping_stsb_and_missing_idx(root):
    hub = FakeHub(Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [4.25, 0.0],
                                     "extra": [1, 2]}))
    ds = load_task("stsb", "validation", data_dir=root, hub_loader=hub)
    assert hub.calls == [("nyu-mll/glue", "stsb", "validation")]
    assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert ds.features == task_features("stsb")
    assert ds["label"] == [4.25, 0.0] and ds["idx"] == [0, 1]


def test_default_hub_loader_is_datasets_load_dataset(root, monkeypatch):
    hub = FakeHub(Dataset.from_dict(
        {"question1": ["a?"], "question2": ["b?"], "label": [1], "idx": [0]},
        features=Features({"question1": Value("string"), "question2": Value("string"),
                           "label": ClassLabel(names=["not_duplicate", "duplicate"]), "idx": Value("int32")}),
    ))
    monkeypatch.setattr(datasets, "load_dataset", hub)
    ds = load_task("QQP", "train", data_dir=root)
    assert hub.calls == [("nyu-mll/glue", "qqp", "train")]
    assert ds[0] == {"question1": "a?", "question2": "b?", "label": 1, "idx": 0}


@pytest.mark.parametrize("hub_dataset,match", [
    (hf_mnli([0, -1]), r"row 1 has label -1.*unlabelled test split"),
    (hf_mnli([0], names=("contradiction", "neutral", "entailment")), "label names .* differ"),
    (DatasetDict({"validation_matched": hf_mnli([0])}), "expected a datasets.Dataset"),
    (hf_mnli([0]).remove_columns("hypothesis"), r"missing column\(s\) \['hypothesis'\]"),
    (hf_mnli([0]).select([]), "empty split"),
])
def test_hub_data_is_validated(root, hub_dataset, match):
    with pytest.raises(DataFormatError, match=match):
        load_task("mnli", "dev", data_dir=root, hub_loader=FakeHub(hub_dataset))


# --- subsets ------------------------------------------------------------------------------------

@pytest.fixture
def rte_root(root) -> Path:
    write_tsv(root, "RTE", "train.tsv", [RTE_HEADER] + [f"{i}\tp{i}\th{i}\tentailment" for i in range(200)])
    return root


def test_limit_is_seeded_deterministic_and_nested(rte_root):
    def idx(limit, seed):
        return load_task("rte", "train", data_dir=rte_root, limit=limit, seed=seed, hub_loader=no_hub)["idx"]

    assert idx(30, 0) == idx(30, 0)
    assert idx(30, 0) != idx(30, 1)
    assert len(set(idx(30, 0))) == 30 and idx(30, 0) == sorted(idx(30, 0))
    assert set(idx(30, 7)) < set(idx(60, 7))
    assert idx(30, 0) != list(range(30))  # random, not the first rows
    assert idx(500, 0) == list(range(200))
    ds = load_task("rte", "train", data_dir=rte_root, limit=5, seed=3, hub_loader=no_hub)
    assert all(row["sentence1"] == f"p{row['idx']}" for row in ds)  # rows stay intact


@pytest.mark.parametrize("limit,seed,match", [(0, 0, "limit"), (-3, 0, "limit"), (2.5, 0, "limit"),
                                              (True, 0, "limit"), (10, -1, "seed"), (10, "a", "seed")])
def test_bad_limit_or_seed(rte_root, limit, seed, match):
    with pytest.raises(ValueError, match=match):
        load_task("rte", "train", data_dir=rte_root, limit=limit, seed=seed, hub_loader=no_hub)


def test_take_subset_on_any_dataset():
    ds = Dataset.from_dict({"x": list(range(10))})
    assert take_subset(ds, None) is ds
    assert take_subset(ds, 4, seed=5)["x"] == take_subset(ds, 4, seed=5)["x"]
    assert len(take_subset(ds, 4, seed=5)) == 4


def test_hub_plain_int_labels_are_range_checked(root):
    plain = Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [1, 0]})
    ds = load_task("rte", "train", data_dir=root, hub_loader=FakeHub(plain))
    assert ds.features == task_features("rte") and ds["label"] == [1, 0]
    too_big = Dataset.from_dict({"sentence1": ["a"], "sentence2": ["c"], "label": [2]})
    with pytest.raises(DataFormatError, match=r"row 0 has label 2; expected class ids 0\.\.1"):
        load_task("rte", "train", data_dir=root, hub_loader=FakeHub(too_big))
