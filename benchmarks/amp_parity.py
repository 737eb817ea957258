"""Does bf16 autocast cost accuracy? Short trainings in bf16 and in fp32, same seeds, AP side by side.

    python benchmarks/amp_parity.py [--profile gpu] [--seeds 0,1] [--out DIR] [--parallel N] [key=value ...]

Runs ``python -m retina.train --profile P train.amp=true|false train.seed=S output_dir=DIR/<amp>-s<S>
[key=value ...]`` for every precision and seed, ``--parallel`` at a time (on one GPU they share it),
reads each run's ``metrics.json`` and prints one JSON object: every run's AP, AP50, precision, time and speed;
the mean AP of each precision; their difference; the noise, taken as the largest AP spread between the
seeds of one precision; and the verdict ``within_noise`` (|difference| <= noise; null with one seed).
A run that fails is reported with the end of its log, and the script exits 1.

On CPU ``train.amp`` is ignored (fp32 either way, both arms agree exactly: a check of the script)
unless ``train.amp_cpu=true`` is passed: then the bf16 arm runs under CPU autocast, which answers the
accuracy question without a GPU (slowly: emulated bf16, ~13x the fp32 time on CPUs without
AVX512-BF16/AMX). ``model.fast_cpu_convs`` steps aside under autocast, so the script then turns it off
for both arms: the same convolution algorithms in both, or the comparison would also measure
Winograd against direct convolution (from scratch, training is chaotic enough that such a change of
float rounding alone moved single runs' AP by ~0.4). On CUDA, e.g. ``--profile gpu train.iterations=1000``.

Besides the verdict it reports the paired differences (bf16 - fp32 AP of the same seed) and their
spread: a difference of one sign in every seed is worth a look even where the verdict says noise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

from retina.config import ConfigError, load_config

PRECISIONS = {"bf16": "true", "fp32": "false"}


def train(out: Path, profile: str, amp: str, seed: int, overrides: List[str]) -> Dict[str, object]:
    """One training run in a subprocess; its metrics, or its error and the end of its log."""
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "retina.train", "--profile", profile, f"train.amp={amp}",
               f"train.seed={seed}", f"output_dir={out}", *overrides]
    start = time.perf_counter()
    with open(out / "train.log", "w") as log:
        rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    metrics_path = out / "metrics.json"
    if rc != 0 or not metrics_path.is_file():
        tail = (out / "train.log").read_text(errors="replace")[-1500:]
        return {"error": f"exit code {rc}", "log_tail": tail, "wall_s": wall}
    m = json.loads(metrics_path.read_text())
    return {"status": m["status"], "AP": m.get("AP"), "AP50": m.get("AP50"), "precision": m.get("precision"),
            "train_time_s": m.get("train_time_s"),
            "train_images_per_s": m.get("train_images_per_s"), "device": m.get("device"), "wall_s": wall}


def summarize(runs: Dict[str, Dict[int, Dict[str, object]]]) -> Dict[str, object]:
    """Mean AP per precision, their difference, the seed noise and the verdict."""
    ap = {p: [r["AP"] for r in by_seed.values() if r.get("AP") is not None] for p, by_seed in runs.items()}
    complete = all(len(v) == len(runs[p]) and v for p, v in ap.items())
    if not complete:
        return {"mean_AP": None, "difference_bf16_minus_fp32": None, "noise": None, "within_noise": None}
    mean = {p: statistics.fmean(v) for p, v in ap.items()}
    diff = mean["bf16"] - mean["fp32"]
    seeds = min(len(v) for v in ap.values())
    noise = max(max(v) - min(v) for v in ap.values()) if seeds > 1 else None
    paired = {seed: runs["bf16"][seed]["AP"] - runs["fp32"][seed]["AP"] for seed in runs["bf16"]}
    return {"mean_AP": mean, "difference_bf16_minus_fp32": diff, "noise": noise,
            "within_noise": (abs(diff) <= noise + 1e-9) if noise is not None else None,
            "paired_differences": paired,
            "paired_std": statistics.stdev(paired.values()) if len(paired) > 1 else None}


def same_convolutions(profile: str, overrides: List[str]) -> List[str]:
    """With ``train.amp_cpu`` the fast CPU convolutions step aside in the bf16 arm: off in both arms."""
    try:
        cfg = load_config(profile, overrides=overrides)
    except ConfigError:  # every run will fail with this error, and report it
        return []
    return ["model.fast_cpu_convs=false"] if cfg.train.amp_cpu and cfg.model.fast_cpu_convs else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="gpu")
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1],
                        help="comma-separated (default 0,1)")
    parser.add_argument("--out", default="outputs/amp_parity")
    parser.add_argument("--parallel", type=int, default=0, help="runs at a time (default: all)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    added = same_convolutions(args.profile, args.overrides)
    overrides = args.overrides + added
    jobs = [(p, seed) for p in PRECISIONS for seed in args.seeds]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.parallel or len(jobs)) as pool:
        futures = {job: pool.submit(train, out / f"{job[0]}-s{job[1]}", args.profile, PRECISIONS[job[0]], job[1],
                                    overrides) for job in jobs}
        runs = {p: {seed: futures[(p, seed)].result() for seed in args.seeds} for p in PRECISIONS}
    result = {"profile": args.profile, "overrides": args.overrides, "added_overrides": added, "seeds": args.seeds,
              "wall_s": time.perf_counter() - start, "runs": runs, **summarize(runs)}
    print(json.dumps(result, indent=2))
    return 1 if any("error" in r for by_seed in runs.values() for r in by_seed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
