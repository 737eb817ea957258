#!/usr/bin/env bash
# gpu_sweep.sh: the alpha/gamma sweep (13 trials) on the gpu profile, several trials sharing one GPU
# (--gpus-per-trial 0.25), timed; then its status and the per-trial and total times as JSON.
# Installs nothing and reaches no network. Run from the project root with the packages importable,
# e.g. on the device machine as ../shared/tools/device-bundle prints:
#   mkdir -p /tmp/site && tar -xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD &&
#   bash benchmarks/gpu_sweep.sh
# Environment:
#   OUT            folder for mlflow.db, Ray's storage, sweep.log and sweep.json (default ./gpu_out)
#   SWEEP_LIMIT_S  stop the sweep after this many seconds (SIGINT: running trials end as interrupted,
#                  finished ones keep their AP; default 570, inside the device tool's 10-minute command)
#   SWEEP_ARGS     more arguments for `python -m orchestrator run` (e.g. "--set train.iterations=2000")
#   PYTHON         the interpreter (default python3)
# Prints sweep.json last: sweep_wall_s, sweep_exit (124 when stopped at the limit), every trial's
# label, status, train_time_s, AP and run wall time, and the sum of the trials' training times.
set -uo pipefail

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
LIMIT=${SWEEP_LIMIT_S:-570}

echo "== orchestrator run sweeps/alpha_gamma.yaml --profile gpu --gpus-per-trial 0.25 (limit ${LIMIT} s)" >&2
start=$(date +%s.%N)
# shellcheck disable=SC2086  # SWEEP_ARGS is a list of words
timeout --signal=INT --kill-after=45 "$LIMIT" \
  "$PY" -m orchestrator run sweeps/alpha_gamma.yaml --profile gpu --gpus-per-trial 0.25 \
  --tracking-uri "sqlite:///$OUT/mlflow.db" --storage-path "$OUT/ray" ${SWEEP_ARGS:-} > "$OUT/sweep.log" 2>&1
rc=$?
end=$(date +%s.%N)
tail -n 40 "$OUT/sweep.log" >&2
wall=$("$PY" -c "print(round($end - $start, 1))")
echo "sweep wall time: $wall s (exit $rc)" >&2

TRACKING_URI="sqlite:///$OUT/mlflow.db" SWEEP_WALL_S="$wall" SWEEP_RC="$rc" "$PY" - <<'PYEOF' | tee "$OUT/sweep.json"
import json, os
from mlflow.tracking import MlflowClient

client = MlflowClient(tracking_uri=os.environ["TRACKING_URI"])
experiments = [e.experiment_id for e in client.search_experiments()]
trials = []
for run in client.search_runs(experiments, filter_string="tags.kind = 'trial'", max_results=10000):
    info, tags, metrics = run.info, run.data.tags, run.data.metrics
    wall = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    steps = [m.step for m in client.get_metric_history(info.run_id, "loss")]
    trials.append({"label": tags.get("label"), "status": tags.get("status"),
                   "train_time_s": metrics.get("train_time_s"), "train_images_per_s": metrics.get("train_images_per_s"),
                   "AP": metrics.get("AP"), "last_logged_iteration": max(steps, default=None), "run_wall_s": wall})
trials.sort(key=lambda t: t["label"] or "")
print(json.dumps({"sweep_wall_s": float(os.environ["SWEEP_WALL_S"]), "sweep_exit": int(os.environ["SWEEP_RC"]),
                  "num_trials": len(trials),
                  "finished": sum(t["status"] == "finished" for t in trials),
                  "sum_train_time_s": sum(t["train_time_s"] or 0.0 for t in trials),
                  "trials": trials}, indent=2))
PYEOF
exit "$rc"
