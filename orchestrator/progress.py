"""The live view of a running sweep, in the driver's terminal.

On a terminal: a compact table (per trial: key, row, status, iteration/total, loss, AP) redrawn in
place at most twice a second, with an overall ETA. Elsewhere (a log file, CI): one line per event,
progress lines at most every ``interval_s`` per trial. At the end, one summary line: trials
finished / skipped / diverged / failed, wall time, and utilization = busy trial seconds /
(wall seconds x slots).
"""
from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, TextIO

from .sweep import Trial

from .errors import error_line




def format_duration(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(max(0, round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _number(value: Optional[float]) -> str:
    """A loss in 8 characters or fewer: 0.1234, 123.4567, 9.21e+18; "-" when there is none."""
    if value is None or not math.isfinite(value):
        return "-" if value is None else str(value)
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.3g}"


@dataclass
class _Row:
    key: str
    label: str
    total: int
    status: str = "pending"
    iteration: int = 0
    start_iteration: int = 0
    loss: Optional[float] = None
    ap: Optional[float] = None
    eta_s: Optional[float] = None
    started: Optional[float] = None
    ended: Optional[float] = None
    last_print: float = 0.0
    error: str = ""


class ProgressView:
    """A trial listener (see ``orchestrator.runner.TrialListener``) that draws the sweep's progress."""

    def __init__(self, trials: List[Trial], skipped: int, slots: int, stream: Optional[TextIO] = None,
                 live: Optional[bool] = None, interval_s: float = 10.0):
        self.rows: Dict[str, _Row] = {t.key: _Row(t.key, t.label, int(t.config.train.iterations)) for t in trials}
        self.skipped, self.slots = skipped, max(1, slots)
        self.stream = stream or sys.stdout  # looked up now, not when the module was imported
        self.live = self.stream.isatty() if live is None else live
        self.interval_s = interval_s
        self.start = time.monotonic()
        self._drawn_lines = 0
        self._last_draw = 0.0
        self._lock = threading.RLock()  # notes come from the tracking outbox's thread

    # -- listener interface ---------------------------------------------------------------------

    def trial_started(self, key: str) -> None:
        row = self.rows[key]
        row.status, row.started = "starting", time.monotonic()
        self._event(row, "started")

    def trial_running(self, key: str, info: Dict[str, Any]) -> None:
        row = self.rows[key]
        row.status = "running"
        row.start_iteration = row.iteration = int(info.get("start_iteration") or 0)
        resumed = f" resumed at iteration {row.start_iteration}" if row.start_iteration else ""
        self._event(row, f"running on {info.get('device', '?')}{resumed}")

    def trial_progress(self, key: str, metrics: Dict[str, Any]) -> None:
        row = self.rows[key]
        row.iteration, row.loss = int(metrics["iteration"]), float(metrics.get("loss", float("nan")))
        row.eta_s = float(metrics.get("eta_s", float("nan")))
        if row.iteration >= row.total:
            row.status = "evaluating"
        now = time.monotonic()
        if self.live:
            self._draw()
        elif now - row.last_print >= self.interval_s:
            row.last_print = now
            self._line(f"{row.key}  {row.label}: iteration {row.iteration}/{row.total} loss {_number(row.loss)} "
                       f"| sweep ETA {format_duration(self.eta_s())}")

    def trial_eval(self, key: str, metrics: Dict[str, Any]) -> None:
        """An evaluation during training (eval.every): the AP so far, in the view and as a line."""
        row = self.rows[key]
        row.ap = float(metrics.get("AP", float("nan")))
        if self.live:
            self._draw()
        else:
            self._line(f"{row.key}  {row.label}: iteration {int(metrics['iteration'])}/{row.total} AP {_number(row.ap)} "
                       f"(AP50 {_number(metrics.get('AP50'))})")

    def trial_checkpoint(self, key: str, path: str, iteration: int) -> None:
        pass

    def trial_finished(self, key: str, result: Dict[str, Any]) -> None:
        row = self.rows[key]
        row.status, row.ended = str(result.get("status", "finished")), time.monotonic()
        row.ap = result.get("AP")
        row.iteration = int(result.get("iterations") or row.iteration)
        detail = f"AP {row.ap:.1f}" if isinstance(row.ap, (int, float)) else ""
        if row.status == "diverged":
            detail = f"diverged at iteration {result.get('diverged_at')}"
        self._event(row, f"{row.status} ({detail}) in {format_duration(row.ended - (row.started or row.ended))}")

    def trial_failed(self, key: str, error: str) -> None:
        row = self.rows[key]
        row.status, row.ended, row.error = "failed", time.monotonic(), error_line(error)
        self._event(row, f"failed: {row.error[:200]}")

    def trial_retrying(self, key: str, error: str) -> None:
        row = self.rows[key]
        row.status = "retrying"
        self._event(row, f"raised ({error_line(error, 160)}); retrying from its latest checkpoint")

    def trial_interrupted(self, key: str) -> None:
        row = self.rows[key]
        if row.ended is None:
            row.status, row.ended = "interrupted", time.monotonic()

    # -- numbers --------------------------------------------------------------------------------

    def busy_s(self, now: Optional[float] = None) -> float:
        now = time.monotonic() if now is None else now
        return sum((r.ended or now) - r.started for r in self.rows.values() if r.started is not None)

    def eta_s(self) -> Optional[float]:
        """Rough: remaining work of running trials plus pending ones at the mean trial duration,
        spread over the slots."""
        now = time.monotonic()
        done = [r.ended - r.started for r in self.rows.values() if r.ended and r.started and r.status != "failed"]
        running = [r for r in self.rows.values() if r.started and not r.ended]
        estimates = done or [now - r.started + r.eta_s for r in running if r.eta_s is not None
                             and math.isfinite(r.eta_s)]
        pending = sum(1 for r in self.rows.values() if r.started is None)
        if pending and not estimates:
            return None
        per_trial = sum(estimates) / len(estimates) if estimates else 0.0
        remaining = sum(r.eta_s if r.eta_s is not None and math.isfinite(r.eta_s) else per_trial for r in running)
        return (remaining + pending * per_trial) / self.slots

    def final_status(self) -> Dict[str, str]:
        """{key: finished / diverged / failed} of the trials that ended in this run."""
        return {k: r.status for k, r in self.rows.items() if r.status in ("finished", "diverged", "failed")}

    def counts(self) -> Dict[str, int]:
        out = {"finished": 0, "diverged": 0, "failed": 0, "interrupted": 0, "pending": 0, "running": 0}
        for r in self.rows.values():
            if r.status in out:
                out[r.status] += 1
            elif r.status in ("starting", "evaluating", "retrying"):
                out["running"] += 1
        return out

    def summary(self, wall_s: float) -> str:
        c = self.counts()
        busy = self.busy_s()
        utilization = busy / max(wall_s * self.slots, 1e-9) if self.rows else 0.0
        parts = [f"{c['finished']} finished", f"{self.skipped} skipped", f"{c['diverged']} diverged",
                 f"{c['failed']} failed"]
        unfinished = c["interrupted"] + c["pending"] + c["running"]
        if unfinished:
            parts.append(f"{unfinished} unfinished")
        return (f"sweep {'interrupted' if unfinished else 'done'}: {', '.join(parts)}; wall "
                f"{format_duration(wall_s)}; utilization "
                f"{100 * utilization:.0f}% (busy {format_duration(busy)} over {self.slots} slot"
                f"{'s' if self.slots != 1 else ''})")

    # -- drawing --------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        """A message above the live table (or a plain line), from any thread."""
        with self._lock:
            if self.live and self._drawn_lines:
                self.stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")
                self._drawn_lines = 0
            self._line(text)
            if self.live:
                self._draw(force=True)

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _event(self, row: _Row, what: str) -> None:
        if self.live:
            self._draw(force=True)
        else:
            row.last_print = time.monotonic()
            self._line(f"{row.key}  {row.label}: {what}")

    def _draw(self, force: bool = False) -> None:
        with self._lock:
            self._draw_locked(force)

    def _draw_locked(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.5:
            return
        self._last_draw = now
        width = shutil.get_terminal_size((120, 20)).columns
        label_w = max([len(r.label) for r in self.rows.values()] + [3])
        label_w = min(label_w, max(12, width - 62))
        c = self.counts()
        lines = [f"{len(self.rows)} to run ({self.skipped} done before): {c['finished'] + c['diverged']} done, "
                 f"{c['running']} running, {c['pending']} pending, {c['failed']} failed | elapsed "
                 f"{format_duration(now - self.start)} | ETA {format_duration(self.eta_s())}",
                 f"{'key':<12}  {'row':<{label_w}}  {'status':<11} {'iteration':>11} {'loss':>8} {'AP':>6}"]
        for r in self.rows.values():
            loss = _number(r.loss)
            ap = f"{r.ap:.1f}" if isinstance(r.ap, (int, float)) else "-"
            it = f"{r.iteration}/{r.total}"
            lines.append(f"{r.key:<12}  {r.label[:label_w]:<{label_w}}  {r.status:<11} {it:>11} {loss:>8} {ap:>6}")
        out = ""
        if self._drawn_lines:
            out += f"\x1b[{self._drawn_lines}F\x1b[J"  # back to the table's first line, clear below
        out += "\n".join(line[:width] for line in lines) + "\n"
        self.stream.write(out)
        self.stream.flush()
        self._drawn_lines = len(lines)
