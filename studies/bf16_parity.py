"""Does bf16 autocast on the CPU change the cpu profile's AP? FL gamma 2 and CE at its best alpha, 5 seeds.

    python studies/bf16_parity.py [--seeds 0,1,2,3,4] [--parallel 2]

For each arm (FL gamma 2 alpha .25, the 1b row; CE alpha .90, the best CE of the 1a exploration) it runs
``benchmarks/amp_parity.py --profile cpu train.amp_cpu=true`` (each seed trained once in bf16 autocast and
once in fp32, ``model.fast_cpu_convs`` off in both, so only the precision differs), then tests the
per-seed differences bf16 - fp32 with a paired t test (orchestrator/report/statistics.py) and writes
``studies/bf16_parity.md``: every run's AP and speed, the paired difference with its 95% interval. The
seeds are exploration seeds (0-4), none of the confirmatory ones (100-104). The runs are kept under
``.cache/bf16_parity/<arm>/``. Exit 1 when a run failed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.report.statistics import paired_t  # noqa: E402

ARMS = {
    "FL gamma=2 alpha=0.25": ["loss.kind=focal", "loss.gamma=2.0", "loss.alpha=0.25"],
    "CE alpha=0.9": ["loss.kind=focal", "loss.gamma=0.0", "loss.alpha=0.9"],
}
OUT_FILE = ROOT / "studies" / "bf16_parity.md"


def run_arm(name: str, settings, seeds, parallel: int) -> dict:
    out = ROOT / ".cache" / "bf16_parity" / name.replace(" ", "_").replace("=", "")
    command = [sys.executable, str(ROOT / "benchmarks" / "amp_parity.py"), "--profile", "cpu",
               "--seeds", ",".join(map(str, seeds)), "--parallel", str(parallel), "--out", str(out),
               "train.amp_cpu=true", *settings]
    print(f"bf16 parity: {name}: {' '.join(command[2:])}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if not done.stdout.strip():
        raise SystemExit(f"error: {name}: amp_parity printed nothing: {done.stderr[-1500:]}")
    result = json.loads(done.stdout)
    result["rc"] = done.returncode
    return result


def section(name: str, settings, result: dict) -> str:
    runs = result["runs"]
    seeds = result["seeds"]
    lines = [f"## {name}", "", f"settings: `{' '.join(settings)} train.amp_cpu=true {' '.join(result['added_overrides'])}`",
             "", "| seed | AP fp32 | AP bf16 | bf16 - fp32 | img/s fp32 | img/s bf16 |", "|---|---|---|---|---|---|"]
    fp32, bf16 = [], []
    for seed in seeds:
        a, b = runs["fp32"][str(seed)], runs["bf16"][str(seed)]  # JSON: the seeds are strings
        if a.get("AP") is None or b.get("AP") is None:
            lines.append(f"| {seed} | {a.get('AP', a.get('error'))} | {b.get('AP', b.get('error'))} | | | |")
            continue
        fp32.append(a["AP"])
        bf16.append(b["AP"])
        lines.append(f"| {seed} | {a['AP']:.2f} | {b['AP']:.2f} | {b['AP'] - a['AP']:+.2f} | "
                     f"{a['train_images_per_s']:.1f} | {b['train_images_per_s']:.1f} |")
    if len(fp32) >= 2:
        test = paired_t(bf16, fp32)
        verdict = ("no difference detected at 5%" if test.p is not None and test.p >= 0.05
                   else "bf16 differs from fp32 at 5%")
        lines += ["", f"mean AP fp32 {statistics.fmean(fp32):.2f}, bf16 {statistics.fmean(bf16):.2f}; "
                  f"bf16 - fp32: {test.describe()}: **{verdict}**"]
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown"
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"{model} (native bf16: {', '.join(native) or 'none'})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")], default=[0, 1, 2, 3, 4])
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    body, failed = [], False
    for name, settings in ARMS.items():
        result = run_arm(name, settings, args.seeds, args.parallel)
        failed |= result["rc"] != 0
        body.append(section(name, settings, result))
    header = ("# bf16 autocast against fp32 on the CPU: the cpu profile's AP, seed by seed\n\n"
              "Written by `python studies/bf16_parity.py` (each seed trained in both precisions, the same data, "
              "initialization and backbone; `model.fast_cpu_convs` off in both arms). "
              f"CPU: {cpu_model()}. Wall {time.perf_counter() - start:.0f} s.\n\n")
    OUT_FILE.write_text(header + "\n".join(body))
    print(OUT_FILE.read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
