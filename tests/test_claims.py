"""Verdicts of declared claims (orchestrator/report/claims.py) on hand-made rows, with hand-computed
figures: no store, no training. And the declaration's checks (orchestrator/declaration.py)."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.declaration import Claim, Declaration, Side, TableSpec
from orchestrator.report import curves
from orchestrator.report.claims import permutation_p, spearman, verdicts
from orchestrator.report.rows import OurRow
from orchestrator.sweep import load_sweep
from retina.config import ConfigError

SEEDS = (100, 101, 102, 103, 104)


def row(label, values, status="finished", table="t", converged=True, seeds=SEEDS):
    """A row whose seed k scored values[k]; its curve gains 0.2 (converged) or 2.0 AP over its last quarter."""
    gain = 0.2 if converged else 2.0
    trials = [{"key": f"{label}-{s}", "status": status if isinstance(status, str) else status[i], "run_id": f"r{s}",
               "metrics": {"AP": v}, "config": {}, "tags": {"seed": str(s)}, "stale": False,
               "curve": [(300, v - gain), (400, v)]} for i, (s, v) in enumerate(zip(seeds, values))]
    return OurRow(table, label, 0, trials)


def judge(claims, *rows, tables=None):
    declaration = Declaration({"t": TableSpec("t", "t", False)}, list(claims))
    out = verdicts(declaration, {(r.table, r.label): r for r in rows}, tables or {})
    return [v for vs in out.values() for v in vs]


def beats(a, b, says="A beats B"):
    side = lambda x: Side([("t", n) for n in x], best_of=True) if isinstance(x, list) else Side([("t", x)])  # noqa: E731
    return Claim("beats", says, "t", a=side(a), b=side(b))


def test_a_paired_claim_reports_the_hand_computed_t_test():
    # per-seed differences 1.0, 1.5, 1.5: mean 4/3, sd 0.2887, se 1/6, t 8 at df 2:
    # p = 2 * (1 - t / sqrt(t^2 + 2)) / 2 = 1 - 8 / sqrt(66) = 0.015268; 95% CI 4/3 -+ 4.3027 / 6
    a, b = row("A", [5.0, 6.0, 7.0]), row("B", [4.0, 4.5, 5.5])
    (v,) = judge([beats("A", "B")], a, b)
    assert v.test == "paired t" and v.df == 2
    assert v.diff == pytest.approx(4 / 3)
    assert v.p == pytest.approx(1 - 8 / math.sqrt(66), rel=1e-6) and v.p_holm == pytest.approx(v.p)
    assert v.ci == pytest.approx((4 / 3 - 4.302653 / 6, 4 / 3 + 4.302653 / 6), rel=1e-5)
    assert v.mark == "holds"
    assert "95% CI" in v.detail and "Holm p" in v.detail and "df 2" in v.detail


def test_holm_adjusts_over_the_sweeps_claims():
    # the claim above (p .0153) beside one with p .74: Holm multiplies the smaller by 2 (.0305, holds);
    # beside four such claims it is x5 = .076: no longer significant
    a, b = row("A", [5.0, 6.0, 7.0]), row("B", [4.0, 4.5, 5.5])
    c, d = row("C", [1.0, 2.0, 3.0]), row("D", [1.5, 1.0, 3.0])  # differences -0.5, 1, 0: t 0.378 at df 2
    two = judge([beats("A", "B"), beats("C", "D", "C beats D")], a, b, c, d)
    t = (1 / 6) / math.sqrt(7 / 12 / 3)
    assert two[1].p == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-6)
    assert two[0].p_holm == pytest.approx(2 * two[0].p) and two[0].mark == "holds"
    five = judge([beats("A", "B")] + [beats("C", "D", f"C beats D {i}") for i in range(4)], a, b, c, d)
    assert five[0].p_holm == pytest.approx(5 * five[0].p) and five[0].mark == "inconclusive"


def test_unequal_seeds_use_welch():
    a, b = row("A", [5.0, 6.0, 7.0]), row("B", [1.0, 2.0], seeds=(200, 201))
    (v,) = judge([beats("A", "B")], a, b)
    # Welch: var 1/3 + 0.5/2 = 0.5833, df = 0.5833^2 / ((1/3)^2/2 + 0.25^2/1) = 2.8
    assert v.test == "Welch t" and v.df == pytest.approx(0.583333 ** 2 / ((1 / 3) ** 2 / 2 + 0.0625), rel=1e-4)
    assert v.diff == pytest.approx(4.5)


def test_does_not_hold_only_for_a_significant_opposite_effect():
    a, b = row("A", [4.0, 4.5, 5.5]), row("B", [5.0, 6.0, 7.0])
    assert judge([beats("A", "B")], a, b)[0].mark == "does not hold"
    noisy = row("B", [3.0, 6.5, 5.0])  # differences +1, -2, +0.5: not significant either way
    assert judge([beats("A", "B")], a, noisy)[0].mark == "inconclusive"


def test_one_seed_is_no_test_and_a_missing_row_is_not_checked():
    a, b = row("A", [5.0], seeds=(100,)), row("B", [4.0], seeds=(100,))
    v = judge([beats("A", "B")], a, b)[0]
    assert v.mark == "no test" and v.p is None and v.holds is None and v.direction is True
    assert judge([beats("A", "B")], a)[0].mark == "not checked"


def test_beating_the_best_of_a_group_must_beat_every_member():
    a = row("A", [5.0, 6.0, 7.0])
    close, far = row("B1", [4.0, 4.5, 5.5]), row("B2", [1.0, 2.1, 2.9])
    (v,) = judge([beats("A", ["B1", "B2"])], a, close, far)
    (alone,) = judge([beats("A", "B1")], a, close)
    assert v.p == pytest.approx(alone.p)  # the least favorable member's p (the larger)
    assert "least favorable" in v.detail and "B1" in v.rests_on


def test_the_best_of_a_group_beating_b_pays_for_its_selection():
    b = row("B", [4.0, 4.5, 5.5])
    best, other = row("A1", [5.0, 6.0, 7.0]), row("A2", [4.0, 4.0, 4.0])
    (v,) = judge([beats(["A1", "A2"], "B")], best, other, b)
    (alone,) = judge([beats("A1", "B")], best, b)
    assert v.p == pytest.approx(2 * alone.p) and "A1" in v.detail and "selection" in v.detail


def test_a_claim_on_an_unconverged_row_cannot_say_plain_holds():
    a, b = row("A", [5.0, 6.0, 7.0], converged=False), row("B", [4.0, 4.5, 5.5])
    (v,) = judge([beats("A", "B")], a, b)
    assert v.mark == "holds (not converged)" and v.holds is True and "had not converged: A" in v.detail
    assert curves.last_quarter_gain([(300, 3.0), (400, 5.0)]) == pytest.approx(2.0)


def test_collapses_and_learns_are_one_sample_tests_against_the_threshold():
    zero = row("Z", [0.0, 0.0, 0.0])
    (v,) = judge([Claim("collapses", "Z collapses", "t", row=("t", "Z"), threshold=1.0)], zero)
    assert v.mark == "holds" and v.p == 0.0 and v.diff == -1.0  # zero spread: exact
    some = row("S", [1.0, 2.0, 3.0])  # mean 2, se 1/sqrt(3): t = 1.732 at df 2 vs 1.0: p .225
    (v,) = judge([Claim("learns", "S learns", "t", row=("t", "S"), threshold=1.0)], some)
    assert v.mark == "inconclusive" and v.p == pytest.approx(1 - 1.7320508 / math.sqrt(1.7320508 ** 2 + 2), rel=1e-6)


def _prior_claim():
    return Claim("diverges_vs_trains", "without diverges, with trains", "t", diverges=("t", "without"),
                 trains=("t", "with"), threshold=1.0)


def test_diverges_vs_trains_needs_the_divergence_and_the_learning():
    without = row("without", [0.0] * 5, status="diverged")
    with_ = row("with", [3.0, 4.0, 5.0, 4.0, 4.0])
    (v,) = judge([_prior_claim()], without, with_)
    # Fisher 5/5 vs 0/5: 2 / C(10, 5) = 2/252; the learning test: mean 4, se 0.3162, t 9.49 at df 4 (p < .001)
    assert v.p == pytest.approx(2 / 252) and v.mark == "holds"
    flat = row("with", [0.0] * 5)
    (v,) = judge([_prior_claim()], without, flat)
    assert v.mark == "does not hold (does not diverge, does not learn)" and v.holds is False
    both = row("with", [0.0] * 5, status="diverged")
    assert judge([_prior_claim()], without, both)[0].mark == "does not hold"


def test_rank_agreement_is_spearman_with_a_two_sided_permutation_p():
    table = pd.DataFrame({"label": list("abcde"), "primary": [True] * 5, "AP": [1.0, 2.0, 3.0, 4.0, 5.0],
                          "AP_ref": [10.0, 20.0, 30.0, 40.0, 50.0]})
    claim = Claim("rank_agreement", "ranks", "t", reference="AP", metric="AP")
    (v,) = judge([claim], tables={"t": table})
    assert v.diff == pytest.approx(1.0) and v.p == pytest.approx(2 / 120) and v.mark == "holds"
    (v,) = judge([claim], tables={"t": table.assign(AP_ref=table["AP_ref"][::-1].values)})
    assert v.diff == pytest.approx(-1.0) and v.mark == "does not hold"


def test_the_permutation_p_value_is_exact_for_small_tables():
    a = [1.0, 2.0, 3.0, 4.0, 5.0]
    b = [2.0, 1.0, 4.0, 3.0, 5.0]
    observed = spearman(a, b)
    expected = sum(abs(spearman(a, p)) >= abs(observed) - 1e-12 for p in itertools.permutations(b)) / 120
    assert permutation_p(a, b) == pytest.approx(expected)
    a = list(range(10))
    assert permutation_p(a, a) == permutation_p(a, a) < 0.001  # sampled, with a fixed seed


def test_mean_curve_averages_seeds_at_the_iterations_they_share():
    c = curves.mean_curve([[(60, 1.0), (120, 3.0), (240, 5.0)], [(60, 3.0), (240, 7.0)]])
    assert c == [(60, 2.0), (240, 6.0)]
    assert curves.converged([(60, 1.0), (180, 4.0), (240, 4.5)], tolerance=1.0) is True
    assert curves.converged([(240, 4.5)], tolerance=1.0) is None  # a final point only: no curve


# ----------------------------------------------------------------------------------------------
# the declaration: what a sweep file may claim


def _sweep(tmp_path: Path, claims: str, tables: str = "[mine]") -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(f"""name: mine
tables: {tables}
profile: cpu
seeds: [0, 1]
rows:
  - {{label: "small", set: {{loss.gamma: 1.0}}}}
  - {{label: "large", set: {{loss.gamma: 2.0}}}}
claims:
{claims}
""")
    return path


def test_a_users_claims_are_parsed_against_the_rows(tmp_path):
    sweep = load_sweep(_sweep(tmp_path, '  - {kind: beats, a: "large", b: "small"}\n'
                                        '  - {kind: learns, row: "small", above: 0.5, says: "it learns"}'))
    first, second = sweep.declaration.claims
    assert (first.kind, first.a.rows, first.b.rows, first.table) == ("beats", [("mine", "large")], [("mine", "small")],
                                                                      "mine")
    assert second.says == "it learns" and second.threshold == 0.5
    assert sweep.seeds_of("mine", "large") == [0, 1]


@pytest.mark.parametrize("claims,message", [
    ('  - {kind: better, a: "large", b: "small"}', "unknown claim kind 'better'; did you mean 'beats'?"),
    ('  - {kind: beats, a: "larger", b: "small"}', "the sweep has no row 'larger'; did you mean 'large'?"),
    ('  - {kind: beats, a: "large"}', "a beats claim needs 'b'"),
    ('  - {kind: rank_agreement, table: mine, reference: AP}', "table 'mine' has no reference"),
    ('  - {kind: collapses, row: "small", below: high}', "expected a number"),
])
def test_a_bad_claim_is_one_line_naming_the_file_and_claim(tmp_path, claims, message):
    with pytest.raises(ConfigError) as e:
        load_sweep(_sweep(tmp_path, claims))
    text = str(e.value)
    assert message in text and "mine.yaml: claims[0]" in text and "\n" not in text


def test_a_users_table_reads_its_reference_csv(tmp_path):
    (tmp_path / "ref.csv").write_text("label,AP\nsmall,1.5\nlarge,2.5\n")
    sweep = load_sweep(_sweep(tmp_path, "  - {kind: rank_agreement, table: mine, reference: AP}",
                              tables="[{name: mine, caption: 'My ablation', reference: ref.csv}]"))
    spec = sweep.declaration.tables["mine"]
    assert spec.caption == "My ablation" and spec.reference == {"small": {"AP": 1.5}, "large": {"AP": 2.5}}
    with pytest.raises(ConfigError, match="not found"):
        load_sweep(_sweep(tmp_path, "  []", tables="[{name: mine, reference: missing.csv}]"))
