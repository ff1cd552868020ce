"""Rate limits and circuit breakers through the Python API: DAG(rate_limits=...,
circuit_breakers=...), the task options, corral.limit in thread and async tasks."""

from __future__ import annotations

import pytest

import corral
from corral import DAG, TaskState
from corral.errors import CircuitOpen, CorralError, ValidationError


def run(dag, **kw):
    kw.setdefault("log_dir", None)
    kw.setdefault("handle_signals", False)
    return dag.run(**kw)


class Changes:
    """A listener that keeps breaker changes (and ignores the rest)."""

    def __init__(self):
        self.changes = []

    def run_started(self, run):
        pass

    def transitions(self, batch):
        pass

    def run_finished(self, result):
        pass

    def breaker_changed(self, change):
        self.changes.append((change.breaker, str(change.state)))


def test_an_open_breaker_fails_later_tasks_without_running_them():
    ran = []
    dag = DAG(circuit_breakers={"svc": {"failures": 2, "reset": 3600}})

    def broken():
        ran.append("broken")
        raise RuntimeError("down")

    def later():
        ran.append("later")

    a = dag.add(broken, id="a", options={"breaker": "svc", "allow_failure": True})
    b = dag.add(broken, id="b", options={"breaker": "svc", "allow_failure": True})
    dag.add(later, id="c", options={"breaker": "svc", "depends_on": [a, b]})
    listener = Changes()
    result = run(dag, listeners=[listener])
    assert ran == ["broken", "broken"]  # c never ran
    assert result["c"].state is TaskState.FAILED
    assert isinstance(result["c"].error, CircuitOpen)
    assert result["c"].error.breaker == "svc"
    assert listener.changes == [("svc", "open")]
    assert [(c.breaker, str(c.state)) for c in result.breakers] == [("svc", "open")]
    assert not result.ok


def test_rate_limits_pace_tasks_and_calls_inside_them():
    dag = DAG(rate_limits={"api": "200/s", "llm": {"rate": "100/s", "burst": 2}})

    def calls(n):
        for _ in range(n):
            with corral.limit("api"):
                pass
        return n

    async def async_calls(n):
        for _ in range(n):
            async with corral.limit("llm"):
                pass
        return n

    dag.add(calls, 3, id="sync", options={"rate_limit": "api"})
    dag.add(async_calls, 3, id="async", options={"rate_limit": ["api", "llm"]})
    result = run(dag)
    assert result.ok
    assert result.outputs == {"sync": 3, "async": 3}


def test_limit_outside_a_run_or_for_an_undeclared_name_says_why():
    with pytest.raises(CorralError, match="no corral run in this process declares"), \
            corral.limit("api"):
        pass
    dag = DAG(rate_limits={"api": "100/s"})

    def wrong():
        with corral.limit("apj"):
            pass

    dag.add(wrong, id="w", options={"rate_limit": "api"})
    result = run(dag)
    assert "declares no rate limit 'apj' (it has api)" in str(result["w"].error)


def test_a_blocking_limit_in_a_coroutine_is_refused_not_a_frozen_loop():
    dag = DAG(rate_limits={"api": "1/h"})

    async def wrong():
        with corral.limit("api"):
            pass

    dag.add(wrong, id="w")
    result = run(dag)
    assert "use 'async with corral.limit('api'):'" in str(result["w"].error)


def test_undeclared_names_and_bad_declarations_are_validation_errors():
    dag = DAG(rate_limits={"api": "10/x"}, circuit_breakers={"svc": {"failures": 0}})
    dag.add(print, id="p", options={"rate_limit": "apii", "breaker": "svx"})
    with pytest.raises(ValidationError) as caught:
        dag.validate()
    messages = [p.message for p in caught.value.problems]
    assert messages == [
        "rate limit 'api': malformed rate '10/x': write N/s, N/m or N/h (e.g. 10/s)",
        "circuit breaker 'svc': failures must be a whole number >= 1, not 0",
        "task 'p': unknown rate limit 'apii'",
        "task 'p': unknown circuit breaker 'svx'",
    ]


def test_the_rate_state_is_a_seam_a_run_can_be_given():
    # Two runs given one state share the limit: the seam fleet-wide limits will use.
    import asyncio

    from corral._limits import LocalRates, RateLimit
    from corral._runner import Runner

    class Recording(LocalRates):
        def __init__(self, limits):
            super().__init__(limits)
            self.asked = []

        def try_acquire(self, names, now, due=None):
            self.asked.append(tuple(names))
            return super().try_acquire(names, now, due)

    shared = Recording({"api": RateLimit(1000.0)})

    def inside():
        with corral.limit("api"):
            return "called"

    dag = DAG(rate_limits={"api": "1000/s"})
    dag.add(inside, id="t", options={"rate_limit": "api"})
    graph = dag.validate()

    async def both():
        return await asyncio.gather(Runner(graph, rates=shared).run(),
                                    Runner(graph, rates=shared).run())

    results = asyncio.run(both())
    assert [r["t"].value for r in results] == ["called", "called"]
    # each run's admission of t and its call inside, through the one shared state
    assert shared.asked.count(("api",)) >= 4
