"""Everything MLflow: the only package of the project that imports it (one module per job: store.py
where the store is and how it fails, state.py what it holds of a sweep, writer.py the driver's writes,
records.py what the report reads, provenance.py what code made a run).

One experiment per sweep (named after it), one parent run per variant of the sweep file (tag
``kind=sweep``, tag ``variant``: "default" for the file as it is, else its profile and --set; reused by
every re-run of that variant, never duplicated, so another seed or --set never overwrites the default's
manifest) and one nested child run per trial (tag ``kind=trial``, found again
by its tag ``trial_key``: a resumed trial continues its own run, a trial never gets a second one).

The driver is the only writer: :class:`SweepTracker` receives the trial events the Tune callback
forwards (see ``orchestrator.runner``) and logs them, so workers never need a route to the store
and a SQLite store is never written by two processes. Nothing here logs environment variables.

Child runs hold:
  params     the flattened resolved config (written once, when the run is created)
  metrics    training curves by step = iteration (loss_cls, loss_box, loss, lr, images_per_s, ...),
             then the final AP, AP50, AP75, APs, APm, APl, inference_ms at the last iteration;
             after a resume only steps beyond the last one logged are written
  tags       sweep, table, label, row.<table>, trial_key, status (running / finished / diverged /
             failed / interrupted), code_version, device, profile, seed, checkpoint (latest
             checkpoint's path or URI, which a re-run driver resumes from), error
  artifacts  config.yaml (resolved config), eval_summary.txt (COCO evaluation), error.txt
"""
from __future__ import annotations

from .provenance import code_version
from .records import RunRecord, SweepRecord, log_report, read_sweep_record
from .state import DONE, SweepState, SweepStatus, TrialRecord, list_sweeps, live_driver, read_state, sweep_status
from .store import (TrackingError, check_store, default_tracking_uri, describe_store, ensure_quiet, is_outage,
                    store_exists)
from .writer import CURVE_METRICS, FINAL_METRICS, EvaluationWriter, SweepTracker, trial_tags, trials_manifest

__all__ = ["TrackingError", "default_tracking_uri", "check_store", "store_exists", "describe_store", "ensure_quiet",
           "is_outage", "read_state", "SweepState", "TrialRecord", "DONE", "live_driver", "list_sweeps", "sweep_status",
           "SweepStatus", "SweepTracker", "EvaluationWriter", "trial_tags", "trials_manifest", "CURVE_METRICS", "FINAL_METRICS",
           "code_version", "read_sweep_record", "RunRecord", "SweepRecord", "log_report"]
