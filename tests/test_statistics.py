"""The tests behind the verdicts, against hand-computed cases (t table values at 2 and 4 degrees of freedom)."""
import math

import pytest

from orchestrator.report.statistics import compare_arms, fisher_exact, holm, one_sample, paired_t, welch_t

A, B = [5.0, 5.2, 4.8], [4.0, 4.5, 4.4]  # per-seed differences 1.0, 0.7, 0.4: mean 0.7, sd 0.3


def test_paired_t_uses_the_per_seed_differences_at_n_minus_1_degrees_of_freedom():
    r = paired_t(A, B)
    se = 0.3 / math.sqrt(3)  # 0.1732
    assert r.test == "paired t" and r.df == 2
    assert r.diff == pytest.approx(0.7)
    half = 4.303 * se  # t(0.975, 2) = 4.303 from the table
    assert r.ci == pytest.approx((0.7 - half, 0.7 + half), abs=1e-3)
    assert 0.05 < r.p < 0.06  # t = 4.04 < 4.30: not significant at 5%, although 0.7 > 2 SE (0.35)


def test_welch_t_has_welch_satterthwaite_degrees_of_freedom():
    r = welch_t(A, B)
    va, vb = 0.04 / 3, 0.07 / 3  # sample variances 0.04 and 0.07, over n = 3
    assert r.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2))
    assert r.diff == pytest.approx(0.7) and r.p == pytest.approx(0.0245, abs=5e-4)


def test_arms_with_the_same_seeds_are_paired_and_others_are_not():
    assert compare_arms({0: 5.0, 1: 5.2, 2: 4.8}, {0: 4.0, 1: 4.5, 2: 4.4}).test == "paired t"
    assert compare_arms({0: 5.0, 1: 5.2, 2: 4.8}, {0: 4.0, 1: 4.5, 3: 4.4}).test == "Welch t"
    single = compare_arms({0: 5.0}, {0: 4.0})
    assert single.p is None and single.ci is None and "one" in single.test


def test_one_sample_t_against_a_threshold():
    r = one_sample([1.0, 2.0, 3.0], 0.5)  # mean 2, sd 1, se 0.577, t 2.598 at df 2
    assert r.diff == pytest.approx(1.5) and r.df == 2
    assert r.ci == pytest.approx((1.5 - 4.303 * 0.57735, 1.5 + 4.303 * 0.57735), abs=1e-3)
    assert r.p == pytest.approx(0.1217, abs=5e-4)


def test_no_spread_means_an_exact_difference():
    r = one_sample([0.0, 0.0, 0.0], 1.0)
    assert r.diff == -1.0 and r.p == 0.0 and r.ci == (-1.0, -1.0)
    assert one_sample([1.0, 1.0], 1.0).p == 1.0


def test_holm_multiplies_the_i_th_smallest_p_by_m_minus_i_and_keeps_the_order():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "untested": None})
    assert adjusted == {"a": pytest.approx(0.03), "c": pytest.approx(0.06), "b": pytest.approx(0.06), "untested": None}
    assert holm({"x": 0.6, "y": 0.5}) == {"y": 1.0, "x": 1.0}


def test_fisher_exact_five_diverged_against_none_of_five():
    assert fisher_exact(5, 5, 0, 5) == pytest.approx(2 / 252)  # two tables as extreme out of C(10, 5)
    assert fisher_exact(2, 3, 1, 3) == pytest.approx(1.0)
