"""How many CPUs and GPUs each trial takes on a Ray cluster, and how many trials run at once (pure: no
``import ray``; runner.py measures the cluster and passes it in as a :class:`Cluster`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence


class RunnerError(ValueError):
    """Ray cannot run the sweep as asked (unreachable cluster, resources it lacks); one line."""


@dataclass
class Resources:
    cpus_per_trial: float  # of each training process: the trial's, or each worker's of a data-parallel trial
    gpus_per_trial: float  # of the whole trial (a data-parallel trial: one per worker)
    max_concurrent: Optional[int]
    slots: int  # trials that can run at once on this cluster within these limits
    workers_per_trial: int = 1  # > 1: data-parallel through Ray Train, one process per worker


@dataclass
class Cluster:
    address: Optional[str]  # None: local Ray started here
    started_here: bool
    cpus: float
    gpus: float
    node_cpus: List[float] = field(default_factory=list)
    node_gpus: List[float] = field(default_factory=list)


def plan_resources(configs: Sequence[Any], cluster: Cluster, cpus_per_trial: Optional[float],
                   gpus_per_trial: Optional[float], max_concurrent: Optional[int], num_trials: int,
                   workers_per_trial: Optional[int] = None) -> Resources:
    """Per-trial CPUs and GPUs (given, else from what the configs need) and the slots they leave.

    Defaults: CPUs = max(1, train.num_threads) + data.num_workers; GPUs = 1 if the cluster has any
    and the config may use one (train.device auto or cuda), else 0. Raises RunnerError when a trial
    could never be placed.

    Data-parallel trials: ``workers_per_trial`` N > 1 (default: the number of GPUs when a trial asks
    for more than one, e.g. 8 for ``--gpus-per-trial 8``; else 1) trains each trial in N processes of
    ``cpus_per_trial`` CPUs and, with GPUs, one GPU each (``gpus_per_trial`` must then be N);
    ``train.batch_size`` stays the trial's total batch, split across the workers.
    """
    if workers_per_trial is not None and workers_per_trial > 1:
        return _plan_data_parallel(configs, cluster, cpus_per_trial, gpus_per_trial, max_concurrent, num_trials,
                                   int(workers_per_trial))
    if workers_per_trial is None and gpus_per_trial is not None and gpus_per_trial > 1 \
            and gpus_per_trial == int(gpus_per_trial):
        return _plan_data_parallel(configs, cluster, cpus_per_trial, gpus_per_trial, max_concurrent, num_trials,
                                   int(gpus_per_trial))
    wants_cuda = any(c.train.device == "cuda" for c in configs)
    may_use_gpu = any(c.train.device in ("auto", "cuda") for c in configs)
    if cpus_per_trial is None:
        cpus_per_trial = float(max(max(1, c.train.num_threads) + c.data.num_workers for c in configs))
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if cluster.gpus > 0 and may_use_gpu else 0.0
    if wants_cuda and (cluster.gpus == 0 or gpus_per_trial == 0):
        raise RunnerError("train.device='cuda' but " + ("the Ray cluster has no GPU" if cluster.gpus == 0 else
                                                        "--gpus-per-trial is 0") + "; use train.device=auto or cpu")
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise RunnerError(f"--gpus-per-trial {gpus_per_trial:g}: above 1 a trial takes whole GPUs; expected a "
                          "fraction <= 1 or an integer")
    if not any(c >= cpus_per_trial and g >= gpus_per_trial for c, g in zip(cluster.node_cpus, cluster.node_gpus)):
        raise RunnerError(f"a trial needs {cpus_per_trial:g} CPU and {gpus_per_trial:g} GPU but no node of the Ray "
                          f"cluster has that much (CPUs per node: {', '.join(f'{c:g}' for c in cluster.node_cpus)}; "
                          f"GPUs: {', '.join(f'{g:g}' for g in cluster.node_gpus)}); lower --cpus-per-trial / "
                          "--gpus-per-trial")
    slots = 0
    for c, g in zip(cluster.node_cpus, cluster.node_gpus):
        per_node = math.floor(c / cpus_per_trial + 1e-9)
        if gpus_per_trial > 0:
            per_node = min(per_node, math.floor(g / gpus_per_trial + 1e-9))
        slots += per_node
    if max_concurrent:
        slots = min(slots, max_concurrent)
    return Resources(cpus_per_trial, gpus_per_trial, max_concurrent, max(1, min(slots, num_trials)))


def _plan_data_parallel(configs: Sequence[Any], cluster: Cluster, cpus_per_worker: Optional[float],
                        gpus_per_trial: Optional[float], max_concurrent: Optional[int], num_trials: int,
                        workers: int) -> Resources:
    """plan_resources for trials of ``workers`` processes: CPUs per worker, one GPU per worker or none."""
    if cpus_per_worker is None:
        cpus_per_worker = float(max(max(1, c.train.num_threads) + c.data.num_workers for c in configs))
    if gpus_per_trial is None:
        may_use_gpu = any(c.train.device in ("auto", "cuda") for c in configs)
        gpus_per_trial = float(workers) if cluster.gpus > 0 and may_use_gpu else 0.0
    if gpus_per_trial not in (0, workers):
        raise RunnerError(f"--gpus-per-trial {gpus_per_trial:g} with {workers} workers per trial: each worker of a "
                          f"data-parallel trial takes one whole GPU; expected --gpus-per-trial {workers} or 0")
    if any(c.train.device == "cuda" for c in configs) and gpus_per_trial == 0:
        raise RunnerError("train.device='cuda' but " + ("the Ray cluster has no GPU" if cluster.gpus == 0 else
                                                        "--gpus-per-trial is 0") + "; use train.device=auto or cpu")
    small = min(c.train.batch_size for c in configs)
    if small < workers:
        raise RunnerError(f"train.batch_size={small} is smaller than the {workers} workers per trial; expected at "
                          "least one image per worker (the batch is the trial's total, split across its workers)")
    gpu_each = 1.0 if gpus_per_trial else 0.0
    # A Train run places its workers where they fit (several nodes if need be): count whole workers
    fit_workers = 0
    for c, g in zip(cluster.node_cpus, cluster.node_gpus):
        per_node = math.floor(c / cpus_per_worker + 1e-9)
        if gpu_each:
            per_node = min(per_node, math.floor(g + 1e-9))
        fit_workers += per_node
    if fit_workers < workers:
        raise RunnerError(f"a data-parallel trial needs {workers} workers of {cpus_per_worker:g} CPU and {gpu_each:g} "
                          f"GPU but the Ray cluster holds only {fit_workers} (CPUs per node: "
                          f"{', '.join(f'{c:g}' for c in cluster.node_cpus)}; GPUs: "
                          f"{', '.join(f'{g:g}' for g in cluster.node_gpus)}); lower --cpus-per-trial or the "
                          "workers per trial")
    slots = fit_workers // workers
    if max_concurrent:
        slots = min(slots, max_concurrent)
    return Resources(cpus_per_worker, gpus_per_trial, max_concurrent, max(1, min(slots, num_trials)), workers)


def trial_threads(cpus_per_trial: float, num_workers: int) -> int:
    """Torch threads for a trial: its CPUs less its DataLoader workers, at least 1."""
    return max(1, int(cpus_per_trial) - int(num_workers))
