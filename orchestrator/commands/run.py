"""``python -m orchestrator run SWEEP``: every trial of a sweep that is not done yet, on Ray Tune, in MLflow.

Every mistake a user can make (a bad sweep file or override, an unknown profile, a missing dataset or
weights file, an unreachable Ray cluster or tracking server, resources no node has) is found before
any trial starts or anything is written to MLflow (:func:`preflight`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from retina.config import ConfigError

from ..errors import EXIT_INTERRUPTED, EXIT_TRACKING_OUTAGE, EXIT_TRIAL_FAILED, fail
from ..listing import dry_run_listing
from ..sweep import Sweep, distinct_data_configs, load_sweep


def _preflight_errors() -> tuple:
    """Exception types that mean "the user asked for something that cannot work". Looked up among
    the modules already imported (retina.data imports torch: a dry run should not pay for that)."""
    errors: List[type] = [ConfigError]
    for module, name in (("retina.data", "DataError"), ("orchestrator.tracking", "TrackingError"),
                         ("orchestrator.runner", "RunnerError"), ("orchestrator.outbox", "OutboxError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def check_datasets(sweep: Sweep, generate_synthetic: bool = True) -> None:
    """Open each distinct dataset of the sweep once in the driver (annotations, image files), so a
    bad one is an error now rather than in every trial. Synthetic data is generated into its cache
    here, once, instead of by each trial."""
    configs = [c for c in distinct_data_configs(sweep) if c.data.source != "synthetic" or generate_synthetic]
    if not configs:
        return
    from retina.data import DataError
    from retina.data.loaders import build_datasets

    for cfg in configs:
        try:
            build_datasets(cfg, verify_files=True)
        except DataError as e:
            raise ConfigError(f"{sweep.path}: dataset: {e}") from None
        except OSError as e:  # e.g. a synthetic-data cache folder that cannot be written
            raise ConfigError(f"{sweep.path}: dataset: {e.strerror or e}: {e.filename or ''}") from None


def _storage_path(value: Optional[str]) -> str:
    from ..runner import default_storage

    if not value:
        return str(default_storage())
    if "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--storage-path {value}: exists and is not a folder")
    return str(path)


def check_weights(sweep: Sweep) -> None:
    """Resolve each distinct backbone weights setting of the sweep once, in the driver: a torchvision
    name is downloaded into torch hub's cache now (where there is internet), so that weights that
    cannot be had are one line before any trial starts, never a failure in every trial."""
    from retina.modeling.backbone_weights import resolve

    done = set()
    for t in sweep.trials:
        m = t.config.model
        what = (int(m.depth), str(m.backbone_weights), str(t.config.pretrain) if m.backbone_weights == "synthetic" else "")
        if what not in done:
            done.add(what)
            resolve(str(m.backbone_weights), int(m.depth), pretrain=t.config.pretrain)


def describe_backbones(sweep: Sweep) -> List[str]:
    """One line per distinct backbone initialization of the sweep (what --dry-run prints)."""
    from retina.modeling.backbone_weights import describe_spec

    seen = sorted({(int(t.config.model.depth), str(t.config.model.backbone_weights), str(t.config.model.backbone_norm),
                    int(t.config.model.freeze_at)) for t in sweep.trials})
    return [f"backbone: ResNet-{depth}, {describe_spec(spec, depth)}; {norm}, freeze_at {freeze}"
            for depth, spec, norm, freeze in seen]


def rerun_keys(sweep: Sweep, state, what: List[str]) -> List[str]:
    """The trials ``--rerun`` names: ``failed``, ``diverged``, ``all`` (every trial with a run) or trial
    keys of the sweep; a key the sweep does not have is bad input."""
    keys = {t.key for t in sweep.trials}
    out: List[str] = []
    for item in what:
        if item in ("failed", "diverged"):
            out += [k for k, r in state.trials.items() if k in keys and r.status == item]
        elif item == "all":
            out += [k for k in state.trials if k in keys]
        elif item in keys:
            out += [item] if item in state.trials else []
        else:
            raise ConfigError(f"--rerun {item}: not a trial key of {sweep.name} nor one of failed, diverged, all; "
                              f"see the keys with --dry-run")
    return sorted(set(out))


def cmd_run(args: argparse.Namespace) -> int:
    begun = time.monotonic()
    try:
        sweep = load_sweep(args.sweep, profile=args.profile, overrides=args.set, check_paths=True)
        _check_numbers(args)
        if args.dry_run:
            check_datasets(sweep, generate_synthetic=False)  # (a weights file was checked by load_sweep)
            print(dry_run_listing(sweep))
            for line in describe_backbones(sweep):
                print(line)
            r = sweep.resources
            cpus = args.cpus_per_trial or r.cpus_per_trial
            gpus = args.gpus_per_trial if args.gpus_per_trial is not None else r.gpus_per_trial
            print(f"per trial: {f'{cpus:g}' if cpus else 'default'} CPU, "
                  f"{f'{gpus:g}' if gpus is not None else 'default'} GPU; at most "
                  f"{args.max_concurrent or r.max_concurrent or 'as many as fit'} at once")
            print("dry run: nothing started, nothing written")
            return 0
        from .. import runner, tracking

        tracking.ensure_quiet()
        uri = args.tracking_uri or tracking.default_tracking_uri()
        tracking.check_store(uri)
        address = runner.check_address(args.address or os.environ.get("RAY_ADDRESS"))
        storage = _storage_path(args.storage_path)
        state = tracking.read_state(uri, sweep.name, sweep.variant)
        other = tracking.live_driver(state)
        if other:
            raise tracking.TrackingError(f"sweep {sweep.name} is being run right now by driver {other} (host:pid); "
                                         "wait for it or stop it, then run again")
        rerun = rerun_keys(sweep, state, args.rerun or [])
        journal = journal_path(storage, sweep.name, uri)
        events = None
        if journal.is_file():  # writes a run stopped by a tracking outage could not record
            from ..outbox import read_journal

            events = read_journal(journal)  # read first: a bad journal is bad input, before any work
        if any(not state.done(t.key) or t.key in rerun for t in sweep.trials):
            check_datasets(sweep)  # before any trial starts; skipped when there is nothing to run
            check_weights(sweep)
    except Exception as e:  # noqa: BLE001 - bad input is reported in one line; anything else propagates
        if isinstance(e, _preflight_errors()):
            return fail(e)
        raise

    if events is not None:
        from ..outbox import replay_journal

        count = replay_journal(journal, tracking.SweepTracker(uri, sweep, state), events)
        print(f"tracking: recorded {count} writes that the last run kept in {journal}")
        state = tracking.read_state(uri, sweep.name, sweep.variant)

    superseded = {k: state.trials.pop(k) for k in rerun}  # retrained from scratch in a run of their own
    todo = [t for t in sweep.trials if not state.done(t.key)]
    skipped = len(sweep.trials) - len(todo)
    if not todo:
        print(f"sweep {sweep.name}: all {len(sweep.trials)} trials are done already ({skipped} skipped); "
              f"nothing to run. Results: {tracking.describe_store(uri)}")
        print(f"sweep done: 0 finished, {skipped} skipped, 0 diverged, 0 failed; wall "
              f"{time.monotonic() - begun:.1f} s; utilization - (nothing ran)")
        return 0

    try:
        cluster = runner.start_ray(address, verbose=args.verbose)
    except runner.RunnerError as e:
        return fail(e)
    try:
        r = sweep.resources
        try:
            resources = runner.plan_resources(
                [t.config for t in todo], cluster,
                cpus_per_trial=args.cpus_per_trial or r.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial if args.gpus_per_trial is not None else r.gpus_per_trial,
                max_concurrent=args.max_concurrent or r.max_concurrent, num_trials=len(todo),
                workers_per_trial=args.workers_per_trial)
        except runner.RunnerError as e:
            return fail(e)
        return _execute(args, sweep=sweep, todo=todo, skipped=skipped, state=state, uri=uri, storage=storage,
                        journal=journal, cluster=cluster, resources=resources, begun=begun, superseded=superseded)
    finally:
        runner.stop_ray(cluster)


def _execute(args, *, sweep, todo, skipped, state, uri, storage, journal, cluster, resources, begun,
             superseded) -> int:
    """From here on things are written: MLflow runs, checkpoints."""
    from .. import runner, tracking
    from ..outbox import Outbox, write_journal
    from ..progress import ProgressView, format_duration

    from omegaconf import OmegaConf

    specs = []
    resumed = []
    for t in todo:
        # torch threads = the trial's CPUs (train.num_threads is not part of the trial key)
        threads = runner.trial_threads(resources.cpus_per_trial, t.config.data.num_workers)
        train = {"num_threads": threads}
        if 0 < resources.gpus_per_trial < 1:  # trials share a GPU: each keeps to its share of its memory
            train["cuda_memory_fraction"] = float(resources.gpus_per_trial)
        t.config = OmegaConf.merge(t.config, {"train": train})
        record = state.trials.get(t.key)
        resume_from = None
        if record is not None and record.checkpoint:
            if runner.checkpoint_exists(record.checkpoint):
                resume_from = record.checkpoint
                resumed.append(f"{t.key} at iteration {record.checkpoint_iteration}")
            else:
                print(f"{t.key}  {t.label}: checkpoint {record.checkpoint} is gone; starting over")
        specs.append(runner.TrialSpec(t.key, t.container(), resume_from))

    tracker = tracking.SweepTracker(uri, sweep, state, entry_point=_entry_point(args),
                                    gpus_per_trial=resources.gpus_per_trial)
    tracker.open()  # the store answered check_store a moment ago; from here on writes go through the outbox
    if superseded:
        tracker.supersede({k: r.run_id for k, r in superseded.items()}, " ".join(args.rerun))
        print(f"--rerun {' '.join(args.rerun)}: {len(superseded)} trials retrain from scratch in new runs; their "
              "old runs stay, tagged superseded")
    where = f"Ray cluster {cluster.address}" if cluster.address else "local Ray"
    print(f"sweep {sweep.name} ({sweep.path}), profile {sweep.profile}, variant {sweep.variant}: {len(sweep.trials)} trials, "
          f"{skipped} done before (skipped), {len(todo)} to run"
          + (f" ({len(resumed)} resume from a checkpoint)" if resumed else ""))
    per = (f"{resources.workers_per_trial} data-parallel workers of {resources.cpus_per_trial:g} CPU and "
           f"{resources.gpus_per_trial / resources.workers_per_trial:g} GPU" if resources.workers_per_trial > 1
           else f"{resources.cpus_per_trial:g} CPU, {resources.gpus_per_trial:g} GPU")
    print(f"  {where}: {cluster.cpus:g} CPUs, {cluster.gpus:g} GPUs; per trial {per}; {resources.slots} at once")
    print(f"  tracking: {tracking.describe_store(uri)}; checkpoints: {storage}")
    if len(cluster.node_cpus) > 1 and "://" not in storage:
        print(f"  note: {storage} is a local path; every node of the cluster must reach it (a shared file "
              "system), else pass a URI to --storage-path")
    view = ProgressView(todo, skipped=skipped, slots=resources.slots)
    outbox = Outbox(tracker, tracking.is_outage, f"the tracking store {uri}", args.tracking_deadline, say=view.note)
    started = time.monotonic()
    outcome = {}
    try:
        outcome = runner.run_trials(sweep.name, specs, resources, storage, args.max_failures, [outbox, view],
                                    stop=lambda: outbox.expired)
    finally:
        wall = time.monotonic() - started
        interrupted = [k for k, v in outcome.items() if v == "interrupted"] if outcome else [s.key for s in specs]
        failed = [k for k, s in view.final_status().items() if s == "failed"]
        outbox.close("interrupted" if interrupted else "failed" if failed else "finished")
        recorded = outbox.drain()  # waits out an outage up to the deadline
        kept = outbox.shutdown()
        if kept:
            write_journal(journal, kept)
    print(view.summary(wall) + f" (total {format_duration(time.monotonic() - begun)} with Ray start-up)")
    if not recorded:
        print(f"error: the tracking store {uri} stayed unreachable past --tracking-deadline "
              f"{args.tracking_deadline:g} s; the sweep stopped and {len(kept)} writes are kept in {journal}; "
              "when the store is back, run the same command again: it records them first, then finishes the "
              "sweep from the trials' checkpoints", file=sys.stderr)
        return EXIT_TRACKING_OUTAGE
    if outbox.outages:
        print(f"tracking: {outbox.outages} outage(s) of the store survived; every buffered write was recorded")
    if interrupted:
        print(f"interrupted: {len(interrupted)} trials not finished; run the same command again to finish them")
        return EXIT_INTERRUPTED
    if failed:
        for key in failed:
            print(f"failed: {key}  {sweep.trial(key).label}: {view.rows[key].error}")
        return EXIT_TRIAL_FAILED
    return 0


def _entry_point(args: argparse.Namespace) -> str:
    """What MLflow's Source column shows for the runs of this invocation."""
    return "python -m orchestrator run " + " ".join([str(args.sweep)] + (["--profile", args.profile] if args.profile
                                                                         else []))


def journal_path(storage: str, sweep_name: str, uri: str) -> Path:
    """Where writes that a tracking outage kept from the store wait for the next run: beside the
    checkpoints when they are local, else under <project>/runs (one file per sweep and store)."""
    import hashlib

    from ..runner import default_storage

    folder = Path(storage) if "://" not in storage else default_storage().parent
    return folder / "tracking-journal" / f"{sweep_name}-{hashlib.sha1(uri.encode()).hexdigest()[:8]}.jsonl"


def _check_numbers(args: argparse.Namespace) -> None:
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial {args.cpus_per_trial:g} is out of range; expected a number > 0")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise ConfigError(f"--gpus-per-trial {args.gpus_per_trial:g} is out of range; expected a number >= 0")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent {args.max_concurrent} is out of range; expected an integer >= 1")
    if args.workers_per_trial is not None and args.workers_per_trial < 1:
        raise ConfigError(f"--workers-per-trial {args.workers_per_trial} is out of range; expected an integer >= 1")
    if args.tracking_deadline <= 0:
        raise ConfigError(f"--tracking-deadline {args.tracking_deadline:g} is out of range; expected seconds > 0")
    if args.max_failures < 0:
        raise ConfigError(f"--max-failures {args.max_failures} is out of range; expected an integer >= 0")
