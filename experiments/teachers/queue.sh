#!/usr/bin/env bash
# Run every line of a queue file (arguments to run_teacher.py) with N runs at a time, 1 thread each.
#   bash experiments/teachers/queue.sh experiments/teachers/queues/batch1.txt 2
# One thread per run: on a shared machine a 2-thread OpenMP run spin-waits whenever one of its
# threads is descheduled, and its CPU time stops measuring its work (see README.md here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
queue=$1
parallel=${2:-2}
PY=${PY:-python}
export PYTHONPATH=$root HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export CKDLAB_RUNS=${CKDLAB_RUNS:-$root/runs} CKDLAB_RESULTS=${CKDLAB_RESULTS:-$root/results} OMP_NUM_THREADS=1
mkdir -p "$here/logs/runs"
grep -v '^\s*#' "$queue" | grep -v '^\s*$' | while read -r line; do
  tag=$(sed -E 's/.*--tag ([^ ]+).*/\1/' <<<"$line"); seed=$(sed -nE 's/.*--seed ([0-9]+).*/\1/p' <<<"$line")
  printf '%s\0' "$PY $here/run_teacher.py --threads 1 $line > $here/logs/runs/$tag-s${seed:-0}.log 2>&1 || echo FAILED $tag"
done | xargs -0 -P "$parallel" -I{} bash -c {}
