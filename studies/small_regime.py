"""The small-regime calibration study: in which small setting do the paper's Table 1 claims show?

Each *setting* is a set of config overrides over a profile (a lever of ``docs/small_regime.md``:
canvas, objects, clutter, classes, pre-trained backbone, normalizer, schedule, learning rate); each
*pair* is the decisive comparison of one table:

* ``1b``: CE alpha .75 (gamma 0) against FL gamma 2 alpha .25;
* ``1c``: FL with 1 scale x 1 ratio against 3 scales x 3 ratios;
* ``1d``: the paper's best OHEM row (batch 128, NMS .5) against FL;
* ``1e.depth``: FL with ResNet-18 against ResNet-34 (the stand-ins for 50 and 101);
* ``5.1``: plain CE (gamma 0, alpha .5, no gradient clipping) with the prior initialization against
  without it; the claim is about status, not AP: every seed without the prior diverges (a non-finite
  loss), every seed with it finishes;

run for several seeds (``train.seed`` and ``data.synthetic.seed`` together) with AP curves
(``eval.every``). Every run is a ``python -m retina.train`` of its own (one thread, ``--jobs`` at a
time), kept under ``.cache/study/<key>/``, and recorded, with its settings and figures, in
``docs/small_regime_runs.jsonl`` (committed). A run already recorded is not run again.

    python studies/small_regime.py list
    python studies/small_regime.py run SETTING [SETTING ...] [--pairs 1b,1c,1d] [--seeds 0,1,2] [--jobs 2]
    python studies/small_regime.py table          # docs/small_regime_table.md from the records

The table's verdict per pair and setting: B beats A where the mean difference exceeds twice its
standard error (pooled seed standard deviation, n seeds per arm), the reverse where it is below
minus that, inconclusive in between, "single seed" with one seed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's retina, as the runs' `python -m retina.train` in ROOT use
RECORDS = ROOT / "docs" / "small_regime_runs.jsonl"
TABLE = ROOT / "docs" / "small_regime_table.md"  # generated; docs/small_regime.md is the written account
RUNS_DIR = ROOT / ".cache" / "study"

CE = ["loss.kind=focal", "loss.gamma=0.0", "loss.alpha=0.75"]
FL = ["loss.kind=focal", "loss.gamma=2.0", "loss.alpha=0.25"]
CE51_CLIPPED = ["loss.kind=focal", "loss.gamma=0.0", "loss.alpha=0.5"]  # plain CE, the profile's clipping kept
CE51 = CE51_CLIPPED + ["train.grad_clip_norm=null"]                      # section 5.1: no clipping


def ohem(batch: int, nms: float) -> List[str]:
    """OHEM as the paper's Table 1d runs it: unweighted CE (gamma 0, alpha .5), ``batch`` anchors per
    image after NMS at ``nms``."""
    return ["loss.kind=ohem", "loss.gamma=0.0", "loss.alpha=0.5", f"loss.ohem_batch_size={batch}",
            f"loss.ohem_nms={nms}"]


PAIRS: Dict[str, Tuple[str, List[str], str, List[str], str]] = {
    # pair: (name of A, overrides of A, name of B, overrides of B, the paper's claim: B beats A)
    "1b": ("CE a.75", CE, "FL g2 a.25", FL, "FL gamma 2 beats the best CE"),
    # where the imbalance is larger, CE's best alpha moves up: FL against those CE rows too
    "1b.9": ("CE a.9", ["loss.kind=focal", "loss.gamma=0.0", "loss.alpha=0.9"], "FL g2 a.25", FL,
             "FL gamma 2 beats CE alpha .9"),
    "1b.99": ("CE a.99", ["loss.kind=focal", "loss.gamma=0.0", "loss.alpha=0.99"], "FL g2 a.25", FL,
              "FL gamma 2 beats CE alpha .99"),
    "1c": ("1x1 anchors", FL + ["anchors.scales_per_octave=1", "anchors.aspect_ratios=[1.0]"],
           "3x3 anchors", FL + ["anchors.scales_per_octave=3", "anchors.aspect_ratios=[0.5,1.0,2.0]"],
           "3 scales x 3 ratios beat one square anchor"),
    "1d": ("OHEM 128/.5", ohem(128, 0.5), "FL", FL, "FL beats the best OHEM"),
    # the prior sweep's best OHEM row on the cpu profile (batch 128, NMS .7)
    "1d.7": ("OHEM 128/.7", ohem(128, 0.7), "FL", FL, "FL beats OHEM 128/.7"),
    # OHEM's batch as a share of the anchors: the paper's 128 / 512 of ~117k anchors (600x1000) are 0.11% / 0.44%;
    # at 96 px (1,746 anchors) 128 is 7%, 2 is 0.11%, 8 is 0.46%, 32 is 1.8%.
    "1d.b32": ("OHEM 32/.7", ohem(32, 0.7), "FL", FL, "FL beats OHEM 32/.7"),
    "1d.b2": ("OHEM 2/.7", ohem(2, 0.7), "FL", FL, "FL beats OHEM 2/.7 (the paper's 128 of ~117k anchors)"),
    "1d.b8": ("OHEM 8/.7", ohem(8, 0.7), "FL", FL, "FL beats OHEM 8/.7"),
    # Table 1e's depth axis at the cpu profile's scale (ResNet-18 and -34 stand for 50 and 101)
    "1e.depth": ("R18", FL, "R34", FL + ["model.depth=34"], "the deeper backbone beats the shallower"),
    "5.1": ("CE prior", CE51 + ["model.prior_init=true"], "CE no prior", CE51 + ["model.prior_init=false"],
            "CE without the prior diverges, with it trains"),
    # the same with the profile's gradient clipping (norm 5) kept in both arms
    "5.1.clip": ("CE prior, clip 5", CE51_CLIPPED + ["model.prior_init=true"], "CE no prior, clip 5",
                 CE51_CLIPPED + ["model.prior_init=false"], "CE without the prior diverges, with it trains (clip 5)"),
}
STATUS_PAIRS = {"5.1", "5.1.clip"}  # pairs judged by status (B diverges, A finishes), not by AP


@dataclass(frozen=True)
class Setting:
    description: str
    overrides: Tuple[str, ...]
    profile: str = "cpu"


# The exploratory pre-trained backbone (see "xpre" below), frozen BN, stem and res2 frozen.
PRE = ("model.backbone_weights=/tmp/pre32.pth", "model.backbone_norm=frozen_bn", "model.freeze_at=2")

# The committed pre-training: model.backbone_weights=synthetic with the profile's pretrain settings.
SYN = ("model.backbone_weights=synthetic", "model.backbone_norm=frozen_bn", "model.freeze_at=2")
PRE200 = ("pretrain.iterations=200", "pretrain.batch_size=96", "pretrain.num_images=8000")
PRE120 = ("pretrain.iterations=120", "pretrain.batch_size=96", "pretrain.num_images=8000")

# Every setting tried, in the order they were tried. Overrides are over the profile (cpu: ResNet-18-FPN-64
# from scratch, 96 px, 2-5 objects of 12-96 px, 3 classes, 240 x 8 images, lr .02, clip 5).
SETTINGS: Dict[str, Setting] = {
    "base": Setting("the cpu profile as it was (96 px, 3 classes, 2-5 objects)", ()),
    "classes6": Setting("6 classes (all the shapes)", ("data.synthetic.num_classes=6",)),
    "classes24": Setting("24 classes (6 shapes x 4 colour families)", ("data.synthetic.num_classes=24",)),
    "classes48": Setting("48 classes (6 shapes x 8 colour families)", ("data.synthetic.num_classes=48",)),
    "sparse": Setting("1-2 objects of 12-48 px (fewer, smaller positives)",
                      ("data.synthetic.min_objects=1", "data.synthetic.max_objects=2",
                       "data.synthetic.max_object_size=48.0")),
    "clutter": Setting("16 easy distractors (default 6)", ("data.synthetic.easy_distractors=16",)),
    "ema": Setting("loss normalizer: EMA of the foreground count, momentum .9 (detectron2)",
                   ("loss.normalizer_momentum=0.9",)),
    "lr01": Setting("lr .01 (default .02)", ("train.lr=0.01",)),
    "lr04": Setting("lr .04 (default .02)", ("train.lr=0.04",)),
    # exploratory: a ResNet-18 pre-trained by /tmp/pretrain_quick.py (classification of 48 synthetic
    # shape x colour classes at 32 px, 500 x 128 images, 90% accuracy; not a committed tool yet)
    "xpre": Setting("exploratory pre-trained backbone (32 px classification), frozen BN, freeze_at 2",
                    ("model.backbone_weights=/tmp/pre32.pth", "model.backbone_norm=frozen_bn", "model.freeze_at=2")),
    "xpre_c24": Setting("xpre + 24 classes", ("model.backbone_weights=/tmp/pre32.pth", "model.backbone_norm=frozen_bn",
                                              "model.freeze_at=2", "data.synthetic.num_classes=24")),
    "xpre_sparse": Setting("xpre + 1-2 objects of 12-48 px", (*PRE, "data.synthetic.min_objects=1",
                                                                  "data.synthetic.max_objects=2",
                                                                  "data.synthetic.max_object_size=48.0")),
    "xpre_c6": Setting("xpre + 6 classes", (*PRE, "data.synthetic.num_classes=6")),
    "xpre_long": Setting("xpre, 480 iterations (2x)", (*PRE, "train.iterations=480")),
    "xpre_192": Setting("xpre on a 192 px canvas (objects 12-96 px as before: 4x the anchors)",
                        (*PRE, "data.synthetic.image_size=192", "data.min_size=192", "data.max_size=192")),
    # the committed pre-training (python -m retina.pretrain, model.backbone_weights=synthetic)
    "syn_c24": Setting("backbone from retina.pretrain (default: 500 x 128 images of 32 px), frozen BN, freeze_at 2; "
                       "24 classes", (*SYN, "data.synthetic.num_classes=24")),
    "syn200_c24": Setting("as syn_c24 with a cheaper pre-training (200 x 96 images of 32 px, 8,000 images: 49% "
                          "accuracy)", (*SYN, *PRE200, "data.synthetic.num_classes=24")),
    "syn200_c24_f4": Setting("syn200_c24 with res3 and res4 frozen too (freeze_at 4: 40% less compute per step)",
                             (*SYN, *PRE200, "data.synthetic.num_classes=24", "model.freeze_at=4")),
    "syn200_c24_f5": Setting("syn200_c24 with the whole backbone frozen (freeze_at 5)",
                             (*SYN, *PRE200, "data.synthetic.num_classes=24", "model.freeze_at=5")),
    "syn200_c12": Setting("syn200 backbone, 12 classes", (*SYN, *PRE200, "data.synthetic.num_classes=12")),
    "syn200_c48_f4": Setting("syn200 backbone, freeze_at 4, 48 classes",
                             (*SYN, *PRE200, "data.synthetic.num_classes=48", "model.freeze_at=4")),
    "syn200_c24_f4_480": Setting("syn200_c24_f4 trained twice as long (480 iterations)",
                                 (*SYN, *PRE200, "data.synthetic.num_classes=24", "model.freeze_at=4",
                                  "train.iterations=480")),
    # generator version 3 (class shapes in unused colour families as hard distractors), the cheaper
    # pre-training (120 x 96 images) and 200 iterations: what fits the 15-minute budget
    "v3_c24_f4": Setting("generator v3, 24 classes, pre-training 120 x 96, freeze_at 4, 200 iterations",
                         (*SYN, *PRE120, "data.synthetic.num_classes=24", "model.freeze_at=4", "train.iterations=200")),
    "v3_c24_f4_hard6": Setting("v3_c24_f4 with 6 hard distractors per image (default 2)",
                               (*SYN, *PRE120, "data.synthetic.num_classes=24", "model.freeze_at=4",
                                "train.iterations=200", "data.synthetic.hard_distractors=6")),
    # section 5.1: the cpu profile's subnets have GroupNorm (a stabilizer); the paper's have none
    "paper_head": Setting("the cpu profile with the paper's subnets (model.head_norm=none: no GroupNorm)",
                          ("model.head_norm=none", "train.iterations=200")),
    "paper_head_lr01": Setting("paper_head at lr .01 (default .02)", ("model.head_norm=none", "train.lr=0.01", "train.iterations=200")),
    "paper_head_lr005": Setting("paper_head at lr .005: the paper's lr per image (.01 for 16 images; here 8)",
                                ("model.head_norm=none", "train.lr=0.005", "train.iterations=200")),
    "paper_head_lr0025": Setting("paper_head at lr .0025 (half the paper's lr per image)",
                                 ("model.head_norm=none", "train.lr=0.0025", "train.iterations=200")),
    "paper_head_lr00125": Setting("paper_head at lr .00125 (a quarter of the paper's lr per image)",
                                  ("model.head_norm=none", "train.lr=0.00125", "train.iterations=200")),
    # the cpu profile as the sweeps ran it until 2026-12-04, with 200 iterations (the runs of 2026-12-03/04
    # were recorded without the pin, when it was the profile's default; the records carry it since)
    "cpu200": Setting("the cpu profile with its former schedule, 200 iterations", ("train.iterations=200",)),
    # Table 1c: no anchor row of the sweep had converged in 200 iterations (+1.5 to +2.8 AP in the last quarter)
    "long600": Setting("the cpu profile at 600 iterations (3x its former 200; lr steps at the same fractions)",
                       ("train.iterations=600",)),
    "long400": Setting("the cpu profile at 400 iterations (2x its former 200): its schedule since 2026-12-04",
                       ("train.iterations=400",)),
    # Table 1e: ResNet-34's synthetic pre-training reaches 24% accuracy in the profile's 120 iterations (ResNet-18: 42%)
    "pre360": Setting("the cpu profile (400 iterations) with 3x the synthetic pre-training (360 iterations)",
                      ("train.iterations=400", "pretrain.iterations=360")),
    "xpre_c48_sparse": Setting("xpre + 48 classes + 1-2 objects of 12-48 px",
                               ("model.backbone_weights=/tmp/pre32.pth", "model.backbone_norm=frozen_bn",
                                "model.freeze_at=2", "data.synthetic.num_classes=48", "data.synthetic.min_objects=1",
                                "data.synthetic.max_objects=2", "data.synthetic.max_object_size=48.0")),
}


def code_version() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def read_records() -> List[dict]:
    if not RECORDS.is_file():
        return []
    return [json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()]


def run_key(profile: str, overrides: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([profile, sorted(overrides)]).encode()).hexdigest()[:12]


def planned_runs(names: Sequence[str], pairs: Sequence[str], seeds: Sequence[int]) -> List[dict]:
    runs = []
    for name in names:
        setting = SETTINGS[name]
        for pair in pairs:
            a_name, a, b_name, b, _ = PAIRS[pair]
            for arm, arm_overrides in ((a_name, a), (b_name, b)):
                for seed in seeds:
                    overrides = list(setting.overrides) + arm_overrides + [f"train.seed={seed}",
                                                                           f"data.synthetic.seed={seed}"]
                    runs.append({"setting": name, "pair": pair, "arm": arm, "seed": seed,
                                 "profile": setting.profile, "overrides": overrides,
                                 "key": run_key(setting.profile, overrides)})
    return runs


def _iterations(profile: str, overrides: Sequence[str]) -> int:
    from retina.config import load_config

    return int(load_config(profile, overrides=list(overrides)).train.iterations)


def run_one(run: dict, eval_points: int) -> dict:
    out = RUNS_DIR / run["key"]
    iterations = _iterations(run["profile"], run["overrides"])
    every = max(1, iterations // eval_points)
    args = [sys.executable, "-m", "retina.train", "--profile", run["profile"], *run["overrides"],
            "train.num_threads=1", f"eval.every={every}", f"output_dir={out}"]
    start = time.time()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{run['setting']} {run['arm']} seed {run['seed']}: exit {proc.returncode}: "
                           f"{proc.stderr[-1500:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {**run, "status": metrics["status"], "AP": metrics["AP"], "AP50": metrics["AP50"], "AP75": metrics["AP75"],
            "curve": [[p["iteration"], round(p["AP"], 3)] for p in metrics.get("eval_history", [])],
            "iterations": metrics["iterations"], "diverged_at": metrics.get("diverged_at"),
            "train_time_s": round(metrics["train_time_s"], 1),
            "wall_s": round(wall, 1), "code": code_version(), "date": time.strftime("%Y-%m-%d %H:%M")}


def cmd_run(args) -> int:
    names = args.settings
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        print(f"error: unknown setting(s) {', '.join(unknown)}; see `list`", file=sys.stderr)
        return 2
    pairs = args.pairs.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    done = {r["key"] for r in read_records()}
    todo, planned = [], set()
    for r in planned_runs(names, pairs, seeds):
        if r["key"] not in done and r["key"] not in planned:
            planned.add(r["key"])
            todo.append(r)
    print(f"{len(todo)} runs to do ({args.jobs} at a time)", flush=True)
    RECORDS.parent.mkdir(parents=True, exist_ok=True)

    def one(run: dict) -> None:
        record = run_one(run, args.eval_points)
        with open(RECORDS, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{record['setting']:>12} {record['pair']} {record['arm']:>12} seed {record['seed']}: AP "
              f"{record['AP']:.2f}  curve {record['curve']}  ({record['wall_s']:.0f} s)", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(one, r) for r in todo]:
            future.result()
    return cmd_table(args)


def _verdict(a: List[float], b: List[float], pooled_sd: Optional[float]) -> Tuple[str, str]:
    diff = statistics.mean(b) - statistics.mean(a)
    if len(a) < 2 and len(b) < 2:
        return "single seed", f"{diff:+.2f}"
    se = pooled_sd * math.sqrt(1 / len(a) + 1 / len(b))
    mark = "holds" if diff > 2 * se else "reversed" if diff < -2 * se else "inconclusive"
    return mark, f"{diff:+.2f} ± {se:.2f}"


def _paired(a: List[dict], b: List[dict]) -> Tuple[str, str]:
    """B - A over the seeds both arms ran: the two arms of a seed share the synthetic dataset, the
    initialization and the data order, so the per-seed difference leaves that shared part out. Holds
    where the mean difference exceeds 2 standard errors of the differences (needs 3 common seeds)."""
    ap_a, ap_b = ({r["seed"]: r["AP"] for r in rs} for rs in (a, b))
    seeds = sorted(set(ap_a) & set(ap_b))
    if len(seeds) < 3:
        return "-", "-"
    diffs = [ap_b[k] - ap_a[k] for k in seeds]
    mean, se = statistics.mean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    mark = "holds" if mean > 2 * se else "reversed" if mean < -2 * se else "inconclusive"
    return mark, f"{mean:+.2f} ± {se:.2f} (n={len(seeds)})"


def _status_verdict(a: List[dict], b: List[dict]) -> Tuple[str, str]:
    """For a status pair: holds where every B run diverged and every A run finished."""
    a_bad = sum(r["status"] == "diverged" for r in a)
    b_bad = sum(r["status"] == "diverged" for r in b)
    def at(rs: List[dict]) -> str:
        its = [str(r["diverged_at"]) for r in sorted(rs, key=lambda r: r["seed"]) if r["status"] == "diverged"]
        return f" (at {', '.join(its)})" if its else ""

    shown = f"B diverged {b_bad}/{len(b)}{at(b)}, A {a_bad}/{len(a)}{at(a)}"
    if len(a) < 2 and len(b) < 2:
        return "single seed", shown
    if b_bad == len(b) and a_bad == 0:
        return "holds", shown
    if b_bad == 0 or a_bad == len(a):
        return "reversed" if a_bad > b_bad else "does not hold", shown
    return "inconclusive", shown


def _pooled_sd(groups: List[List[float]]) -> Optional[float]:
    num = sum((len(g) - 1) * statistics.variance(g) for g in groups if len(g) > 1)
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    return math.sqrt(num / dof) if dof else None


def cmd_table(args=None) -> int:
    records = read_records()
    # an arm is found by its configuration, not by the pair it was run for: a run shared by two pairs (FL
    # gamma 2 in 1b, 1b.9, 1b.99, 1c, 1d.7 ...) is recorded once, under the first, and counts for every pair
    def config_of(overrides: Sequence[str]) -> Tuple[str, ...]:
        return tuple(sorted(o for o in overrides if not o.startswith(("train.seed=", "data.synthetic.seed="))))

    runs_of: Dict[Tuple[str, Tuple[str, ...]], Dict[int, dict]] = {}
    for r in records:
        runs_of.setdefault((r["setting"], config_of(r["overrides"])), {}).setdefault(r["seed"], r)
    by: Dict[Tuple[str, str], Dict[str, List[dict]]] = {}
    for setting in dict.fromkeys(r["setting"] for r in records):
        base = SETTINGS[setting].overrides if setting in SETTINGS else ()
        for pair, (a_name, a_over, b_name, b_over, _) in PAIRS.items():
            arms = {name: list(runs_of.get((setting, config_of([*base, *over])), {}).values())
                    for name, over in ((a_name, a_over), (b_name, b_over))}
            if all(arms.values()):
                by[(setting, pair)] = arms
    lines = ["# The small-regime study: every setting tried", "",
             "Generated by `python studies/small_regime.py table` from `docs/small_regime_runs.jsonl`; do not edit.",
             "Each row: one setting (overrides over its profile) and one decisive pair of a table, A against B, "
             "each arm over the seeds listed (`train.seed` = `data.synthetic.seed` = seed). The claim is "
             "\"B beats A\". Verdict: holds where mean(B) - mean(A) > 2 standard errors (pooled seed "
             "standard deviation of the two arms), reversed below -2, inconclusive between, single seed "
             "with one seed. Paired: the same over the per-seed differences B - A (the arms of a seed share "
             "the synthetic dataset, the initialization and the data order), mean ± its standard error, "
             "with 3 or more common seeds. AP in percent on the validation split (pycocotools). Curves: "
             "AP at the evaluated iterations, seed 0.", "",
             "| setting | overrides | pair | A | AP A | B | AP B | B - A | verdict | paired B - A | paired verdict "
             "| curve A (seed 0) | curve B (seed 0) | s/run |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    order = list(SETTINGS)
    for (setting, pair), arms in sorted(by.items(), key=lambda kv: (order.index(kv[0][0]) if kv[0][0] in order
                                                                    else len(order), kv[0][1])):
        a_name, _, b_name, _, _ = PAIRS[pair]
        a, b = arms.get(a_name, []), arms.get(b_name, [])
        if not a or not b:
            continue
        ap_a, ap_b = [r["AP"] for r in a], [r["AP"] for r in b]
        if pair in STATUS_PAIRS:
            mark, diff = _status_verdict(a, b)
            paired_mark, paired = "-", "-"
        else:
            mark, diff = _verdict(ap_a, ap_b, _pooled_sd([ap_a, ap_b]))
            paired_mark, paired = _paired(a, b)

        def stat(v: List[float], rs: List[dict]) -> str:
            bad = sum(r["status"] == "diverged" for r in rs)
            return f"{statistics.mean(v):.2f}" + (f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else "") + \
                f" (n={len(v)}" + (f", {bad} diverged" if bad else "") + ")"

        def curve(rs: List[dict]) -> str:
            first = sorted(rs, key=lambda r: r["seed"])[0]
            if not first["curve"]:
                return f"diverged at iteration {first.get('diverged_at')}" if first["status"] == "diverged" else "-"
            return " / ".join(f"{ap:.1f}" for _, ap in first["curve"]) + f" @ {first['curve'][0][0]}.."

        setting_def = SETTINGS.get(setting)
        over = "; ".join(setting_def.overrides) if setting_def else "?"
        seconds = statistics.mean(r["wall_s"] for r in a + b)
        lines.append(f"| {setting} | {over or '(none)'} | {pair} | {a_name} | {stat(ap_a, a)} | {b_name} | {stat(ap_b, b)} "
                     f"| {diff} | {mark} | {paired} | {paired_mark} | {curve(a)} | {curve(b)} | {seconds:.0f} |")
    lines += ["", "Settings:", ""] + [f"- `{name}`: {s.description}" + (f" (profile {s.profile})" if s.profile != "cpu"
                                                                         else "") for name, s in SETTINGS.items()]
    TABLE.write_text("\n".join(lines) + "\n")
    print(f"wrote {TABLE} ({len(records)} runs)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python studies/small_regime.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list").set_defaults(func=lambda a: print("\n".join(f"{k}: {v.description} {list(v.overrides)}"
                                                                       for k, v in SETTINGS.items())) or 0)
    p = sub.add_parser("run")
    p.add_argument("settings", nargs="+")
    p.add_argument("--pairs", default="1b")
    p.add_argument("--seeds", default="0")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--eval-points", type=int, default=4, help="evaluations per run (the last at the end)")
    p.set_defaults(func=cmd_run)
    sub.add_parser("table").set_defaults(func=cmd_table)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    sys.exit(main())
