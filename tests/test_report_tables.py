"""`orchestrator.report` for tables 1c, 1d, 1e and section 5.1: the paper's rows with our numbers beside
them, and each table's claim computed from what an MLflow store holds. The store is filled through
MLflow's own client the way the orchestrator records a sweep (as in test_report.py: parent run with
sweep.yaml and trials.json, one trial run per trial with its tags and flattened config as params);
no mocks, no training, no Ray. Each claim holds with numbers shaped like the paper's and stops holding
when the numbers are flipped."""
from __future__ import annotations

import json
import math
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Tuple

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from orchestrator import tracking
from orchestrator.report import OUR_METRIC, PAPER, build_report, paper_key, paper_table
from orchestrator.sweep import load_sweep
from retina.config import flatten

from .conftest import artifacts_beside, single_seed

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SWEEPS = PROJECT_ROOT / "sweeps"
SWEEP_OF = {"1c": "anchors", "1d": "ohem_vs_fl", "1e": "speed_accuracy", "5.1": "prior_init"}
CLAIM = {"1c": "more scales and ratios (3 x 3) beat a single square anchor",
         "1d": "FL beats the best OHEM (batch 128, NMS .7: the best OHEM row on the exploration seeds)",
         "1e": "AP ranks the rows as the paper's does",
         "5.1": "CE without the prior diverges, with it trains (learns: AP above 1)"}
RANK = "rank agreement of our AP with the reference AP over the rows of {}"

# label -> {metric: value} (our MLflow metric names); a label absent from the dict gets no metrics
Metrics = Dict[str, Dict[str, float]]


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """One migrated, empty MLflow sqlite store; each test store starts as a copy (fast)."""
    tracking.ensure_quiet()
    path = tmp_path_factory.mktemp("empty") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@lru_cache(maxsize=None)
def sweep_of(sweep_name: str, seeds: bool = False):
    """The sweep file, loaded once (loading resolves every trial's config: slow)."""
    return load_sweep(sweep_file(sweep_name, seeds))


@lru_cache(maxsize=None)
def sweep_file(sweep_name: str, seeds: bool = False) -> Path:
    """The shipped sweep file: one trial per row (its seeds removed), or as shipped (``seeds``)."""
    return SWEEPS / f"{sweep_name}.yaml" if seeds else single_seed(SWEEPS / f"{sweep_name}.yaml")


def fill_store(uri: str, sweep_name: str, metrics: Metrics, status: Optional[Dict[str, str]] = None,
               seeds: bool = False) -> dict:
    """The sweep ``sweeps/<sweep_name>.yaml`` as the orchestrator records it, written with MlflowClient
    (every seed of a row gets the row's metrics)."""
    path = sweep_file(sweep_name, seeds)
    sweep = sweep_of(sweep_name, seeds)
    client = MlflowClient(uri)
    exp = client.create_experiment(sweep.name, artifact_location=artifacts_beside(uri))
    parent = client.create_run(exp, tags={"kind": "sweep", "sweep": sweep.name, "table": ",".join(sweep.tables),
                                          "profile": sweep.profile, "overrides": "", "status": "finished",
                                          "code_version": "test"}).info.run_id
    client.log_text(parent, path.read_text(), "sweep.yaml")
    client.log_text(parent, json.dumps(tracking.trials_manifest(sweep)), "trials.json")
    run_ids = {}
    for trial in sweep.trials:
        label = trial.memberships[0].label
        tags = {**tracking.trial_tags(sweep, trial), "mlflow.parentRunId": parent, "device": "cpu", "host": "h",
                "status": (status or {}).get(label, "finished")}
        run = client.create_run(exp, tags=tags).info.run_id
        params = [Param(k, tracking.writer.param_value(v)) for k, v in sorted(flatten(trial.config).items())]
        values = {**metrics.get(label, {}), "train_time_s": 60.0}
        ms = [Metric(name, float(x), 0, 240) for name, x in values.items()]
        for i in range(0, len(params), 100):
            client.log_batch(run, params=params[i:i + 100], metrics=ms if i == 0 else [])
        run_ids[label] = run
    return {"parent": parent, "runs": run_ids}


def paper_shaped(table: str, scale: float = 0.1) -> Metrics:
    """Our metrics per row label: the paper's numbers for the row the trial stands for, at a tenth."""
    sweep = sweep_of(SWEEP_OF[table])
    paper = paper_table(table)
    keys, cols = PAPER[table][1], PAPER[table][2]
    out: Metrics = {}
    for trial in sweep.trials:
        tags = tracking.trial_tags(sweep, trial)
        key = paper_key(table, flatten(trial.config), tags)
        match = paper[paper[keys].apply(tuple, axis=1) == key]
        assert len(match) == 1, f"{trial.label}: {key} is not one paper row"
        row = match.iloc[0]
        out[trial.label] = {OUR_METRIC[c]: scale * float(row[c]) for c in cols if not math.isnan(float(row[c]))}
    return out


def report_of(tmp_path: Path, empty_db: Path, table: str, metrics: Metrics,
              status: Optional[Dict[str, str]] = None, name: str = "mlflow.db", seeds: bool = False):
    db = tmp_path / name
    shutil.copy(empty_db, db)
    uri = f"sqlite:///{db}"
    filled = fill_store(uri, SWEEP_OF[table], metrics, status, seeds)
    report = build_report(tracking.read_sweep_record(uri, SWEEP_OF[table]))
    return report, filled


def claim(report, table: str) -> Tuple[str, Optional[bool]]:
    """(mark, direction) of the table's declared claim: where the store holds one seed per row a
    comparison of rows says "no test" and its direction; rank agreements decide."""
    found = {v.claim: v for v in report.verdicts[table]}
    assert CLAIM[table] in found, f"{table}: no verdict '{CLAIM[table]}' in {list(found)}"
    return found[CLAIM[table]].mark, found[CLAIM[table]].direction


def with_changes(metrics: Metrics, changes: Dict[str, Dict[str, float]]) -> Metrics:
    return {label: {**m, **changes.get(label, {})} for label, m in metrics.items()}


def assert_paper_rows_beside_ours(table: str, df: pd.DataFrame, metrics: Metrics, runs: Dict[str, str]) -> None:
    """Every paper row, in the paper's order, with its key values and numbers, one trial beside each."""
    paper = paper_table(table)
    keys, cols = PAPER[table][1], PAPER[table][2]
    assert len(df) == len(paper) == len(metrics)
    assert (df["table"] == table).all() and df["primary"].all()
    assert list(df[keys].apply(tuple, axis=1)) == list(paper[keys].apply(tuple, axis=1))
    for (_, ours), (_, ref) in zip(df.iterrows(), paper.iterrows()):
        label = ours["label"]
        assert label in metrics and ours["run_ids"] == runs[label]
        assert ours["status"] == "finished" and ours["seeds"] == 1
        for c in cols:
            assert ours[f"{c}_paper"] == pytest.approx(float(ref[c]))
            assert ours[c] == pytest.approx(metrics[label][OUR_METRIC[c]])
            assert ours[f"{c}_diff"] == pytest.approx(ours[c] - float(ref[c]))


# ----------------------------------------------------------------------------------------------
# 1c: anchors


def test_1c_table_and_claim_holds(tmp_path, empty_db):
    metrics = paper_shaped("1c")
    report, filled = report_of(tmp_path, empty_db, "1c", metrics)
    assert list(report.tables) == ["1c"]
    df = report.tables["1c"]
    assert_paper_rows_beside_ours("1c", df, metrics, filled["runs"])
    assert list(df["label"]) == ["1 scale x 1 ratio", "2 scales x 1 ratio", "3 scales x 1 ratio", "1 scale x 3 ratios",
                                 "2 scales x 3 ratios", "3 scales x 3 ratios", "4 scales x 3 ratios"]
    assert df.set_index("label").loc["2 scales x 3 ratios", "AP_paper"] == pytest.approx(34.2)
    assert claim(report, "1c") == ("no test", True)
    v = {x.claim: x for x in report.verdicts["1c"]}
    assert v[RANK.format("1c")].mark == "holds" and v[RANK.format("1c")].diff == pytest.approx(1.0)


def test_1c_claim_flips_when_the_single_square_anchor_wins(tmp_path, empty_db):
    metrics = with_changes(paper_shaped("1c"), {"1 scale x 1 ratio": {"AP": 5.0}})
    report, _ = report_of(tmp_path, empty_db, "1c", metrics)
    assert claim(report, "1c") == ("no test", False)


def test_a_stale_run_of_a_row_is_shown_beside_it_and_changes_no_verdict(tmp_path, empty_db):
    """A run from an older config of a row (its trial key no longer in the sweep, e.g. after a new
    config key) keeps its own line, marked "not in sweep"; the current run stays the row the verdicts
    and numbers use."""
    metrics = paper_shaped("1c")
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_db, db)
    uri = f"sqlite:///{db}"
    filled = fill_store(uri, "anchors", metrics)
    client = MlflowClient(uri)
    label = "1 scale x 1 ratio"
    current = client.get_run(filled["runs"][label])
    stale_tags = {**current.data.tags, "trial_key": "0123456789ab"}
    stale = client.create_run(current.info.experiment_id, tags=stale_tags).info.run_id
    client.log_batch(stale, params=[Param(k, v) for k, v in sorted(current.data.params.items())],
                     metrics=[Metric("AP", 99.0, 0, 240)])  # would win the table if it counted
    report = build_report(tracking.read_sweep_record(uri, "anchors"))
    df = report.tables["1c"]
    lines = df[df["label"] == label]
    assert list(lines["primary"]) == [True, False]
    assert list(lines["status"]) == ["finished", "finished (not in sweep)"]
    assert list(lines["run_ids"]) == [filled["runs"][label], stale]
    assert lines["AP"].iloc[0] == pytest.approx(metrics[label]["AP"]) and math.isnan(lines["AP"].iloc[1])
    assert claim(report, "1c") == ("no test", True)
    v = {x.claim: x for x in report.verdicts["1c"]}
    assert v[RANK.format("1c")].diff == pytest.approx(1.0)  # the stale 99 AP would break the ranks


# ----------------------------------------------------------------------------------------------
# 1d: OHEM vs FL


def test_1d_table_and_claim_holds(tmp_path, empty_db):
    metrics = paper_shaped("1d")
    report, filled = report_of(tmp_path, empty_db, "1d", metrics)
    df = report.tables["1d"]
    assert_paper_rows_beside_ours("1d", df, metrics, filled["runs"])
    by = df.set_index("label")
    assert tuple(by.loc["FL", ["method", "batch_size", "nms_thr"]]) == ("FL", "", "")
    assert tuple(by.loc["OHEM 1:3 batch=256 nms=0.5", ["method", "batch_size", "nms_thr"]]) == ("OHEM 1:3", "256", "0.5")
    assert tuple(by.loc["OHEM batch=512 nms=0.7", ["method", "batch_size", "nms_thr"]]) == ("OHEM", "512", "0.7")
    assert by.loc["FL", "AP_paper"] == pytest.approx(36.0) and by.loc["FL", "AP"] == pytest.approx(3.6)
    assert claim(report, "1d") == ("no test", True)


def test_1d_claim_flips_when_the_claims_ohem_row_beats_fl(tmp_path, empty_db):
    metrics = with_changes(paper_shaped("1d"), {"OHEM batch=128 nms=0.7": {"AP": 3.7}})  # FL: 3.6
    report, _ = report_of(tmp_path, empty_db, "1d", metrics)
    assert claim(report, "1d") == ("no test", False)


# ----------------------------------------------------------------------------------------------
# 1e: speed / accuracy


def test_1e_table_and_claim_holds(tmp_path, empty_db):
    metrics = paper_shaped("1e")
    report, filled = report_of(tmp_path, empty_db, "1e", metrics)
    df = report.tables["1e"]
    assert_paper_rows_beside_ours("1e", df, metrics, filled["runs"])
    # rows keep the paper's scale although the cpu profile ran smaller images (tag `scaled`)
    by = df.set_index("label")
    assert tuple(by.loc["R101 800px", ["depth", "scale"]]) == ("101", "800")
    assert by.loc["R101 800px", "time_ms_paper"] == pytest.approx(198) and by.loc["R101 800px", "time_ms"] == pytest.approx(19.8)
    assert by.loc["R50 400px", "APS_paper"] == pytest.approx(11.2) and by.loc["R50 400px", "APS"] == pytest.approx(1.12)
    assert claim(report, "1e") == ("holds", True)
    assert {x.claim: x.mark for x in report.verdicts["1e"]}[TIME_CLAIM] == "holds"


TIME_CLAIM = "inference time ranks the rows as the paper's does"


def test_1e_ranks_hold_with_the_papers_order_and_fail_reversed(tmp_path, empty_db):
    metrics = paper_shaped("1e")
    reversed_ = {label: {**m, "AP": 10.0 - m["AP"], "inference_ms_batch1": 100.0 - m["inference_ms_batch1"]}
                 for label, m in metrics.items()}
    report, _ = report_of(tmp_path, empty_db, "1e", reversed_)
    v = {x.claim: x for x in report.verdicts["1e"]}
    assert (v[CLAIM["1e"]].mark, v[TIME_CLAIM].mark) == ("does not hold", "does not hold")
    assert v[CLAIM["1e"]].diff == pytest.approx(-1.0) and v[TIME_CLAIM].diff == pytest.approx(-1.0)


# ----------------------------------------------------------------------------------------------
# 5.1: prior initialization (no csv: the paper's prose, PAPER_5_1)

WITH, WITHOUT = "CE with prior init", "CE without prior init"


def test_5_1_table_and_claim_holds(tmp_path, empty_db):
    metrics = {WITH: {"AP": 3.02, "AP50": 4.67, "AP75": 3.28}}  # without the prior: diverged, no AP
    report, filled = report_of(tmp_path, empty_db, "5.1", metrics, status={WITHOUT: "diverged"})
    assert list(report.tables) == ["5.1"]
    df = report.tables["5.1"].set_index("prior_init")
    assert list(df.index) == ["true", "false"]  # the paper's rows, from report.PAPER_5_1
    assert df.loc["true", "label"] == WITH and df.loc["false", "label"] == WITHOUT
    assert df.loc["true", "paper_outcome"] == "trains (30.2 AP)" and df.loc["false", "paper_outcome"] == "diverges"
    assert df.loc["true", "AP_paper"] == pytest.approx(30.2) and math.isnan(df.loc["false", "AP_paper"])
    assert df.loc["true", "AP"] == pytest.approx(3.02) and math.isnan(df.loc["false", "AP"])
    assert df.loc["true", "status"] == "finished" and df.loc["false", "status"] == "diverged"
    assert df.loc["true", "run_ids"] == filled["runs"][WITH] and df.loc["false", "run_ids"] == filled["runs"][WITHOUT]
    assert claim(report, "5.1") == ("no test", True)  # one seed: no learning test, the numbers point its way
    assert [v.claim for v in report.verdicts["5.1"]] == [CLAIM["5.1"]]


def test_5_1_claim_holds_on_five_seeds_and_flips(tmp_path, empty_db):
    """Five seeds per row, as shipped: every seed without the prior diverges and every seed with it
    learns (Fisher 5/5 vs 0/5: p 2/252); it does not hold when the prior diverges too, and says the
    prior row "does not diverge, does not learn" when it trains to 0 AP."""
    learns = {WITH: {"AP": 3.02}, WITHOUT: {"AP": 0.0}}
    report, _ = report_of(tmp_path, empty_db, "5.1", learns, status={WITHOUT: "diverged"}, seeds=True)
    (v,) = report.verdicts["5.1"]
    assert v.mark == "holds" and v.p == pytest.approx(2 / 252)
    assert report.tables["5.1"].set_index("prior_init").loc["false", "status"] == "diverged x5"
    report, _ = report_of(tmp_path, empty_db, "5.1", {}, status={WITHOUT: "diverged", WITH: "diverged"},
                          seeds=True, name="both.db")  # diverged seeds score 0 AP: the prior row does not learn
    assert report.verdicts["5.1"][0].mark == "does not hold"
    flat = {WITH: {"AP": 0.0}, WITHOUT: {"AP": 0.0}}
    report, _ = report_of(tmp_path, empty_db, "5.1", flat, status={WITHOUT: "diverged"}, seeds=True, name="flat.db")
    assert report.verdicts["5.1"][0].mark == "does not hold (does not diverge, does not learn)"


def test_5_1_claim_not_checked_without_a_run(tmp_path, empty_db):
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_db, db)
    uri = f"sqlite:///{db}"
    filled = fill_store(uri, "prior_init", {WITH: {"AP": 3.02}}, status={WITHOUT: "diverged"})
    MlflowClient(uri).delete_run(filled["runs"][WITHOUT])
    report = build_report(tracking.read_sweep_record(uri, "prior_init"))
    df = report.tables["5.1"].set_index("prior_init")
    assert df.loc["false", "status"] == "missing"
    assert claim(report, "5.1") == ("not checked", None)
