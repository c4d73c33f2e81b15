# Two commands matter: `make reproduce` and `make test`. Both create .venv when absent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export MPLBACKEND ?= Agg

.PHONY: install test test-fast reproduce ablations weighting paper bench bench-textbrewer clean-runs

# torch is pinned to the CPU wheel (an unpinned torch pulls gigabytes of CUDA packages);
# requirements.lock pins every other package to the versions this project is tested with.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[test,browser]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not browser" $(PYTEST_ARGS)

reproduce: $(STAMP)
	$(BIN)/ckdlab notebooks --profile quick

ablations: $(STAMP)
	$(BIN)/ckdlab notebooks --profile quick --only 05 --param grid=full

weighting: $(STAMP)
	$(BIN)/ckdlab notebooks --profile quick --only 05 --param grid=weighting --out notebooks/executed/weighting

paper: $(STAMP)
	$(BIN)/accelerate launch -m ckdlab.cli paper

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ckd.py
	$(BIN)/python benchmarks/bench_distill_step.py --threads 2
	$(BIN)/python benchmarks/bench_widgets.py

# ckdlab against TextBrewer (optional: pip install -e ".[bench]") and the teacher in
# bf16/int8; TEACHER is a fine-tuned SST-2 minilm-l6, e.g. TEACHER=runs/quick/teachers/sst2-<id>/best
bench-textbrewer: $(STAMP)
	$(BIN)/python benchmarks/bench_vs_textbrewer.py --teacher $(TEACHER)
	$(BIN)/python benchmarks/bench_vs_textbrewer.py --teacher $(TEACHER) --precision

clean-runs:
	rm -rf runs results notebooks/executed
