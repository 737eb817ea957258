"""Verdicts: the paper's claims checked against our rows, with their noise.

The noise is the seed-to-seed spread: a row that runs several seeds gives the standard deviation of
its AP over them, and the sweep's **pooled** seed standard deviation ``sd`` (every row of its tables
with at least two finished seeds, weighted by its degrees of freedom; a trial listed in two tables
counted once) is the noise of every row: one profile, one regime.

A claim "A beats B" compares the means over seeds: with ``n_A`` and ``n_B`` seeds the difference has
standard error ``se = sd * sqrt(1/n_A + 1/n_B)``, and the claim

* **holds** where ``mean(A) - mean(B) > 2 se``,
* **does not hold** where ``mean(A) - mean(B) < -2 se`` (the opposite difference exceeds the noise),
* is **inconclusive** in between,
* says **single seed** where no row of the sweep has two seeds (no noise estimate; the detail gives
  the direction of the numbers), and **not checked** where a row it needs has no result.

A claim that rests on a row whose AP curve had not converged (see ``rows.converged``) says so in its
detail. Rank agreement with the paper is Spearman's rho of our means against the paper's AP, with a
one-sided permutation p-value (exact up to 8 rows, else 20,000 random permutations with a fixed seed):
it holds where rho >= 0.5 and p <= 0.05, does not hold where rho <= 0, and is inconclusive otherwise.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from .paper import PAPER
from .rows import DONE

HOLDS, FAILS, INCONCLUSIVE, SINGLE_SEED, NOT_CHECKED = (
    "holds", "does not hold", "inconclusive", "single seed", "not checked")
NOISE_Z = 2.0  # a difference counts where it exceeds this many standard errors
RHO_AGREEMENT = 0.5
P_SIGNIFICANT = 0.05
EXACT_PERMUTATIONS_MAX_ROWS = 8
RANDOM_PERMUTATIONS = 20000


@dataclass
class Verdict:
    claim: str
    mark: str  # HOLDS, FAILS, INCONCLUSIVE, SINGLE_SEED or NOT_CHECKED
    detail: str
    direction: Optional[bool] = None  # what the numbers say, noise aside (None: nothing to compare)
    rests_on: List[str] = field(default_factory=list)  # the rows it compares

    @property
    def holds(self) -> Optional[bool]:
        """True where it holds, False where it does not, None otherwise (inconclusive, single seed, ...)."""
        return {HOLDS: True, FAILS: False}.get(self.mark)

    def as_dict(self) -> dict:
        return {"claim": self.claim, "mark": self.mark, "holds": self.holds, "direction": self.direction,
                "detail": self.detail}


# ----------------------------------------------------------------------------------------------
# rows and noise


@dataclass
class Row:
    """One of our rows as the verdicts see it."""
    name: str
    values: List[float]  # AP of each finished (or diverged: 0) seed
    status: str
    converged: Optional[bool] = None  # None: no AP curve

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")


@dataclass
class Noise:
    sd: Optional[float]  # pooled seed standard deviation of AP; None: no row has two seeds
    dof: int

    def se(self, n_a: int, n_b: int) -> Optional[float]:
        return None if self.sd is None else self.sd * math.sqrt(1.0 / n_a + 1.0 / n_b)

    def describe(self) -> str:
        return "no seed spread (one seed per row)" if self.sd is None else \
            f"pooled seed sd {self.sd:.2f} AP ({self.dof} degrees of freedom)"


def pooled_noise(groups: Sequence[Sequence[float]]) -> Noise:
    """The pooled standard deviation of the groups with at least two values."""
    num, dof = 0.0, 0
    for g in groups:
        if len(g) > 1:
            mean = sum(g) / len(g)
            num += sum((x - mean) ** 2 for x in g)
            dof += len(g) - 1
    return Noise(math.sqrt(num / dof) if dof else None, dof)


def _done_primary(df: pd.DataFrame) -> pd.DataFrame:
    ok = df["primary"] & df["status"].map(lambda s: any(x in DONE for x in str(s).replace(",", " ").split()))
    return df[ok & df["AP"].notna()]


def _row(line: pd.Series, keys: Sequence[str]) -> Row:
    values = [float(v) for v in (line.get("AP_seeds") or []) if v is not None and not math.isnan(float(v))]
    if not values and not math.isnan(float(line["AP"])):
        values = [float(line["AP"])]
    name = line["label"] or " ".join(str(line[k]) for k in keys)
    converged = line.get("converged")
    return Row(name, values, str(line["status"]), None if converged is None or pd.isna(converged) else bool(converged))


def table_rows(df: pd.DataFrame, table: str) -> List[Tuple[pd.Series, Row]]:
    keys = PAPER[table][1]
    return [(line, _row(line, keys)) for _, line in _done_primary(df).iterrows()]


def sweep_noise(tables: Dict[str, pd.DataFrame]) -> Noise:
    """The pooled seed standard deviation over every row of the sweep's tables (each trial once)."""
    groups, seen = [], set()
    for table, df in tables.items():
        for line, row in table_rows(df, table):
            if line["run_ids"] not in seen:
                seen.add(line["run_ids"])
                groups.append(row.values)
    return pooled_noise(groups)


def _find(df: pd.DataFrame, table: str, **where) -> Optional[Row]:
    for line, row in table_rows(df, table):
        if all(line[k] == v for k, v in where.items()):
            return row
    return None


def _unconverged(rows: Sequence[Row]) -> str:
    names = [r.name for r in rows if r.converged is False]
    return f"; rests on rows whose AP had not converged: {', '.join(names)}" if names else ""


def compare(claim: str, a: Optional[Row], b: Optional[Row], noise: Noise, what_a: str, what_b: str) -> Verdict:
    """The claim "a beats b" (see the module docstring)."""
    if a is None or b is None or not a.values or not b.values:
        missing = what_a if a is None or not a.values else what_b
        return Verdict(claim, NOT_CHECKED, f"{missing} has no result")
    diff = a.mean - b.mean
    shown = (f"{what_a} {a.mean:.2f}{_seeds(a)} vs {what_b} {b.mean:.2f}{_seeds(b)}: {diff:+.2f} AP")
    se = noise.se(a.n, b.n)
    if se is None:
        mark, noise_text = SINGLE_SEED, "no noise estimate (one seed per row)"
    else:
        mark = HOLDS if diff > NOISE_Z * se else FAILS if diff < -NOISE_Z * se else INCONCLUSIVE
        noise_text = f"noise {NOISE_Z:g} SE = {NOISE_Z * se:.2f} ({noise.describe()})"
    return Verdict(claim, mark, f"{shown}; {noise_text}{_unconverged([a, b])}", diff > 0, [a.name, b.name])


def _seeds(row: Row) -> str:
    return f" ({row.n} seeds)" if row.n > 1 else ""


def best(rows: Sequence[Row]) -> Optional[Row]:
    rows = [r for r in rows if r.values]
    return max(rows, key=lambda r: r.mean) if rows else None


# ----------------------------------------------------------------------------------------------
# rank agreement


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks (average ranks for ties)."""
    ra, rb = pd.Series(list(a), dtype=float).rank(), pd.Series(list(b), dtype=float).rank()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(ra.corr(rb))


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided p-value of Spearman's rho(a, b) under random pairing: the share of permutations of
    ``b`` whose rho is at least the observed one (exact up to 8 values)."""
    a, b = list(a), list(b)
    observed = spearman(a, b)
    if math.isnan(observed):
        return float("nan")
    if len(b) <= EXACT_PERMUTATIONS_MAX_ROWS:
        perms = list(itertools.permutations(b))
    else:
        rng = random.Random(0)
        perms = [rng.sample(b, len(b)) for _ in range(RANDOM_PERMUTATIONS)]
    at_least = sum(1 for p in perms if spearman(a, p) >= observed - 1e-12)
    return at_least / len(perms)


def rank_agreement(rows: List[Tuple[pd.Series, Row]]) -> Verdict:
    claim = "rank agreement with the paper (Spearman rho of AP over rows)"
    both = [(line, row) for line, row in rows if not math.isnan(float(line["AP_paper"]))]
    if len(both) < 3:
        return Verdict(claim, NOT_CHECKED, f"{len(both)} rows with results; need 3")
    ours, paper = [r.mean for _, r in both], [float(line["AP_paper"]) for line, _ in both]
    rho, p = spearman(ours, paper), permutation_p(ours, paper)
    if math.isnan(rho):
        return Verdict(claim, NOT_CHECKED, "our rows all have the same AP")
    mark = HOLDS if rho >= RHO_AGREEMENT and p <= P_SIGNIFICANT else FAILS if rho <= 0 else INCONCLUSIVE
    return Verdict(claim, mark, f"rho = {rho:.2f} over {len(both)} rows, permutation p = {p:.3f}; holds where rho >= "
                   f"{RHO_AGREEMENT} and p <= {P_SIGNIFICANT}, does not hold where rho <= 0", rho > 0,
                   [r.name for _, r in both])


def best_row_matches(rows: List[Tuple[pd.Series, Row]], noise: Noise) -> Verdict:
    """The paper's best row is our best beyond noise (holds), some row beats it beyond noise (does not
    hold), or it ties with our best (inconclusive)."""
    claim = "best row matches the paper's"
    both = [(line, row) for line, row in rows if not math.isnan(float(line["AP_paper"]))]
    if len(both) < 2:
        return Verdict(claim, NOT_CHECKED, f"{len(both)} rows with results; need 2")
    paper_best = max(both, key=lambda lr: float(lr[0]["AP_paper"]))[1]
    ours_best = best([r for _, r in both])
    others = [r for _, r in both if r is not paper_best]
    shown = f"ours: {ours_best.name} ({ours_best.mean:.2f}); paper: {paper_best.name} ({paper_best.mean:.2f} here)"
    if noise.sd is None:
        return Verdict(claim, SINGLE_SEED, f"{shown}; no noise estimate (one seed per row)",
                       ours_best is paper_best, [paper_best.name])
    beaten_by = [r for r in others if r.mean - paper_best.mean > NOISE_Z * noise.se(r.n, paper_best.n)]
    beats_all = all(paper_best.mean - r.mean > NOISE_Z * noise.se(r.n, paper_best.n) for r in others)
    mark = FAILS if beaten_by else HOLDS if beats_all else INCONCLUSIVE
    detail = shown + (f"; beaten beyond noise by {', '.join(r.name for r in beaten_by)}" if beaten_by else "") + \
        f"; {noise.describe()}{_unconverged([paper_best, ours_best])}"
    return Verdict(claim, mark, detail, ours_best is paper_best, [paper_best.name, ours_best.name])


# ----------------------------------------------------------------------------------------------
# the paper's claims, table by table


def _collapse(df: pd.DataFrame, noise: Noise) -> Verdict:
    """1a: alpha .10 collapses: its AP is at most 10% of the best row's, beyond noise."""
    claim = "alpha .10 collapses"
    rows = [r for _, r in table_rows(df, "1a")]
    low, top = _find(df, "1a", alpha="0.1"), best(rows)
    status = _status(df, alpha="0.1")
    if status is not None and status.startswith("diverged"):
        return Verdict(claim, HOLDS, f"alpha .10: {status}", True, ["CE alpha .10"])
    if low is None or top is None:
        return Verdict(claim, NOT_CHECKED, "alpha .10 has no result")
    threshold = 0.1 * top.mean
    gap = threshold - low.mean  # > 0: below a tenth of the best
    shown = f"alpha .10: {low.mean:.2f}{_seeds(low)} AP; a tenth of the best row ({top.name}, {top.mean:.2f}): " \
            f"{threshold:.2f}"
    se = noise.se(low.n, top.n)
    if se is None:
        return Verdict(claim, SINGLE_SEED, f"{shown}; no noise estimate (one seed per row)", gap >= 0, [low.name])
    mark = HOLDS if gap >= 0 and top.mean - low.mean > NOISE_Z * se else FAILS if -gap > NOISE_Z * se \
        else INCONCLUSIVE
    return Verdict(claim, mark, f"{shown}; noise {NOISE_Z:g} SE = {NOISE_Z * se:.2f}", gap >= 0, [low.name, top.name])


def _status(df: pd.DataFrame, **where) -> Optional[str]:
    sel = df[df["primary"]]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return str(sel["status"].iloc[0]) if len(sel) else None


def _trend(values: List[Tuple[float, float]]) -> Tuple[float, float]:
    xs, ys = [x for x, _ in values], [y for _, y in values]
    return spearman(xs, ys), permutation_p(xs, ys)


def _speed_accuracy(df: pd.DataFrame) -> Verdict:
    """1e: per depth AP and time grow with scale (rho > 0, permutation p <= .05), and the deeper net is
    more accurate and slower at the common scales (mean difference over scales beyond 2 SE of the
    per-scale differences)."""
    claim = "AP and time both grow with scale and depth"
    done = _done_primary(df)
    parts, marks = [], []
    for depth, g in done.groupby("depth"):
        if len(g) < 3:
            continue
        scale = g["scale"].astype(float).tolist()
        for what, col in (("AP", "AP"), ("ms", "time_ms")):
            rho, p = _trend(list(zip(scale, g[col].astype(float))))
            parts.append(f"R{depth}: rho(scale, {what}) {rho:.2f} (p {p:.3f})")
            marks.append(HOLDS if rho > 0 and p <= P_SIGNIFICANT else FAILS if rho < 0 and
                         permutation_p(scale, [-v for v in g[col].astype(float)]) <= P_SIGNIFICANT else INCONCLUSIVE)
    depths = sorted(done["depth"].unique(), key=float)
    if len(depths) >= 2:
        lo, hi = done[done["depth"] == depths[0]], done[done["depth"] == depths[-1]]
        common = sorted(set(lo["scale"]) & set(hi["scale"]), key=float)
        for what, col in (("AP", "AP"), ("ms", "time_ms")):
            diffs = [float(hi[hi["scale"] == s][col].iloc[0]) - float(lo[lo["scale"] == s][col].iloc[0]) for s in common]
            if len(diffs) < 2:
                continue
            mean = sum(diffs) / len(diffs)
            sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
            se = sd / math.sqrt(len(diffs))
            parts.append(f"R{depths[-1]} - R{depths[0]} over {len(diffs)} scales: {what} {mean:+.2f} (2 SE {2 * se:.2f})")
            marks.append(HOLDS if mean > NOISE_Z * se else FAILS if mean < -NOISE_Z * se else INCONCLUSIVE)
    if not marks:
        return Verdict(claim, NOT_CHECKED, "too few rows")
    mark = FAILS if FAILS in marks else HOLDS if all(m == HOLDS for m in marks) else INCONCLUSIVE
    return Verdict(claim, mark, "; ".join(parts), all(m != FAILS for m in marks))


def _prior(df: pd.DataFrame) -> Verdict:
    """5.1: every seed of CE without the prior diverges and every seed with it trains."""
    claim = "CE without the prior diverges, with it trains"
    without, with_ = _status(df, prior_init="false"), _status(df, prior_init="true")
    if without in (None, "missing", "not in sweep") or with_ in (None, "missing", "not in sweep"):
        return Verdict(claim, NOT_CHECKED, f"without: {without}; with: {with_}")
    row = _find(df, "5.1", prior_init="true")
    ap = f" ({row.mean:.2f} AP)" if row is not None and row.values else ""
    shown = f"without: {without}; with: {with_}{ap}"
    n_without = _seed_count(without)
    all_diverge = _only(without, "diverged")
    all_train = _only(with_, "finished")
    direction = all_diverge and all_train
    if n_without < 2 and _seed_count(with_) < 2:
        return Verdict(claim, SINGLE_SEED, f"{shown}; one seed per row", direction)
    if direction:
        return Verdict(claim, HOLDS, shown, True)
    if _only(without, "finished") or _only(with_, "diverged"):
        return Verdict(claim, FAILS, shown, False)
    return Verdict(claim, INCONCLUSIVE, f"{shown}; the seeds disagree", False)


def _seed_count(status: str) -> int:
    total = 0
    for part in status.split(", "):
        count = part.rsplit(" x", 1)
        total += int(count[1]) if len(count) == 2 and count[1].isdigit() else 1
    return total


def _only(status: str, what: str) -> bool:
    return all(part.split(" x")[0] == what for part in status.split(", "))


def verdicts(table: str, df: pd.DataFrame, others: Optional[Dict[str, pd.DataFrame]] = None) -> List[Verdict]:
    """Rank agreement with the paper, whether the best row matches, and the paper's claim(s) of ``table``.
    ``others``: every table of the sweep (1b's best CE includes 1a's rows; the noise is the sweep's)."""
    out: List[Verdict] = []
    rows = table_rows(df, table)
    noise = sweep_noise({**(others or {}), table: df})
    if table != "5.1":
        out.append(rank_agreement(rows))
        out.append(best_row_matches(rows, noise))
    if table == "1a":
        out.append(_collapse(df, noise))
        mid = best([r for line, r in rows if line["alpha"] in ("0.75", "0.9")])
        out.append(compare("a mid alpha (.75 or .90) beats .50", mid, _find(df, "1a", alpha="0.5"), noise,
                           "best of .75/.90", "alpha .50"))
    elif table == "1b":
        ce = [r for line, r in rows if line["gamma"] == "0"]
        if others and "1a" in others:
            ce += [r for _, r in table_rows(others["1a"], "1a")]
        top = best(ce)
        out.append(compare("FL at gamma 2 beats the best CE", _find(df, "1b", gamma="2", alpha="0.25"), top,
                           noise, "FL gamma 2 alpha .25", f"best CE ({top.name})" if top else "best CE"))
    elif table == "1c":
        single, full = _find(df, "1c", num_scales="1", num_aspect_ratios="1"), \
            _find(df, "1c", num_scales="3", num_aspect_ratios="3")
        v = compare("more scales or ratios beat a single square anchor", full, single, noise,
                    "3 scales x 3 ratios", "1 scale x 1 ratio")
        if single is not None and single.values:
            rest = [r for line, r in rows if not (line["num_scales"] == "1" and line["num_aspect_ratios"] == "1")]
            v.detail += f"; {sum(r.mean > single.mean for r in rest)} of {len(rest)} multi-anchor rows beat it"
        out.append(v)
    elif table == "1d":
        ohem = [r for line, r in rows if str(line["method"]).startswith("OHEM")]
        out.append(compare("FL beats every OHEM row", _find(df, "1d", method="FL"), best(ohem), noise, "FL",
                           f"best OHEM ({best(ohem).name})" if best(ohem) else "best OHEM"))
    elif table == "1e":
        out.append(_speed_accuracy(df))
    elif table == "5.1":
        out.append(_prior(df))
    return out

