"""The Store contract, run against every backend of ``FACTORIES`` (conftest.py): what the
recorder, resume, the CLI and the server rely on, reached only through ``open_store`` and the
:class:`~corral.store.Store` protocol."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral._errors import BrokenStore, CorruptHistory, RunLocked, RunNotFound
from corral._spec import TaskState
from corral.store import (
    MISSING,
    EventRecord,
    RunRecord,
    Store,
    StoredStatus,
    TaskSnapshot,
    TransitionRecord,
)

S = TaskState
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TASKS = (
    TaskSnapshot("a", (), "fa", "thread"),
    TaskSnapshot("b", ("a",), "fb", "thread"),
    TaskSnapshot("c", ("b",), "fc", "shell"),
)


def record(run_id: str = "r1", *, pipeline: str = "p", started: datetime = T0,
           reused: tuple[str, ...] = (), resumed_from: str | None = None,
           owner_process: str | None = None) -> RunRecord:
    return RunRecord(id=run_id, pipeline=pipeline, status=StoredStatus.RUNNING, tasks=TASKS,
                     params={"day": "monday"}, started_at=started, host="h", user="u", pid=1,
                     source_path="/x/pipeline.yaml", source_text="tasks: {}", reused=reused,
                     resumed_from=resumed_from, lease_owner="me", owner_process=owner_process)


def tr(task: str, state: TaskState, attempt: int, at: float, **kw: object) -> TransitionRecord:
    return TransitionRecord(task, state, attempt, T0 + timedelta(seconds=at), at, **kw)  # type: ignore[arg-type]


def ok_history(task: str, at: float = 0.0, duration: float = 1.0) -> list[TransitionRecord]:
    return [tr(task, S.READY, 0, at), tr(task, S.RUNNING, 1, at),
            tr(task, S.SUCCEEDED, 1, at + duration, duration_s=duration)]


def finished(store, run_id: str, status=StoredStatus.SUCCEEDED, at: datetime = T0) -> None:
    store.write(run_id, finish=(status, at))


def test_an_opened_store_implements_the_protocol(store):
    assert isinstance(store, Store)
    assert store.url


# ---------------------------------------------------------------------------- round trip


def test_a_run_round_trips_with_its_history_values_and_events(store):
    store.begin_run(record(), lease_s=30, events=[EventRecord("run_started", T0, data={"k": 1})])
    history = [
        *ok_history("a"),
        tr("b", S.READY, 0, 1), tr("b", S.RUNNING, 1, 1),
        tr("b", S.RETRY_WAIT, 1, 2, duration_s=1.0, error="ValueError: x", traceback="TB"),
        tr("b", S.READY, 1, 3), tr("b", S.RUNNING, 2, 3, log_path="/l/b.2.log"),
        tr("b", S.FAILED, 2, 4, duration_s=1.0, error="CommandFailed: 3", exit_code=3,
           worker="h:1"),
        tr("c", S.UPSTREAM_FAILED, 0, 4),
    ]
    store.write("r1", transitions=history[:4], values=[("a", {"rows": [1, 2]})])
    store.write("r1", transitions=history[4:], lease=("me", 30.0))
    finished(store, "r1", StoredStatus.FAILED, T0 + timedelta(seconds=4))

    run = store.load_run("r1")
    assert run.run.status is StoredStatus.FAILED
    assert run.run.params == {"day": "monday"}
    assert run.run.tasks == TASKS
    assert run.run.source_text == "tasks: {}"
    assert run.run.duration_s == 4.0
    assert run.run.lease_until is None
    assert not run.run.lease_live
    assert [(t.task_id, t.state, t.attempt) for t in run.transitions] == [
        (t.task_id, t.state, t.attempt) for t in history]
    failed = run.transitions[-2]
    # The executor is the snapshot's; the worker the transition's own, else the batch's.
    assert (failed.exit_code, failed.executor, failed.worker, failed.at) == (
        3, "thread", "h:1", T0 + timedelta(seconds=4))
    assert run.transitions[0].worker is None
    assert run.transitions[5].traceback == "TB"
    assert run.transitions[7].log_path == "/l/b.2.log"
    a, b, c = (run.tasks[t] for t in "abc")
    assert (a.state, a.attempts, a.value) == (S.SUCCEEDED, 1, {"rows": [1, 2]})
    assert (b.state, b.attempts, b.value, b.error) == (S.FAILED, 2, MISSING, "CommandFailed: 3")
    assert (c.state, c.attempts, c.value) == (S.UPSTREAM_FAILED, 0, MISSING)
    assert [e.kind for e in store.events("r1")] == ["run_started"]
    assert store.events("r1")[0].data == {"k": 1}


def test_tasks_a_run_added_while_it_ran_load_with_their_history(store):
    """A run that grew (for_each) stores the new tasks as a tasks_added event: loading it
    knows them, checks their history and reads their values."""
    store.begin_run(record(), lease_s=30)
    added = TaskSnapshot("c[0]", ("b",), "fc0", "thread")
    store.write("r1", transitions=[*ok_history("a"), *ok_history("b")],
                events=[EventRecord("tasks_added", T0, data={"tasks": [list(added)]})])
    store.write("r1", transitions=ok_history("c[0]", at=2.0), values=[("c[0]", 7)])
    run = store.load_run("r1")
    assert run.run.tasks == (*TASKS, added)
    assert (run.tasks["c[0]"].state, run.tasks["c[0]"].value) == (S.SUCCEEDED, 7)
    assert run.tasks["c[0]"].deps == ("b",)


def test_an_error_with_an_undecodable_character_round_trips(store):
    store.begin_run(record(), lease_s=30)
    odd = "no such file: b'\\xff' -> \udcff"  # what os.fsdecode makes of a bad file name
    store.write("r1", transitions=[tr("a", S.READY, 0, 0), tr("a", S.RUNNING, 1, 0),
                                   tr("a", S.FAILED, 1, 1, duration_s=1.0, error=odd)])
    assert store.load_run("r1").tasks["a"].error == odd


def test_unknown_run_is_a_clear_error(store):
    with pytest.raises(RunNotFound, match="nope"):
        store.load_run("nope")
    with pytest.raises(RunNotFound):
        store.get_run("nope")


# ---------------------------------------------------------------------------- values

DATA = [
    None, True, 0, -(2**63), 2**64 - 1, 2**70, 1.5, math.inf, "text", "",
    [1, [2, "x"]], {"k": [None, 1.0]}, (1, "a", (2,)), b"\x00bytes\xff", {1, 2},
    frozenset({"f"}), {(1, 2): "tuple key", 3: None}, [b"in a list", (None,)],
]


@pytest.mark.parametrize("value", DATA, ids=[repr(v)[:30] for v in DATA])
def test_data_values_read_back_with_their_exact_types(store, value):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"), values=[("a", value)])
    back = store.load_run("r1").tasks["a"]
    assert back.value_error is None
    assert back.value == value

    def types(v: Any) -> str:
        """The type tree of ``v``, as text."""
        if isinstance(v, dict):
            return f"dict{sorted(f'{types(k)}:{types(x)}' for k, x in v.items())}"
        if isinstance(v, list | tuple | set | frozenset):
            return f"{type(v).__name__}{sorted(types(x) for x in v)}"
        return type(v).__name__

    assert types(back.value) == types(value)


def test_a_nan_value_reads_back_as_nan(store):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"), values=[("a", [math.nan])])
    assert math.isnan(store.load_run("r1").tasks["a"].value[0])


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]


def test_values_that_are_not_data_are_not_stored_unless_pickling_is_chosen(store):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"), values=[("a", Point(1))])
    a = store.load_run("r1").tasks["a"]
    assert a.value is MISSING
    assert "Point is not JSON data" in (a.value_error or "")
    assert "pickle_values=True" in (a.value_error or "")


def test_pickled_values_are_signed_and_read_back_with_the_same_key(open_test_store):
    store = open_test_store(pickle_values=True)
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a") + ok_history("b", 1),
                values=[("a", Point(7)), ("b", threading.Lock())])
    run = store.load_run("r1")
    assert run.tasks["a"].value == Point(7)
    assert run.tasks["b"].value is MISSING  # cannot be pickled: says so
    assert "could not pickle the value: TypeError" in (run.tasks["b"].value_error or "")
    # Another reader without pickling chosen still reads a value it can verify.
    assert open_test_store().load_run("r1").tasks["a"].value == Point(7)


def test_a_pickle_signed_with_another_key_is_never_unpickled(open_test_store):
    writer = open_test_store(pickle_values=True, key="the writer's key")
    writer.begin_run(record(), lease_s=30)
    writer.write("r1", transitions=ok_history("a"), values=[("a", Point(7))])
    a = open_test_store(key="another key").load_run("r1").tasks["a"]
    assert a.value is MISSING
    assert "signature does not verify" in (a.value_error or "")


def test_large_values_round_trip(open_test_store):
    store = open_test_store(value_limit=100, pickle_values=True)
    store.begin_run(record(), lease_s=30)
    big, big_object = "x" * 1000, Point(10**400)
    store.write("r1", transitions=ok_history("a") + ok_history("b", 1),
                values=[("a", big), ("b", big_object)])
    run = store.load_run("r1")
    assert run.tasks["a"].value == big
    assert run.tasks["b"].value == big_object


# ---------------------------------------------------------------------------- corruption

CORRUPT = [
    ("succeeded twice", ok_history("a") + [tr("a", S.SUCCEEDED, 1, 5)],
     "a", "already final"),
    ("running after succeeded", ok_history("a") + [tr("a", S.RUNNING, 2, 5)],
     "a", "already final"),
    ("running without ready", [tr("a", S.RUNNING, 1, 0)], "a", "from pending to running"),
    ("attempt skipped", [tr("a", S.READY, 0, 0), tr("a", S.RUNNING, 2, 0)],
     "a", "attempt 2 started after attempt 0"),
    ("outcome of another attempt",
     [tr("a", S.READY, 0, 0), tr("a", S.RUNNING, 1, 0), tr("a", S.FAILED, 3, 1)],
     "a", "outcome is for attempt 3"),
    ("unknown task", [tr("zz", S.READY, 0, 0)], "zz", "not in the run's DAG"),
]


@pytest.mark.parametrize(("history", "task", "reason"), [c[1:] for c in CORRUPT],
                         ids=[c[0] for c in CORRUPT])
def test_a_history_breaking_the_state_machine_is_reported_corrupt(store, history, task, reason):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=history)
    with pytest.raises(CorruptHistory, match=reason) as info:
        store.load_run("r1")
    assert (info.value.run_id, info.value.task) == ("r1", task)
    assert "#" in (info.value.transition or "")
    assert str(store.url) in str(info.value)


@pytest.mark.parametrize("entry", [
    ["a", "ready"], ["a", "bogus-state", 0, 0.0], ["a", "ready", "0", 0.0],
    ["a", "ready", 0, "now"], [1, "ready", 0, 0.0], "a string", ["a", "ready", 0, 0.0, "x"],
])
def test_a_transition_of_the_wrong_shape_is_reported_corrupt(store, entry):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=[entry])
    with pytest.raises(CorruptHistory, match="r1") as info:
        store.load_run("r1")
    assert isinstance(info.value, BrokenStore)


def test_reused_tasks_may_only_start_succeeded(store):
    store.begin_run(record(reused=("a",)), lease_s=30)
    store.write("r1", transitions=[tr("a", S.SUCCEEDED, 0, 0)], values=[("a", 1)])
    assert store.load_run("r1").tasks["a"].value == 1
    store.begin_run(record("r2", reused=("a",)), lease_s=30)
    store.write("r2", transitions=ok_history("a"))
    with pytest.raises(CorruptHistory, match="started this task as already succeeded"):
        store.load_run("r2")


def test_a_failed_batch_leaves_nothing_half_written(store):
    store.begin_run(record(), lease_s=30)
    store.write("r1", transitions=ok_history("a"), values=[("a", 1)])
    with pytest.raises(BrokenStore, match=r"(?s)could not write.*store: "):
        # The event breaks a NOT NULL constraint: the batch before it is rolled back too.
        store.write("r1", transitions=ok_history("b"), values=[("b", 2)],
                    events=[EventRecord(None, T0)])  # type: ignore[arg-type]
    run = store.load_run("r1")
    assert {t.task_id for t in run.transitions} == {"a"}
    assert run.tasks["a"].value == 1
    assert store.events("r1") == []


# ---------------------------------------------------------------------------- resume support


def test_latest_unfinished_skips_succeeded_and_resumed_runs(store):
    assert store.latest_unfinished("p") is None
    for k, status in enumerate([StoredStatus.FAILED, StoredStatus.SUCCEEDED]):
        store.begin_run(record(f"r{k}", started=T0 + timedelta(minutes=k)), lease_s=0)
        finished(store, f"r{k}", status)
    store.begin_run(record("other", pipeline="q", started=T0 + timedelta(hours=1)), lease_s=0)
    assert store.latest_unfinished("p").id == "r0"
    store.begin_run(record("r2", started=T0 + timedelta(minutes=5)), lease_s=0)  # crashed
    assert store.latest_unfinished("p").id == "r2"
    store.begin_run(record("r3", started=T0 + timedelta(minutes=6), resumed_from="r2"),
                    lease_s=30, resume_of="r2")
    assert store.get_run("r2").status is StoredStatus.CRASHED
    assert store.get_run("r2").resumed_by == "r3"
    assert store.latest_unfinished("p").id == "r3"
    assert [e.kind for e in store.events("r2")] == ["resumed"]


def test_resuming_a_run_with_a_live_lease_is_refused(store):
    store.begin_run(record("r1"), lease_s=60)
    assert store.get_run("r1").lease_live
    with pytest.raises(RunLocked, match="'r1' is held by me"):
        store.begin_run(record("r2", resumed_from="r1"), lease_s=60, resume_of="r1")
    with pytest.raises(RunNotFound):  # nothing of the refused run was written
        store.get_run("r2")


def test_only_one_resume_wins_and_succeeded_runs_are_not_resumed(store):
    store.begin_run(record("r1"), lease_s=0)  # a lease that has lapsed: its process died
    store.begin_run(record("r2"), lease_s=30, resume_of="r1")
    with pytest.raises(RunLocked, match="run r2"):
        store.begin_run(record("r3"), lease_s=30, resume_of="r1")
    finished(store, "r2")
    with pytest.raises(RunNotFound, match="nothing to resume"):
        store.begin_run(record("r4"), lease_s=30, resume_of="r2")
    with pytest.raises(RunNotFound):
        store.begin_run(record("r5"), lease_s=30, resume_of="nope")


def test_claimants_racing_for_a_dead_run_one_wins(open_test_store):
    open_test_store().begin_run(record("dead"), lease_s=0)
    stores = [open_test_store() for _ in range(4)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(stores))

    def claim(k: int) -> None:
        barrier.wait()
        try:
            stores[k].begin_run(record(f"new{k}"), lease_s=30, resume_of="dead")
            outcomes.append("won")
        except RunLocked:
            outcomes.append("locked")
        except BrokenStore as exc:  # SQLite: a writer that waited out the busy timeout
            outcomes.append(f"broken: {exc}")

    threads = [threading.Thread(target=claim, args=(k,)) for k in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count("won") == 1, outcomes
    winner = stores[0].get_run("dead").resumed_by
    assert winner is not None
    assert {r.id for r in stores[0].list_runs()} == {"dead", winner}  # the losers wrote nothing


def test_heartbeat_extends_the_lease_until_the_run_ends(store):
    store.begin_run(record("r1"), lease_s=0)
    assert not store.get_run("r1").lease_live
    store.write("r1", lease=("me", 60.0))
    assert store.get_run("r1").lease_live
    store.write("r1", lease=("someone else", 0.0))  # not the owner: no effect
    assert store.get_run("r1").lease_live
    finished(store, "r1")
    store.write("r1", lease=("me", 60.0))  # a late heartbeat does not revive a finished run
    assert not store.get_run("r1").lease_live


# ---------------------------------------------------------------------------- takeover


def identity_of_a_process_that_is_gone() -> str:
    """The identity a run would record, of a process that has exited since."""
    code = "from corral.store._owner import current_process; print(current_process())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    if out == "None":
        pytest.skip("this platform cannot tell a process's identity (no /proc)")
    return out


def test_a_lease_whose_owner_is_gone_does_not_hold(store):
    gone = identity_of_a_process_that_is_gone()
    store.begin_run(record("dead", owner_process=gone), lease_s=600)
    dead = store.get_run("dead")
    assert (dead.lease_live, dead.observed_status) == (False, StoredStatus.CRASHED)
    assert [r.id for r in store.list_runs(status="crashed")] == ["dead"]
    assert store.list_runs(status="running") == []
    store.begin_run(record("new", resumed_from="dead"), lease_s=30, resume_of="dead")
    assert store.get_run("dead").resumed_by == "new"


def test_a_live_owner_or_one_elsewhere_holds_its_lease(store):
    from corral.store._owner import current_process

    me = current_process()
    if me is None:
        pytest.skip("this platform cannot tell a process's identity (no /proc)")
    elsewhere = "00000000-0000-0000-0000-000000000000/1/1/1"  # another machine's boot
    for run_id, owner in (("alive", me), ("elsewhere", elsewhere), ("unknown", None)):
        store.begin_run(record(run_id, owner_process=owner), lease_s=600)
        assert store.get_run(run_id).lease_live
        with pytest.raises(RunLocked):
            store.begin_run(record(f"{run_id}-2"), lease_s=30, resume_of=run_id)
    assert {r.id for r in store.list_runs(status="running")} == {"alive", "elsewhere",
                                                                  "unknown"}


def test_many_running_runs_with_gone_owners_are_listed_as_crashed(store):
    gone = identity_of_a_process_that_is_gone()
    for k in range(12):
        store.begin_run(record(f"r{k:02}", started=T0 + timedelta(minutes=k),
                               owner_process=gone), lease_s=600)
    store.begin_run(record("live", started=T0 + timedelta(hours=1)), lease_s=600)
    assert [r.id for r in store.list_runs(status="running", limit=3)] == ["live"]
    assert [r.id for r in store.list_runs(status="crashed", limit=3)] == ["r11", "r10", "r09"]


# ---------------------------------------------------------------------------- history


def test_list_runs_newest_first_with_filters(store):
    for k in range(4):
        store.begin_run(record(f"r{k}", pipeline="p" if k % 2 else "q",
                               started=T0 + timedelta(minutes=k)), lease_s=0)
    finished(store, "r1", StoredStatus.FAILED)
    assert [r.id for r in store.list_runs()] == ["r3", "r2", "r1", "r0"]
    assert [r.id for r in store.list_runs(limit=2)] == ["r3", "r2"]
    assert [r.id for r in store.list_runs(pipeline="p")] == ["r3", "r1"]
    assert [r.id for r in store.list_runs(status="failed")] == ["r1"]
    # r0 and r2 never ended and their leases lapsed: they crashed, as far as anyone can see.
    assert [r.id for r in store.list_runs(status=StoredStatus.CRASHED, pipeline="q")] == [
        "r2", "r0"]
    assert [r.observed_status for r in store.list_runs(pipeline="q")] == [
        StoredStatus.CRASHED, StoredStatus.CRASHED]
    assert store.list_runs(status=StoredStatus.RUNNING) == []
    store.begin_run(record("live", pipeline="q", started=T0 + timedelta(hours=1)), lease_s=60)
    assert [r.id for r in store.list_runs(status="running")] == ["live"]
    assert store.get_run("live").observed_status is StoredStatus.RUNNING
    with pytest.raises(ValueError):
        store.list_runs(status="bogus")


def test_task_durations_are_medians_of_successful_attempts(store):
    for k, (da, db) in enumerate([(1.0, 10.0), (2.0, 20.0), (9.0, 30.0)]):
        store.begin_run(record(f"r{k}"), lease_s=0)
        store.write(f"r{k}", transitions=ok_history("a", duration=da) + ok_history("b", 1, db))
    store.begin_run(record("failing"), lease_s=0)
    store.write("failing", transitions=[
        tr("c", S.READY, 0, 0), tr("c", S.RUNNING, 1, 0),
        tr("c", S.FAILED, 1, 100, duration_s=100.0)])
    store.begin_run(record("elsewhere", pipeline="other"), lease_s=0)
    store.write("elsewhere", transitions=ok_history("a", duration=500.0))
    assert store.task_durations("p", ["a", "b", "c", "zz"]) == {"a": 2.0, "b": 20.0}
    assert store.task_durations("p", []) == {}


def test_prune_removes_old_runs(open_test_store):
    store = open_test_store(value_limit=10)
    now = datetime.now(UTC)
    store.begin_run(record("old", started=now - timedelta(days=10)), lease_s=0)
    store.write("old", transitions=ok_history("a"), values=[("a", "y" * 100)],
                finish=(StoredStatus.SUCCEEDED, now - timedelta(days=9)))
    store.begin_run(record("new", started=now), lease_s=0)
    finished(store, "new", at=now)
    store.begin_run(record("old-but-live", started=now - timedelta(days=10)), lease_s=600)
    assert store.prune(timedelta(days=7)) == ["old"]
    assert [r.id for r in store.list_runs()] == ["new", "old-but-live"]
    with pytest.raises(RunNotFound):
        store.load_run("old")
