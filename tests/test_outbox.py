"""orchestrator.outbox on its own: order, retry, deadline, journal (no server; a target that fails
the way an unreachable store does)."""
from __future__ import annotations

import threading

import pytest

from orchestrator.outbox import Outbox, OutboxError, read_journal, replay_journal, write_journal


class Unreachable(ConnectionError):
    pass


class Store:
    """Records calls; raises Unreachable while ``down`` is set."""

    def __init__(self):
        self.calls, self.down = [], threading.Event()

    def _call(self, name, *args):
        if self.down.is_set():
            raise Unreachable("connection refused")
        self.calls.append((name, args))

    def trial_progress(self, key, metrics):
        self._call("trial_progress", key, metrics)

    def trial_finished(self, key, result):
        self._call("trial_finished", key, result)

    def close(self, outcome):
        self._call("close", outcome)


def outage(e: BaseException) -> bool:
    return isinstance(e, Unreachable)


def test_writes_made_during_an_outage_are_applied_in_order_once_the_store_is_back():
    store, said = Store(), []
    store.down.set()
    box = Outbox(store, outage, "the store", deadline_s=60, say=said.append, retry_s=(0.05,))
    for step in (1, 2, 3):
        box.trial_progress("k", {"iteration": step})
    box.trial_finished("k", {"AP": 1.0})
    assert not box.drain(timeout_s=0.3)  # still down: nothing applied, nothing dropped
    assert store.calls == [] and box.pending == 4
    store.down.clear()
    assert box.drain(timeout_s=10)
    assert store.calls == [("trial_progress", ("k", {"iteration": s})) for s in (1, 2, 3)] + \
        [("trial_finished", ("k", {"AP": 1.0}))]
    assert any("unreachable" in s and "buffering" in s for s in said)
    assert any("is back after" in s for s in said)
    assert box.shutdown() == [] and box.outages == 1


def test_an_outage_past_the_deadline_expires_and_hands_back_every_unwritten_event():
    store = Store()
    store.down.set()
    box = Outbox(store, outage, "the store", deadline_s=0.2, say=lambda s: None, retry_s=(0.05,))
    box.trial_progress("k", {"iteration": 1})
    box.close("finished")
    assert box.drain() is False  # waits out the deadline, then gives up
    assert box.expired
    assert box.shutdown() == [("trial_progress", ("k", {"iteration": 1})), ("close", ("finished",))]


def test_a_write_rejected_for_another_reason_is_an_error_not_a_retry():
    class Broken(Store):
        def close(self, outcome):
            raise ValueError("bad value")

    box = Outbox(Broken(), outage, "the store", deadline_s=60, say=lambda s: None, retry_s=(0.05,))
    box.close("finished")
    with pytest.raises(OutboxError, match="bad value"):
        box.drain(timeout_s=10)


def test_the_journal_replays_in_order_and_keeps_what_failed_for_next_time(tmp_path):
    path = tmp_path / "j" / "sweep.jsonl"
    events = [("trial_progress", ("k", {"iteration": 1})), ("trial_finished", ("k", {"AP": 2.5})),
              ("close", ("finished",))]
    write_journal(path, events[:1])
    write_journal(path, events[1:])  # appends
    assert read_journal(path) == events

    store = Store()

    class FailsAtClose(Store):
        def close(self, outcome):
            raise Unreachable("down again")

    failing = FailsAtClose()
    with pytest.raises(Unreachable):
        replay_journal(path, failing)
    assert failing.calls == [(n, a) for n, a in events[:2]]
    assert read_journal(path) == events[2:]  # only what was not applied
    assert replay_journal(path, store) == 1 and not path.exists()
    assert store.calls == [("close", ("finished",))]


def test_a_corrupt_journal_line_is_a_one_line_error_naming_the_file(tmp_path):
    path = tmp_path / "sweep.jsonl"
    path.write_text('["close", ["finished"]]\n{not json\n')
    with pytest.raises(OutboxError, match=r"sweep.jsonl: line 2"):
        read_journal(path)


def test_run_with_a_corrupt_journal_exits_2_with_one_line_and_writes_nothing(orchestrator_dirs, tmp_path, capsys):
    from orchestrator.__main__ import main
    from orchestrator.commands.run import journal_path

    sweep = tmp_path / "journaled.yaml"
    sweep.write_text("name: journaled\ntables: [1a]\nrows:\n  - {label: a, set: {loss.alpha: 0.25}}\n")
    storage = tmp_path / "ray"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    journal = journal_path(str(storage), "journaled", uri)
    journal.parent.mkdir(parents=True)
    journal.write_text("{not json\n")
    rc = main(["run", str(sweep), "--tracking-uri", uri, "--storage-path", str(storage),
               "--set", *orchestrator_dirs["settings"]])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "journaled" in err and "line 1" in err
    assert not (tmp_path / "mlflow.db").exists()
    assert journal.read_text() == "{not json\n"
