"""AP against iterations: each row's curve (the mean over its seeds), and whether it had converged.

A row's AP curve comes from the evaluations during training (``eval.every``) and the final one (the
mean over its seeds). The rule, per row and the same in every table: a row **converged** when the AP
it gained over the last quarter of its schedule (from its last evaluation at or before 75% of the
iterations to the end) is at most ``DEFAULT_TOLERANCE`` AP. A row without a curve (``eval.every`` 0)
is "no curve": nothing is claimed about it. A claim that holds on a row that had not converged says
"holds (not converged)".
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

Curve = List[Tuple[int, float]]  # (iteration, AP), increasing iterations

DEFAULT_TOLERANCE = 1.0  # AP points gained over the last quarter
LAST_QUARTER = 0.75


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """The mean over seeds at the iterations every seed evaluated."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    common = set(step for step, _ in curves[0])
    for c in curves[1:]:
        common &= {step for step, _ in c}
    by_step: Dict[int, List[float]] = {}
    for c in curves:
        for step, ap in c:
            if step in common:
                by_step.setdefault(step, []).append(ap)
    return [(step, sum(v) / len(v)) for step, v in sorted(by_step.items())]


def last_quarter_gain(curve: Curve) -> Optional[float]:
    """AP at the end minus AP at the last evaluation at or before 75% of the schedule; None without
    such a point (fewer than two evaluations)."""
    if len(curve) < 2:
        return None
    end_step, end_ap = curve[-1]
    before = [ap for step, ap in curve[:-1] if step <= LAST_QUARTER * end_step]
    return None if not before else end_ap - before[-1]


def converged(curve: Curve, tolerance: float) -> Optional[bool]:
    gain = last_quarter_gain(curve)
    return None if gain is None else gain <= tolerance
