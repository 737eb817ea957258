"""Tests behind a verdict: two-sided t tests at their real degrees of freedom, and Holm's correction.

* :func:`compare_arms` -- "A beats B" over seeds: a **paired** t test on the per-seed differences where
  both arms ran the same seeds (seed k of every row shares the data draw and initialization, so the
  differences cancel what the seed moves in both), else **Welch's** t test (unequal variances,
  Welch-Satterthwaite degrees of freedom).
* :func:`one_sample` -- "a row's mean is above / below a threshold": a one-sample t test.
* :func:`holm` -- Holm's step-down adjustment of a family of p-values (family-wise error rate).

Every p-value is two-sided; every interval is the 95% t interval of the difference. An arm with fewer
than two seeds (or a paired design with fewer than two shared seeds) has no noise estimate: the result
says so (``p`` is None). Zero spread where the means differ (every seed identical, e.g. all 0 AP)
gives p 0 and a zero-width interval: the difference is exact at those seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class TestResult:
    test: str  # "paired t", "Welch t", "one-sample t", or "no test (...)"
    diff: float  # mean(A) - mean(B), or mean - threshold
    ci: Optional[tuple]  # 95% interval of diff; None without a noise estimate
    df: Optional[float]
    p: Optional[float]  # two-sided; None without a noise estimate

    def describe(self) -> str:
        if self.p is None:
            return f"{self.diff:+.2f} AP; {self.test}"
        return (f"{self.diff:+.2f} AP, 95% CI [{self.ci[0]:+.2f}, {self.ci[1]:+.2f}], {self.test}, "
                f"df {self.df:.3g}, p {self.p:.3g}")


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def _var(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _t_result(test: str, diff: float, se: float, df: float) -> TestResult:
    if se == 0.0:
        return TestResult(test, diff, (diff, diff), df, 1.0 if diff == 0 else 0.0)
    t = diff / se
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, df) * se
    return TestResult(test, diff, (diff - half, diff + half), df, float(2 * stats.t.sf(abs(t), df)))


def paired_t(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Paired t test of mean(a - b) = 0; ``a[i]`` and ``b[i]`` come from the same seed."""
    if len(a) != len(b):
        raise ValueError(f"paired t needs as many values in a ({len(a)}) as in b ({len(b)})")
    d = [x - y for x, y in zip(a, b)]
    if len(d) < 2:
        return TestResult("no test (one shared seed)", _mean(d), None, None, None)
    return _t_result("paired t", _mean(d), math.sqrt(_var(d) / len(d)), len(d) - 1)


def welch_t(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Welch's t test of mean(a) = mean(b) (unequal variances)."""
    diff = _mean(a) - _mean(b)
    if len(a) < 2 or len(b) < 2:
        return TestResult("no test (an arm has one seed)", diff, None, None, None)
    va, vb = _var(a) / len(a), _var(b) / len(b)
    se2 = va + vb
    if se2 == 0.0:
        return _t_result("Welch t", diff, 0.0, len(a) + len(b) - 2)
    df = se2 ** 2 / ((va ** 2 / (len(a) - 1) if va else 0.0) + (vb ** 2 / (len(b) - 1) if vb else 0.0))
    return _t_result("Welch t", diff, math.sqrt(se2), df)


def compare_arms(a: Mapping[int, float], b: Mapping[int, float]) -> TestResult:
    """A vs B from their per-seed values (seed -> AP): paired where both ran the same seeds, else Welch."""
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        return paired_t([a[s] for s in seeds], [b[s] for s in seeds])
    return welch_t(list(a.values()), list(b.values()))


def one_sample(values: Sequence[float], threshold: float) -> TestResult:
    """One-sample t test of mean(values) = threshold (diff is mean - threshold)."""
    diff = _mean(values) - threshold
    if len(values) < 2:
        return TestResult("no test (one seed)", diff, None, None, None)
    return _t_result("one-sample t", diff, math.sqrt(_var(values) / len(values)), len(values) - 1)


def holm(pvalues: Mapping[str, Optional[float]]) -> Dict[str, Optional[float]]:
    """Holm-adjusted p-values of a family (name -> p; None: not tested, left out of the family)."""
    tested = sorted(((p, name) for name, p in pvalues.items() if p is not None))
    m, out, running = len(tested), {name: None for name, p in pvalues.items() if p is None}, 0.0
    for i, (p, name) in enumerate(tested):
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out


def fisher_exact(diverged_a: int, total_a: int, diverged_b: int, total_b: int) -> float:
    """Two-sided Fisher exact p of the 2x2 table of diverged / not diverged counts of two arms."""
    table = [[diverged_a, total_a - diverged_a], [diverged_b, total_b - diverged_b]]
    return float(stats.fisher_exact(table, alternative="two-sided").pvalue)


__all__: List[str] = ["TestResult", "paired_t", "welch_t", "compare_arms", "one_sample", "holm", "fisher_exact",
                      "CONFIDENCE"]
