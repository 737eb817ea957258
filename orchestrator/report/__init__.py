"""``python -m orchestrator report [SWEEP ...] [--out DIR]``: the paper's tables from what MLflow holds.

For each sweep (an MLflow experiment; by name or sweep file; default every sweep in the store) the
report writes ``<out>/<sweep>/``: ``table.md``, ``table.csv``, ``table.tex`` (booktabs), one PNG plot
per table and ``summary.json``; then ``<out>/README.md`` indexes every sweep reported there, with
its verdicts and settings. The sweep's folder is also logged as artifact ``report/`` of its parent run.

Rows: a trial belongs to the rows the sweep declares for it (``trials.json`` / tag ``row.<table>``);
which paper row that is follows from the trial's config values (1a: alpha at gamma 0; 1b: gamma,
alpha; 1c: scales per octave, number of aspect ratios; 1d: loss kind, OHEM batch, NMS, 1:3; 1e:
depth and the declared image scale, see tag ``scaled``; 5.1: prior initialization). Paper rows with
no trial show as "not in sweep", declared trials without a run as "missing"; trials with several
seeds are one row with mean and standard deviation. Verdicts are computed (see ``verdicts``).
MLflow is read and written through ``orchestrator.tracking`` only.
"""
from __future__ import annotations

from .build import SweepReport, build_report, settings
from .claims import Verdict, spearman, verdicts
from .paper import OUR_METRIC, PAPER, paper_key, paper_table
from .render import write_index, write_report
from .rows import OurRow, build_table, our_rows

__all__ = ["SweepReport", "build_report", "settings", "Verdict", "spearman", "verdicts", "OUR_METRIC", "PAPER",
           "paper_key", "paper_table", "write_index", "write_report", "OurRow", "build_table", "our_rows"]
