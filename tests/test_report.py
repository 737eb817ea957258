"""`python -m orchestrator report`: tables, verdicts and plots from an MLflow store filled through
MLflow's own client (no mocks), bad input, and end to end after a tiny sweep."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator import tracking
from orchestrator.__main__ import main
from orchestrator.report import build_report
from orchestrator.sweep import load_sweep
from retina.config import flatten

from .conftest import artifacts_beside, single_seed

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ALPHA_GAMMA = single_seed(PROJECT_ROOT / "sweeps" / "alpha_gamma.yaml")  # one trial per row

# our AP per 1a / 1b row label: the paper's ordering, at a tenth of its scale
AP = {"CE alpha=0.1": 0.0, "CE alpha=0.25": 1.1, "CE alpha=0.5": 2.9, "CE alpha=0.75": 3.1, "CE alpha=0.9": 3.05,
      "CE alpha=0.99": 2.9, "CE alpha=0.999": 2.5, "FL gamma=0.1 alpha=0.75": 3.14, "FL gamma=0.2 alpha=0.75": 3.2,
      "FL gamma=0.5 alpha=0.5": 3.3, "FL gamma=1 alpha=0.25": 3.37, "FL gamma=2 alpha=0.25": 3.4,
      "FL gamma=5 alpha=0.25": 3.22}
# the rows the claims rest on, three seeds each (seeds 0, 1, 2): AP per seed
AP_SEEDS = {"CE alpha=0.1": [0.0, 0.0, 0.0], "CE alpha=0.5": [2.9, 3.0, 3.1], "CE alpha=0.9": [3.0, 3.1, 3.05],
            "CE alpha=0.99": [2.9, 2.95, 3.0], "FL gamma=2 alpha=0.25": [3.4, 3.6, 3.5]}
MISSING = "FL gamma=5 alpha=0.25"   # no run at all
FAILED = "FL gamma=0.1 alpha=0.75"  # a run that failed


def fill_store(uri: str, ap: dict, seeded: dict = None) -> dict:
    """The alpha_gamma sweep as the orchestrator records it, written with MlflowClient."""
    sweep = load_sweep(ALPHA_GAMMA)
    client = MlflowClient(uri)
    exp = client.create_experiment(sweep.name, artifact_location=artifacts_beside(uri))
    parent = client.create_run(exp, tags={"kind": "sweep", "sweep": sweep.name, "table": "1a,1b", "profile": "cpu",
                                          "overrides": "", "status": "finished", "code_version": "test"}).info.run_id
    client.log_text(parent, ALPHA_GAMMA.read_text(), "sweep.yaml")
    manifest = []
    seeded = seeded or {}
    for entry in tracking.trials_manifest(sweep):  # a seeded row: three trials (seeds), like `seeds: [0, 1, 2]`
        if entry["rows"][0]["label"] in seeded:
            manifest += [{**entry, "key": f"{entry['key']}-{s}", "rows": [{**r, "seed": s} for r in entry["rows"]]}
                         for s in (0, 1, 2)]
        else:
            manifest.append(entry)
    client.log_text(parent, json.dumps(manifest), "trials.json")
    run_ids = {}
    for trial in sweep.trials:
        label = trial.memberships[0].label
        if label == MISSING:
            continue
        for seed in ([0, 1, 2] if label in seeded else [None]):
            tags = {**tracking.trial_tags(sweep, trial), "mlflow.parentRunId": parent, "device": "cpu", "host": "h",
                    "status": "failed" if label == FAILED else "finished"}
            if seed is not None:
                tags["trial_key"], tags["seed"] = f"{trial.key}-{seed}", str(seed)
            run = client.create_run(exp, tags=tags).info.run_id
            params = [Param(k, json.dumps(v)) for k, v in flatten(trial.config).items()]
            metrics = []
            if label != FAILED:
                value = ap[label] if seed is None else seeded[label][seed]
                metrics = [Metric(name, x, 0, 240) for name, x in {"AP": value, "AP50": 2 * value, "AP75": value / 2,
                                                                    "inference_ms": 10.0, "train_time_s": 60.0}.items()]
            for i in range(0, len(params), 100):
                client.log_batch(run, params=params[i:i + 100], metrics=metrics if i == 0 else [])
            run_ids.setdefault(label, []).append(run)
    return {"parent": parent, "runs": run_ids}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracking.ensure_quiet()
    return {"root": root, "uri": uri, **fill_store(uri, AP, seeded=AP_SEEDS)}


@pytest.fixture(scope="module")
def reported(store):
    out = store["root"] / "results"
    rc = main(["report", "alpha_gamma", "--tracking-uri", store["uri"], "--out", str(out)])
    return {"rc": rc, "out": out, "dir": out / "alpha_gamma"}


def test_table_has_the_paper_rows_our_numbers_and_statuses(store, reported):
    import pandas as pd

    assert reported["rc"] == 0
    df = pd.read_csv(reported["dir"] / "table.csv", dtype={"alpha": str, "gamma": str})
    a = df[df["table"] == "1a"].set_index("label")
    assert list(a.index) == [f"CE alpha={x}" for x in ("0.1", "0.25", "0.5", "0.75", "0.9", "0.99", "0.999")]
    assert a.loc["CE alpha=0.75", "AP"] == pytest.approx(3.1)
    assert a.loc["CE alpha=0.75", "AP_paper"] == pytest.approx(31.1)
    assert a.loc["CE alpha=0.75", "AP_diff"] == pytest.approx(3.1 - 31.1)
    assert a.loc["CE alpha=0.999", "AP50_paper"] == pytest.approx(41.7)
    # three seeds: mean and standard deviation
    assert a.loc["CE alpha=0.5", "AP"] == pytest.approx(3.0) and a.loc["CE alpha=0.5", "AP_std"] == pytest.approx(0.1)
    assert a.loc["CE alpha=0.5", "seeds"] == 3 and a.loc["CE alpha=0.5", "status"] == "finished x3"
    assert a.loc["CE alpha=0.25", "run_ids"] == store["runs"]["CE alpha=0.25"][0]
    b = df[df["table"] == "1b"].set_index("label")
    assert len(b) == 7  # FL gamma=0 alpha=0.75 is the CE alpha .75 trial, listed in both tables
    assert b.loc["FL gamma=0 alpha=0.75", "AP"] == pytest.approx(3.1)
    assert b.loc[MISSING, "status"] == "missing" and pd.isna(b.loc[MISSING, "AP"])
    assert b.loc[MISSING, "AP_paper"] == pytest.approx(32.2)  # missing rows still show the paper's numbers
    assert b.loc[FAILED, "status"] == "failed" and pd.isna(b.loc[FAILED, "AP"])
    md = (reported["dir"] / "table.md").read_text()
    assert "| 5 | 0.25 | FL gamma=5 alpha=0.25 | missing |" in md
    assert "\\toprule" in (reported["dir"] / "table.tex").read_text()


FL_CLAIM = "FL at gamma 2 beats the best CE"
HIGH_ALPHA = ("a high alpha beats .50 (paper: .75 beats .50 by 0.9 AP; here CE's best alpha is .90, chosen on the "
              "exploration seeds)")
COLLAPSE = "CE at alpha .10 collapses (paper: 0.0 AP)"


def test_verdicts_and_index(reported):
    """The declared claims of sweeps/alpha_gamma.yaml, paired over three seeds (AP_SEEDS): FL gamma 2 beats
    both CE rows of its group (differences .45 and .55 AP, p .004 and .008 at df 2: the larger counts),
    CE .90 vs .50 differs by +.05 (t 1 at df 2: inconclusive), CE .10 scores 0 at every seed."""
    summary = json.loads((reported["dir"] / "summary.json").read_text())
    v = {x["claim"]: x for x in summary["verdicts"]["1a"] + summary["verdicts"]["1b"]}
    assert v[COLLAPSE]["mark"] == "holds" and v[COLLAPSE]["p"] == 0.0
    fl = v[FL_CLAIM]
    assert fl["mark"] == "holds" and fl["test"] == "paired t" and fl["df"] == 2
    assert fl["diff"] == pytest.approx(0.55) and fl["p"] == pytest.approx(1 - 11 / 123 ** 0.5, rel=1e-6)
    assert fl["p"] < fl["p_holm"] <= 0.05
    assert v[HIGH_ALPHA]["mark"] == "inconclusive" and v[HIGH_ALPHA]["direction"] is True
    assert v[HIGH_ALPHA]["p"] == pytest.approx(1 - 1 / 3 ** 0.5, rel=1e-6)  # t 1 at df 2
    readme = (reported["out"] / "README.md").read_text()
    assert "alpha_gamma" in readme and "profile cpu" in readme and "GPU-hours" in readme
    assert f"{FL_CLAIM}: **holds**" in readme and "Holm p" in readme
    csv = (reported["dir"] / "table.csv").read_text()
    assert "AP_by_seed" in csv and "0: 3.400; 1: 3.600; 2: 3.500" in csv and "trial_keys" in csv


def test_the_index_links_the_seed_check_only_where_there_is_one(reported):
    from orchestrator.report.render import write_index

    out = reported["out"]
    assert "seed_check.md" not in (out / "README.md").read_text()
    (out / "seed_check.md").write_text("# Seed check\n")
    write_index(out)
    readme = (out / "README.md").read_text()
    assert "[seed_check.md](seed_check.md)" in readme and f"{FL_CLAIM}: **holds**" in readme
    (out / "seed_check.md").unlink()
    write_index(out)


def test_plots_are_pngs_of_the_expected_size(reported):
    for name in ("ap_vs_alpha_ce.png", "ap_vs_gamma_fl.png"):
        path = reported["dir"] / name
        assert path.stat().st_size > 5000
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (640, 400)


def test_the_report_is_logged_on_the_parent_run(store, reported):
    client = MlflowClient(store["uri"])
    assert "report/table.md" in {a.path for a in client.list_artifacts(store["parent"], "report")}


def test_verdicts_flip_when_the_numbers_do(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    flipped = {**AP, "CE alpha=0.1": 3.0, "CE alpha=0.5": 3.5, "FL gamma=2 alpha=0.25": 1.0}
    fill_store(uri, flipped)
    report = build_report(tracking.read_sweep_record(uri, "alpha_gamma"))
    v = {x.claim: x for t in ("1a", "1b") for x in report.verdicts[t]}
    # one seed per row: no noise estimate, so no verdict holds or fails; the direction flips
    for claim in (COLLAPSE, HIGH_ALPHA, FL_CLAIM):
        assert v[claim].mark == "no test" and v[claim].direction is False, claim


def test_bad_input_is_one_line_and_exit_2(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", "no_such_sweep", "--tracking-uri", store["uri"], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown sweep 'no_such_sweep'") and "alpha_gamma" in err
    assert main(["report", "--tracking-uri", "http://127.0.0.1:9", "--out", str(out)]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert main(["report", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    client = MlflowClient(store["uri"])
    client.create_experiment("empty_sweep", artifact_location=artifacts_beside(store["uri"]))
    assert main(["report", "empty_sweep", "--tracking-uri", store["uri"], "--out", str(out)]) == 2
    assert "has no trial runs" in capsys.readouterr().err
    assert not out.exists()  # nothing written


@pytest.mark.slow
def test_end_to_end_a_tiny_sweep_then_report(ray_session, orchestrator_dirs, tmp_path):
    path = tmp_path / "tiny_report.yaml"
    path.write_text("name: tiny_report\ntables: [1a]\nbase: {loss.kind: focal, loss.gamma: 0.0}\nrows:\n"
                    "  - {label: \"CE alpha=0.25\", set: {loss.alpha: 0.25}}\n"
                    "  - {label: \"CE alpha=0.75\", set: {loss.alpha: 0.75}}\n")
    rc = main(["run", str(path), "--tracking-uri", orchestrator_dirs["uri"], "--storage-path",
               str(orchestrator_dirs["storage"]), "--set", *orchestrator_dirs["settings"]])
    assert rc == 0
    out = tmp_path / "results"
    assert main(["report", str(path), "--tracking-uri", orchestrator_dirs["uri"], "--out", str(out)]) == 0
    md = (out / "tiny_report" / "table.md").read_text()
    for label in ("CE alpha=0.25", "CE alpha=0.75"):
        assert f"| {label} | finished |" in md
    assert "| 0.1 |  | not in sweep |" in md  # the paper's other rows show as not run


@pytest.mark.slow
def test_a_users_own_ablation_runs_and_reports_like_a_paper_table(ray_session, orchestrator_dirs, tmp_path):
    """A table of the user's own (any name, a reference CSV by label), three rows, two seeds each, and
    declared claims: `run` then `report` write its table (per-seed AP, reference beside ours), its AP
    curves, its plot and its verdicts (paired t, Holm)."""
    (tmp_path / "mine_reference.csv").write_text("label,AP\nlr low,1.0\nlr mid,2.0\nlr high,3.0\n")
    path = tmp_path / "mine.yaml"
    path.write_text("""name: my_lr_ablation
tables:
  - {name: learning_rate, caption: "My ablation: the learning rate", reference: mine_reference.csv}
base: {loss: {kind: focal, gamma: 2.0, alpha: 0.25}, eval.every: 3}
seeds: [0, 1]
rows:
  - {label: "lr low",  set: {train.lr: 0.001}}
  - {label: "lr mid",  set: {train.lr: 0.01}}
  - {label: "lr high", set: {train.lr: 0.02}}
claims:
  - {kind: beats, a: "lr high", b: "lr low"}
  - {kind: learns, row: "lr mid", above: 0.0}
  - {kind: rank_agreement, table: learning_rate, reference: AP}
""")
    rc = main(["run", str(path), "--tracking-uri", orchestrator_dirs["uri"], "--storage-path",
               str(orchestrator_dirs["storage"]), "--set", *orchestrator_dirs["settings"]])
    assert rc == 0
    out = tmp_path / "results"
    variant = "--set " + " ".join(orchestrator_dirs["settings"])
    assert main(["report", "my_lr_ablation", "--tracking-uri", orchestrator_dirs["uri"], "--out", str(out),
                 "--variant", variant]) == 0
    folder = out / "my_lr_ablation"
    md = (folder / "table.md").read_text()
    assert "## My ablation: the learning rate" in md and "| lr high | finished x2 |" in md
    assert "AP reference" in md
    summary = json.loads((folder / "summary.json").read_text())
    verdicts = {v["kind"]: v for v in summary["verdicts"]["learning_rate"]}
    assert set(verdicts) == {"beats", "learns", "rank_agreement"}
    assert verdicts["beats"]["test"] == "paired t" and verdicts["beats"]["df"] == 1
    tested = [v for v in verdicts.values() if v["p"] is not None]
    assert verdicts["beats"] in tested and verdicts["learns"] in tested  # six tiny trials: AP near 0, but tested
    assert all(v["p_holm"] >= v["p"] and "Holm p" in v["detail"] for v in tested)
    assert verdicts["rank_agreement"]["p"] is not None or verdicts["rank_agreement"]["mark"] == "not checked"
    assert summary["settings"]["variant"] == variant
    assert (folder / "ap_learning_rate.png").stat().st_size > 5000 and (folder / "ap_curves_learning_rate.png").is_file()
    import pandas as pd

    table = pd.read_csv(folder / "table.csv").set_index("label")
    assert table.loc["lr high", "AP_ref"] == 3.0 and table.loc["lr low", "AP_by_seed"].startswith("0: ")
