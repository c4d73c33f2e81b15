"""Loading a model through ckdlab prints no LOAD REPORT and no progress bars; real faults stay visible."""
from __future__ import annotations

import logging

import pytest
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification, BertModel
from transformers.utils import logging as hf_logging

from ckdlab.logs import LOAD_REPORT_LOGGER, _LoadReportFilter, quiet_libraries, summarise_load_report
from ckdlab.models import load_backbone

NOISE = ("LOAD REPORT", "Loading weights", "Writing model shards", "\x1b[")


@pytest.fixture
def loud_libraries():
    """transformers as it is without ckdlab: bars on, no load-report filter; quiet again afterwards."""
    logger = logging.getLogger(LOAD_REPORT_LOGGER)
    for existing in [f for f in logger.filters if isinstance(f, _LoadReportFilter)]:
        logger.removeFilter(existing)
    hf_logging.enable_progress_bar()
    yield
    quiet_libraries()


@pytest.fixture(scope="module")
def bare_encoder(tmp_path_factory):
    """A saved encoder without a task head: loading it into a classifier adds a head (a load report)."""
    model, _ = load_backbone("tiny-random", num_labels=2)
    folder = tmp_path_factory.mktemp("encoder")
    BertModel(model.config).save_pretrained(folder)
    return folder


def load_with_new_head(folder):
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)


def printed(capfd, caplog) -> str:
    """Everything a reader would see: both streams (progress bars) and every log record that reached
    a handler (transformers' own handler keeps the stream it was created with, which the fd capture
    does not see inside pytest)."""
    return "".join(capfd.readouterr()) + caplog.text


def test_without_ckdlab_a_load_prints_the_report_and_bars(loud_libraries, bare_encoder, capfd, caplog):
    load_with_new_head(bare_encoder)
    seen = printed(capfd, caplog)
    assert "LOAD REPORT" in seen and "Loading weights" in seen  # what the quiet test below must remove


def test_quiet_libraries_removes_the_report_and_bars(loud_libraries, bare_encoder, capfd, caplog):
    quiet_libraries()
    quiet_libraries()  # idempotent: one filter, not two
    assert sum(isinstance(f, _LoadReportFilter) for f in logging.getLogger(LOAD_REPORT_LOGGER).filters) == 1
    model = load_with_new_head(bare_encoder)
    model.save_pretrained(bare_encoder.parent / "saved")
    seen = printed(capfd, caplog)
    assert not [noise for noise in NOISE if noise in seen], seen


def test_importing_the_api_makes_libraries_quiet():
    import datasets

    import ckdlab.api  # noqa: F401  (configures logging on import)

    assert not hf_logging.is_progress_bar_enabled()
    assert datasets.utils.are_progress_bars_disabled()
    assert any(isinstance(f, _LoadReportFilter) for f in logging.getLogger(LOAD_REPORT_LOGGER).filters)


def test_a_missing_encoder_weight_stays_visible_as_one_plain_line(loud_libraries, tmp_path, caplog):
    quiet_libraries()
    model, _ = load_backbone("tiny-random", num_labels=2)
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if "layer.1.output.dense" not in k}, weights, metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING, logger=LOAD_REPORT_LOGGER):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)
    reports = [r.getMessage() for r in caplog.records if r.name == LOAD_REPORT_LOGGER]
    assert len(reports) == 1, reports
    assert reports[0].startswith("loaded BertForSequenceClassification") and "missing" in reports[0]
    assert "layer.1.output.dense" in reports[0] and "\n" not in reports[0] and "\x1b" not in reports[0]


def test_summary_of_a_report_keeps_faults_and_drops_heads():
    report = ("\x1b[1mBertForSequenceClassification LOAD REPORT\x1b[0m from: /m\n"
              "Key | Status | \n----+---------+-\n"
              "classifier.weight | \x1b[31mMISSING\x1b[0m | \n"
              "bert.pooler.dense.bias | MISSING | \n"
              "cls.predictions.bias | UNEXPECTED | \n"
              "classifier.bias | MISMATCH | Reinit due to size mismatch\n")
    assert summarise_load_report(report) is None
    faulty = report + "bert.encoder.layer.{0, 1}.output.dense.weight | MISSING | \nbert.x | CONVERSION | bad\n"
    assert summarise_load_report(faulty) == (
        "loaded BertForSequenceClassification from: /m with missing bert.encoder.layer.{0, 1}.output.dense.weight; "
        "conversion bert.x")
