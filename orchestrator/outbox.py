"""Writes to the tracking store that survive an outage: a queue in the driver, flushed in order.

The Tune callback (``orchestrator.runner``) hands each trial event to :class:`Outbox` instead of
writing to MLflow itself. A background thread applies the events in order through the real writer
(``orchestrator.tracking.SweepTracker``). When a write fails because the store is unreachable (an
MLflow server stopped or restarting, a locked SQLite file), the event stays at the head of the
queue, later events queue behind it, and the thread retries with a growing pause; training goes on.
The driver says so when the outage starts and when the buffered writes are recorded.

If the outage outlasts ``deadline_s``, :attr:`expired` turns true: the driver stops the sweep, and
whatever could not be written goes to a journal file (JSON lines of ``[event, args]``) that the next
``run`` of the same sweep replays before anything else, so nothing is lost.

No MLflow here: what counts as an outage is the ``is_outage`` function the caller passes.
"""
from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple

Event = Tuple[str, tuple]  # (listener method name, its arguments), JSON-serializable

LISTENER_EVENTS = ("trial_started", "trial_running", "trial_progress", "trial_eval", "trial_checkpoint",
                   "trial_finished", "trial_failed", "trial_retrying", "trial_interrupted", "close")


class OutboxError(RuntimeError):
    """A write failed for a reason other than an outage (a bug or a rejected value): not retried."""


class Outbox:
    """An ordered, retrying queue of writes in front of ``target`` (an object with the listener
    methods of ``orchestrator.runner.TrialListener`` and ``close``).

    Also a listener itself: ``outbox.trial_progress(key, metrics)`` queues that call.
    """

    def __init__(self, target: Any, is_outage: Callable[[BaseException], bool], describe: str,
                 deadline_s: float, say: Callable[[str], None] = print, retry_s: Sequence[float] = (1, 2, 4, 8)):
        self.target, self.is_outage, self.describe = target, is_outage, describe
        self.deadline_s, self.say, self.retry_s = float(deadline_s), say, tuple(retry_s)
        self._queue: Deque[Event] = deque()
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False  # the flusher holds an event it has not finished applying
        self.outage_since: Optional[float] = None
        self.outages = 0
        self.expired = False
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="tracking-outbox", daemon=True)
        self._thread.start()

    # -- the listener interface: each call is queued ---------------------------------------------

    def __getattr__(self, name: str):
        if name in LISTENER_EVENTS:
            return lambda *args: self.submit(name, *args)
        raise AttributeError(name)

    def submit(self, event: str, *args: Any) -> None:
        if self.error is not None:
            raise OutboxError(f"writing to {self.describe} failed: {self.error}") from self.error
        with self._cond:
            self._queue.append((event, args))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- draining and closing ---------------------------------------------------------------------

    def drain(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until every queued write is applied; False if the queue is still not empty after
        ``timeout_s`` (default: until the outage deadline has passed) or the outbox expired."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while (self._queue or self._busy) and self.error is None:
                if self.expired and self.outage_since is not None:
                    return False
                wait = 0.2 if end is None else min(0.2, end - time.monotonic())
                if wait <= 0:
                    return False
                self._cond.wait(wait)
        if self.error is not None:
            raise OutboxError(f"writing to {self.describe} failed: {self.error}") from self.error
        return True

    def shutdown(self) -> List[Event]:
        """Stop the flusher; return the writes it did not apply (in order)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=60)
        with self._cond:
            return list(self._queue)

    # -- the flusher --------------------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                event, args = self._queue[0]
                self._busy = True
            try:
                getattr(self.target, event)(*args)
            except BaseException as e:  # noqa: BLE001 - classified below
                with self._cond:
                    self._busy = False
                if not self.is_outage(e):
                    self.error = e
                    with self._cond:
                        self._cond.notify_all()
                    return
                self._outage(e, attempt)
                pause = self.retry_s[min(attempt, len(self.retry_s) - 1)]
                attempt += 1
                with self._cond:
                    if self._stop:
                        return
                    self._cond.wait(pause)
                    if self._stop:
                        return
                continue
            attempt = 0
            with self._cond:
                self._queue.popleft()
                self._busy = False
                self._cond.notify_all()
            if self.outage_since is not None:
                self._recovered()

    def _outage(self, error: BaseException, attempt: int) -> None:
        now = time.monotonic()
        if self.outage_since is None:
            self.outage_since = now
            self.outages += 1
            self.say(f"tracking: {self.describe} is unreachable ({_first_line(error)}); buffering writes "
                     f"({self.pending} pending) and retrying; the sweep goes on, and stops after "
                     f"{self.deadline_s:g} s of outage")
        elif not self.expired and now - self.outage_since > self.deadline_s:
            self.expired = True
            self.say(f"tracking: {self.describe} still unreachable after {now - self.outage_since:.0f} s "
                     f"(deadline {self.deadline_s:g} s); stopping the sweep")
            with self._cond:
                self._cond.notify_all()

    def _recovered(self) -> None:
        seconds = time.monotonic() - self.outage_since
        self.outage_since = None
        self.say(f"tracking: {self.describe} is back after {seconds:.0f} s; recording the buffered writes "
                 f"({self.pending} still queued)")


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(error).__name__)


# ----------------------------------------------------------------------------------------------
# the journal: writes kept across drivers when an outage outlasted the deadline


def write_journal(path: Path, events: Sequence[Event]) -> None:
    """Append ``events`` to the journal at ``path`` (atomically replaced, so never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines() if path.is_file() else []
    lines += [json.dumps([event, list(args)]) for event, args in events]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def read_journal(path: Path) -> List[Event]:
    if not path.is_file():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event, args = json.loads(line)
        except ValueError:
            raise OutboxError(f"{path}: line {number} is not a journal entry; move the file away to skip it") from None
        if event not in LISTENER_EVENTS:
            raise OutboxError(f"{path}: line {number}: unknown event {event!r}")
        events.append((event, tuple(args)))
    return events


def replay_journal(path: Path, target: Any, events: Optional[List[Event]] = None) -> int:
    """Apply the journal's writes (``events``, if already read) to ``target`` in order, then delete
    it; the number applied. A failure keeps the writes not yet applied in the journal (and raises)
    for the next attempt."""
    events = read_journal(path) if events is None else events
    for done, (event, args) in enumerate(events):
        try:
            getattr(target, event)(*args)
        except BaseException:
            path.unlink()
            write_journal(path, events[done:])  # what is left, for the next attempt
            raise
    path.unlink(missing_ok=True)
    return len(events)
