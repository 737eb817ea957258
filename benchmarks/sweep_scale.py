"""How the sweep machinery scales with the number of trials: a script, not a test.

    python benchmarks/sweep_scale.py [--sizes 250 500 1000] [--steps 8] [--out DIR]

For each size N it writes a Table 1b-style sweep of N trials (a grid of gamma x alpha, FL), then times:
  expand      load_sweep(): read, validate and expand the file into N resolved trial configs
  dry_run     `python -m orchestrator run SWEEP --dry-run` as a user runs it (a fresh process: imports,
              expansion, dataset check without generating data, the listing)
  record      writing N trial runs into a fresh SQLite MLflow store exactly as the driver does
              (orchestrator.tracking.SweepTracker: params, config.yaml, --steps curve points, final
              AP metrics, tags), i.e. what a finished sweep leaves behind; no training
  report      `python -m orchestrator report NAME --out DIR --no-log` on that store (a fresh process)
and prints one JSON object: seconds per size, seconds per trial, and the ratio of the largest to the
smallest size's time against the ratio of sizes (linear growth: the two ratios are about equal).
Nothing is trained; Ray is not started.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))


def sweep_text(name: str, trials: int) -> str:
    """N = 10 gammas x N/10 alphas, Table 1b's FL rows at many more settings."""
    gammas = [0.1, 0.2, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]
    per_gamma = trials // len(gammas)
    alphas = [round(0.05 + 0.9 * i / max(per_gamma - 1, 1), 6) for i in range(per_gamma)]
    return (f"name: {name}\ntables: [1b]\nprofile: cpu\nbase: {{loss.kind: focal}}\ngrid:\n"
            f"  - table: 1b\n    label: \"FL gamma={{loss.gamma:g}} alpha={{loss.alpha:.4f}}\"\n"
            f"    axes:\n      loss.gamma: {gammas}\n      loss.alpha: {alphas}\n")


def record_store(sweep, uri: str, steps: int) -> None:
    """Write what a finished sweep leaves in MLflow, through the driver's own writer."""
    from orchestrator import tracking

    tracking.ensure_quiet()
    tracker = tracking.SweepTracker(uri, sweep, tracking.read_state(uri, sweep.name), version="bench")
    tracker.open()
    iterations = int(sweep.trials[0].config.train.iterations)
    every = max(1, iterations // steps)
    for i, trial in enumerate(sweep.trials):
        tracker.trial_started(trial.key)
        tracker.trial_running(trial.key, {"start_iteration": 0, "device": "cpu", "host": "bench"})
        for step in range(every, iterations + 1, every):
            tracker.trial_progress(trial.key, {"iteration": step, "loss": 1.0 / step, "loss_cls": 0.5 / step,
                                               "loss_box": 0.5 / step, "lr": 0.01, "images_per_s": 30.0})
        ap = 10 + (i % 17)
        tracker.trial_finished(trial.key, {"status": "finished", "iterations": iterations, "AP": ap, "AP50": 2 * ap,
                                           "AP75": ap / 2, "APs": 1.0, "APm": 2.0, "APl": 3.0,
                                           "eval_summary": "bench"})
    tracker.close("finished")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_cli(*argv: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    out = subprocess.run([sys.executable, "-m", "orchestrator", *argv], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"`orchestrator {' '.join(argv)}` exited {out.returncode}:\n{out.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--steps", type=int, default=8, help="curve points logged per trial run (default 8; the report reads final values)")
    parser.add_argument("--out", help="work folder (default: a new temporary one); stores already in it are "
                                      "reused, not recorded again")
    args = parser.parse_args()
    if any(n < 10 or n % 10 for n in args.sizes):
        parser.error("--sizes: multiples of 10, at least 10")
    from orchestrator.sweep import load_sweep

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sweep-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        name = f"scale{n}"
        path = work / f"{name}.yaml"
        path.write_text(sweep_text(name, n))
        holder = {}
        expand = timed(lambda: holder.setdefault("sweep", load_sweep(path)))
        sweep = holder["sweep"]
        assert len(sweep.trials) == n, (len(sweep.trials), n)
        dry = timed(lambda: run_cli("run", str(path), "--dry-run"))
        db = work / f"{name}.db"
        uri = f"sqlite:///{db}"
        # --out with a store from an earlier run of this script: time the rest against it
        record = None if db.is_file() and args.out else timed(lambda: record_store(sweep, uri, args.steps))
        report = timed(lambda: run_cli("report", name, "--tracking-uri", uri, "--out", str(work / "results"),
                                       "--no-log"))
        rows.append({"trials": n, "expand_s": expand, "dry_run_s": dry, "record_store_s": record, "report_s": report})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    small, large = rows[0], rows[-1]
    growth = large["trials"] / small["trials"]
    result = {
        "sizes": rows,
        "per_trial_ms_at_largest": {k: 1000 * large[k] / large["trials"] for k in
                                    ("expand_s", "dry_run_s", "record_store_s", "report_s") if large[k] is not None},
        "size_ratio": growth,
        "time_ratio_largest_over_smallest": {k: large[k] / small[k] for k in
                                             ("expand_s", "dry_run_s", "record_store_s", "report_s")
                                             if large[k] is not None and small[k] is not None},
        "curve_points_per_run": args.steps,
        "python": sys.version.split()[0],
        "work": str(work),
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
