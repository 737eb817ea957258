"""Everything Ray: the only module of the project that imports it.

``run_trials`` runs a list of trials as one Ray Tune experiment: a function trainable calls
``retina.train.fit`` on whichever node Ray places it, reports metrics every log interval and a
checkpoint every time fit writes one; a driver-side Tune callback forwards each event to listeners
(the MLflow tracker and the live view), so only the driver ever writes to the tracking store.

Ray's reporting API has been renamed several times; it is used only through :func:`_report` and
:func:`_restored_checkpoint` below (``ray.tune.report`` / ``ray.tune.get_checkpoint`` in Ray 2.60),
and in data-parallel workers through :func:`_train_worker` (``ray.train.report`` /
``get_checkpoint`` / ``get_context``, Ray Train V2).

Resuming: a trial that Tune retries (``FailureConfig(max_failures)``: a raised error, a lost node)
restarts from the checkpoint Tune restores; a trial that a killed driver left behind restarts, in a
new driver, from the checkpoint path the driver passes in (``resume_from``, read from MLflow).

Data-parallel trials (``Resources.workers_per_trial`` > 1; by default a trial that asks for more than
one GPU gets one worker per GPU): the Tune trial becomes a small driver that runs Ray Train's
``TorchTrainer`` (Train V2) with one worker per process (NCCL on GPUs, gloo on CPUs) and waits for
it; every worker calls ``retina.train.fit``, which trains data-parallel in the initialized process
group (``retina/distributed.py``). Workers report collectively (``ray.train.report``), rank 0
attaches the checkpoint, and a Train callback hands rank 0's reports to the Tune trial, so the
driver-side listeners receive the same events (start, progress, checkpoint, final) as from a
one-process trial; the checkpoint's location travels in the "checkpoint" event (Tune itself holds
no checkpoint of such a trial). A Tune retry starts the Train run again under the same name and
storage path, which Ray Train restores from its latest checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol, Sequence

import ray
from ray import tune

from retina.paths import PACKAGE_DIR as RETINA_DIR, working_dir

from .resource_plan import Cluster, Resources, RunnerError, plan_resources, trial_threads  # noqa: F401

ORCHESTRATOR_DIR = Path(__file__).resolve().parent
CHECKPOINT_META = "trial_checkpoint.json"  # beside checkpoint.pt: {"iteration", "trial_key"}
TEXT_RESULT_KEYS = ("status", "eval_summary", "device", "precision", "backbone_init", "backbone_weights_sha256")
DATA_PARALLEL_DRIVER_MEMORY = 256 * 2**20  # bytes the Tune trial of a data-parallel trial reserves


# ----------------------------------------------------------------------------------------------
# Ray's trial-side API, behind one function each


def _report(metrics: Dict[str, Any], checkpoint_dir: Optional[str] = None) -> None:
    """Report ``metrics`` (and the checkpoint directory, which Tune copies to storage) to the driver."""
    checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    tune.report(metrics, checkpoint=checkpoint)


def _restored_checkpoint() -> Optional[Any]:
    """The checkpoint Tune restored this trial from (after a failure), or None."""
    return tune.get_checkpoint()


def _checkpoint_at(uri: str) -> Any:
    """A checkpoint directory at a local path or a storage URI (s3://, gs://, ...)."""
    return tune.Checkpoint(uri)


def fetch_checkpoint(uri: str, directory: Path) -> None:
    """Copy the checkpoint directory at ``uri`` (a local path or a storage URI) into ``directory``."""
    _checkpoint_at(uri).to_directory(str(directory))


# ----------------------------------------------------------------------------------------------
# the trainable (runs in a Ray worker)


def _device_name(cfg) -> str:
    import torch

    from retina.engine.trainer import resolve_device

    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def _run_fit(key: str, spec: Dict[str, Any], report, restored, device: str, restored_by: str) -> None:
    """The trial's work, in a Tune trial or in each worker of a data-parallel trial: resume (from
    ``restored``, else the spec's ``resume_from``), report start, fit with progress and checkpoint
    reports, report the final result. ``report(metrics, checkpoint_dir=None)``."""
    from retina import config as config_lib
    from retina.train import fit

    cfg = config_lib.from_container(spec["config"])
    workdir = tempfile.mkdtemp(prefix=f"retina-{key}-")
    try:
        resumed_from, resume_path, start_iteration = None, None, 0
        source = restored if restored is not None else (
            _checkpoint_at(spec["resume_from"]) if spec.get("resume_from") else None)
        if source is not None:
            source.to_directory(workdir)
            meta = json.loads((Path(workdir) / CHECKPOINT_META).read_text())
            resume_path = str(Path(workdir) / "checkpoint.pt")
            start_iteration = int(meta["iteration"])
            resumed_from = restored_by if restored is not None else spec["resume_from"]
        report({"event": "start", "start_iteration": start_iteration, "device": device,
                "host": socket.gethostname(), "resumed_from": resumed_from or ""})

        def on_metrics(metrics: Dict[str, Any]) -> None:
            if "iteration" in metrics and "loss" in metrics:  # not fit's final summary
                report({"event": "progress", **metrics})
            elif "iteration" in metrics and "AP" in metrics:  # an evaluation during training (eval.every)
                report({"event": "eval", **metrics})

        def on_checkpoint(path: str, iteration: int) -> None:
            folder = Path(path).parent
            if Path(path).is_file():  # data-parallel: rank 0 only
                (folder / CHECKPOINT_META).write_text(json.dumps({"iteration": iteration, "trial_key": key}))
            report({"event": "checkpoint", "iteration": iteration}, checkpoint_dir=str(folder))

        result = fit(cfg, on_metrics=on_metrics, on_checkpoint=on_checkpoint, checkpoint_dir=workdir,
                     resume_from=resume_path)
        final = {k: v for k, v in result.items()
                 if k in TEXT_RESULT_KEYS or (isinstance(v, (int, float)) and not isinstance(v, bool))}
        final["eval_summary"] = str(result.get("eval_summary", ""))
        report({"event": "final", **final})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def train_trial(config: Dict[str, Any], specs: Dict[str, Dict[str, Any]],
                parallel: Optional[Dict[str, Any]] = None) -> None:
    """One trial: ``config["trial_key"]`` selects its spec {config, resume_from}; fit runs to the end.

    Reports, in order: {"event": "start"}, {"event": "progress", ...} every log interval,
    {"event": "eval", iteration, AP, AP50, AP75} every ``eval.every`` iterations,
    {"event": "checkpoint", "iteration"} with each checkpoint, and {"event": "final", ...}.
    A diverged run is a normal result (status "diverged"); an exception fails the trial.
    ``parallel`` (see :func:`run_trials`): {"workers" > 1, ...} runs it data-parallel through Ray
    Train, whose rank 0 reports the same events (the checkpoint event then carries "checkpoint_uri").
    """
    from retina import config as config_lib

    key = config["trial_key"]
    spec = specs[key]
    if parallel and parallel["workers"] > 1:
        _train_data_parallel(key, spec, parallel)
        return
    cfg = config_lib.from_container(spec["config"])
    _run_fit(key, spec, _report, _restored_checkpoint(), _device_name(cfg), "tune retry")


# ----------------------------------------------------------------------------------------------
# data-parallel trials: Ray Train inside the Tune trial


def _train_data_parallel(key: str, spec: Dict[str, Any], parallel: Dict[str, Any]) -> None:
    """Run the trial as a Ray Train ``TorchTrainer`` of ``parallel["workers"]`` workers and wait for it.

    The Train run is named after the trial key under ``<storage>/<experiment>/train``, so a Tune retry
    of this trial (same experiment) restores it from its latest checkpoint; a new driver (new
    experiment) resumes from the spec's ``resume_from`` instead."""
    import ray.train
    from ray.train.torch import TorchTrainer

    workers, use_gpu = int(parallel["workers"]), bool(parallel["use_gpu"])
    per_worker = {"CPU": float(parallel["cpus_per_worker"])}
    if use_gpu:
        per_worker["GPU"] = 1.0
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"trial_key": key, "spec": spec},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=key, storage_path=f"{parallel['storage_path'].rstrip('/')}/{parallel['experiment']}/train",
            callbacks=[_rank_zero_to_tune()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Tune retries the whole trial (FailureConfig of the Tuner), so the listeners see each retry
            failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    trainer.fit()


def _train_worker(loop_config: Dict[str, Any]) -> None:
    """One worker of a data-parallel trial (a Ray Train worker; its process group is initialized)."""
    import ray.train
    import torch.distributed as dist

    from retina import config as config_lib

    key, spec = loop_config["trial_key"], loop_config["spec"]
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()

    def report(metrics: Dict[str, Any], checkpoint_dir: Optional[str] = None) -> None:
        # collective: every worker reports each event; rank 0's metrics reach Tune, with its checkpoint
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir and rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)

    device = f"{world} x {_device_name(config_lib.from_container(spec['config']))} ({dist.get_backend()})"
    _run_fit(key, spec, report, ray.train.get_checkpoint(), device, "train restore")


def _rank_zero_to_tune():
    """A Ray Train callback (it runs in the Train controller) that hands rank 0's reports to the Tune
    trial that started the run, adding the location of a reported checkpoint as "checkpoint_uri"."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class RankZeroToTune(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            first = dict(metrics[0])  # rank 0's
            if checkpoint is not None:
                first["checkpoint_uri"] = _checkpoint_uri(checkpoint)
            super().after_report(run_context, [first], checkpoint)

    return RankZeroToTune()


# ----------------------------------------------------------------------------------------------
# driver side


class TrialListener(Protocol):
    def trial_started(self, key: str) -> None: ...
    def trial_running(self, key: str, info: Dict[str, Any]) -> None: ...
    def trial_progress(self, key: str, metrics: Dict[str, Any]) -> None: ...
    def trial_eval(self, key: str, metrics: Dict[str, Any]) -> None: ...
    def trial_checkpoint(self, key: str, path: str, iteration: int) -> None: ...
    def trial_finished(self, key: str, result: Dict[str, Any]) -> None: ...
    def trial_failed(self, key: str, error: str) -> None: ...
    def trial_retrying(self, key: str, error: str) -> None: ...
    def trial_interrupted(self, key: str) -> None: ...


class _Forward(tune.Callback):
    """Tune callback (driver process): turns Tune's trial events into listener calls."""

    def __init__(self, listeners: Sequence[TrialListener], stop: Optional[Callable[[], bool]] = None):
        self.listeners = list(listeners)
        self.stop = stop  # the driver asked the sweep to stop: trials ending now are interrupted
        self.final: Dict[str, Dict[str, Any]] = {}
        self.checkpoint_iteration: Dict[str, int] = {}
        self.ended: set = set()
        self.started: set = set()

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into the experiment state (tuner.pkl). The listeners live in
        # this driver only (an MLflow client, a terminal); a restored copy has none.
        return {**self.__dict__, "listeners": [], "stop": None}

    def stopping(self) -> bool:
        return bool(self.stop and self.stop())

    def _each(self, method: str, *args) -> None:
        for listener in self.listeners:
            getattr(listener, method)(*args)

    @staticmethod
    def _key(trial) -> str:
        return trial.config["trial_key"]

    def on_trial_start(self, iteration, trials, trial, **info):
        key = self._key(trial)
        if key not in self.started:  # a Tune retry restarts the same trial: one start per trial
            self.started.add(key)
            self._each("trial_started", key)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key, event = self._key(trial), result.get("event")
        if event == "start":
            self._each("trial_running", key, {k: result.get(k) for k in
                                              ("start_iteration", "device", "host", "resumed_from")})
        elif event == "progress":
            self._each("trial_progress", key, {k: v for k, v in result.items() if k != "event"})
        elif event == "eval":
            self._each("trial_eval", key, {k: result[k] for k in ("iteration", "AP", "AP50", "AP75", "eval_s")
                                          if k in result})
        elif event == "checkpoint":
            self.checkpoint_iteration[key] = int(result["iteration"])
            if result.get("checkpoint_uri"):  # a data-parallel trial: Ray Train stored it, Tune holds none
                self._each("trial_checkpoint", key, result["checkpoint_uri"], int(result["iteration"]))
        elif event == "final":
            self.final[key] = {k: v for k, v in result.items() if k != "event"}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        key = self._key(trial)
        self._each("trial_checkpoint", key, _checkpoint_uri(checkpoint), self.checkpoint_iteration.get(key, 0))

    def on_trial_complete(self, iteration, trials, trial, **info):
        key = self._key(trial)
        if key in self.final:
            self.ended.add(key)
            self._each("trial_finished", key, self.final[key])
        elif not self.stopping():  # stopped by the driver: interrupted, resumed by the next run
            self.ended.add(key)
            self._each("trial_failed", key, "the trial ended without a final result")

    def on_trial_recover(self, iteration, trials, trial, **info):
        # FailureConfig: the trial raised (or lost its node) and restarts from its latest checkpoint
        self._each("trial_retrying", self._key(trial), _error_text(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        key = self._key(trial)
        self.ended.add(key)
        self._each("trial_failed", key, _error_text(trial))


def _checkpoint_uri(checkpoint) -> str:
    fs = getattr(checkpoint, "filesystem", None)
    kind = getattr(fs, "type_name", "local")
    return checkpoint.path if kind == "local" else f"{kind}://{checkpoint.path}"


def _error_text(trial) -> str:
    """The latest error of ``trial``: Tune appends each to the trial's local error file
    ("Failure # N (occurred at ...)" then the traceback); the synced copy may lag behind."""
    text = ""
    try:
        path = trial.error_file
        if path and os.path.isfile(path):
            text = Path(path).read_text(errors="replace")
            text = re.split(r"^Failure # \d+.*$", text, flags=re.M)[-1].strip()
        if not text:
            error = trial.get_error()
            text = str(error) if error else ""
    except Exception:  # noqa: BLE001 - an unreadable error file must not fail the sweep
        pass
    return text or f"trial {trial.trial_id} failed (no error text; see {trial.path})"


@dataclass
class TrialSpec:
    key: str
    config: Dict[str, Any]  # resolved config as a plain container
    resume_from: Optional[str] = None  # checkpoint path / URI from a previous driver


def check_address(address: Optional[str], timeout_s: float = 3.0) -> Optional[str]:
    """The host:port of the cluster to join (None: start a local Ray); unreachable -> RunnerError.

    Opens a TCP connection to the cluster's GCS with a short timeout: nothing is started or written.
    """
    if not address or address == "local":
        return None
    raw = address
    if address.startswith("ray://"):
        host_port = address[len("ray://"):]
    else:
        try:
            from ray._private.services import canonicalize_bootstrap_address

            host_port = canonicalize_bootstrap_address(address)
        except Exception as e:  # noqa: BLE001 - "auto" with no cluster, or a malformed address
            raise RunnerError(f"cannot find the Ray cluster at {raw!r} ({str(e).splitlines()[0][:160]}); "
                              "start one with `ray start --head` or drop --address / RAY_ADDRESS") from None
        if host_port is None:
            return None
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise RunnerError(f"Ray address {raw!r} is not of the form host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise RunnerError(f"cannot reach the Ray cluster at {raw} ({e.strerror or e}); start it with "
                          "`ray start --head` or drop --address / RAY_ADDRESS") from None
    return address


def default_storage() -> Path:
    """Checkpoints and Tune's experiment state: ``runs/ray`` in the working directory."""
    return working_dir("runs", "ray")


_EXCLUDES = ["__pycache__", "*.pyc"]  # left out of the packages shipped to a cluster's workers


def start_ray(address: Optional[str], verbose: bool = False) -> Cluster:
    """Join the cluster at ``address`` or start a local Ray in this process (~4 s); reuse one that
    is already initialized (tests start one per session)."""
    started = False
    if not ray.is_initialized():
        common = dict(logging_level=logging.INFO if verbose else logging.ERROR, log_to_driver=verbose,
                      include_dashboard=False, configure_logging=True)
        if address:
            # Workers elsewhere need the code: ship the two packages (with their profiles and sweep
            # files) as Ray py_modules, whether they run from a checkout or are installed here. Local
            # workers find them on PYTHONPATH.
            runtime_env = {"py_modules": [str(RETINA_DIR), str(ORCHESTRATOR_DIR)], "excludes": _EXCLUDES}
            try:
                ray.init(address=address, runtime_env=runtime_env, **common)
            except Exception as e:  # noqa: BLE001 - reachable but refused: auth, version mismatch, ...
                raise RunnerError(_connect_error(address, e)) from None
        else:
            path = os.pathsep.join(p for p in (str(RETINA_DIR.parent), os.environ.get("PYTHONPATH", "")) if p)
            # address="local": a new Ray of our own, even if `ray start` left one running here.
            ray.init(address="local", runtime_env={"env_vars": {"PYTHONPATH": path}}, **common)
        started = True
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
    node_gpus = [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes]
    return Cluster(address=address, started_here=started, cpus=sum(node_cpus), gpus=sum(node_gpus),
                   node_cpus=node_cpus, node_gpus=node_gpus)


def _connect_error(address: str, error: BaseException) -> str:
    chain, e = [], error
    while e is not None and len(chain) < 5:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    text = "\n".join(chain)
    if "AuthenticationError" in text or "InvalidAuthToken" in text:
        return (f"the Ray cluster at {address} refused this driver (token authentication); give the driver the "
                "cluster's token (RAY_AUTH_MODE=token with ~/.ray/auth_token or RAY_AUTH_TOKEN, see Ray's token-auth "
                "docs)")
    first = " ".join(str(error).split())[:200]
    return f"cannot connect to the Ray cluster at {address} ({first})"


def stop_ray(cluster: Cluster) -> None:
    if cluster.started_here and ray.is_initialized():
        ray.shutdown()


def _trial_name(trial) -> str:
    return trial.config["trial_key"]


class _StopWhen(tune.stopper.Stopper):
    """Stops the whole experiment once ``stop()`` is true (e.g. the tracking store is gone too long)."""

    def __init__(self, stop: Callable[[], bool]):
        self.stop = stop

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return bool(self.stop())

    def __getstate__(self) -> dict:
        return {"stop": lambda: False}  # a restored copy has no driver to ask


def run_trials(name: str, specs: Sequence[TrialSpec], resources: Resources, storage_path: str, max_failures: int,
               listeners: Sequence[TrialListener], stop: Optional[Callable[[], bool]] = None) -> Dict[str, str]:
    """Run ``specs`` as one Tune experiment; returns {trial key: "ended" | "interrupted"}.

    Results reach ``listeners`` as they happen, through a driver-side Tune callback. ``stop``: asked
    between steps; once true the experiment stops and the unfinished trials are "interrupted".
    """
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    # Tune's console output is replaced by orchestrator.progress: its legacy engine at verbose=0 prints
    # nothing (the new engine still prints an experiment banner at verbose=0 in Ray 2.60).
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "60")
    for noisy in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    by_key = {s.key: {"config": s.config, "resume_from": s.resume_from} for s in specs}
    experiment = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    max_concurrent = resources.max_concurrent
    if resources.workers_per_trial > 1:
        # The Tune trial only drives the Ray Train run, whose workers reserve the CPUs and GPUs: it
        # reserves a little memory and no CPU (a CPU would be missing for the last worker on a full
        # node). Only as many trials start as have their workers' resources, so that no Train run
        # waits for another's.
        parallel = {"workers": resources.workers_per_trial, "use_gpu": resources.gpus_per_trial > 0,
                    "cpus_per_worker": resources.cpus_per_trial, "storage_path": storage_path,
                    "experiment": experiment}
        trial_resources = {"cpu": 0, "gpu": 0, "memory": DATA_PARALLEL_DRIVER_MEMORY}
        max_concurrent = resources.slots
    else:
        parallel = None
        trial_resources = {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(train_trial, specs=by_key, parallel=parallel),
                                    trial_resources)
    forward = _Forward(listeners, stop)
    tuner = tune.Tuner(
        trainable,
        param_space={"trial_key": tune.grid_search([s.key for s in specs])},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=True,
                                    trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=experiment, storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2), stop=_StopWhen(stop) if stop else None,
            callbacks=[forward], verbose=0, log_to_file=True),
    )
    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass
    outcome = {}
    for s in specs:
        if s.key in forward.ended:
            outcome[s.key] = "ended"
        else:
            outcome[s.key] = "interrupted"
            if s.key in forward.started:
                for listener in listeners:
                    listener.trial_interrupted(s.key)
    return outcome


def checkpoint_exists(uri: str) -> bool:
    """Whether a recorded checkpoint directory is still there (local paths only; URIs are trusted)."""
    if "://" in uri:
        return True
    return (Path(uri) / CHECKPOINT_META).is_file()
