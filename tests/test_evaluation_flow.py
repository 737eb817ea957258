"""AP during training, evaluation on a checkpoint, provenance and --rerun, through a real tiny sweep
(local Ray, a SQLite MLflow store): the AP curve lands in MLflow by step; ``retina.evaluate``
reproduces a trial's AP from its checkpoint; ``orchestrator evaluate`` re-scores on the same run;
``--rerun`` retrains in a new run and keeps the old one, tagged."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.__main__ import main

PROJECT_ROOT = Path(__file__).resolve().parent.parent

SWEEP = """\
name: curves
tables: [1b]
rows:
  - {label: "FL gamma=2 alpha=0.25", set: {loss.gamma: 2.0, loss.alpha: 0.25}}
"""


def trial_runs(uri: str, kind: str = "trial"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("curves")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.kind = '{kind}'")


@pytest.fixture(scope="module")
def swept(ray_session, orchestrator_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    path = root / "curves.yaml"
    path.write_text(SWEEP)
    dirs = {"uri": f"sqlite:///{root / 'mlflow.db'}", "storage": str(root / "ray"), "path": path, "root": root,
            "settings": orchestrator_dirs["settings"] + ["eval.every=2", "train.checkpoint_every=2"]}
    rc = main(["run", str(path), "--tracking-uri", dirs["uri"], "--storage-path", dirs["storage"],
               "--set", *dirs["settings"]])
    assert rc == 0
    return dirs


@pytest.mark.slow
def test_the_ap_curve_is_logged_by_iteration(swept):
    (run,) = trial_runs(swept["uri"])
    history = MlflowClient(swept["uri"]).get_metric_history(run.info.run_id, "AP")
    assert sorted(m.step for m in history) == [2, 4, 6]
    assert {m.step for m in MlflowClient(swept["uri"]).get_metric_history(run.info.run_id, "AP50")} == {2, 4, 6}


@pytest.mark.slow
def test_runs_carry_mlflows_source_tags_and_the_code_version(swept):
    (run,) = trial_runs(swept["uri"])
    tags = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.name"].startswith("python -m orchestrator run") and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] and tags["code_dirty"] in ("true", "false")
    assert tags["code_version"].endswith("-dirty") == (tags["code_dirty"] == "true")
    assert tags["backbone_init"].startswith("synthetic pre-training resnet18-")  # the cpu profile's backbone


@pytest.mark.slow
def test_retina_evaluate_reproduces_the_trials_ap_from_its_checkpoint(swept, tmp_path):
    (run,) = trial_runs(swept["uri"])
    checkpoint = Path(run.data.tags["checkpoint"]) / "checkpoint.pt"
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "retina.evaluate", str(checkpoint), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(out.read_text())
    assert metrics["AP"] == run.data.metrics["AP"] and metrics["AP50"] == run.data.metrics["AP50"]
    assert metrics["iterations"] == 6


@pytest.mark.slow
def test_retina_evaluate_refuses_a_training_setting(swept, tmp_path):
    (run,) = trial_runs(swept["uri"])
    checkpoint = Path(run.data.tags["checkpoint"]) / "checkpoint.pt"
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "retina.evaluate", str(checkpoint), "loss.alpha=0.5", "--out",
                           str(out)], capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "loss.alpha cannot change" in lines[0]
    assert not out.exists()


@pytest.mark.slow
def test_orchestrator_evaluate_rescores_on_the_same_run(swept, capsys):
    from retina.evaluate import evaluate_checkpoint

    (before,) = trial_runs(swept["uri"])
    checkpoint = Path(before.data.tags["checkpoint"]) / "checkpoint.pt"
    expected = evaluate_checkpoint(checkpoint, ["eval.score_thresh=0.3"])
    assert main(["evaluate", str(swept["path"]), "--set", "eval.score_thresh=0.3", "--tracking-uri",
                 swept["uri"]]) == 0
    assert "re-scoring 1 finished trials with eval.score_thresh=0.3" in capsys.readouterr().out
    (after,) = trial_runs(swept["uri"])
    assert after.info.run_id == before.info.run_id  # no new run
    assert after.data.metrics["AP"] == expected["AP"] and after.data.tags["eval_overrides"] == "eval.score_thresh=0.3"
    history = MlflowClient(swept["uri"]).get_metric_history(after.info.run_id, "AP")
    assert sorted(m.step for m in history) == [2, 4, 6, 6]  # the re-score is a later value at the final step
    # a training setting is refused, nothing is written
    assert main(["evaluate", str(swept["path"]), "--set", "loss.alpha=0.5", "--tracking-uri", swept["uri"]]) == 2
    assert "loss.alpha cannot change" in capsys.readouterr().err
    assert len(MlflowClient(swept["uri"]).get_metric_history(after.info.run_id, "AP")) == 4


@pytest.mark.slow
def test_rerun_retrains_in_a_new_run_and_keeps_the_old_one_tagged(swept, capsys):
    (old,) = trial_runs(swept["uri"])
    argv = ["run", str(swept["path"]), "--tracking-uri", swept["uri"], "--storage-path", swept["storage"],
            "--set", *swept["settings"]]
    assert main(argv) == 0
    assert "all 1 trials are done already" in capsys.readouterr().out  # without --rerun: skipped
    assert main(argv + ["--rerun", "no_such_key"]) == 2
    assert "--rerun no_such_key: not a trial key" in capsys.readouterr().err
    assert main(argv + ["--rerun", "all"]) == 0
    out = capsys.readouterr().out
    assert "1 trials retrain from scratch in new runs" in out
    (new,) = trial_runs(swept["uri"])
    (superseded,) = trial_runs(swept["uri"], "trial-superseded")
    assert new.info.run_id != old.info.run_id and superseded.info.run_id == old.info.run_id
    assert new.data.tags["trial_key"] == old.data.tags["trial_key"] and new.data.tags["start_iteration"] == "0"
    assert superseded.data.tags["superseded_by"] == "--rerun all"
    # the report reads the new run only
    out_dir = swept["root"] / "results"
    assert main(["report", "curves", "--tracking-uri", swept["uri"], "--out", str(out_dir)]) == 0
    summary = json.loads((out_dir / "curves" / "summary.json").read_text())
    assert summary["settings"]["code_version"] == new.data.tags["code_version"]
    assert (out_dir / "curves" / "ap_curves_1b.png").is_file()
