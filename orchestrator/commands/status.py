"""``python -m orchestrator status [SWEEP]``: per sweep, the trials done, running, missing, failed."""
from __future__ import annotations

import argparse
from pathlib import Path

from retina.config import ConfigError

from ..errors import fail
from ..sweep import load_sweep


def cmd_status(args: argparse.Namespace) -> int:
    from .. import tracking

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
        return fail(e)
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
