"""Everything MLflow: the only module of the project that imports it.

One experiment per sweep (named after it), one parent run per sweep (tag ``kind=sweep``; reused by
every re-run, never duplicated) and one nested child run per trial (tag ``kind=trial``, found again
by its tag ``trial_key``: a resumed trial continues its own run, a trial never gets a second one).

The driver is the only writer: :class:`SweepTracker` receives the trial events the Tune callback
forwards (see ``orchestrator.runner``) and logs them, so workers never need a route to the store
and a SQLite store is never written by two processes. Nothing here logs environment variables.

Child runs hold:
  params     the flattened resolved config (written once, when the run is created)
  metrics    training curves by step = iteration (loss_cls, loss_box, loss, lr, images_per_s, ...),
             then the final AP, AP50, AP75, APs, APm, APl, inference_ms at the last iteration;
             after a resume only steps beyond the last one logged are written
  tags       sweep, table, label, row.<table>, trial_key, status (running / finished / diverged /
             failed / interrupted), code_version, device, profile, seed, checkpoint (latest
             checkpoint's path or URI, which a re-run driver resumes from), error
  artifacts  config.yaml (resolved config), eval_summary.txt (COCO evaluation), error.txt
"""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

from retina.config import PROJECT_ROOT, flatten, to_yaml

from .progress import error_line
from .sweep import Sweep, Trial, format_value

DEFAULT_DB = PROJECT_ROOT / "mlflow.db"

CURVE_METRICS = ("loss_cls", "loss_box", "loss", "lr", "images_per_s", "num_foreground", "data_wait_share")
FINAL_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "inference_ms", "train_time_s", "train_images_per_s")
DONE = ("finished", "diverged")  # a trial in one of these states is never run again

__all__ = ["DEFAULT_DB", "TrackingError", "default_tracking_uri", "check_store", "store_exists", "read_state",
           "SweepTracker", "sweep_status", "code_version", "is_outage"]


class TrackingError(ValueError):
    """The tracking store cannot be used; the message is one line."""


# ----------------------------------------------------------------------------------------------
# where the store is


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite file that a plain ``mlflow ui`` started in the
    project root shows (MLflow 3 defaults to ``sqlite:///mlflow.db`` there)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def _sqlite_path(uri: str) -> Optional[Path]:
    if not uri.startswith("sqlite:"):
        return None
    path = urllib.parse.unquote(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        raise TrackingError(f"tracking URI {uri!r}: expected a SQLite file, e.g. sqlite:///{DEFAULT_DB}")
    return Path(path if path.startswith("/") else os.path.abspath(path))


def _file_path(uri: str) -> Optional[Path]:
    if uri.startswith("file:"):
        return Path(urllib.parse.urlparse(uri).path)
    if "://" not in uri and not uri.startswith(("databricks", "sqlite:")):
        return Path(uri).resolve()
    return None


def check_store(uri: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`TrackingError` unless the store at ``uri`` can be used; writes nothing."""
    db = _sqlite_path(uri)
    if db is not None:
        if not db.parent.is_dir():
            raise TrackingError(f"tracking store {uri}: folder {db.parent} does not exist; create it or choose "
                                "another --tracking-uri")
        if db.exists() and not os.access(db, os.W_OK):
            raise TrackingError(f"tracking store {uri}: {db} is not writable")
        if not os.access(db.parent, os.W_OK):
            raise TrackingError(f"tracking store {uri}: folder {db.parent} is not writable")
        return
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status != 200:
                    raise TrackingError(f"MLflow tracking server {uri} answered {response.status} on /health")
        except urllib.error.HTTPError as e:
            raise TrackingError(f"MLflow tracking server {uri} answered {e.code} on /health; is it an MLflow "
                                "server?") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(f"cannot reach the MLflow tracking server at {uri} ({reason}); start it with "
                                "`mlflow server` or choose another --tracking-uri") from None
        return
    path = _file_path(uri)
    if path is not None and not path.parent.is_dir():
        raise TrackingError(f"tracking store {uri}: folder {path.parent} does not exist")


def store_exists(uri: str) -> bool:
    """False when opening the store would create it (a SQLite file or mlruns folder not there yet)."""
    db = _sqlite_path(uri)
    if db is not None:
        return db.is_file()
    path = _file_path(uri)
    if path is not None:
        return path.is_dir()
    return True


def _artifact_location(uri: str, experiment: str) -> Optional[str]:
    """For a SQLite store: <db folder>/mlruns/<experiment>, where `mlflow ui` started there finds it
    (MLflow's own default would be the current directory's ./mlruns, wherever the driver started)."""
    db = _sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / "mlruns" / experiment).as_uri()


def code_version() -> str:
    """``git describe --always --dirty`` of the project; "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=PROJECT_ROOT,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    version = out.stdout.strip()
    return version if out.returncode == 0 and version else "unknown"


# ----------------------------------------------------------------------------------------------
# reading what is there


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


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri)


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> List[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def read_state(uri: str, sweep_name: str) -> SweepState:
    """What the store knows of sweep ``sweep_name``; reads only (a missing store is not created)."""
    if not store_exists(uri):
        return SweepState()
    client = _client(uri)
    experiment = client.get_experiment_by_name(sweep_name)
    if experiment is None:
        return SweepState()
    if experiment.lifecycle_stage != "active":
        raise TrackingError(f"experiment '{sweep_name}' is deleted in {uri}; restore it (`mlflow experiments "
                            f"restore --experiment-id {experiment.experiment_id}`) or rename the sweep")
    state = SweepState(experiment_id=experiment.experiment_id)
    parents = _search_all(client, experiment.experiment_id, "tags.kind = 'sweep'")
    if parents:
        state.parent_run_id = parents[0].info.run_id
        state.parent_tags = dict(parents[0].data.tags)
    for run in _search_all(client, experiment.experiment_id, "tags.kind = 'trial'"):
        tags = run.data.tags
        key = tags.get("trial_key")
        if not key or key in state.trials:  # the oldest run of a key is its run
            continue
        state.trials[key] = TrialRecord(run_id=run.info.run_id, status=tags.get("status", "running"),
                                        checkpoint=tags.get("checkpoint") or None,
                                        checkpoint_iteration=int(tags.get("checkpoint_iteration", 0) or 0),
                                        start_time=run.info.start_time or 0)
    return state


# ----------------------------------------------------------------------------------------------
# writing (the driver only)


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else format_value(value)
    return text if len(text) <= MAX_TAG_VAL_LENGTH else text[:MAX_TAG_VAL_LENGTH - 3] + "..."


def _param_value(value: Any) -> str:
    """Exact text of a config value: JSON for numbers, booleans, null and lists (0.1, true, [0.5, 1.0])."""
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_PARAM_VAL_LENGTH else text[:MAX_PARAM_VAL_LENGTH - 3] + "..."


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_tags(sweep: Sweep, trial: Trial) -> Dict[str, str]:
    tags = {
        "kind": "trial",
        "sweep": sweep.name,
        "trial_key": trial.key,
        "table": ",".join(trial.tables),
        "label": trial.label,
        "profile": sweep.profile,
        "seed": str(trial.seed),
    }
    for table in trial.tables:
        tags[f"row.{table}"] = " | ".join(dict.fromkeys(m.label for m in trial.memberships if m.table == table))
    if trial.scaled:
        tags["scaled"] = ", ".join(f"{k} {format_value(a)}->{format_value(b)}" for k, (a, b) in sorted(trial.scaled.items()))
    return tags


def trials_manifest(sweep: Sweep) -> List[dict]:
    """The sweep's expected trials (parent artifact trials.json): what `status` compares against."""
    return [{"key": t.key, "rows": [{"table": m.table, "label": m.label, "seed": m.seed} for m in t.memberships],
             "diff": {k: format_value(v) for k, v in t.diff.items()}} for t in sweep.trials]


class SweepTracker:
    """Driver-side MLflow writer for one sweep invocation; receives the runner's trial events."""

    def __init__(self, uri: str, sweep: Sweep, state: SweepState, version: Optional[str] = None):
        self.uri, self.sweep, self.state = uri, sweep, state
        self.version = version or code_version()
        self.client = _client(uri)
        self.experiment_id: Optional[str] = state.experiment_id
        self.parent_run_id: Optional[str] = state.parent_run_id
        self.run_ids: Dict[str, str] = {k: r.run_id for k, r in state.trials.items()}
        self.last_step: Dict[str, int] = {}
        self.retries: Dict[str, int] = {}

    # -- sweep ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the store, experiment and parent run if missing; mark the parent running."""
        c, sweep = self.client, self.sweep
        if self.experiment_id is None:
            try:
                self.experiment_id = c.create_experiment(
                    sweep.name, artifact_location=_artifact_location(self.uri, sweep.name),
                    tags={"sweep": sweep.name, "mlflow.note.content": sweep.description or sweep.name})
            except MlflowException:  # created meanwhile by someone else
                self.experiment_id = c.get_experiment_by_name(sweep.name).experiment_id
        tags = {
            "kind": "sweep", "sweep": sweep.name, "table": ",".join(sweep.tables), "profile": sweep.profile,
            "overrides": " ".join(sweep.overrides), "sweep_file": str(sweep.path), "code_version": self.version,
            "num_trials": str(len(sweep.trials)), "num_rows": str(sweep.num_rows), "status": "running",
            "driver": f"{socket.gethostname()}:{os.getpid()}",
        }
        if self.parent_run_id is None:
            run = c.create_run(self.experiment_id, tags={"mlflow.runName": sweep.name}, run_name=sweep.name)
            self.parent_run_id = run.info.run_id
        else:
            c.update_run(self.parent_run_id, status="RUNNING")
        if sweep.description:
            tags["mlflow.note.content"] = sweep.description
        self._tags(self.parent_run_id, tags)
        c.log_text(self.parent_run_id, sweep.path.read_text(), "sweep.yaml")
        c.log_text(self.parent_run_id, json.dumps(trials_manifest(sweep), indent=1), "trials.json")

    def close(self, outcome: str) -> None:
        """outcome: finished (every trial done), failed (some failed) or interrupted."""
        if self.parent_run_id is None:
            return
        self._tags(self.parent_run_id, {"status": outcome})
        status = {"finished": "FINISHED", "failed": "FAILED"}.get(outcome, "KILLED")
        self.client.set_terminated(self.parent_run_id, status=status)

    # -- trials (the runner's listener interface) ----------------------------------------------

    def trial_started(self, key: str) -> None:
        trial = self.sweep.trial(key)
        c = self.client
        tags = {**trial_tags(self.sweep, trial), "status": "running", "code_version": self.version}
        run_id = self.run_ids.get(key)
        if run_id is None:
            run = c.create_run(self.experiment_id, run_name=f"{trial.label} [{key}]",
                               tags={"mlflow.parentRunId": self.parent_run_id})
            run_id = self.run_ids[key] = run.info.run_id
            flat = flatten(trial.config)
            params = [Param(k, _param_value(v)) for k, v in sorted(flat.items())]
            for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
                c.log_batch(run_id, params=params[i:i + MAX_PARAMS_TAGS_PER_BATCH])
            c.log_text(run_id, to_yaml(trial.config), "config.yaml")
            self.last_step[key] = 0
        else:
            c.update_run(run_id, status="RUNNING")
            tags["mlflow.parentRunId"] = self.parent_run_id
            self.last_step.setdefault(key, self._last_logged_step(run_id))
        self._tags(run_id, tags)

    def trial_running(self, key: str, info: Dict[str, Any]) -> None:
        """The worker's first word: device, host, and the iteration it starts (resumes) from."""
        tags = {"device": str(info.get("device", "unknown")), "host": str(info.get("host", "unknown")),
                "start_iteration": str(int(info.get("start_iteration", 0)))}
        if info.get("resumed_from"):
            tags["resumed_from"] = str(info["resumed_from"])
        self._tags(self.run_ids[key], tags)

    def trial_progress(self, key: str, metrics: Dict[str, Any]) -> None:
        step = int(metrics["iteration"])
        if key not in self.last_step:  # a journal replayed by a new driver: what the store has already
            self.last_step[key] = self._last_logged_step(self.run_ids[key])
        if step <= self.last_step[key]:
            return  # logged before an interruption: the resumed run repeats it
        now = int(time.time() * 1000)
        batch = [Metric(k, float(metrics[k]), now, step) for k in CURVE_METRICS if _finite(metrics.get(k))]
        if batch:
            self.client.log_batch(self.run_ids[key], metrics=batch)
        self.last_step[key] = step

    def trial_checkpoint(self, key: str, path: str, iteration: int) -> None:
        self._tags(self.run_ids[key], {"checkpoint": path, "checkpoint_iteration": str(int(iteration))})

    def trial_finished(self, key: str, result: Dict[str, Any]) -> None:
        run_id, c = self.run_ids[key], self.client
        status = str(result.get("status", "finished"))
        step = int(result.get("iterations") or self.last_step.get(key, 0))
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(result[k]), now, step) for k in FINAL_METRICS if _finite(result.get(k))]
        if metrics:
            c.log_batch(run_id, metrics=metrics)
        tags = {"status": status, "iterations": str(step)}
        if result.get("diverged_at") is not None:
            tags["diverged_at"] = str(int(result["diverged_at"]))
        self._tags(run_id, tags)
        if result.get("eval_summary"):
            c.log_text(run_id, str(result["eval_summary"]), "eval_summary.txt")
        c.set_terminated(run_id, status="FINISHED")

    def trial_failed(self, key: str, error: str) -> None:
        run_id = self.run_ids.get(key)
        if run_id is None:  # failed before it started (e.g. a worker could not be placed)
            self.trial_started(key)
            run_id = self.run_ids[key]
        self._tags(run_id, {"status": "failed", "error": error_line(error)})
        self.client.log_text(run_id, error, "error.txt")
        self.client.set_terminated(run_id, status="FAILED")

    def trial_retrying(self, key: str, error: str) -> None:
        run_id = self.run_ids.get(key)
        if run_id is None:
            return
        self.retries[key] = self.retries.get(key, 0) + 1
        self._tags(run_id, {"retries": str(self.retries[key]), "last_error": error_line(error)})

    def trial_interrupted(self, key: str) -> None:
        run_id = self.run_ids.get(key)
        if run_id is None:
            return
        self._tags(run_id, {"status": "interrupted"})
        self.client.set_terminated(run_id, status="KILLED")

    # -- helpers ------------------------------------------------------------------------------

    def _tags(self, run_id: str, tags: Dict[str, Any]) -> None:
        items = [RunTag(k, _tag_value(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def _last_logged_step(self, run_id: str) -> int:
        history = self.client.get_metric_history(run_id, "loss")
        return max((m.step for m in history), default=0)


# ----------------------------------------------------------------------------------------------
# status


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
    client = _client(uri)
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
    client = _client(uri) if state.parent_run_id else None
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


_TRANSIENT_HTTP = ("status code 429", "status code 500", "status code 502", "status code 503", "status code 504")


def is_outage(error: BaseException) -> bool:
    """Whether a failed write means "the store is unreachable for now" (retry later) rather than a
    rejected request: a refused or timed-out connection to an MLflow server, a 5xx answer from it or
    its proxy, a locked SQLite file."""
    seen, e = 0, error
    while e is not None and seen < 8:
        name = type(e).__name__
        if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "MaxRetryError",
                    "NewConnectionError", "ProtocolError", "RemoteDisconnected", "ConnectionRefusedError",
                    "ConnectionResetError", "TimeoutError"):
            return True
        if name == "OperationalError" and "locked" in str(e):
            return True
        if isinstance(e, MlflowException):
            text = str(e)
            if e.error_code == "TEMPORARILY_UNAVAILABLE" or "failed with exception" in text and "API request" in text:
                return True
            if any(code in text for code in _TRANSIENT_HTTP):
                return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def describe_store(uri: str) -> str:
    return uri if not uri.startswith("sqlite:///") else f"{uri} (mlflow ui --backend-store-uri {uri})"


def ensure_quiet() -> None:
    """MLflow's own console chatter (run links, 'created experiment') is not wanted in the live view."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run ..." per run, on a server
    # A stopped server should be noticed within seconds, not after MLflow's own minutes of retries:
    # orchestrator.outbox retries (and buffers) instead.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")



# ----------------------------------------------------------------------------------------------
# reading a sweep for the report (orchestrator/report.py), and logging the report


@dataclass
class RunRecord:
    """One child (trial) run as the report needs it."""
    run_id: str
    tags: Dict[str, str]
    params: Dict[str, Any]  # the flattened resolved config, values decoded from their JSON text
    metrics: Dict[str, float]  # latest value of each metric


@dataclass
class SweepRecord:
    name: str
    uri: str
    experiment_id: str
    parent_run_id: Optional[str]
    parent_tags: Dict[str, str]
    manifest: List[dict]  # parent artifact trials.json ([] if absent)
    sweep_yaml: Optional[str]  # parent artifact sweep.yaml
    runs: List[RunRecord]  # oldest run per trial key


def _decode_param(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parent_text(client: MlflowClient, run_id: str, name: str) -> Optional[str]:
    try:
        return Path(client.download_artifacts(run_id, name)).read_text()
    except (MlflowException, OSError):
        return None


def read_sweep_record(uri: str, sweep_name: str) -> SweepRecord:
    """Everything the store holds of sweep ``sweep_name`` (reads only). TrackingError (one line) when
    the store does not exist, cannot be reached, has no such sweep, or no runs for it."""
    check_store(uri)
    if not store_exists(uri):
        raise TrackingError(f"tracking store {uri} does not exist (no sweep was run with it)")
    client = _client(uri)
    try:
        experiment = client.get_experiment_by_name(sweep_name)
    except MlflowException as e:
        raise TrackingError(f"tracking store {uri}: {str(e).splitlines()[0]}") from None
    if experiment is None or experiment.lifecycle_stage != "active":
        known = ", ".join(list_sweeps(uri)) or "none"
        raise TrackingError(f"unknown sweep '{sweep_name}' in {uri}; sweeps there: {known}")
    parents = _search_all(client, experiment.experiment_id, "tags.kind = 'sweep'")
    parent = parents[0] if parents else None
    runs: List[RunRecord] = []
    seen = set()
    for run in _search_all(client, experiment.experiment_id, "tags.kind = 'trial'"):
        key = run.data.tags.get("trial_key")
        if not key or key in seen:
            continue
        seen.add(key)
        runs.append(RunRecord(run_id=run.info.run_id, tags=dict(run.data.tags),
                              params={k: _decode_param(v) for k, v in run.data.params.items()},
                              metrics=dict(run.data.metrics)))
    manifest: List[dict] = []
    sweep_yaml = None
    if parent is not None:
        text = _parent_text(client, parent.info.run_id, "trials.json")
        try:
            manifest = json.loads(text) if text else []
        except ValueError:
            manifest = []
        sweep_yaml = _parent_text(client, parent.info.run_id, "sweep.yaml")
    if not runs:
        raise TrackingError(f"sweep '{sweep_name}' has no trial runs in {uri}; run it first "
                            f"(python -m orchestrator run sweeps/{sweep_name}.yaml)")
    return SweepRecord(name=sweep_name, uri=uri, experiment_id=experiment.experiment_id,
                       parent_run_id=parent.info.run_id if parent else None,
                       parent_tags=dict(parent.data.tags) if parent else {}, manifest=manifest,
                       sweep_yaml=sweep_yaml, runs=runs)


def log_report(uri: str, run_id: str, directory: Path, artifact_path: str = "report") -> None:
    """Log the files of a sweep's report folder as artifacts of its parent run."""
    _client(uri).log_artifacts(run_id, str(directory), artifact_path)
