"""The driver's MLflow writer: one experiment per sweep, a parent run, a nested child run per trial."""
from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any, Dict, List, Optional

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH, MAX_TAG_VAL_LENGTH

from retina.config import flatten, to_yaml

from ..errors import error_line
from ..sweep import Sweep, Trial, format_value
from .provenance import source_tags
from .state import SweepState
from .store import artifact_location, mlflow_client

CURVE_METRICS = ("loss_cls", "loss_box", "loss", "lr", "images_per_s", "num_foreground", "data_wait_share")
EVAL_METRICS = ("AP", "AP50", "AP75")  # by step during training (eval.every): the AP curve
FINAL_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "inference_ms", "inference_ms_batch1", "train_time_s",
                 "train_images_per_s", "eval_during_training_s")
RESULT_TAGS = ("backbone_init", "backbone_weights_sha256", "precision")  # fit's result, recorded as tags


def tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else format_value(value)
    return text if len(text) <= MAX_TAG_VAL_LENGTH else text[:MAX_TAG_VAL_LENGTH - 3] + "..."


def param_value(value: Any) -> str:
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

    def __init__(self, uri: str, sweep: Sweep, state: SweepState, version: Optional[str] = None,
                 entry_point: str = "python -m orchestrator run", gpus_per_trial: float = 0.0):
        self.uri, self.sweep, self.state = uri, sweep, state
        # MLflow's standard source tags (git commit, source, user) and the code version, on every run
        self.source = source_tags(entry_point)
        if version is not None:
            self.source["code_version"] = version
        self.version = self.source["code_version"]
        self.gpus_per_trial = float(gpus_per_trial)  # each trial's GPUs (a fraction shares one): GPU-hours
        self.client = mlflow_client(uri)
        self.experiment_id: Optional[str] = state.experiment_id
        self.parent_run_id: Optional[str] = state.parent_run_id
        self.run_ids: Dict[str, str] = {k: r.run_id for k, r in state.trials.items()}
        self.last_step: Dict[str, int] = {}
        self.last_eval_step: Dict[str, int] = {}
        self.retries: Dict[str, int] = {}

    # -- sweep ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the store, experiment and parent run if missing; mark the parent running."""
        c, sweep = self.client, self.sweep
        if self.experiment_id is None:
            try:
                self.experiment_id = c.create_experiment(
                    sweep.name, artifact_location=artifact_location(self.uri, sweep.name),
                    tags={"sweep": sweep.name, "mlflow.note.content": sweep.description or sweep.name})
            except MlflowException:  # created meanwhile by someone else
                self.experiment_id = c.get_experiment_by_name(sweep.name).experiment_id
        tags = {
            "kind": "sweep", "sweep": sweep.name, "table": ",".join(sweep.tables), "profile": sweep.profile,
            "overrides": " ".join(sweep.overrides), "sweep_file": str(sweep.path), **self.source,
            "num_trials": str(len(sweep.trials)), "num_rows": str(sweep.num_rows), "status": "running",
            "driver": f"{socket.gethostname()}:{os.getpid()}", "variant": sweep.variant,
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
        c.log_text(self.parent_run_id, json.dumps(sweep.declaration.as_dict(), indent=1), "declaration.json")

    def supersede(self, run_ids: Dict[str, str], reason: str) -> None:
        """Mark the old runs of trials that ``--rerun`` retrains: kept, but no longer the trial's run
        (kind ``trial-superseded``, so neither the driver nor the report reads them as current)."""
        when = time.strftime("%Y-%m-%d %H:%M:%S")
        for key, run_id in run_ids.items():
            self._tags(run_id, {"kind": "trial-superseded", "superseded_at": when,
                                "superseded_by": f"--rerun {reason}"})
            self.run_ids.pop(key, None)
            self.last_step.pop(key, None)
            self.last_eval_step.pop(key, None)

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
        tags = {**trial_tags(self.sweep, trial), "status": "running", **self.source,
                "gpus": format_value(self.gpus_per_trial)}
        run_id = self.run_ids.get(key)
        if run_id is None:
            run = c.create_run(self.experiment_id, run_name=f"{trial.label} [{key}]",
                               tags={"mlflow.parentRunId": self.parent_run_id})
            run_id = self.run_ids[key] = run.info.run_id
            flat = flatten(trial.config)
            params = [Param(k, param_value(v)) for k, v in sorted(flat.items())]
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

    def trial_eval(self, key: str, metrics: Dict[str, Any]) -> None:
        """AP, AP50, AP75 at the iteration evaluated (the run page's AP curve); a step logged before an
        interruption is not logged again."""
        step = int(metrics["iteration"])
        if key not in self.last_eval_step:
            history = self.client.get_metric_history(self.run_ids[key], "AP")
            self.last_eval_step[key] = max((m.step for m in history), default=0)
        if step <= self.last_eval_step[key]:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(metrics[k]), now, step) for k in EVAL_METRICS if _finite(metrics.get(k))]
        if batch:
            self.client.log_batch(self.run_ids[key], metrics=batch)
        self.last_eval_step[key] = step

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
        tags.update({k: str(result[k]) for k in RESULT_TAGS if result.get(k) not in (None, "")})
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
        items = [RunTag(k, tag_value(v)) for k, v in tags.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def _last_logged_step(self, run_id: str) -> int:
        history = self.client.get_metric_history(run_id, "loss")
        return max((m.step for m in history), default=0)


class EvaluationWriter:
    """Logs a re-evaluation (``python -m orchestrator evaluate``) on a trial's own run: the new figures at
    its final iteration, with a later timestamp, so they become the run's latest values."""

    def __init__(self, uri: str):
        self.client = mlflow_client(uri)

    def final_iteration(self, run_id: str) -> int:
        return int(self.client.get_run(run_id).data.tags.get("iterations", 0) or 0)

    def record(self, run_id: str, step: int, metrics: Dict[str, Any], overrides: str) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(metrics[k]), now, step) for k in FINAL_METRICS if _finite(metrics.get(k))]
        self.client.log_batch(run_id, metrics=batch, tags=[
            RunTag("eval_overrides", tag_value(overrides or "(none)")),
            RunTag("evaluated_at", time.strftime("%Y-%m-%d %H:%M:%S")),
            RunTag("num_val_images", str(int(metrics.get("num_val_images", 0))))])
        if metrics.get("eval_summary"):
            self.client.log_text(run_id, str(metrics["eval_summary"]), "eval_summary.txt")
