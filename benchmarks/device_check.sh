#!/usr/bin/env bash
# device_check.sh: the GPU measurements of the performance issue as ONE prepared device call. A
# task's device time is 15 minutes in all, the machine's start (a minute or more) included, and one
# command ends inside 10 minutes: so everything runs in one call under a total budget
# (DEVICE_BUDGET_S, default 560 s), most important first, each part under its own limit and never
# past what the budget has left.
#
#   bash benchmarks/device_check.sh [PART ...]     PART: bench, sweep, amp, compile
#                                                  (default: bench sweep amp compile)
#
# bench    python benchmarks/bench.py --device cuda --compile '': ours eager vs torchvision's RetinaNet
#          (NCHW and channels_last), ResNet-50-FPN, 600 px synthetic, 16 images, bf16; top ops per
#          step; the data loader's own rate. Limit BENCH_LIMIT_S (150)          -> $OUT/bench.json
# sweep    benchmarks/gpu_sweep.sh: the 13 alpha/gamma trials on the gpu profile, 4 sharing the GPU;
#          per-trial status and times, and a linear projection of the whole sweep when the limit
#          stopped it. Limit SWEEP_LIMIT_S (330)                                -> $OUT/sweep.json
# amp      benchmarks/amp_parity.py: gpu profile, 2 seeds x {bf16, fp32}, AMP_ITERATIONS (300); given
#          with sweep, its four runs share the GPU with the sweep's trials, started together (so the
#          sweep's time is an upper bound of its own). Limit AMP_LIMIT_S (330)  -> $OUT/amp_parity.json
# compile  python benchmarks/bench.py --device cuda --compile default: the bench again with ours through
#          torch.compile added (inductor's first compile takes minutes: last, with what is left of
#          the budget, skipped under 90 s)                                    -> $OUT/bench_compiled.json
#
# The script goes on to the next part whatever the last one did; everything it prints is also in
# $OUT/device_check.log. On a GPU machine with the project's dependencies importable (torch with
# CUDA, ray, mlflow, pycocotools, omegaconf, pandas), from the project root:
#   PYTHONPATH=$PWD bash benchmarks/device_check.sh
# Environment: OUT (default ./gpu_out), PYTHON (default python3), DEVICE_BUDGET_S, the limits above,
# BENCH_ARGS (more arguments for both bench parts), AMP_ITERATIONS, AMP_ARGS (more key=value settings
# for every amp run), SWEEP_ARGS (see gpu_sweep.sh).
set -uo pipefail

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(bench sweep amp compile)
for part in "${parts[@]}"; do
  case "$part" in bench|sweep|amp|compile) ;; *) echo "unknown part '$part'; expected bench, sweep, amp or compile" >&2; exit 2;; esac
done
has() { local p; for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }
exec > >(tee -a "$OUT/device_check.log") 2>&1

t0=$(date +%s)
budget=${DEVICE_BUDGET_S:-560}
left() { echo $(( budget - ($(date +%s) - t0) )); }
# the limit of a part: its own ($1), or what the budget has left less what the part needs after its
# limit ($2: the grace a stopped part gets, and its report), whichever is less
limit() { local l; l=$(( $(left) - ${2:-0} )); [ "$1" -lt "$l" ] && l=$1; echo "$l"; }

echo "== $(date -u +%FT%TZ) device_check: ${parts[*]} (budget ${budget} s)"
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu,driver_version --format=csv || true
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"

status=0
finish() {  # finish PART RC START
  echo "== $1: exit $2 after $(( $(date +%s) - $3 )) s; $(left) s of the budget left"
  [ "$2" -ne 0 ] && status=$2
  return 0
}

bench() {  # bench OUTFILE LIMIT COMPILE_MODE
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
  timeout --kill-after=20 "$2" "$PY" benchmarks/bench.py --device cuda --compile "$3" ${BENCH_ARGS:-} > "$1"
  local rc=$?
  cat "$1"
  return $rc
}

if has bench; then
  start=$(date +%s)
  bench "$OUT/bench.json" "$(limit "${BENCH_LIMIT_S:-150}" 25)" ""
  finish bench $? "$start"
fi

if has sweep || has amp; then
  start=$(date +%s)
  amp_pid=""
  if has amp; then
    amp_limit=$(limit "${AMP_LIMIT_S:-330}" 60)
    echo "== amp: 2 seeds x {bf16, fp32}, ${AMP_ITERATIONS:-300} iterations (limit ${amp_limit} s)"
    # checkpoints are too big to come back: the runs live outside $OUT. At Ray's worker niceness (15),
    # as the sweep's trials run, so that neither takes the CPUs (data loading) from the other.
    # shellcheck disable=SC2086  # AMP_ARGS is a list of words
    timeout --kill-after=20 "$amp_limit" nice -n 15 "$PY" benchmarks/amp_parity.py --profile gpu --seeds 0,1 \
      --out /tmp/amp_runs "train.iterations=${AMP_ITERATIONS:-300}" train.checkpoint_every=0 ${AMP_ARGS:-} \
      > "$OUT/amp_parity.json" 2> "$OUT/amp_parity.err" &
    amp_pid=$!
  fi
  if has sweep; then
    SWEEP_LIMIT_S=$(limit "${SWEEP_LIMIT_S:-330}" 60) bash benchmarks/gpu_sweep.sh  # 45 s grace after SIGINT
    finish sweep $? "$start"
    rm -rf "$OUT/ray" "$OUT/mlruns"  # Ray state and artifact copies: the results are in mlflow.db
  fi
  if [ -n "$amp_pid" ]; then
    wait "$amp_pid"
    rc=$?
    cat "$OUT/amp_parity.json"
    tail -n 20 "$OUT/amp_parity.err"
    rm -f "$OUT/amp_parity.err"
    finish amp "$rc" "$start"
  fi
fi

if has compile; then
  start=$(date +%s)
  compile_limit=$(limit "${COMPILE_LIMIT_S:-600}" 25)
  if [ "$compile_limit" -lt 90 ]; then
    echo "== compile: skipped, ${compile_limit} s of the budget left (< 90)"
  else
    bench "$OUT/bench_compiled.json" "$compile_limit" default
    finish compile $? "$start"
  fi
fi
exit "$status"
