#!/usr/bin/env bash
# device_check.sh: the GPU measurements of the performance issue as one prepared script, sized for
# the device tool (a command ends inside 10 minutes; a session has 15 minutes of device time).
#
#   bash benchmarks/device_check.sh [PART ...]     PART: bench, amp, sweep (default: bench amp)
#
# bench  python -m retina.bench --device cuda: ours (eager and torch.compile'd) vs torchvision's
#        RetinaNet (NCHW and channels_last), ResNet-50-FPN, 600 px synthetic, 16 images, bf16; top ops
#        per step; the data loader's own rate                                  -> $OUT/bench.json
# amp    benchmarks/amp_parity.py: gpu profile, 2 seeds x {bf16, fp32}, AMP_ITERATIONS iterations, the
#        four runs sharing the GPU; AP side by side and the verdict           -> $OUT/amp_parity.json
# sweep  benchmarks/gpu_sweep.sh: the 13 alpha/gamma trials on the gpu profile -> $OUT/sweep.json
#
# Each part runs under its own limit (BENCH_LIMIT_S 240, AMP_LIMIT_S 200, SWEEP_LIMIT_S 570) and the
# script goes on to the next part whatever the last one did; everything it prints is also in
# $OUT/device_check.log. With the device tool (carry [".devbundle"], built by
# ../shared/tools/device-bundle), two calls of at most 10 minutes each:
#   mkdir -p /tmp/site && tar -xJf .devbundle/site.tar.xz -C /tmp/site && export PYTHONPATH=/tmp/site:$PWD &&
#   bash benchmarks/device_check.sh bench amp          (timeout_s 540)
#   ... same prefix ... bash benchmarks/device_check.sh sweep   (timeout_s 600)
# Environment: OUT (default ./gpu_out), PYTHON (default python3), BENCH_ARGS, AMP_ITERATIONS (600),
# SWEEP_ARGS (see gpu_sweep.sh).
set -uo pipefail

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(bench amp)
exec > >(tee -a "$OUT/device_check.log") 2>&1

echo "== $(date -u +%FT%TZ) device_check: ${parts[*]}"
nvidia-smi --query-gpu=name,memory.total,memory.used,utilization.gpu,driver_version --format=csv || true
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"

status=0
for part in "${parts[@]}"; do
  start=$(date +%s)
  case "$part" in
    bench)
      # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
      timeout --kill-after=20 "${BENCH_LIMIT_S:-240}" "$PY" -m retina.bench --device cuda ${BENCH_ARGS:-} \
        > "$OUT/bench.json"
      rc=$?
      cat "$OUT/bench.json";;
    amp)
      timeout --kill-after=20 "${AMP_LIMIT_S:-200}" "$PY" benchmarks/amp_parity.py --profile gpu --seeds 0,1 \
        --out "$OUT/amp_runs" "train.iterations=${AMP_ITERATIONS:-600}" train.checkpoint_every=0 \
        > "$OUT/amp_parity.json"
      rc=$?
      cat "$OUT/amp_parity.json"
      rm -rf "$OUT/amp_runs";;  # checkpoints: too big to come back
    sweep)
      bash benchmarks/gpu_sweep.sh
      rc=$?
      rm -rf "$OUT/ray" "$OUT/mlruns";;  # Ray state and artifact copies: the results are in mlflow.db
    *)
      echo "unknown part '$part'; expected bench, amp or sweep"; rc=2;;
  esac
  echo "== $part: exit $rc after $(( $(date +%s) - start )) s"
  [ "$rc" -ne 0 ] && status=$rc
done
exit "$status"
