"""A sweep as the report reads it: every trial run's tags, params and metrics (reads only), and the
report's files logged back on the sweep's parent run."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .state import DEFAULT_VARIANT, list_sweeps, parent_of, variants_of
from .store import TrackingError, check_store, mlflow_client, search_all, store_exists


@dataclass
class RunRecord:
    """One child (trial) run as the report needs it."""
    run_id: str
    tags: Dict[str, str]
    params: Dict[str, Any]  # the flattened resolved config, values decoded from their JSON text
    metrics: Dict[str, float]  # latest value of each metric
    ap_curve: List[Tuple[int, float]] = field(default_factory=list)  # (iteration, AP), if eval.every > 0


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
    variant: str = DEFAULT_VARIANT  # which run of the sweep file the parent is (sweep.variant_name)
    declaration: Optional[dict] = None  # parent artifact declaration.json (tables and claims), if logged


def _decode_param(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _ap_curve(client: MlflowClient, run_id: str, params: Dict[str, Any]) -> List[Tuple[int, float]]:
    """The run's AP by iteration (the evaluations during training, then the final one; the latest value
    at each step: a re-evaluation replaces the final one). Read only for runs that evaluated during
    training (param eval.every > 0): a sweep of 1,000 single-point runs costs no extra reads."""
    if not isinstance(params.get("eval.every"), int) or params["eval.every"] <= 0:
        return []
    latest: Dict[int, Tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, "AP"):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:
            latest[m.step] = (m.timestamp, float(m.value))
    return [(step, value) for step, (_, value) in sorted(latest.items())]


def _parent_text(client: MlflowClient, run_id: str, name: str) -> Optional[str]:
    try:
        return Path(client.download_artifacts(run_id, name)).read_text()
    except (MlflowException, OSError):
        return None


def read_sweep_record(uri: str, sweep_name: str, variant: Optional[str] = None) -> SweepRecord:
    """Everything the store holds of sweep ``sweep_name``, as its ``variant``'s parent run lists it
    (None: the default variant, else the only one the store holds; reads only). TrackingError (one line) when the store does not exist, cannot be reached, has no
    such sweep or variant, or no runs for it."""
    check_store(uri)
    if not store_exists(uri):
        raise TrackingError(f"tracking store {uri} does not exist (no sweep was run with it)")
    client = mlflow_client(uri)
    try:
        experiment = client.get_experiment_by_name(sweep_name)
    except MlflowException as e:
        raise TrackingError(f"tracking store {uri}: {str(e).splitlines()[0]}") from None
    if experiment is None or experiment.lifecycle_stage != "active":
        known = ", ".join(list_sweeps(uri)) or "none"
        raise TrackingError(f"unknown sweep '{sweep_name}' in {uri}; sweeps there: {known}")
    parents = search_all(client, experiment.experiment_id, "tags.kind = 'sweep'")
    if variant is None:  # the default run of the file, else the only variant there is
        found = variants_of(parents)
        variant = DEFAULT_VARIANT if DEFAULT_VARIANT in found or len(found) != 1 else found[0]
    parent = parent_of(parents, variant)
    if parents and parent is None:
        raise TrackingError(f"sweep '{sweep_name}' has no run of variant '{variant}' in {uri}; its variants: "
                            + "; ".join(f"'{v}'" for v in variants_of(parents)))
    runs: List[RunRecord] = []
    seen = set()
    for run in search_all(client, experiment.experiment_id, "tags.kind = 'trial'"):
        key = run.data.tags.get("trial_key")
        if not key or key in seen:
            continue
        seen.add(key)
        params = {k: _decode_param(v) for k, v in run.data.params.items()}
        runs.append(RunRecord(run_id=run.info.run_id, tags=dict(run.data.tags), params=params,
                              metrics=dict(run.data.metrics), ap_curve=_ap_curve(client, run.info.run_id, params)))
    manifest: List[dict] = []
    sweep_yaml = declaration = None
    if parent is not None:
        text = _parent_text(client, parent.info.run_id, "trials.json")
        try:
            manifest = json.loads(text) if text else []
        except ValueError:
            manifest = []
        sweep_yaml = _parent_text(client, parent.info.run_id, "sweep.yaml")
        declaration = _parent_text(client, parent.info.run_id, "declaration.json")
    if not runs:
        raise TrackingError(f"sweep '{sweep_name}' has no trial runs in {uri}; run it first "
                            f"(python -m orchestrator run sweeps/{sweep_name}.yaml)")
    return SweepRecord(name=sweep_name, uri=uri, experiment_id=experiment.experiment_id,
                       parent_run_id=parent.info.run_id if parent else None,
                       parent_tags=dict(parent.data.tags) if parent else {}, manifest=manifest,
                       sweep_yaml=sweep_yaml, runs=runs, variant=variant or DEFAULT_VARIANT,
                       declaration=json.loads(declaration) if declaration else None)


def log_report(uri: str, run_id: str, directory: Path, artifact_path: str = "report") -> None:
    """Log the files of a sweep's report folder as artifacts of its parent run."""
    mlflow_client(uri).log_artifacts(run_id, str(directory), artifact_path)
