"""Command line: ``python -m orchestrator {run,status,report} ...`` (the commands are in commands/).

    python -m orchestrator run sweeps/alpha_gamma.yaml [--profile P] [--set key=value ...] [--dry-run]
        [--address A] [--tracking-uri U] [--storage-path S] [--max-concurrent N]
        [--cpus-per-trial C] [--gpus-per-trial G] [--workers-per-trial N] [--max-failures N]
        [--tracking-deadline S] [--verbose]
    python -m orchestrator status [SWEEP] [-v] [--tracking-uri U]
    python -m orchestrator report [SWEEP ...] [--out DIR] [--tracking-uri U] [--no-log]

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


def _cmd_run(args: argparse.Namespace) -> int:
    from .commands.run import cmd_run

    return cmd_run(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from .commands.status import cmd_status

    return cmd_status(args)


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
