"""Command line: ``python -m orchestrator {run,status,report} ...``.

    python -m orchestrator run sweeps/alpha_gamma.yaml [--profile P] [--set key=value ...] [--dry-run]
        [--address A] [--tracking-uri U] [--storage-path S] [--max-concurrent N]
        [--cpus-per-trial C] [--gpus-per-trial G] [--workers-per-trial N] [--max-failures N]
        [--tracking-deadline S] [--verbose]
    python -m orchestrator status [SWEEP] [-v] [--tracking-uri U]
    python -m orchestrator report [SWEEP ...] [--out DIR] [--tracking-uri U] [--no-log]

Every mistake a user can make (a bad sweep file or override, an unknown profile, a missing dataset,
an unreachable Ray cluster or tracking server, resources no node has) is found before any trial
starts or anything is written to MLflow: ``error: <one line>`` on stderr, exit code 2.
Exit codes otherwise: 0 all trials done (finished or diverged), 1 some trial failed, 3 stopped because
the tracking store stayed unreachable past --tracking-deadline (its writes are kept in a journal that
the next run records first), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

from retina.config import ConfigError

from .sweep import Sweep, distinct_data_configs, dry_run_listing, load_sweep

EXIT_BAD_INPUT = 2
EXIT_TRACKING_OUTAGE = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message}\n")


# ----------------------------------------------------------------------------------------------
# checks before anything starts


def _preflight_errors() -> tuple:
    """Exception types that mean "the user asked for something that cannot work". Looked up among
    the modules already imported (retina.data imports torch: a dry run should not pay for that)."""
    errors: List[type] = [ConfigError]
    for module, name in (("retina.data", "DataError"), (f"{__package__}.tracking", "TrackingError"),
                         (f"{__package__}.runner", "RunnerError")):
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
    from retina.train import build_datasets

    for cfg in configs:
        try:
            build_datasets(cfg)
        except DataError as e:
            raise ConfigError(f"{sweep.path}: dataset: {e}") from None
        except OSError as e:  # e.g. a synthetic-data cache folder that cannot be written
            raise ConfigError(f"{sweep.path}: dataset: {e.strerror or e}: {e.filename or ''}") from None


def _storage_path(value: Optional[str]) -> str:
    from .runner import DEFAULT_STORAGE

    if not value:
        return str(DEFAULT_STORAGE)
    if "://" in value:
        return value
    path = Path(value).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--storage-path {value}: exists and is not a folder")
    return str(path)


# ----------------------------------------------------------------------------------------------
# run


def cmd_run(args: argparse.Namespace) -> int:
    begun = time.monotonic()
    try:
        sweep = load_sweep(args.sweep, profile=args.profile, overrides=args.set, check_paths=True)
        _check_numbers(args)
        if args.dry_run:
            check_datasets(sweep, generate_synthetic=False)
            print(dry_run_listing(sweep))
            r = sweep.resources
            cpus = args.cpus_per_trial or r.cpus_per_trial
            gpus = args.gpus_per_trial if args.gpus_per_trial is not None else r.gpus_per_trial
            print(f"per trial: {f'{cpus:g}' if cpus else 'default'} CPU, "
                  f"{f'{gpus:g}' if gpus is not None else 'default'} GPU; at most "
                  f"{args.max_concurrent or r.max_concurrent or 'as many as fit'} at once")
            print("dry run: nothing started, nothing written")
            return 0
        from . import runner, tracking

        tracking.ensure_quiet()
        uri = args.tracking_uri or tracking.default_tracking_uri()
        tracking.check_store(uri)
        address = runner.check_address(args.address or os.environ.get("RAY_ADDRESS"))
        storage = _storage_path(args.storage_path)
        state = tracking.read_state(uri, sweep.name)
        other = tracking.live_driver(state)
        if other:
            raise tracking.TrackingError(f"sweep {sweep.name} is being run right now by driver {other} (host:pid); "
                                         "wait for it or stop it, then run again")
        if any(not state.done(t.key) for t in sweep.trials):
            check_datasets(sweep)  # before any trial starts; skipped when there is nothing to run
    except Exception as e:  # noqa: BLE001 - bad input is reported in one line; anything else propagates
        if isinstance(e, _preflight_errors()):
            return _fail(e)
        raise

    journal = _journal_path(storage, sweep.name, uri)
    if journal.is_file():  # writes a run stopped by a tracking outage could not record
        from .outbox import OutboxError, read_journal, replay_journal

        try:
            events = read_journal(journal)  # read before the store is opened: a bad journal touches nothing
        except OutboxError as e:
            return _fail(e)
        count = replay_journal(journal, tracking.SweepTracker(uri, sweep, state), events)
        print(f"tracking: recorded {count} writes that the last run kept in {journal}")
        state = tracking.read_state(uri, sweep.name)

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
        return _fail(e)
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
            return _fail(e)
        return _execute(args, sweep, todo, skipped, state, uri, storage, journal, cluster, resources, begun)
    finally:
        runner.stop_ray(cluster)


def _execute(args, sweep, todo, skipped, state, uri, storage, journal, cluster, resources, begun) -> int:
    """From here on things are written: MLflow runs, checkpoints."""
    from . import runner, tracking
    from .outbox import Outbox, write_journal
    from .progress import ProgressView, format_duration

    from omegaconf import OmegaConf

    specs = []
    resumed = []
    for t in todo:
        # torch threads = the trial's CPUs (train.num_threads is not part of the trial key)
        threads = runner.trial_threads(resources.cpus_per_trial, t.config.data.num_workers)
        t.config = OmegaConf.merge(t.config, {"train": {"num_threads": threads}})
        record = state.trials.get(t.key)
        resume_from = None
        if record is not None and record.checkpoint:
            if runner.checkpoint_exists(record.checkpoint):
                resume_from = record.checkpoint
                resumed.append(f"{t.key} at iteration {record.checkpoint_iteration}")
            else:
                print(f"{t.key}  {t.label}: checkpoint {record.checkpoint} is gone; starting over")
        specs.append(runner.TrialSpec(t.key, t.container(), resume_from))

    tracker = tracking.SweepTracker(uri, sweep, state)
    tracker.open()  # the store answered check_store a moment ago; from here on writes go through the outbox
    where = f"Ray cluster {cluster.address}" if cluster.address else "local Ray"
    print(f"sweep {sweep.name} ({sweep.path}), profile {sweep.profile}: {len(sweep.trials)} trials, "
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
        return 130
    if failed:
        for key in failed:
            print(f"failed: {key}  {sweep.trial(key).label}: {view.rows[key].error}")
        return 1
    return 0


def _journal_path(storage: str, sweep_name: str, uri: str) -> Path:
    """Where writes that a tracking outage kept from the store wait for the next run: beside the
    checkpoints when they are local, else under <project>/runs (one file per sweep and store)."""
    import hashlib

    from .runner import DEFAULT_STORAGE

    folder = Path(storage) if "://" not in storage else DEFAULT_STORAGE.parent
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


def _fail(error: BaseException) -> int:
    message = " ".join(str(error).split("\n")).strip()
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


# ----------------------------------------------------------------------------------------------
# status


def cmd_status(args: argparse.Namespace) -> int:
    from . import tracking

    tracking.ensure_quiet()
    uri = args.tracking_uri or tracking.default_tracking_uri()
    try:
        tracking.check_store(uri)
        expected = None
        if args.sweep and (args.sweep.endswith((".yaml", ".yml")) or Path(args.sweep).is_file()):
            sweep = load_sweep(args.sweep, profile=args.profile, overrides=args.set)
            names = [sweep.name]
            expected = tracking.trials_manifest(sweep)
        elif args.sweep:
            names = [args.sweep]
        else:
            names = tracking.list_sweeps(uri)
        statuses = [tracking.sweep_status(uri, name, expected) for name in names]
    except (ConfigError, tracking.TrackingError) as e:
        return _fail(e)
    if not statuses:
        print(f"no sweeps recorded in {tracking.describe_store(uri)}")
        return 0
    for s in statuses:
        if not s.expected:
            print(f"{s.name}: no runs recorded in {tracking.describe_store(uri)}")
            continue
        done_kinds = {k: list(s.done.values()).count(k) for k in ("finished", "diverged")}
        print(f"{s.name}: {len(s.expected)} trials: {len(s.done)} done ({done_kinds['finished']} finished, "
              f"{done_kinds['diverged']} diverged), {len(s.running)} running, {len(s.interrupted)} interrupted, "
              f"{len(s.missing)} missing, {len(s.failed)} failed  [sweep run: {s.parent_status}]")
        if args.verbose:
            rows = {e["key"]: "; ".join(f"{r['table']} '{r['label']}'" for r in e.get("rows", [])) for e in s.expected}
            for title, keys in (("running", s.running), ("interrupted", s.interrupted), ("missing", s.missing),
                                ("failed", list(s.failed))):
                for key in keys:
                    extra = f": {s.failed[key]}" if key in s.failed else ""
                    print(f"  {title:<11} {key}  {rows.get(key, '')}{extra}")
    return 0


# ----------------------------------------------------------------------------------------------
# parser


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a sweep's missing trials on Ray Tune, tracked in MLflow",
                       description="Run every trial of SWEEP that is not done yet; finished trials are skipped, "
                                   "interrupted ones resume from their checkpoint.")
    p.add_argument("sweep", help="a sweep file, e.g. sweeps/alpha_gamma.yaml")
    p.add_argument("--profile", help="cpu (default), gpu or paper; overrides the sweep's profile")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides for every trial, e.g. --set train.iterations=100 loss.alpha=0.5")
    p.add_argument("--dry-run", action="store_true", help="list the trials (key, row, settings); start nothing")
    p.add_argument("--address", help="an existing Ray cluster (host:port, auto or ray://...); default: "
                                     "RAY_ADDRESS, else a local Ray started in this process")
    p.add_argument("--tracking-uri", help="MLflow store; default: MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<project>/mlflow.db (what `mlflow ui` in the project shows)")
    p.add_argument("--storage-path", help="checkpoints and Tune experiment state; default <project>/runs/ray; on a "
                                          "cluster a path or URI every node can reach")
    p.add_argument("--max-concurrent", type=int, help="at most N trials at once (default: as many as fit)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default from the profile: 1 on cpu)")
    p.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions share a GPU (e.g. 0.25); an "
                                                        "integer N > 1 trains data-parallel on N GPUs")
    p.add_argument("--workers-per-trial", type=int, metavar="N",
                   help="data-parallel processes per trial (Ray Train TorchTrainer; each takes --cpus-per-trial CPUs "
                        "and, with GPUs, one GPU); default: the GPUs of a trial asking for more than one, else 1")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a trial that raises, each from its latest checkpoint (default 1)")
    p.add_argument("--tracking-deadline", type=float, default=900.0, metavar="SECONDS",
                   help="while the tracking store is unreachable the driver buffers its writes and retries; after "
                        "this long it stops the sweep and keeps the writes for the next run (default 900)")
    p.add_argument("--verbose", action="store_true", help="show Ray's and the workers' own logs")
    p.set_defaults(func=cmd_run)


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="per sweep: trials done, running, missing, failed (from MLflow)")
    p.add_argument("sweep", nargs="?", help="a sweep file or name (default: every sweep in the store)")
    p.add_argument("-v", "--verbose", action="store_true", help="list the trials that are not done")
    p.add_argument("--tracking-uri", help="MLflow store (default as for run)")
    p.add_argument("--profile", help="with a sweep file: the profile it runs with")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="with a sweep file: the overrides it runs with")
    p.set_defaults(func=cmd_status)


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import cmd_report  # pandas and matplotlib load only when `report` runs

    return cmd_report(args)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="the paper's tables with our numbers beside them (from MLflow)",
                       description="Turn what MLflow holds into the paper's tables, plots and verdicts: "
                                   "OUT/<sweep>/table.{md,csv,tex}, PNG plots, OUT/README.md; the report is "
                                   "also logged on the sweep's parent run (artifact report/).")
    p.add_argument("sweep", nargs="*", help="sweep names or files (default: every sweep in the store)")
    p.add_argument("--out", help="output folder (default <project>/results)")
    p.add_argument("--tracking-uri", help="MLflow store (default as for run)")
    p.add_argument("--no-log", action="store_true", help="do not log the report on the sweep's parent run")
    p.set_defaults(func=_cmd_report)


# Subcommands, in the order `--help` lists them. `report`: tables, CSV and plots from MLflow into
# results/<sweep>/ (orchestrator/report.py).
SUBCOMMANDS: List[Callable] = [_add_run, _add_status, _add_report]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m orchestrator",
                     description="Run the paper's ablations as Ray Tune sweeps tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
