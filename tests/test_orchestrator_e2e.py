"""End to end through the real CLI: local Ray, a tiny profile, a throwaway SQLite MLflow store.

In-process runs (``main(argv)``) share the session's Ray; the killed-driver test runs the CLI in a
subprocess of its own, kills it (its whole process group: driver, Ray and the trial's worker, as
if the machine had died) once a trial has a checkpoint, and re-runs the sweep.
"""
from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.__main__ import main
from orchestrator.sweep import load_sweep
from retina.config import flatten

from .conftest import single_seed

PROJECT_ROOT = Path(__file__).resolve().parent.parent

TINY_SWEEP = """\
name: {name}
tables: [1a]
base: {{loss.kind: focal, loss.gamma: 0.0}}
rows:
  - {{label: "CE alpha=0.25", set: {{loss.alpha: 0.25}}}}
  - {{label: "CE alpha=0.75", set: {{loss.alpha: 0.75}}}}
  - {{label: "lr 1e6, no clipping", set: {{loss.alpha: 0.75, train.lr: 1.0e6, train.grad_clip_norm: null}}}}
"""


def sweep_file(directory: Path, name: str, text: str = TINY_SWEEP) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text.format(name=name))
    return path


def run_cli(path: Path, dirs: dict, *extra: str) -> int:
    return main(["run", str(path), "--tracking-uri", dirs["uri"], "--storage-path", str(dirs["storage"]),
                 "--set", *dirs["settings"], *extra])


def runs_of(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def children(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("kind") == "trial"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# one tiny sweep, run once for the tests below


@pytest.fixture(scope="module")
def tiny_sweep(ray_session, orchestrator_dirs):
    path = sweep_file(orchestrator_dirs["root"], "tiny")
    started = time.monotonic()
    rc = run_cli(path, orchestrator_dirs)
    return {"path": path, "rc": rc, "seconds": time.monotonic() - started,
            "sweep": load_sweep(path, overrides=orchestrator_dirs["settings"])}


@pytest.mark.slow
def test_sweep_logs_a_parent_run_and_one_child_per_trial(tiny_sweep, orchestrator_dirs):
    assert tiny_sweep["rc"] == 0
    runs = runs_of(orchestrator_dirs["uri"], "tiny")
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trials = children(runs)
    sweep = tiny_sweep["sweep"]
    assert sorted(r.data.tags["trial_key"] for r in trials) == sorted(t.key for t in sweep.trials)
    client = MlflowClient(orchestrator_dirs["uri"])
    for run in trials:
        trial = sweep.trial(run.data.tags["trial_key"])
        tags, params = run.data.tags, run.data.params
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["table"] == "1a" and tags["label"] == trial.label and tags["sweep"] == "tiny"
        assert tags["code_version"] and tags["device"] == "cpu"
        # params: the flattened resolved config, all of it
        assert set(params) == set(flatten(trial.config))
        assert float(params["loss.alpha"]) == trial.config.loss.alpha
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.yaml" in artifacts
        if tags["status"] == "finished":
            history = client.get_metric_history(run.info.run_id, "loss")
            assert [m.step for m in history] == [2, 4, 6]
            assert {"loss_cls", "loss_box", "lr", "images_per_s", "AP", "AP50", "AP75", "APs", "APm", "APl",
                    "inference_ms"} <= set(run.data.metrics)
            assert "eval_summary.txt" in artifacts


@pytest.mark.slow
def test_a_diverging_trial_is_recorded_as_diverged_and_the_sweep_goes_on(tiny_sweep, orchestrator_dirs):
    statuses = {r.data.tags["label"]: r.data.tags["status"] for r in children(runs_of(orchestrator_dirs["uri"], "tiny"))}
    assert statuses == {"CE alpha=0.25": "finished", "CE alpha=0.75": "finished", "lr 1e6, no clipping": "diverged"}
    diverged = next(r for r in children(runs_of(orchestrator_dirs["uri"], "tiny"))
                    if r.data.tags["status"] == "diverged")
    assert int(diverged.data.tags["diverged_at"]) >= 1 and diverged.data.metrics["AP"] == 0.0


@pytest.mark.slow
def test_running_the_same_sweep_again_adds_no_run_and_trains_nothing(tiny_sweep, orchestrator_dirs, capsys):
    before = {r.info.run_id: (r.info.end_time, len(r.data.metrics)) for r in runs_of(orchestrator_dirs["uri"], "tiny")}
    experiments = set(os.listdir(orchestrator_dirs["storage"]))
    capsys.readouterr()
    assert run_cli(tiny_sweep["path"], orchestrator_dirs) == 0
    out = capsys.readouterr().out
    assert "0 finished, 3 skipped, 0 diverged, 0 failed" in out
    after = {r.info.run_id: (r.info.end_time, len(r.data.metrics)) for r in runs_of(orchestrator_dirs["uri"], "tiny")}
    assert after == before
    assert set(os.listdir(orchestrator_dirs["storage"])) == experiments  # no Tune experiment was started


@pytest.mark.slow
def test_status_counts_done_trials(tiny_sweep, orchestrator_dirs, capsys):
    capsys.readouterr()
    assert main(["status", "tiny", "--tracking-uri", orchestrator_dirs["uri"]]) == 0
    out = capsys.readouterr().out
    assert "tiny: 3 trials: 3 done (2 finished, 1 diverged), 0 running, 0 interrupted, 0 missing, 0 failed" in out


@pytest.mark.slow
def test_bad_input_leaves_an_existing_store_byte_for_byte_unchanged(tiny_sweep, orchestrator_dirs, capsys):
    digest = hashlib.sha256(orchestrator_dirs["db"].read_bytes()).hexdigest()
    assert run_cli(tiny_sweep["path"], orchestrator_dirs, "loss.alpha=2") == 2
    assert "loss.alpha=2.0 is out of range" in capsys.readouterr().err
    assert hashlib.sha256(orchestrator_dirs["db"].read_bytes()).hexdigest() == digest


# ----------------------------------------------------------------------------------------------
# a driver killed mid-sweep, then run again


KILL_SWEEP = """\
name: {name}
tables: [1a]
base: {{loss.kind: focal, loss.gamma: 0.0}}
rows:
  - {{label: "first", set: {{loss.alpha: 0.25}}}}
  - {{label: "second", set: {{loss.alpha: 0.75}}}}
"""


def _checkpoint_tag(uri: str, experiment: str, label: str):
    try:
        for run in children(runs_of(uri, experiment)):
            if run.data.tags.get("label") == label and run.data.tags.get("checkpoint"):
                return int(run.data.tags["checkpoint_iteration"])
    except Exception:  # noqa: BLE001 - the store may be mid-write or not created yet
        return None
    return None


@pytest.mark.slow
def test_a_killed_driver_rerun_finishes_missing_trials_only_from_their_checkpoints(ray_session, orchestrator_dirs,
                                                                                   capsys):
    dirs = dict(orchestrator_dirs)
    # long enough to be killed mid-way: 30 iterations, a checkpoint every 4
    dirs["settings"] = dirs["settings"] + ["train.iterations=30", "train.checkpoint_every=4", "train.batch_size=2"]
    path = sweep_file(dirs["root"], "killed", KILL_SWEEP)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    log = dirs["root"] / "killed-driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "run", str(path), "--max-concurrent", "1", "--tracking-uri",
             dirs["uri"], "--storage-path", str(dirs["storage"]), "--set", *dirs["settings"]],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            checkpoint = None
            while time.monotonic() < deadline and driver.poll() is None:
                checkpoint = _checkpoint_tag(dirs["uri"], "killed", "second")
                if checkpoint:
                    break
                time.sleep(0.2)
        finally:
            try:
                os.killpg(driver.pid, signal.SIGKILL)  # driver, its Ray and the trial's worker
            except ProcessLookupError:  # it ended by itself
                pass
            driver.wait()
    assert checkpoint, f"no checkpoint of the second trial before the deadline; driver log:\n{log.read_text()}"
    assert checkpoint < 30
    before = {r.data.tags["label"]: r for r in children(runs_of(dirs["uri"], "killed"))}
    assert before["first"].data.tags["status"] == "finished"
    assert before["second"].data.tags["status"] == "running"

    capsys.readouterr()
    assert run_cli(path, dirs) == 0
    out = capsys.readouterr().out
    assert "1 finished, 1 skipped, 0 diverged, 0 failed" in out

    client = MlflowClient(dirs["uri"])
    after = {r.data.tags["label"]: r for r in children(runs_of(dirs["uri"], "killed"))}
    assert {label: r.info.run_id for label, r in after.items()} == {label: r.info.run_id for label, r in before.items()}
    assert len(runs_of(dirs["uri"], "killed")) == 3  # one parent, one child per trial: nothing duplicated
    # the first trial was not run again
    assert after["first"].info.end_time == before["first"].info.end_time
    # the second resumed from its checkpoint: it started there and logged no step twice
    second = after["second"]
    assert second.data.tags["status"] == "finished"
    assert int(second.data.tags["start_iteration"]) >= checkpoint > 0
    steps = [m.step for m in client.get_metric_history(second.info.run_id, "loss")]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    assert "AP" in second.data.metrics
    # the killed driver's parent run is not left RUNNING: the re-run closed it
    parent = next(r for r in runs_of(dirs["uri"], "killed") if r.data.tags["kind"] == "sweep")
    assert parent.info.status == "FINISHED" and parent.data.tags["status"] == "finished"


# ----------------------------------------------------------------------------------------------
# a trial that raises


@pytest.mark.slow
def test_a_trial_that_raises_is_retried_then_recorded_failed_and_the_sweep_goes_on(ray_session, orchestrator_dirs,
                                                                                   capsys):
    from orchestrator import tracking
    from orchestrator.runner import CHECKPOINT_META

    path = sweep_file(orchestrator_dirs["root"], "raises", KILL_SWEEP)
    sweep = load_sweep(path, overrides=orchestrator_dirs["settings"])
    broken, healthy = sweep.trials
    # A driver died after recording a checkpoint of the first trial that turns out unreadable:
    # resuming from it raises in the worker, once and again on the retry.
    checkpoint = orchestrator_dirs["root"] / "unreadable-checkpoint"
    checkpoint.mkdir()
    (checkpoint / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (checkpoint / CHECKPOINT_META).write_text(f'{{"iteration": 3, "trial_key": "{broken.key}"}}')
    tracker = tracking.SweepTracker(orchestrator_dirs["uri"], sweep, tracking.read_state(orchestrator_dirs["uri"], "raises"))
    tracker.open()
    tracker.trial_started(broken.key)
    tracker.trial_checkpoint(broken.key, str(checkpoint), 3)

    capsys.readouterr()
    assert run_cli(path, orchestrator_dirs, "--max-failures", "1") == 1
    assert "1 finished, 0 skipped, 0 diverged, 1 failed" in capsys.readouterr().out
    runs = runs_of(orchestrator_dirs["uri"], "raises")
    by_key = {r.data.tags["trial_key"]: r for r in children(runs)}
    assert len(runs) == 3
    failed = by_key[broken.key]
    assert failed.info.status == "FAILED" and failed.data.tags["status"] == "failed"
    assert failed.data.tags["error"] and failed.data.tags["retries"] == "1"
    client = MlflowClient(orchestrator_dirs["uri"])
    assert "error.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}
    assert by_key[healthy.key].data.tags["status"] == "finished"
    parent = next(r for r in runs if r.data.tags["kind"] == "sweep")
    assert parent.data.tags["status"] == "failed" and parent.info.status == "FAILED"


# ----------------------------------------------------------------------------------------------
# the live view


def test_summary_counts_outcomes_and_utilization_is_busy_over_wall_times_slots():
    import io

    from orchestrator.progress import ProgressView

    sweep_trials = load_sweep(single_seed(PROJECT_ROOT / "sweeps" / "prior_init.yaml")).trials
    a, b = sweep_trials
    for live in (False, True):
        view = ProgressView(sweep_trials, skipped=3, slots=2, stream=io.StringIO(), live=live)
        for trial in sweep_trials:
            view.trial_started(trial.key)
            view.trial_running(trial.key, {"start_iteration": 0, "device": "cpu"})
            view.trial_progress(trial.key, {"iteration": 10, "loss": 1.5, "eta_s": 5.0})
        view.trial_finished(a.key, {"status": "finished", "AP": 12.5, "iterations": 300})
        view.trial_finished(b.key, {"status": "diverged", "diverged_at": 11, "AP": 0.0, "iterations": 11})
        for row, busy in zip(view.rows.values(), (30.0, 10.0)):  # pretend durations: 40 s busy in all
            row.started, row.ended = 100.0, 100.0 + busy
        summary = view.summary(wall_s=40.0)
        assert "1 finished, 3 skipped, 1 diverged, 0 failed" in summary
        assert "utilization 50% (busy 0:40 over 2 slots)" in summary  # 40 / (40 x 2)
        assert a.key in view.stream.getvalue()


# ----------------------------------------------------------------------------------------------
# bad input: one line, exit 2, before anything starts; the store is never created


def _bad_inputs(tmp: Path) -> list:
    bad_json = tmp / "bad.json"
    bad_json.write_text("{not json")
    images = tmp / "images"
    images.mkdir(exist_ok=True)
    return [
        (["--set", "loss.alpah=0.5"], "unknown key 'loss.alpah'; did you mean 'loss.alpha'?"),
        (["--set", "train.iterations=many"], "train.iterations"),
        (["--set", "loss.alpha=1.5"], "loss.alpha=1.5 is out of range; expected a value in [0, 1]"),
        (["--set", "train.lr=-0.1"], "train.lr=-0.1 is out of range"),
        (["--profile", "laptop"], "unknown profile 'laptop'; expected one of cpu, gpu, paper"),
        (["--profile", "paper"], "does not exist"),
        (["--set", "data.source=coco", f"data.train.annotations={bad_json}", f"data.train.images={images}",
          f"data.val.annotations={bad_json}", f"data.val.images={images}"], "not valid JSON"),
        (["--address", f"127.0.0.1:{free_port()}"], "cannot reach the Ray cluster"),
        (["--tracking-uri", f"http://127.0.0.1:{free_port()}"], "cannot reach the MLflow tracking server"),
        (["--cpus-per-trial", "64"], "no node of the Ray cluster has that much"),
    ]


@pytest.mark.slow
def test_each_bad_input_exits_2_with_a_one_line_message_and_writes_nothing(ray_session, orchestrator_dirs, tmp_path,
                                                                          capsys):
    path = sweep_file(tmp_path, "bad", TINY_SWEEP)
    store, storage = tmp_path / "mlflow.db", tmp_path / "ray"
    for extra, message in _bad_inputs(tmp_path):
        argv = ["run", str(path), "--tracking-uri", f"sqlite:///{store}", "--storage-path", str(storage),
                "--set", *orchestrator_dirs["settings"], *extra]
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2, (extra, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (extra, err)
        assert not store.exists() and not storage.exists() and not (tmp_path / "mlruns").exists(), extra
