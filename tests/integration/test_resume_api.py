"""Resume from Python: ``dag.run(store=..., resume=True | RUN_ID)`` and ``dag.resume_plan``,
against SQLite and the real PostgreSQL.

Every task appends its id to ``executions.txt``, so re-executions are counted, not guessed; a
flag file decides whether a task fails. The CLI comparison runs the real ``corral`` in a
subprocess. Timeouts are hang guards only.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import corral
from corral._errors import NotResumable, RunLocked
from corral.store import Resume, StoredStatus, open_store

HANG_GUARD_S = 60.0


def executions(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "executions.txt"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def logged(tmp_path: Path, task: str) -> None:
    with open(tmp_path / "executions.txt", "a") as f:
        f.write(task + "\n")


def b_first(flags: Path, x: int) -> int:
    logged(flags, "b")
    if (flags / "broken").exists():
        raise RuntimeError("b is broken")
    return x + 1


def b_changed(flags: Path, x: int) -> int:
    logged(flags, "b")
    return x + 100


def etl(tmp_path: Path, *, b=b_first) -> corral.DAG:
    """a -> b -> c -> e <- d; b fails while ``broken`` exists, e while ``e-broken`` does."""
    dag = corral.DAG("etl")

    def a() -> int:
        logged(tmp_path, "a")
        return 1

    def c(x: int) -> int:
        logged(tmp_path, "c")
        return x * 10

    def d() -> str:
        logged(tmp_path, "d")
        return "d"

    def e(dv: str, cv: int) -> str:
        logged(tmp_path, "e")
        if (tmp_path / "e-broken").exists():
            raise RuntimeError("e is broken")
        return f"{dv}-{cv}"

    av = dag.add(a, id="a")
    cv = dag.add(c, dag.add(b, tmp_path, av, id="b"), id="c")
    dag.add(e, dag.add(d, id="d"), cv, id="e")
    return dag


def run(dag: corral.DAG, store_url: str, tmp_path: Path, **options) -> corral.RunResult:
    return dag.run(store=store_url, log_dir=tmp_path / "logs", handle_signals=False, **options)


def test_a_failed_run_resumes_reusing_what_succeeded(store_url, open_test_store, tmp_path):
    (tmp_path / "broken").touch()
    first = run(etl(tmp_path), store_url, tmp_path, fail_fast=False)
    assert first.status is corral.RunStatus.FAILED
    assert executions(tmp_path) == Counter({"a": 1, "b": 1, "d": 1})

    (tmp_path / "broken").unlink()
    second = run(etl(tmp_path), store_url, tmp_path, resume=True)
    assert second.ok, second.to_dict()
    # a and d did not run again; their stored values reached b and e.
    assert executions(tmp_path) == Counter({"a": 1, "b": 2, "c": 1, "d": 1, "e": 1})
    assert (second["b"].value, second["c"].value, second["e"].value) == (2, 20, "d-20")
    assert (second["a"].value, second["d"].value) == (1, "d")

    store = open_test_store()
    old = store.load_run(first.run_id).run
    assert old.resumed_by == second.run_id
    new = store.load_run(second.run_id)
    assert new.run.resumed_from == first.run_id
    assert new.run.reused == ("a", "d")
    assert new.run.status is StoredStatus.SUCCEEDED
    assert store.latest_unfinished("etl") is None

    with pytest.raises(NotResumable, match=f"already resumed by run {second.run_id}"):
        run(etl(tmp_path), store_url, tmp_path, resume=first.run_id)
    assert executions(tmp_path)["a"] == 1


def test_a_run_whose_lease_is_live_is_refused_and_nothing_is_written(
    store_url, open_test_store, tmp_path
):
    """A task of the first run tries to resume that very run while it is alive."""
    seen: dict[str, object] = {}

    def probe() -> str:
        with open_store(store_url) as store:
            [live] = store.list_runs(pipeline="etl")
        again = etl(tmp_path)
        plan = again.resume_plan(store=store_url, run_id=live.id)
        assert plan is not None
        seen["plan_lease_live"] = plan.run.lease_live
        try:
            again.run(store=store_url, resume=live.id, log_dir=None, handle_signals=False)
        except RunLocked as exc:
            seen["refused"] = exc.run_id
        return live.id

    dag = etl(tmp_path)
    dag.add(probe, id="probe")
    first = run(dag, store_url, tmp_path, concurrency=1)  # probe runs alone
    assert first.ok, first.to_dict()
    assert first["probe"].value == first.run_id
    assert seen == {"plan_lease_live": True, "refused": first.run_id}
    assert executions(tmp_path) == Counter("abcde")  # the refused resume ran nothing

    store = open_test_store()
    assert [r.id for r in store.list_runs()] == [first.run_id]
    assert store.get_run(first.run_id).resumed_by is None
    assert "resumed" not in {e.kind for e in store.events(first.run_id)}


def test_a_changed_task_reruns_with_everything_downstream(store_url, open_test_store, tmp_path):
    (tmp_path / "e-broken").touch()
    first = run(etl(tmp_path), store_url, tmp_path, fail_fast=False)
    assert first.status is corral.RunStatus.FAILED
    assert first["c"].value == 20

    (tmp_path / "e-broken").unlink()
    changed = etl(tmp_path, b=b_changed)
    resume = changed.resume_plan(store=store_url, run_id=first.run_id)
    assert resume is not None
    assert resume.plan.rerun == {
        "b": "definition changed",
        "c": "upstream b re-runs",
        "e": "failed",
    }
    assert resume.plan.reuse == {"a": 1, "d": "d"}
    second = run(changed, store_url, tmp_path, resume=first.run_id)
    assert second.ok, second.to_dict()
    assert executions(tmp_path) == Counter({"a": 1, "d": 1, "b": 2, "c": 2, "e": 2})
    assert second["e"].value == "d-1010"
    assert open_test_store().get_run(first.run_id).resumed_by == second.run_id


def test_nothing_to_resume_runs_from_scratch(store_url, open_test_store, tmp_path):
    dag = etl(tmp_path)
    assert dag.resume_plan(store=store_url) is None
    first = run(dag, store_url, tmp_path, resume=True)  # an empty store: a new run
    assert first.ok
    assert executions(tmp_path) == Counter("abcde")
    second = run(dag, store_url, tmp_path, resume=True)  # only a succeeded run: a new run
    assert second.ok
    assert executions(tmp_path) == Counter("abcde" * 2)

    store = open_test_store()
    assert [store.get_run(r).resumed_from for r in (first.run_id, second.run_id)] == [None, None]
    assert store.get_run(first.run_id).resumed_by is None
    with pytest.raises(NotResumable, match="succeeded: there is nothing to resume"):
        run(dag, store_url, tmp_path, resume=first.run_id)
    assert len(store.list_runs()) == 2


def test_resume_without_a_store_is_a_clear_error(tmp_path):
    dag = etl(tmp_path)
    with pytest.raises(ValueError, match="resume=True needs the store the run was recorded in"):
        dag.run(resume=True, log_dir=None, handle_signals=False)
    with pytest.raises(ValueError, match="resume='some-run' needs the store"):
        asyncio.run(dag.run_async(resume="some-run", log_dir=None))
    with pytest.raises(ValueError, match="resume_plan\\(\\) needs the store"):
        dag.resume_plan(store=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names no run"):
        dag.run(store=f"sqlite:///{tmp_path / 'runs.db'}", resume="", handle_signals=False)
    assert executions(tmp_path) == Counter()
    assert not (tmp_path / "runs.db").exists()


PIPELINE = """
name: changing
tasks:
  a: {cmd: "echo a >> executions.txt"}
  b: {cmd: "echo b >> executions.txt; echo VERSION", depends_on: [a]}
  c: {cmd: "echo c >> executions.txt", depends_on: [b]}
  d: {cmd: "echo d >> executions.txt"}
  e: {cmd: "echo e >> executions.txt; test -e fixed"}
"""


def test_the_plan_is_the_one_the_cli_prints(store_url, tmp_path):
    def corral_cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        return subprocess.run(
            [sys.executable, "-m", "corral", *args, "--store", store_url],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
            timeout=HANG_GUARD_S,
        )

    pipeline = tmp_path / "changing.yaml"
    pipeline.write_text(textwrap.dedent(PIPELINE).replace("VERSION", "one"))
    first = corral_cli("run", str(pipeline), "--keep-going", "--json")
    assert first.returncode == 1, first.stderr
    run_id = json.loads(first.stdout)["run_id"]
    pipeline.write_text(textwrap.dedent(PIPELINE).replace("VERSION", "two"))

    dag = corral.load_pipeline(pipeline).dag
    for cli_args, run_id_arg in [
        (("resume", run_id), run_id),
        (("run", str(pipeline), "--resume"), None),
    ]:
        dry = corral_cli(*cli_args, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        printed = json.loads(dry.stdout)
        resume = dag.resume_plan(store=store_url, run_id=run_id_arg)
        assert isinstance(resume, Resume)
        assert resume.run.id == printed["resumes"] == run_id
        assert dict(resume.plan.rerun) == printed["rerun"] == {
            "b": "definition changed",
            "c": "upstream b re-runs",
            "e": "failed",
        }
        assert list(resume.plan.reuse) == printed["reuse"] == ["a", "d"]
    assert Counter((tmp_path / "executions.txt").read_text().split()) == Counter("abcde")


def test_a_run_of_another_dag_is_not_resumed_by_id(store_url, open_test_store, tmp_path):
    (tmp_path / "broken").touch()
    first = run(etl(tmp_path), store_url, tmp_path, fail_fast=False)
    other = etl(tmp_path)
    other.name = "not-etl"
    with pytest.raises(NotResumable, match=r"a run of 'etl', not of this DAG \('not-etl'\)"):
        run(other, store_url, tmp_path, resume=first.run_id)
    assert open_test_store().load_run(first.run_id).run.resumed_by is None


def test_resuming_an_id_in_a_store_that_does_not_exist_creates_nothing(tmp_path):
    from corral.store import RunNotFound

    url = f"sqlite:///{tmp_path / 'nowhere' / 'corral.db'}"
    with pytest.raises(RunNotFound, match="there is no store at"):
        etl(tmp_path).run(store=url, resume="20261123-000000-abcdef", handle_signals=False)
    assert not (tmp_path / "nowhere").exists()
