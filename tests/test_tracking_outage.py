"""The tracking server goes away mid-sweep: a real ``mlflow server`` on 127.0.0.1, killed and started
again while a real driver (a subprocess with its own local Ray) trains a trial.

Short outage: the driver buffers its writes, says so, and records every one when the server is back.
Outage past ``--tracking-deadline``: the sweep stops with exit code 3 and a clear message, the
unwritten events wait in a journal, and the same command later records them and finishes the trial
from its checkpoint. Either way every step of the loss curve is in MLflow exactly once.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_SETTINGS
from tests.mlflow_server import MlflowServer

PROJECT_ROOT = Path(__file__).resolve().parent.parent

SWEEP = """\
name: {name}
tables: [1a]
base: {{loss.kind: focal, loss.gamma: 0.0, loss.alpha: 0.75}}
rows:
  - {{label: "only", set: {{}}}}
"""
ITERATIONS, LOG_EVERY = 120, 5
SETTINGS = TINY_SETTINGS + [f"train.iterations={ITERATIONS}", f"train.log_every={LOG_EVERY}",
                            "train.checkpoint_every=20", "train.batch_size=2"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield srv
    srv.stop()


class Driver:
    """``python -m orchestrator run`` in a subprocess; its output read line by line as it comes."""

    def __init__(self, root: Path, name: str, uri: str, *extra: str):
        self.path = root / f"{name}.yaml"
        self.path.write_text(SWEEP.format(name=name))
        self.log = root / f"{name}-driver-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        self.argv = [sys.executable, "-m", "orchestrator", "run", str(self.path), "--tracking-uri", uri,
                     "--storage-path", str(root / "ray"), *extra, "--set", *SETTINGS,
                     f"data.synthetic.cache_dir={root / 'synthetic'}"]
        self.env = env

    def start(self) -> "Driver":
        self.out = open(self.log, "w")
        self.process = subprocess.Popen(self.argv, cwd=PROJECT_ROOT, env=self.env, stdout=self.out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, phrase: str, timeout_s: float = 300) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if phrase in self.text():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"driver never printed {phrase!r}:\n{self.text()[-4000:]}")

    def finish(self, timeout_s: float = 400) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                import signal

                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            self.out.close()


def trial_run(uri: str, name: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("kind") == "trial"]
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    return client, trials, parents


def wait_for_step(uri: str, name: str, step: int, driver: Driver, timeout_s: float = 300) -> None:
    client = MlflowClient(uri)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and driver.process.poll() is None:
        try:
            exp = client.get_experiment_by_name(name)
            runs = client.search_runs([exp.experiment_id], "tags.kind = 'trial'") if exp else []
            if runs and max((m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")), default=0) >= step:
                return
        except Exception:  # noqa: BLE001 - not created yet
            pass
        time.sleep(0.3)
    raise AssertionError(f"step {step} never reached the store:\n{driver.text()[-4000:]}")


def assert_complete_history(uri: str, name: str) -> dict:
    """One trial run, finished, with AP and every logged step of the loss curve exactly once."""
    client, trials, parents = trial_run(uri, name)
    assert len(trials) == 1 and len(parents) == 1
    run = trials[0]
    assert run.data.tags["status"] == "finished" and run.info.status == "FINISHED"
    assert "AP" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert sorted(steps) == list(range(LOG_EVERY, ITERATIONS + 1, LOG_EVERY))
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["status"] == "finished"
    return run.data.tags


@pytest.mark.slow
def test_a_short_server_outage_loses_nothing_and_the_driver_says_it_buffered(server, tmp_path):
    driver = Driver(tmp_path, "outage-short", server.uri).start()
    try:
        wait_for_step(server.uri, "outage-short", 2 * LOG_EVERY, driver)
        server.stop()  # mid-training: the trial goes on, the driver's writes fail
        driver.wait_for("is unreachable")
        time.sleep(3)
        server.start()
        rc = driver.finish()
    finally:
        if server.process is None:
            server.start()
    out = driver.text()
    assert rc == 0, out[-4000:]
    assert "buffering writes" in out and "is back after" in out
    assert "every buffered write was recorded" in out
    assert_complete_history(server.uri, "outage-short")


@pytest.mark.slow
def test_an_outage_past_the_deadline_stops_the_sweep_and_the_next_run_records_everything(server, tmp_path):
    name = "outage-long"
    first = Driver(tmp_path, name, server.uri, "--tracking-deadline", "4").start()
    try:
        wait_for_step(server.uri, name, 2 * LOG_EVERY, first)
        server.stop()
        rc = first.finish()
    finally:
        server.start()
    out = first.text()
    assert rc == 3, out[-4000:]
    assert "stayed unreachable past --tracking-deadline 4 s" in out and "run the same command again" in out
    journal = next((tmp_path / "ray" / "tracking-journal").glob(f"{name}-*.jsonl"))
    assert journal.read_text().strip()

    second = Driver(tmp_path, name, server.uri).start()
    assert second.finish() == 0, second.text()[-4000:]
    assert "tracking: recorded" in second.text()
    assert not journal.exists()
    tags = assert_complete_history(server.uri, name)
    assert int(tags["start_iteration"]) > 0  # resumed from its checkpoint, not from iteration 0
