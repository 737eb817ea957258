"""Verdicts: the paper's claims checked against our rows."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import pandas as pd

from .paper import PAPER
from .rows import DONE, fmt


@dataclass
class Verdict:
    claim: str
    holds: Optional[bool]  # None: cannot be checked (rows missing)
    detail: str

    def __post_init__(self) -> None:
        self.holds = None if self.holds is None else bool(self.holds)

    @property
    def mark(self) -> str:
        return {True: "holds", False: "does not hold", None: "not checked"}[self.holds]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks (average ranks for ties)."""
    ra, rb = pd.Series(list(a), dtype=float).rank(), pd.Series(list(b), dtype=float).rank()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(ra.corr(rb))


def _done_primary(df: pd.DataFrame) -> pd.DataFrame:
    ok = df["primary"] & df["status"].map(lambda s: any(x in DONE for x in str(s).replace(",", " ").split()))
    return df[ok & df["AP"].notna()]


def _ap(df: pd.DataFrame, **where) -> Optional[float]:
    sel = _done_primary(df)
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return float(sel["AP"].iloc[0]) if len(sel) else None


def _status(df: pd.DataFrame, **where) -> Optional[str]:
    """The row's status without seed counts ("diverged x3" -> "diverged"; a mix stays a mix)."""
    sel = df[df["primary"]]
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return re.sub(r" x\d+", "", str(sel["status"].iloc[0])) if len(sel) else None


def _cmp(claim: str, a: Optional[float], b: Optional[float], what_a: str, what_b: str) -> Verdict:
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return Verdict(claim, None, f"{what_a if a is None else what_b} has no result")
    return Verdict(claim, a > b, f"{what_a} {a:.2f} vs {what_b} {b:.2f} AP")


def verdicts(table: str, df: pd.DataFrame, others: Optional[Dict[str, pd.DataFrame]] = None) -> List[Verdict]:
    """Rank agreement with the paper, whether the best row matches, and the paper's claim(s)."""
    out: List[Verdict] = []
    done = _done_primary(df)
    keys = PAPER[table][1]
    if table != "5.1":
        both = done[done["AP_paper"].notna()]
        if len(both) >= 3:
            rho = spearman(both["AP"], both["AP_paper"])
            out.append(Verdict("rank agreement with the paper (Spearman rho of AP over rows)",
                               None if math.isnan(rho) else rho >= 0.5, f"rho = {rho:.2f} over {len(both)} rows; agreement: rho >= 0.5"))
            ours_best = both.loc[both["AP"].idxmax()]
            paper_best = both.loc[both["AP_paper"].idxmax()]
            name = lambda r: r["label"] or " ".join(str(r[k]) for k in keys)  # noqa: E731
            out.append(Verdict("best row matches the paper's", ours_best.name == paper_best.name,
                               f"ours: {name(ours_best)} ({ours_best['AP']:.2f}); paper: {name(paper_best)} "
                               f"({paper_best['AP_paper']:.1f})"))
        else:
            out.append(Verdict("rank agreement with the paper (Spearman rho of AP over rows)", None,
                               f"{len(both)} rows with results; need 3"))
    if table == "1a":
        low, best = _ap(df, alpha="0.1"), done["AP"].max() if len(done) else None
        st = _status(df, alpha="0.1")
        if st == "diverged" or (low is not None and best is not None and low <= 0.1 * best):
            out.append(Verdict("alpha .10 collapses", True, f"alpha .10: {st}, {low if low is not None else 'no'} AP "
                               f"(best row {best:.2f})" if best is not None else f"alpha .10: {st}"))
        elif low is None:
            out.append(Verdict("alpha .10 collapses", None, "alpha .10 has no result"))
        else:
            out.append(Verdict("alpha .10 collapses", False, f"alpha .10: {low:.2f} AP, > 10% of the best row "
                               f"({best:.2f})"))
        mids = done[done["alpha"].isin(["0.75", "0.9"])]
        mid = float(mids["AP"].max()) if len(mids) else None
        out.append(_cmp("a mid alpha (.75 or .90) beats .50", mid, _ap(df, alpha="0.5"), "best of .75/.90",
                        "alpha .50"))
    elif table == "1b":
        ce = [float(x) for x in done[done["gamma"] == "0"]["AP"]]
        if others and "1a" in others:
            ce += [float(x) for x in _done_primary(others["1a"])["AP"]]
        out.append(_cmp("FL at gamma 2 beats the best CE", _ap(df, gamma="2", alpha="0.25"),
                        max(ce) if ce else None, "FL gamma 2 alpha .25", "best CE"))
    elif table == "1c":
        single = _ap(df, num_scales="1", num_aspect_ratios="1")
        rest = done[~((done["num_scales"] == "1") & (done["num_aspect_ratios"] == "1"))]
        v = _cmp("more scales or ratios beat a single square anchor", float(rest["AP"].max()) if len(rest) else None,
                 single, "best multi-anchor row", "1 scale x 1 ratio")
        if v.holds is not None:
            v.detail += f"; {int((rest['AP'] > single).sum())} of {len(rest)} rows beat it"
        out.append(v)
    elif table == "1d":
        ohem = done[done["method"].str.startswith("OHEM")]
        out.append(_cmp("FL beats every OHEM row", _ap(df, method="FL"),
                        float(ohem["AP"].max()) if len(ohem) else None, "FL", "best OHEM"))
    elif table == "1e":
        parts, holds = [], True
        for depth, g in done.groupby("depth"):
            if len(g) < 2:
                holds = None if holds else holds
                continue
            scale = g["scale"].astype(float)
            r_ap, r_ms = spearman(scale, g["AP"]), spearman(scale, g["time_ms"])
            parts.append(f"R{depth}: rho(scale, AP) {r_ap:.2f}, rho(scale, ms) {r_ms:.2f}")
            holds = holds and bool(r_ap > 0 and r_ms > 0)
        depths = sorted(done["depth"].unique(), key=float)
        if len(depths) >= 2:
            lo, hi = done[done["depth"] == depths[0]], done[done["depth"] == depths[-1]]
            common = sorted(set(lo["scale"]) & set(hi["scale"]))
            if common:
                m = lambda d, c: float(d[d["scale"].isin(common)][c].mean())  # noqa: E731
                deeper = m(hi, "AP") > m(lo, "AP") and m(hi, "time_ms") > m(lo, "time_ms")
                parts.append(f"R{depths[-1]} vs R{depths[0]} at common scales: AP {m(hi, 'AP'):.2f} vs "
                             f"{m(lo, 'AP'):.2f}, ms {m(hi, 'time_ms'):.1f} vs {m(lo, 'time_ms'):.1f}")
                holds = holds and deeper
        if not parts:
            holds = None
        out.append(Verdict("AP and time both grow with scale and depth", holds, "; ".join(parts) or "too few rows"))
    elif table == "5.1":
        without, with_ = _status(df, prior_init="false"), _status(df, prior_init="true")
        if without in (None, "missing", "not in sweep") or with_ in (None, "missing", "not in sweep"):
            out.append(Verdict("CE without the prior diverges, with it trains", None,
                               f"without: {without}; with: {with_}"))
        else:
            out.append(Verdict("CE without the prior diverges, with it trains",
                               without == "diverged" and with_ == "finished",
                               f"without: {without}; with: {with_} ({fmt(_ap(df, prior_init='true') or float('nan'), 2)} AP)"))
    return out
