"""Reading a sweep's state from the store: which trials have runs, in which state; who is running it."""
from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from .store import TrackingError, mlflow_client, search_all, store_exists

DONE = ("finished", "diverged")  # a trial in one of these states is never run again


@dataclass
class TrialRecord:
    run_id: str
    status: str  # tag status
    checkpoint: Optional[str]  # tag checkpoint: path / URI of the latest checkpoint directory
    checkpoint_iteration: int
    start_time: int


@dataclass
class SweepState:
    experiment_id: Optional[str] = None
    parent_run_id: Optional[str] = None
    parent_tags: Dict[str, str] = field(default_factory=dict)
    trials: Dict[str, TrialRecord] = field(default_factory=dict)

    def done(self, key: str) -> bool:
        record = self.trials.get(key)
        return record is not None and record.status in DONE


DEFAULT_VARIANT = "default"


def parent_of(parents: list, variant: str = DEFAULT_VARIANT):
    """The parent run of ``variant`` among a sweep's parents (oldest first, as search_all returns
    them): each variant of a sweep file (its own profile, --set) has one; a parent without a variant
    tag (from before variants) is the default's. None if that variant never ran."""
    for run in parents:
        if (run.data.tags.get("variant") or DEFAULT_VARIANT) == variant:
            return run
    return None


def variants_of(parents: list) -> List[str]:
    return list(dict.fromkeys(run.data.tags.get("variant") or DEFAULT_VARIANT for run in parents))


def read_state(uri: str, sweep_name: str, variant: str = DEFAULT_VARIANT) -> SweepState:
    """What the store knows of sweep ``sweep_name`` (its parent run: the one of ``variant``); reads
    only (a missing store is not created)."""
    if not store_exists(uri):
        return SweepState()
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name(sweep_name)
    if experiment is None:
        return SweepState()
    if experiment.lifecycle_stage != "active":
        raise TrackingError(f"experiment '{sweep_name}' is deleted in {uri}; restore it (`mlflow experiments "
                            f"restore --experiment-id {experiment.experiment_id}`) or rename the sweep")
    state = SweepState(experiment_id=experiment.experiment_id)
    parent = parent_of(search_all(client, experiment.experiment_id, "tags.kind = 'sweep'"), variant)
    if parent is not None:
        state.parent_run_id = parent.info.run_id
        state.parent_tags = dict(parent.data.tags)
    for run in search_all(client, experiment.experiment_id, "tags.kind = 'trial'"):
        tags = run.data.tags
        key = tags.get("trial_key")
        if not key or key in state.trials:  # the oldest run of a key is its run
            continue
        state.trials[key] = TrialRecord(run_id=run.info.run_id, status=tags.get("status", "running"),
                                        checkpoint=tags.get("checkpoint") or None,
                                        checkpoint_iteration=int(tags.get("checkpoint_iteration", 0) or 0),
                                        start_time=run.info.start_time or 0)
    return state


@dataclass
class SweepStatus:
    name: str
    parent_status: str
    expected: List[dict]  # the trials manifest
    done: Dict[str, str] = field(default_factory=dict)  # key -> finished / diverged
    running: List[str] = field(default_factory=list)
    interrupted: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)  # key -> error
    missing: List[str] = field(default_factory=list)


def _driver_alive(driver: str) -> bool:
    host, _, pid = driver.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # cannot tell from here: trust the store
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_driver(state: SweepState) -> Optional[str]:
    """``host:pid`` of another driver that is running this sweep right now, if this machine can tell
    (same host, the process alive and an orchestrator): two drivers would train the same trials."""
    driver = state.parent_tags.get("driver", "")
    if state.parent_tags.get("status") != "running" or not driver:
        return None
    host, _, pid = driver.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return driver
    return driver if "orchestrator" in cmdline else None


def list_sweeps(uri: str) -> List[str]:
    """Names of the experiments in the store that hold a sweep (parent) run."""
    if not store_exists(uri):
        return []
    client = mlflow_client(uri)
    names, token = [], None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        for exp in page:
            if client.search_runs([exp.experiment_id], filter_string="tags.kind = 'sweep'", max_results=1):
                names.append(exp.name)
        token = page.token
        if not token:
            return sorted(names)


def sweep_status(uri: str, name: str, expected: Optional[List[dict]] = None) -> SweepStatus:
    """Done / running / interrupted / failed / missing trials of sweep ``name``. ``expected``: the trials
    manifest to compare with (from a sweep file); default: the one the last run recorded."""
    state = read_state(uri, name)
    client = mlflow_client(uri) if state.parent_run_id else None
    if expected is None:
        expected = []
        if client is not None:
            try:
                path = client.download_artifacts(state.parent_run_id, "trials.json")
                expected = json.loads(Path(path).read_text())
            except (MlflowException, OSError, ValueError):
                expected = []
        if not expected:  # no manifest: what the store holds
            expected = [{"key": k, "rows": []} for k in state.trials]
    parent_status = state.parent_tags.get("status", "never run")
    alive = parent_status == "running" and _driver_alive(state.parent_tags.get("driver", ""))
    out = SweepStatus(name=name, parent_status=parent_status if alive or parent_status != "running"
                      else "interrupted", expected=expected)
    for entry in expected:
        key = entry["key"]
        record = state.trials.get(key)
        if record is None:
            out.missing.append(key)
        elif record.status in DONE:
            out.done[key] = record.status
        elif record.status == "failed":
            run = client.get_run(record.run_id)
            out.failed[key] = run.data.tags.get("error", "")
        elif record.status == "running" and alive:
            out.running.append(key)
        else:
            out.interrupted.append(key)
    return out
