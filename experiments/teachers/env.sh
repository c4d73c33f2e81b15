# Source from the worktree root: the environment every script here expects.
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export CKDLAB_RUNS=$PWD/runs CKDLAB_RESULTS=$PWD/results
export CKDLAB_DATA=${CKDLAB_DATA:-../shared/data}
export PY=${PY:-python}
