"""Verdicts that know their noise (orchestrator/report/claims.py) and the convergence rule
(orchestrator/report/curves.py), on hand-made rows: no store, no training."""
from __future__ import annotations

import itertools
import math

import pytest

from orchestrator.report import curves
from orchestrator.report.claims import Noise, Row, compare, permutation_p, pooled_noise, spearman


def row(name, *values):
    return Row(name, list(values), "finished")


def test_pooled_noise_is_the_dof_weighted_seed_standard_deviation():
    # groups with variances 1 (n=3, dof 2) and 4 (n=2, dof 1), single values ignored
    noise = pooled_noise([[1.0, 2.0, 3.0], [0.0, 2.0 * math.sqrt(2)], [7.0]])
    assert noise.dof == 3
    assert noise.sd == pytest.approx(math.sqrt((2 * 1.0 + 1 * 4.0) / 3))
    assert pooled_noise([[1.0], [2.0]]).sd is None


@pytest.mark.parametrize("b_values,mark,direction", [
    ((5.0, 5.2, 4.8), "holds", True),          # +2.0 against 2 SE = 0.33
    ((3.0, 3.2, 2.8), "inconclusive", True),   # +0.0 ... within the noise
    ((3.1, 3.3, 2.9), "inconclusive", True),   # +0.1: still within
    ((1.0, 1.2, 0.8), "does not hold", False),  # the opposite difference exceeds the noise
])
def test_a_claim_holds_only_beyond_two_standard_errors(b_values, mark, direction):
    a, b = row("A", 3.0, 3.2, 2.8), row("B", *b_values)  # both sd 0.2
    noise = pooled_noise([a.values, b.values])
    v = compare("B beats A", b, a, noise, "B", "A")
    assert v.mark == mark
    if mark != "inconclusive" or b.mean != a.mean:
        assert v.direction is direction
    assert "2 SE = 0.33" in v.detail


def test_one_seed_everywhere_says_single_seed_with_the_direction():
    v = compare("B beats A", row("B", 5.0), row("A", 3.0), Noise(None, 0), "B", "A")
    assert v.mark == "single seed" and v.direction is True and v.holds is None


def test_a_row_without_a_result_is_not_checked():
    v = compare("B beats A", Row("B", [], "failed"), row("A", 3.0), Noise(1.0, 2), "B", "A")
    assert v.mark == "not checked" and v.holds is None


def test_a_verdict_on_an_unconverged_row_says_so():
    b = Row("B", [5.0, 5.1], "finished", converged=False)
    v = compare("B beats A", b, row("A", 1.0, 1.1), Noise(0.1, 2), "B", "A")
    assert v.mark == "holds" and "had not converged: B" in v.detail


def test_the_permutation_p_value_is_exact_for_small_tables():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    # rho = 1 is reached by one permutation of 120
    assert permutation_p(a, a) == pytest.approx(1 / 120)
    # reversed: every permutation has rho >= -1
    assert permutation_p(a, list(reversed(a))) == pytest.approx(1.0)
    # by enumeration, for an arbitrary order
    b = [2.0, 1.0, 4.0, 3.0, 5.0]
    observed = spearman(a, b)
    expected = sum(spearman(a, p) >= observed - 1e-12 for p in itertools.permutations(b)) / 120
    assert permutation_p(a, b) == pytest.approx(expected)


def test_the_permutation_p_value_samples_large_tables_reproducibly():
    a = list(range(10))
    assert permutation_p(a, a) == permutation_p(a, a) < 0.001


def test_mean_curve_averages_seeds_at_the_iterations_they_share():
    c = curves.mean_curve([[(60, 1.0), (120, 3.0), (240, 5.0)], [(60, 3.0), (240, 7.0)]])
    assert c == [(60, 2.0), (240, 6.0)]


def test_convergence_compares_the_last_quarters_gain_with_the_noise():
    curve = [(60, 1.0), (120, 3.0), (180, 4.0), (240, 4.5)]
    assert curves.last_quarter_gain(curve) == pytest.approx(0.5)  # 240 vs 180 (= 75% of 240)
    assert curves.converged(curve, tolerance=1.0) is True
    assert curves.converged(curve, tolerance=0.4) is False
    assert curves.converged([(240, 4.5)], tolerance=1.0) is None  # a final point only: no curve
