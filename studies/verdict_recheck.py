"""Re-test the committed "A beats B" verdicts with tests that mean what they say.

The report committed before the confirmatory runs (``results/`` at commit 731ade6, seeds 0-2, the
runs the cpu profile was tuned on) called a claim "A beats B" held where mean(A) - mean(B) exceeds
2 standard errors of a pooled seed sd, unpaired, without multiplicity control. This study reads the
per-seed AP of every row from ``results/<sweep>/table.csv`` at that commit (column ``AP_seeds``,
ordered by seed) and the seeds of each row from its sweep file there (``git show``), and re-tests each committed pairwise claim with
``orchestrator.report.statistics``: a paired t test where both arms ran the same seeds, Welch's
otherwise, two-sided at the real degrees of freedom; "best of a group" is tested against every member
(intersection-union: the claim's p is the largest member's, the member shown is that one); 5.1's
"diverges vs trains" is Fisher's exact test on the diverged counts together with "the trained arm
learns" (one-sample t against a floor of 1 AP). Holm's correction runs over the claims of each sweep.

    python studies/verdict_recheck.py        # writes studies/verdict_recheck.md

Nothing is trained; the numbers are the committed runs' (which are also the runs the cpu profile was
tuned on: this is not a confirmatory test, see issue 23).
"""
from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.report.statistics import TestResult, compare_arms, fisher_exact, holm, one_sample  # noqa: E402
from orchestrator.sweep import load_sweep  # noqa: E402

OUT = ROOT / "studies" / "verdict_recheck.md"
PINNED = "731ade6"  # the last commit whose results/ came from the exploration seeds 0-2


def pinned(path: str) -> str:
    """A file of the repository as it was at PINNED."""
    return subprocess.run(["git", "show", f"{PINNED}:{path}"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout
ALPHA = 0.05
LEARNS_FLOOR = 1.0  # AP: "trains" means the arm's AP is above this beyond noise

# sweep -> (table, claim, A label, [B labels]) as the committed report states them
PAIRWISE = {
    "alpha_gamma": [("1a", "a mid alpha (.75 or .90) beats .50", ["CE alpha=0.75", "CE alpha=0.9"], ["CE alpha=0.5"]),
                    ("1b", "FL at gamma 2 beats the best CE", ["FL gamma=2 alpha=0.25"],
                     ["CE alpha=0.9", "CE alpha=0.99"])],
    "anchors": [("1c", "more scales or ratios beat a single square anchor", ["3 scales x 3 ratios"],
                 ["1 scale x 1 ratio"])],
    "ohem_vs_fl": [("1d", "FL beats every OHEM row", ["FL"], ["OHEM batch=128 nms=0.7"])],
}


def per_seed(sweep: str) -> Dict[str, Tuple[Dict[int, float], str]]:
    """row label -> ({seed: AP}, status) from the committed table and the sweep file's seeds."""
    seeds: Dict[str, List[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{sweep}.yaml"
        path.write_text(pinned(f"orchestrator/sweeps/{sweep}.yaml"))
        trials = load_sweep(path).trials
    for trial in trials:
        for m in trial.memberships:
            seeds.setdefault(m.label, []).append(m.seed)
    df = pd.read_csv(io.StringIO(pinned(f"results/{sweep}/table.csv")))
    out = {}
    for _, line in df[df["primary"]].iterrows():
        values = ast.literal_eval(line["AP_seeds"]) if isinstance(line["AP_seeds"], str) else []
        row_seeds = sorted(seeds.get(line["label"], []))
        if len(row_seeds) == len(values):
            out[line["label"]] = (dict(zip(row_seeds, values)), str(line["status"]))
    return out


def mark(result: TestResult, p_holm: Optional[float]) -> str:
    if p_holm is None:
        return "not testable (a row has one seed)"
    if p_holm <= ALPHA:
        return "holds" if result.diff > 0 else "does not hold"
    return "inconclusive"


def recheck() -> List[dict]:
    lines = []
    for sweep, claims in PAIRWISE.items():
        rows = per_seed(sweep)
        family = {}
        for table, claim, group_a, group_b in claims:
            # A: the best of its group by mean (the committed rule's selection); B: every member tested
            a_label = max(group_a, key=lambda lab: sum(rows[lab][0].values()) / len(rows[lab][0]))
            tests = [(b, compare_arms(rows[a_label][0], rows[b][0])) for b in group_b]
            testable = [(b, r) for b, r in tests if r.p is not None]
            if len(testable) < len(tests):
                b, r = next((b, r) for b, r in tests if r.p is None)
            else:  # least favorable member: the largest one-sided p for "A beats it"
                b, r = max(testable, key=lambda br: br[1].p / 2 if br[1].diff > 0 else 1 - br[1].p / 2)
            family[claim] = r.p
            lines.append({"sweep": sweep, "table": table, "claim": claim, "a": a_label, "b": b, "result": r,
                          "selection": f"A = best of {len(group_a)} by mean" if len(group_a) > 1 else "",
                          "members": len(group_b)})
        adjusted = holm(family)
        for line in lines:
            if line["sweep"] == sweep:
                line["p_holm"] = adjusted.get(line["claim"])
    prior = per_seed("prior_init")
    without, with_ = prior["CE without prior init"], prior["CE with prior init"]
    n_div_without = len(without[0]) if without[1].startswith("diverged") else 0
    n_div_with = len(with_[0]) if with_[1].startswith("diverged") else 0
    p_div = fisher_exact(n_div_without, len(without[0]), n_div_with, len(with_[0]))
    learns = one_sample(list(with_[0].values()), LEARNS_FLOOR)
    lines.append({"sweep": "prior_init", "table": "5.1", "claim": "CE without the prior diverges, with it trains",
                  "a": f"without: {n_div_without}/{len(without[0])} diverged; with: {n_div_with}/{len(with_[0])}",
                  "b": f"with-prior AP vs floor {LEARNS_FLOOR:g}", "result": learns, "p_div": p_div,
                  "selection": "", "members": 1,
                  "p_holm": None})
    return lines


def render(lines: List[dict]) -> str:
    out = ["# Recheck of the committed verdicts under proper tests", "",
           f"Generated by `python studies/verdict_recheck.py` from `results/*/table.csv` as committed at {PINNED} "
           "(before the confirmatory runs; no training). The "
           "committed report's rule: \"holds\" where the difference exceeds 2 SE of the sweep's pooled seed sd "
           "(unpaired, no multiplicity control). Here: paired t where both arms ran the same seeds, else Welch; "
           "two-sided, t critical value at the real df; Holm over each sweep's pairwise claims; \"does not hold\" "
           f"only for a significant opposite effect (family-wise {ALPHA:g}). These are the runs the cpu profile "
           "was tuned on: an exploratory recheck, not a confirmation.", "",
           "| sweep | table | claim | A | B (least favorable) | test | diff AP | 95% CI | df | p | Holm p | "
           "committed | now |", "|" + "---|" * 13]
    committed = {}  # (sweep, claim) -> the committed report's mark
    for sweep in dict.fromkeys(line["sweep"] for line in lines):
        summary = json.loads(pinned(f"results/{sweep}/summary.json"))
        committed.update({(sweep, v["claim"]): v["mark"] for vs in summary["verdicts"].values() for v in vs})
    for line in lines:
        r = line["result"]
        if line["table"] == "5.1":
            ok_div = line["p_div"] <= ALPHA
            learns = r.p is not None and r.p <= ALPHA and r.diff > 0
            fails_learning = r.p is not None and r.p <= ALPHA and r.diff < 0
            now = ("holds" if ok_div and learns else
                   "does not hold: does not diverge, does not learn" if fails_learning else "inconclusive")
            test = f"Fisher exact p {line['p_div']:.3g} (diverged counts); {r.test} of the with-prior arm"
            p = max(line["p_div"], r.p if r.p is not None else 1.0)
        else:
            now, test, p = mark(r, line["p_holm"]), r.test, r.p
        ci = f"[{r.ci[0]:+.2f}, {r.ci[1]:+.2f}]" if r.ci else ""
        df = f"{r.df:.3g}" if r.df is not None else ""
        b = line["b"] + (f" (of {line['members']})" if line["members"] > 1 else "")
        a = line["a"] + (f" ({line['selection']})" if line["selection"] else "")
        out.append(f"| {line['sweep']} | {line['table']} | {line['claim']} | {a} | {b} | {test} | {r.diff:+.2f} | "
                   f"{ci} | {df} | {'' if p is None else f'{p:.3g}'} | "
                   f"{'' if line['p_holm'] is None else format(line['p_holm'], '.3g')} | "
                   f"{committed.get((line['sweep'], line['claim']), '?')} | {now} |")
    out += ["", "Claims left out here: the rank agreements and \"best row matches\" (permutation tests; they need "
            "the reference column and every row), 1a's \"alpha .10 collapses\" (one seed: not testable) and "
            "1e's trend (one seed per row).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    text = render(recheck())
    OUT.write_text(text)
    print(text)
