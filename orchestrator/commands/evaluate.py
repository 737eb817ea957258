"""``python -m orchestrator evaluate SWEEP [--set eval.KEY=V ...]``: re-score every finished trial.

Each finished trial is evaluated again from its final checkpoint (``retina.evaluate``: the config the
trial trained with, the given evaluation settings, the validation split only); its new AP, AP50,
AP75, APs, APm, APl and inference_ms are logged on the trial's own MLflow run, at its final
iteration (so they become the run's latest values), with tag ``eval_overrides`` and a new
``eval_summary.txt``. No run is created, nothing is retrained. Only evaluation settings may be set
(``retina.evaluate.EVAL_OVERRIDABLE``); anything else is bad input (exit 2, nothing written).
Exit code 1 when a finished trial's checkpoint cannot be read (the others are still re-scored).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from retina.config import ConfigError

from ..errors import EXIT_TRIAL_FAILED, fail
from ..sweep import load_sweep


def cmd_evaluate(args: argparse.Namespace) -> int:
    from retina.evaluate import check_eval_overrides, evaluate_checkpoint

    from .. import runner, tracking

    tracking.ensure_quiet()
    uri = args.tracking_uri or tracking.default_tracking_uri()
    try:
        check_eval_overrides(args.set)
        sweep = load_sweep(args.sweep, profile=args.profile)
        tracking.check_store(uri)
        state = tracking.read_state(uri, sweep.name, sweep.variant)
        if state.experiment_id is None:
            raise tracking.TrackingError(f"sweep {sweep.name} has no runs in {tracking.describe_store(uri)}; run it "
                                         "first")
        if tracking.live_driver(state):
            raise tracking.TrackingError(f"sweep {sweep.name} is being run right now by driver "
                                         f"{tracking.live_driver(state)}; evaluate when it has finished")
    except (ConfigError, tracking.TrackingError) as e:
        return fail(e)
    writer = tracking.EvaluationWriter(uri)
    todo = [(key, record) for key, record in state.trials.items() if record.status == "finished"]
    print(f"sweep {sweep.name}: re-scoring {len(todo)} finished trials"
          + (f" with {' '.join(args.set)}" if args.set else " with their own evaluation settings"))
    failures = 0
    for key, record in todo:
        label = sweep.trial(key).label if any(t.key == key for t in sweep.trials) else key
        final = writer.final_iteration(record.run_id)
        if not record.checkpoint or record.checkpoint_iteration != final:
            print(f"  {key}  {label}: no final checkpoint recorded (checkpoint at iteration "
                  f"{record.checkpoint_iteration}, run ended at {final}); skipped")
            failures += 1
            continue
        workdir = Path(tempfile.mkdtemp(prefix=f"retina-eval-{key}-"))
        try:
            try:
                runner.fetch_checkpoint(record.checkpoint, workdir)
                metrics = evaluate_checkpoint(workdir / "checkpoint.pt", args.set)
            except (ConfigError, OSError) as e:
                print(f"  {key}  {label}: cannot evaluate {record.checkpoint}: {' '.join(str(e).split())[:200]}")
                failures += 1
                continue
            writer.record(record.run_id, final, metrics, " ".join(args.set))
            print(f"  {key}  {label}: AP {metrics['AP']:.2f} (AP50 {metrics['AP50']:.2f}) on "
                  f"{metrics['num_val_images']} images")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return EXIT_TRIAL_FAILED if failures else 0
