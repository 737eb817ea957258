"""A real multi-node Ray cluster on 127.0.0.1, started with `ray start` like a user's: a head node
(0 CPUs: it only coordinates) and two worker nodes of 1 CPU each, all with token authentication on
(a token of the test's own, given to every node and to the driver).

The sweep's driver (`python -m orchestrator run --address ...`, a subprocess) trains two trials, one
per worker node. Once both have a checkpoint, one worker node is killed outright (SIGKILL to its
whole process group: raylet, object store, the trial's worker) and a replacement node joins. The
killed trial must be retried from its latest checkpoint, not from iteration 0, and the sweep must
end with one MLflow run per trial whose loss curve has every step exactly once.

The same run checks that nothing of the environment (a secret-looking variable every process has)
reaches the MLflow store, and that a driver without the cluster's token is refused.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TINY_SETTINGS
from tests.mlflow_server import free_port
from tests.ray_probe import try_to_connect

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ITERATIONS, LOG_EVERY, CHECKPOINT_EVERY = 120, 5, 20
SECRET = "s3cr3t-" + secrets.token_hex(8)

SWEEP = """\
name: cluster
tables: [1a]
base: {loss.kind: focal, loss.gamma: 0.0}
rows:
  - {label: "CE alpha=0.25", set: {loss.alpha: 0.25}}
  - {label: "CE alpha=0.75", set: {loss.alpha: 0.75}}
"""


class Node:
    """One `ray start --block` process, in a process group of its own with everything it starts."""

    def __init__(self, args: List[str], env: Dict[str, str], log: Path):
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen(["ray", "start", "--block", "--disable-usage-stats",
                                             "--node-ip-address", "127.0.0.1", *args],
                                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def alive_nodes(address: str, env: Dict[str, str]) -> int:
    out = subprocess.run(["ray", "status", "--address", address], env=env, capture_output=True, text=True,
                         timeout=60).stdout
    active = out.split("Active:")[-1].split("Pending:")[0] if "Active:" in out else ""
    return len(re.findall(r"node_[0-9a-f]+", active))


def wait_nodes(address: str, env: Dict[str, str], count: int, timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if alive_nodes(address, env) == count:
            return
        time.sleep(1)
    raise AssertionError(f"the cluster at {address} never had {count} nodes alive")


def checkpoints(uri: str) -> Dict[str, int]:
    """{trial label: latest checkpoint iteration} of the cluster sweep's running trials."""
    try:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("cluster")
        runs = client.search_runs([exp.experiment_id], "tags.kind = 'trial'") if exp else []
    except Exception:  # noqa: BLE001 - the store may not exist yet
        return {}
    return {r.data.tags["label"]: int(r.data.tags.get("checkpoint_iteration", 0)) for r in runs
            if r.data.tags.get("status") == "running"}


@pytest.fixture(scope="module")
def cluster_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), AWS_SECRET_ACCESS_KEY=SECRET,
               RETINA_TEST_API_TOKEN=SECRET,
               # notice a dead node within ~3 s rather than Ray's default ~15 s
               RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3",
               RAY_raylet_start_wait_time_s="120")  # a loaded 2-core machine starts raylets slowly
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes: List[Node] = []
    try:
        nodes.append(Node(["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false"],
                          env, root / "head.log"))
        wait_nodes(address, env, 1)
        for count, name in enumerate(("worker-a", "worker-b"), 2):  # one at a time: two raylets starting
            nodes.append(Node(["--address", address, "--num-cpus", "1"], env, root / f"{name}.log"))
            wait_nodes(address, env, count)  # side by side on 2 busy cores can miss Ray's start-up wait

        uri = f"sqlite:///{root / 'mlflow.db'}"
        (root / "cluster.yaml").write_text(SWEEP)
        driver_env = dict(env, PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p))
        log = root / "driver.log"
        settings = TINY_SETTINGS + [f"train.iterations={ITERATIONS}", f"train.log_every={LOG_EVERY}",
                                    f"train.checkpoint_every={CHECKPOINT_EVERY}", "train.batch_size=2",
                                    f"data.synthetic.cache_dir={root / 'synthetic'}"]
        with open(log, "w") as out:
            driver = subprocess.Popen(
                [sys.executable, "-m", "orchestrator", "run", str(root / "cluster.yaml"), "--address", address,
                 "--tracking-uri", uri, "--storage-path", str(root / "ray"), "--max-failures", "2",
                 "--set", *settings],
                cwd=PROJECT_ROOT, env=driver_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                end, seen = time.monotonic() + 300, {}
                while time.monotonic() < end and driver.poll() is None:
                    seen = checkpoints(uri)
                    if len(seen) == 2 and min(seen.values()) >= CHECKPOINT_EVERY:
                        break
                    time.sleep(0.3)
                assert len(seen) == 2 and min(seen.values()) >= CHECKPOINT_EVERY, \
                    f"both trials never had a checkpoint while running: {seen}\n{log.read_text()[-3000:]}"
                nodes[1].kill()  # worker-a, with whichever trial it runs, mid-training
                killed_at = dict(seen)
                nodes.append(Node(["--address", address, "--num-cpus", "1"], env, root / "worker-c.log"))
                rc = driver.wait(timeout=400)
            finally:
                if driver.poll() is None:
                    os.killpg(driver.pid, signal.SIGKILL)
                    driver.wait()
        yield {"rc": rc, "log": log.read_text(), "uri": uri, "root": root, "killed_at": killed_at,
               "address": address, "env": env}
    finally:
        for node in reversed(nodes):
            node.kill()


def trial_runs(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cluster")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return client, [r for r in runs if r.data.tags.get("kind") == "trial"], [r for r in runs if r.data.tags.get("kind") == "sweep"]


@pytest.mark.slow
def test_the_sweep_completes_after_a_worker_node_is_killed_mid_trial(cluster_sweep):
    assert cluster_sweep["rc"] == 0, cluster_sweep["log"][-4000:]
    _, trials, parents = trial_runs(cluster_sweep["uri"])
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["status"] for r in trials) == ["finished", "finished"]


@pytest.mark.slow
def test_the_killed_trial_resumed_from_its_checkpoint_not_from_zero(cluster_sweep):
    _, trials, _ = trial_runs(cluster_sweep["uri"])
    retried = [r for r in trials if r.data.tags.get("retries")]
    assert len(retried) == 1, [r.data.tags for r in trials]  # the trial on the killed node, and only it
    tags = retried[0].data.tags
    assert tags["resumed_from"] == "tune retry"
    # it restarted at the checkpoint it had when the node died, or a later one
    assert int(tags["start_iteration"]) >= cluster_sweep["killed_at"][tags["label"]] >= CHECKPOINT_EVERY
    others = [r for r in trials if not r.data.tags.get("retries")]
    assert all(int(r.data.tags["start_iteration"]) == 0 for r in others)


@pytest.mark.slow
def test_every_trial_has_one_run_with_each_step_logged_exactly_once(cluster_sweep):
    client, trials, _ = trial_runs(cluster_sweep["uri"])
    assert sorted(r.data.tags["label"] for r in trials) == ["CE alpha=0.25", "CE alpha=0.75"]
    for run in trials:
        for metric in ("loss", "loss_cls", "lr"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == list(range(LOG_EVERY, ITERATIONS + 1, LOG_EVERY)), (run.data.tags["label"], metric)
        assert "AP" in run.data.metrics


@pytest.mark.slow
def test_no_environment_secret_reaches_the_mlflow_store(cluster_sweep):
    root = cluster_sweep["root"]
    store = [root / "mlflow.db", *(p for p in (root / "mlruns").rglob("*") if p.is_file())]
    assert len(store) > 3  # the database and the runs' artifacts (config.yaml, eval_summary.txt, ...)
    leaks = [str(p) for p in store if SECRET.encode() in p.read_bytes()]
    assert not leaks
    _, trials, parents = trial_runs(cluster_sweep["uri"])
    for run in trials + parents:
        assert not any(SECRET in str(v) for v in {**run.data.params, **run.data.tags}.values())


@pytest.mark.slow
def test_a_driver_without_the_cluster_token_is_refused(cluster_sweep, tmp_path):
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    env = dict(cluster_sweep["env"], RAY_AUTH_TOKEN_PATH=str(wrong), PYTHONPATH=str(PROJECT_ROOT))
    out = try_to_connect(cluster_sweep["address"], env)
    assert out.returncode == 3 and "refused" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "InvalidAuthToken" in out.stderr
