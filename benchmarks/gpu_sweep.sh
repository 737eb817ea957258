#!/usr/bin/env bash
# gpu_sweep.sh: the alpha/gamma sweep (15 trials) on the gpu profile, several trials sharing one GPU
# (--gpus-per-trial 0.25), timed; then its status and the per-trial and total times as JSON.
# Installs nothing and reaches no network. Run from the project root with the packages importable:
#   PYTHONPATH=$PWD bash benchmarks/gpu_sweep.sh
# Environment:
#   OUT            folder for mlflow.db, Ray's storage, sweep.log and sweep.json (default ./gpu_out)
#   SWEEP_LIMIT_S  stop the sweep after this many seconds (SIGINT: running trials end as interrupted,
#                  finished ones keep their AP; default 570, inside the device tool's 10-minute command)
#   SWEEP_ARGS     more arguments for `python -m orchestrator run` (e.g. "--set train.iterations=2000")
#   PYTHON         the interpreter (default python3)
# Prints sweep.json last: sweep_wall_s, sweep_exit (124 when stopped at the limit), every trial's
# label, status, train_time_s, AP, iterations done and run wall time, the sum of the trials' training
# times, and the share of the sweep's iterations done. Stopped at the limit, it adds
# projected_sweep_wall_s = sweep_wall_s / that share: a linear projection (it scales the start-up too,
# so it errs high), not a measurement.
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
from orchestrator.sweep import load_sweep

trials = []
for run in client.search_runs(experiments, filter_string="tags.kind = 'trial'", max_results=10000):
    info, tags, metrics = run.info, run.data.tags, run.data.metrics
    wall = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    steps = [m.step for m in client.get_metric_history(info.run_id, "loss")]
    target = int(run.data.params.get("train.iterations", 0))
    done = target if tags.get("status") in ("finished", "diverged") else max(steps, default=0)
    trials.append({"label": tags.get("label"), "status": tags.get("status"),
                   "train_time_s": metrics.get("train_time_s"), "train_images_per_s": metrics.get("train_images_per_s"),
                   "AP": metrics.get("AP"), "iterations_done": done, "iterations": target, "run_wall_s": wall})
trials.sort(key=lambda t: t["label"] or "")
wall, rc = float(os.environ["SWEEP_WALL_S"]), int(os.environ["SWEEP_RC"])
expected = len(load_sweep("sweeps/alpha_gamma.yaml", profile="gpu").trials)  # trials never started have no run
per_trial = max((t["iterations"] for t in trials), default=0)
total = sum(t["iterations"] for t in trials) + per_trial * max(expected - len(trials), 0)
share = sum(t["iterations_done"] for t in trials) / total if total else 0.0
out = {"sweep_wall_s": wall, "sweep_exit": rc, "num_trials": expected, "runs_started": len(trials),
       "finished": sum(t["status"] == "finished" for t in trials),
       "sum_train_time_s": sum(t["train_time_s"] or 0.0 for t in trials),
       "share_of_iterations_done": share}
if rc != 0 and share > 0:
    out["projected_sweep_wall_s"] = wall / share
out["trials"] = trials
print(json.dumps(out, indent=2))
PYEOF
exit "$rc"
