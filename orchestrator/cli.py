"""Command line: ``python -m orchestrator {run,status,report,evaluate} ...`` (the commands: commands/).

    python -m orchestrator run sweeps/alpha_gamma.yaml [--profile P] [--set key=value ...] [--dry-run]
        [--rerun failed|diverged|all|KEY ...] [--address A] [--tracking-uri U] [--storage-path S]
        [--max-concurrent N] [--cpus-per-trial C] [--gpus-per-trial G] [--workers-per-trial N]
        [--max-failures N] [--tracking-deadline S] [--verbose]
    python -m orchestrator status [SWEEP] [-v] [--tracking-uri U]
    python -m orchestrator report [SWEEP ...] [--out DIR] [--tracking-uri U] [--no-log] [--variant V]
    python -m orchestrator evaluate SWEEP [--set eval.KEY=VALUE ...] [--tracking-uri U]

A sweep is a file, or the name of a shipped one (sweeps/alpha_gamma.yaml, alpha_gamma). ``--set``
may come before or after the sweep.

Exit codes (orchestrator/errors.py): 0 all trials done (finished or diverged), 1 some trial failed, 2 bad
input (one line on stderr, nothing written), 3 stopped because the tracking store stayed unreachable
past --tracking-deadline (its writes are kept in a journal that the next run records first), 130
interrupted.
"""
from __future__ import annotations

import argparse
from typing import Callable, List, Optional

from .errors import EXIT_BAD_INPUT


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        self.exit(EXIT_BAD_INPUT, f"error: {self.prog}: {message}\n")


EPILOG = """examples:
  python -m orchestrator run sweeps/alpha_gamma.yaml --dry-run      list the trials, start nothing
  python -m orchestrator run sweeps/alpha_gamma.yaml                the cpu profile, local Ray, ./mlflow.db
  python -m orchestrator run anchors --set train.seed=1 data.synthetic.seed=1 pretrain.seed=1   other draws (a variant)
  python -m orchestrator run alpha_gamma --rerun failed             retrain the failed trials from scratch
  python -m orchestrator status -v                                  done / running / missing / failed
  python -m orchestrator report alpha_gamma                         results/alpha_gamma/: tables, verdicts, plots
  python -m orchestrator evaluate alpha_gamma --set eval.score_thresh=0.01   re-score from checkpoints

exit codes:
  0 done (every trial finished or diverged)   1 some trial failed (run) or could not be re-scored (evaluate)
  2 bad input: one line on stderr, nothing written   3 the tracking store stayed unreachable (run)
  130 interrupted (run): the same command finishes the sweep
"""


def _sweep_from_set(args: argparse.Namespace) -> None:
    """``--set`` takes any number of values, so ``run --set k=v SWEEP`` hands it the sweep too: the one
    value that is not key=value is the sweep."""
    if getattr(args, "sweep", "") is None:
        names = [v for v in args.set if "=" not in v]
        if len(names) == 1:
            args.set.remove(names[0])
            args.sweep = names[0]


def _cmd_run(args: argparse.Namespace) -> int:
    from .commands.run import cmd_run

    return cmd_run(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .commands.evaluate import cmd_evaluate

    return cmd_evaluate(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from .commands.status import cmd_status

    return cmd_status(args)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a sweep's missing trials on Ray Tune, tracked in MLflow",
                       description="Run every trial of SWEEP that is not done yet; finished trials are skipped, "
                                   "interrupted ones resume from their checkpoint.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", nargs="?", help="a sweep file or the name of a shipped one, e.g. "
                                            "sweeps/alpha_gamma.yaml or alpha_gamma")
    p.add_argument("--profile", help="cpu (default), gpu or paper; overrides the sweep's profile")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config overrides for every trial, e.g. --set train.iterations=100 loss.alpha=0.5")
    p.add_argument("--dry-run", action="store_true", help="list the trials (key, row, settings); start nothing")
    p.add_argument("--rerun", nargs="+", action="extend", default=[], metavar="WHAT",
                   help="retrain these trials from scratch instead of skipping them: failed, diverged, all, or "
                        "trial keys; their old runs stay in MLflow, tagged superseded")
    p.add_argument("--address", help="an existing Ray cluster (host:port, auto or ray://...); default: "
                                     "RAY_ADDRESS, else a local Ray started in this process")
    p.add_argument("--tracking-uri", help="MLflow store; default: MLFLOW_TRACKING_URI, else ./mlflow.db (what "
                                          "`mlflow ui` started in the same folder shows)")
    p.add_argument("--storage-path", help="checkpoints and Tune experiment state; default ./runs/ray; on a "
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
    p.set_defaults(func=_cmd_run)


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="per sweep: trials done, running, missing, failed (from MLflow)")
    p.add_argument("sweep", nargs="?", help="a sweep file or name (default: every sweep in the store)")
    p.add_argument("-v", "--verbose", action="store_true", help="list the trials that are not done")
    p.add_argument("--tracking-uri", help="MLflow store (default as for run)")
    p.add_argument("--profile", help="with a sweep file: the profile it runs with")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="with a sweep file: the overrides it runs with")
    p.set_defaults(func=_cmd_status)


def _cmd_report(args: argparse.Namespace) -> int:
    from .commands.report import cmd_report  # pandas and matplotlib load only when `report` runs

    return cmd_report(args)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="the paper's tables with our numbers beside them (from MLflow)",
                       description="Turn what MLflow holds into the paper's tables, plots and verdicts: "
                                   "OUT/<sweep>/table.{md,csv,tex}, PNG plots, OUT/README.md; the report is "
                                   "also logged on the sweep's parent run (artifact report/).")
    p.add_argument("sweep", nargs="*", help="sweep names or files (default: every sweep in the store)")
    p.add_argument("--out", help="output folder (default ./results)")
    p.add_argument("--tracking-uri", help="MLflow store (default as for run)")
    p.add_argument("--no-log", action="store_true", help="do not log the report on the sweep's parent run")
    p.add_argument("--variant", default=None,
                   help="which run of the sweep file to report: 'default' (the file as it is; the default where the "
                        "store has it, else the only variant it has) or what a run with other settings printed, e.g. "
                        "'--set train.seed=7' (each variant has a parent run of its own)")
    p.set_defaults(func=_cmd_report)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="re-score every finished trial from its checkpoint, on its own MLflow run",
                       description="Evaluate every finished trial of SWEEP again from its final checkpoint (with "
                                   "evaluation settings given by --set) and log the new figures on the trial's own "
                                   "MLflow run; nothing is retrained.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", nargs="?", help="a sweep file or the name of a shipped one")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="evaluation settings: eval.*, data.max_val_images, data.num_workers, train.device, "
                        "train.num_threads")
    p.add_argument("--profile", help="the profile the sweep ran with (default: the sweep file's)")
    p.add_argument("--tracking-uri", help="MLflow store (default as for run)")
    p.set_defaults(func=_cmd_evaluate)


# Subcommands, in the order `--help` lists them.
SUBCOMMANDS: List[Callable] = [_add_run, _add_status, _add_report, _add_evaluate]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m orchestrator", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Run the paper's ablations as Ray Tune sweeps tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("run", "evaluate"):
        _sweep_from_set(args)
        if args.sweep is None:
            parser.exit(EXIT_BAD_INPUT, f"error: python -m orchestrator {args.command}: the following arguments are "
                                        "required: sweep\n")
    return args.func(args)
