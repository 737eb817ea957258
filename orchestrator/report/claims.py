"""Verdicts: the claims a sweep file declares (orchestrator/declaration.py), tested on its rows.

One primary test per claim kind (orchestrator/report/statistics.py), every p-value two-sided:

* **beats** (A beats B): A's metric minus B's over seeds: a **paired t** test on the per-seed
  differences where both rows ran the same seeds (seed k of every row shares its data draw,
  initialization and backbone), else **Welch's t**; 95% t interval at the real degrees of freedom.
  ``b: {best_of: [...]}`` (A beats the best of a group) is an intersection-union test: A must beat
  every member, so its p is the largest of the members' p (the least favorable member is shown).
  ``a: {best_of: [...]}`` (the best of a group beats B): the member with the highest mean is selected,
  and its p is multiplied by the group's size (Bonferroni for the selection).
* **rank_agreement**: Spearman's rho between our means and a reference column over the table's rows,
  with a two-sided permutation p (exact up to 8 rows, else 20,000 random permutations, fixed seed).
* **collapses** / **learns**: a one-sample t test of the row's mean against the threshold.
* **diverges_vs_trains**: Fisher's exact test on the diverged counts of the two rows, and the
  "learns" test of the training row against the floor; both must hold (intersection-union: p is the
  larger). A training row that does not diverge but does not learn either is said so.

Holm's step-down correction runs over the sweep's declared claims (family-wise 5%). A claim
**holds** where its Holm-adjusted p <= 0.05 in the claimed direction, **does not hold** where it is
significant in the opposite direction, and is **inconclusive** otherwise; **no test** where a row has
one seed (no noise estimate), **not checked** where a row has no result. A claim that holds on a row
whose AP had not converged (curves.py, the same per-row rule in every table) says "holds (not
converged)". Diverged seeds count as 0 AP (what their detector scores), and the detail says how many.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import pandas as pd

from ..declaration import Claim, Declaration
from . import statistics
from .rows import OurRow

HOLDS, HOLDS_NOT_CONVERGED, FAILS, INCONCLUSIVE, NO_TEST, NOT_CHECKED = (
    "holds", "holds (not converged)", "does not hold", "inconclusive", "no test", "not checked")
NO_LEARNING = "does not hold (does not diverge, does not learn)"
ALPHA = 0.05  # family-wise
EXACT_PERMUTATIONS_MAX_ROWS = 8
RANDOM_PERMUTATIONS = 20000

RowKey = Tuple[str, str]  # (table, label)


@dataclass
class Verdict:
    claim: str
    kind: str
    table: str
    mark: str
    detail: str
    test: str = ""  # the primary test's name
    diff: Optional[float] = None  # the claimed difference (rho for rank agreement)
    ci: Optional[Tuple[float, float]] = None
    df: Optional[float] = None
    p: Optional[float] = None  # the claim's p before Holm
    p_holm: Optional[float] = None
    direction: Optional[bool] = None  # the numbers point the claimed way, noise aside
    rests_on: List[str] = field(default_factory=list)

    @property
    def holds(self) -> Optional[bool]:
        """True where it holds, False where it does not, None otherwise."""
        if self.mark in (HOLDS, HOLDS_NOT_CONVERGED):
            return True
        return False if self.mark.startswith(FAILS) else None

    def as_dict(self) -> dict:
        return {"claim": self.claim, "kind": self.kind, "table": self.table, "mark": self.mark, "holds": self.holds,
                "test": self.test, "diff": self.diff, "ci": list(self.ci) if self.ci else None, "df": self.df,
                "p": self.p, "p_holm": self.p_holm, "direction": self.direction, "rests_on": self.rests_on,
                "detail": self.detail}


@dataclass
class _Outcome:
    """A claim tested, before Holm: what decides its mark."""
    claim: Claim
    detail: str
    test: Optional[statistics.TestResult] = None
    p: Optional[float] = None
    direction: Optional[bool] = None
    unconverged: List[str] = field(default_factory=list)
    rests_on: List[str] = field(default_factory=list)
    mark: Optional[str] = None  # set where no test decides (not checked / no test)
    opposite_mark: str = FAILS


# ----------------------------------------------------------------------------------------------
# rank statistics


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks (average ranks for ties)."""
    ra, rb = pd.Series(list(a), dtype=float).rank(), pd.Series(list(b), dtype=float).rank()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(ra.corr(rb))


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p of Spearman's rho(a, b) under random pairing: the share of permutations of ``b``
    whose |rho| is at least the observed |rho| (exact up to 8 values)."""
    a, b = list(a), list(b)
    observed = spearman(a, b)
    if math.isnan(observed):
        return float("nan")
    if len(b) <= EXACT_PERMUTATIONS_MAX_ROWS:
        perms = list(itertools.permutations(b))
    else:
        rng = random.Random(0)
        perms = [rng.sample(b, len(b)) for _ in range(RANDOM_PERMUTATIONS)]
    at_least = sum(1 for p in perms if abs(spearman(a, p)) >= abs(observed) - 1e-12)
    return at_least / len(perms)


# ----------------------------------------------------------------------------------------------
# one claim


def _values(row: OurRow, metric: str) -> Dict[int, float]:
    return row.by_seed(metric)


def _seeds_text(row: OurRow, metric: str) -> str:
    values = _values(row, metric)
    mean = sum(values.values()) / len(values) if values else float("nan")
    diverged = f", {row.diverged} diverged (0 AP)" if row.diverged else ""
    return f"{row.label} {mean:.2f} ({len(values)} seed{'s' if len(values) != 1 else ''}{diverged})"


def _missing(claim: Claim, rows: Mapping[RowKey, OurRow], keys: Sequence[RowKey]) -> Optional[_Outcome]:
    for key in keys:
        row = rows.get(key)
        if row is None or not _values(row, claim.metric):
            return _Outcome(claim, f"{key[1]} has no result", mark=NOT_CHECKED)
    return None


def _unconverged(rows: Sequence[OurRow]) -> List[str]:
    return [r.label for r in rows if r.converged is False]


def _beats(claim: Claim, rows: Mapping[RowKey, OurRow]) -> _Outcome:
    missing = _missing(claim, rows, claim.rows)
    if missing:
        return missing
    m = claim.metric
    a_rows, b_rows = [rows[k] for k in claim.a.rows], [rows[k] for k in claim.b.rows]
    if claim.b.best_of:  # A beats every member: intersection-union
        a = a_rows[0]
        tests = [(b, statistics.compare_arms(_values(a, m), _values(b, m))) for b in b_rows]
        if any(t.p is None for _, t in tests):
            b, t = next((b, t) for b, t in tests if t.p is None)
            return _Outcome(claim, f"{_seeds_text(a, m)} vs {_seeds_text(b, m)}: {t.describe()}", t,
                            mark=NO_TEST, direction=all(t.diff > 0 for _, t in tests), rests_on=[a.label, b.label])
        if all(t.diff > 0 for _, t in tests):
            b, t = max(tests, key=lambda bt: bt[1].p)
            p = t.p
        else:
            b, t = min(((b, t) for b, t in tests if t.diff <= 0), key=lambda bt: bt[1].p)
            p = t.p
        selection = (f"A must beat each of {len(b_rows)} rows ({', '.join(r.label for r in b_rows)}): "
                     f"intersection-union, p of the least favorable; shown: {b.label}")
        chosen = [a, b]
    elif claim.a.best_of:  # the best member beats B: selection by mean, Bonferroni
        b = b_rows[0]
        means = [(sum(_values(r, m).values()) / len(_values(r, m)), r) for r in a_rows]
        a = max(means, key=lambda x: x[0])[1]
        t = statistics.compare_arms(_values(a, m), _values(b, m))
        p = None if t.p is None else min(1.0, t.p * len(a_rows))
        selection = (f"A = {a.label}, the best of {len(a_rows)} rows by mean ({', '.join(r.label for r in a_rows)}): "
                     f"p x {len(a_rows)} for the selection")
        chosen = [a, b]
    else:
        a, b = a_rows[0], b_rows[0]
        t = statistics.compare_arms(_values(a, m), _values(b, m))
        p, selection, chosen = t.p, "", [a, b]
    detail = f"{_seeds_text(a, m)} vs {_seeds_text(b, m)}: {t.describe().replace(' AP', ' ' + m, 1)}" + \
        (f"; {selection}" if selection else "")
    return _Outcome(claim, detail, t, p, t.diff > 0, _unconverged(chosen), [r.label for r in chosen],
                    mark=NO_TEST if p is None else None)


def _threshold(claim: Claim, rows: Mapping[RowKey, OurRow], key: RowKey, threshold: float, below: bool,
               what: str) -> _Outcome:
    missing = _missing(claim, rows, [key])
    if missing:
        return missing
    row = rows[key]
    t = statistics.one_sample(list(_values(row, claim.metric).values()), threshold)
    detail = f"{_seeds_text(row, claim.metric)} vs {what} {threshold:g}: {t.describe()}"
    return _Outcome(claim, detail, t, t.p, (t.diff < 0) if below else (t.diff > 0), _unconverged([row]), [row.label],
                    mark=NO_TEST if t.p is None else None)


def _diverges_vs_trains(claim: Claim, rows: Mapping[RowKey, OurRow]) -> _Outcome:
    missing = _missing(claim, rows, [claim.diverges, claim.trains])
    if missing:
        return missing
    div, tr = rows[claim.diverges], rows[claim.trains]
    n_div, n_tr = len(div.done), len(tr.done)
    p_f = statistics.fisher_exact(div.diverged, n_div, tr.diverged, n_tr)
    more = div.diverged / n_div > tr.diverged / n_tr
    learns = _threshold(claim, rows, claim.trains, claim.threshold, False, "floor")
    counts = f"{div.label}: {div.diverged}/{n_div} diverged; {tr.label}: {tr.diverged}/{n_tr}; Fisher exact p {p_f:.3g}"
    detail = f"{counts}; learns: {learns.detail}"
    if learns.p is None:
        return _Outcome(claim, detail, learns.test, mark=NO_TEST, direction=more and bool(learns.direction),
                        rests_on=[div.label, tr.label])
    if more and learns.direction:
        return _Outcome(claim, detail + "; both must hold: p is the larger", learns.test, max(p_f, learns.p), True,
                        learns.unconverged, [div.label, tr.label])
    if not learns.direction:  # the training row is not above the floor: it does not learn
        return _Outcome(claim, detail, learns.test, learns.p, False, [], [div.label, tr.label],
                        opposite_mark=NO_LEARNING if tr.diverged == 0 else FAILS)
    return _Outcome(claim, detail, learns.test, p_f, False, [], [div.label, tr.label])  # divergence the other way


def _rank_agreement(claim: Claim, table: pd.DataFrame, paper: bool) -> _Outcome:
    ours_col = claim.reference if paper else claim.metric
    ref_col = f"{claim.reference}_paper" if paper else f"{claim.reference}_ref"
    d = table[table["primary"]] if len(table) else table
    if ours_col not in d or ref_col not in d:
        return _Outcome(claim, f"table {claim.table} has no column {ours_col} beside {ref_col}", mark=NOT_CHECKED)
    d = d[d[ours_col].notna() & d[ref_col].notna()]
    if len(d) < 3:
        return _Outcome(claim, f"{len(d)} rows with a result and a reference; need 3", mark=NOT_CHECKED)
    ours, ref = d[ours_col].astype(float).tolist(), d[ref_col].astype(float).tolist()
    rho = spearman(ours, ref)
    if math.isnan(rho):
        return _Outcome(claim, "our rows (or the reference's) all have the same value", mark=NOT_CHECKED)
    p = permutation_p(ours, ref)
    t = statistics.TestResult("Spearman rho, permutation p", rho, None, None, p)
    labels = d["label"].tolist()
    return _Outcome(claim, f"rho {rho:+.2f} over {len(d)} rows, two-sided permutation p {p:.3g}", t, p, rho > 0,
                    [], labels)


def _test(claim: Claim, rows: Mapping[RowKey, OurRow], tables: Mapping[str, pd.DataFrame],
          declaration: Declaration) -> _Outcome:
    if claim.kind == "beats":
        return _beats(claim, rows)
    if claim.kind == "collapses":
        return _threshold(claim, rows, claim.row, claim.threshold, True, "threshold")
    if claim.kind == "learns":
        return _threshold(claim, rows, claim.row, claim.threshold, False, "threshold")
    if claim.kind == "diverges_vs_trains":
        return _diverges_vs_trains(claim, rows)
    spec = declaration.tables.get(claim.table)
    return _rank_agreement(claim, tables.get(claim.table, pd.DataFrame()), bool(spec and spec.paper))


# ----------------------------------------------------------------------------------------------
# every claim of a sweep


def _mark(outcome: _Outcome, p_holm: Optional[float]) -> str:
    if outcome.mark is not None:
        return outcome.mark
    if p_holm is not None and p_holm <= ALPHA:
        if outcome.direction:
            return HOLDS_NOT_CONVERGED if outcome.unconverged else HOLDS
        return outcome.opposite_mark
    return INCONCLUSIVE


def verdicts(declaration: Declaration, rows: Mapping[RowKey, OurRow],
             tables: Mapping[str, pd.DataFrame]) -> Dict[str, List[Verdict]]:
    """table -> the verdicts of the claims shown in its section, Holm-adjusted over the sweep's claims."""
    outcomes = [_test(c, rows, tables, declaration) for c in declaration.claims]
    adjusted = statistics.holm({str(i): o.p for i, o in enumerate(outcomes)})
    out: Dict[str, List[Verdict]] = {}
    tested = sum(o.p is not None for o in outcomes)
    for i, o in enumerate(outcomes):
        p_holm = adjusted[str(i)]
        t = o.test
        detail = o.detail
        if o.p is not None:
            if t is None or t.p is None or abs(o.p - t.p) > 1e-12 * max(1.0, o.p):
                detail += f"; the claim's p {o.p:.3g}"
            detail += f"; Holm p {p_holm:.3g} (over the sweep's {tested} tested claims)"
        if o.unconverged:
            detail += f"; rests on rows whose AP had not converged: {', '.join(o.unconverged)}"
        out.setdefault(o.claim.table, []).append(Verdict(
            claim=o.claim.says, kind=o.claim.kind, table=o.claim.table, mark=_mark(o, p_holm), detail=detail,
            test=t.test if t else "", diff=t.diff if t else None, ci=t.ci if t else None, df=t.df if t else None,
            p=o.p, p_holm=p_holm, direction=o.direction, rests_on=o.rests_on))
    return out
