#!/usr/bin/env bash
# gpu_sweep.sh: on a GPU machine without network, (a) the GPU summary, (b) python -m retina.bench on
# CUDA, (c) the alpha/gamma sweep on the gpu profile, 4 trials per GPU, timed, then its status and
# per-trial / total times as JSON. Everything goes under ${OUT:-./gpu_out}. Installs nothing.
#
# Run from the project root with PYTHONPATH already set up as ../shared/tools/device-bundle prints:
#   mkdir -p /tmp/site && tar -xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD &&
#   bash benchmarks/gpu_sweep.sh
# Environment: OUT (output folder), BENCH_ARGS (extra arguments for retina.bench, e.g. "--iterations 20").
set -euo pipefail

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python}

echo "== nvidia-smi" >&2
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
nvidia-smi -L

echo "== retina.bench --device cuda" >&2
bench_start=$(date +%s.%N)
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words
"$PY" -m retina.bench --device cuda ${BENCH_ARGS:-} > "$OUT/bench.json"
bench_end=$(date +%s.%N)
cat "$OUT/bench.json"
echo "bench wall time: $("$PY" -c "print(round($bench_end - $bench_start, 1))") s" >&2

echo "== orchestrator run sweeps/alpha_gamma.yaml --profile gpu --gpus-per-trial 0.25" >&2
sweep_start=$(date +%s.%N)
sweep_rc=0
"$PY" -m orchestrator run sweeps/alpha_gamma.yaml --profile gpu --gpus-per-trial 0.25 \
  --tracking-uri "sqlite:///$OUT/mlflow.db" --storage-path "$OUT/ray" 2>&1 | tee "$OUT/sweep.log" || sweep_rc=$?
sweep_end=$(date +%s.%N)
sweep_wall=$("$PY" -c "print(round($sweep_end - $sweep_start, 1))")
echo "sweep wall time: $sweep_wall s (exit $sweep_rc)" >&2

echo "== orchestrator status -v" >&2
"$PY" -m orchestrator status -v --tracking-uri "sqlite:///$OUT/mlflow.db" | tee "$OUT/status.txt" || true

echo "== per-trial times" >&2
TRACKING_URI="sqlite:///$OUT/mlflow.db" SWEEP_WALL_S="$sweep_wall" SWEEP_RC="$sweep_rc" "$PY" - <<'PYEOF' | tee "$OUT/sweep_times.json"
import json, os
from mlflow.tracking import MlflowClient

client = MlflowClient(tracking_uri=os.environ["TRACKING_URI"])
experiments = [e.experiment_id for e in client.search_experiments()]
trials = []
for run in client.search_runs(experiments, filter_string="tags.kind = 'trial'", max_results=10000):
    info, tags, metrics = run.info, run.data.tags, run.data.metrics
    wall = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    trials.append({"label": tags.get("label"), "status": tags.get("status"),
                   "train_time_s": metrics.get("train_time_s"), "AP": metrics.get("AP"),
                   "run_wall_s": wall})
trials.sort(key=lambda t: t["label"] or "")
print(json.dumps({"sweep_wall_s": float(os.environ["SWEEP_WALL_S"]), "sweep_exit": int(os.environ["SWEEP_RC"]),
                  "num_trials": len(trials),
                  "sum_train_time_s": sum(t["train_time_s"] or 0.0 for t in trials),
                  "trials": trials}, indent=2))
PYEOF
exit "$sweep_rc"
