"""``python -m orchestrator report``: the report of each sweep, from the store into ``results/``."""
from __future__ import annotations

import argparse
from pathlib import Path

from retina.config import ConfigError
from retina.paths import working_dir

from .. import tracking
from ..errors import fail
from ..report.build import build_report
from ..report.render import write_index, write_report

DEFAULT_OUT_NAME = "results"  # in the working directory


def _sweep_name(arg: str) -> str:
    if arg.endswith((".yaml", ".yml")) or Path(arg).is_file():
        from ..sweep import load_sweep

        return load_sweep(arg).name
    return arg


def cmd_report(args: argparse.Namespace) -> int:
    tracking.ensure_quiet()
    uri = args.tracking_uri or tracking.default_tracking_uri()
    out = Path(args.out).resolve() if args.out else working_dir(DEFAULT_OUT_NAME)
    try:
        tracking.check_store(uri)
        if not tracking.store_exists(uri):
            raise tracking.TrackingError(f"tracking store {uri} does not exist (no sweep was run with it)")
        names = [_sweep_name(s) for s in args.sweep] or tracking.list_sweeps(uri)
        if not names:
            raise tracking.TrackingError(f"no sweeps recorded in {tracking.describe_store(uri)}")
        variant = getattr(args, "variant", None)
        records = [tracking.read_sweep_record(uri, n, variant) for n in names]  # every input checked before writing
    except (ConfigError, tracking.TrackingError) as e:
        return fail(e)
    for record in records:
        report = build_report(record)
        directory = out / record.name
        write_report(report, directory)
        if record.parent_run_id and not args.no_log:
            tracking.log_report(uri, record.parent_run_id, directory)
        held = sum(v.holds is True for vs in report.verdicts.values() for v in vs)
        total = sum(v.holds is not None for vs in report.verdicts.values() for v in vs)
        print(f"{record.name} (variant {record.variant}, parent run {record.parent_run_id}): {directory / 'table.md'} "
              f"({', '.join(report.tables)}; {held} of {total} decided claims hold)")
    write_index(out)
    print(f"index: {out / 'README.md'}")
    return 0
