"""Task options, spelled one way for both front ends: ``@dag.task(...)`` and pipeline files.

:data:`TASK_OPTIONS` documents every option; :func:`make_spec` turns an option bag (defaults
merged under the task's own) into a :class:`TaskSpec`. Values are converted where there is one
obvious conversion (a ``timedelta`` to seconds, a list to a tuple) and otherwise passed through
unchanged, so that :func:`corral._graph.build_graph` reports every bad value at once, with the
task and file it belongs to, instead of the first one raising here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from corral._errors import Problem, ValidationError
from corral._spec import Action, RetryPolicy, TaskSpec, TriggerRule
from corral._words import suggest

__all__ = ["TASK_OPTIONS", "check_option_names", "make_spec"]

TASK_OPTIONS: dict[str, str] = {
    "depends_on": "ids of tasks that must finish first",
    "retries": "extra attempts after a failure (default 0)",
    "retry_delay": "seconds before the first retry (default 1)",
    "retry_backoff": "multiplier of the delay for each further retry (default 2)",
    "retry_max_delay": "cap on the delay between retries, in seconds (default 300)",
    "retry_jitter": "fraction of the delay randomised away, 0..1 (default 0.1)",
    "timeout": "seconds an attempt may run before it is stopped and failed",
    "heartbeat": "seconds an attempt may go without a sign of life before it is failed as hung",
    "priority": "higher runs first among ready tasks (default 0)",
    "resources": "what one attempt holds while it runs: {cpu: 1, memory_mb: 512, gpu: 1}",
    "executor": "async | thread | process | shell (default: from the action)",
    "trigger_rule": "all_success (default) | all_done",
    "allow_failure": "a failure of this task does not fail the run or its dependents",
    "estimate": "expected seconds, for the plan and the critical-path priority",
    "tags": "labels, for your own filtering",
    "env": "environment variables added for this task",
    "cwd": "working directory of this task",
    "queue": "the fleet queue its attempts go to with --broker (default: default)",
    "when": "a condition, ${{ ... }}: the task runs only if it holds when it could start, "
            "else it is skipped (see corral._expressions)",
    "inputs": "file globs the task reads: with --changed-only it is skipped while they, its "
              "definition and its upstream are unchanged since it last succeeded",
    "outputs": "file globs the task writes: with --changed-only it runs again if one is missing",
    "rate_limit": "name(s) of declared rate_limits: the task starts only when each allows it",
    "breaker": "name of a declared circuit breaker: its failures count, and it may stop the task",
    "for_each": "id of a task that returns a list: one instance of this task per item, named "
                "ID[0], ID[1], ..., the item passed as the first positional argument (to a "
                "command: in $CORRAL_ITEM); downstream receives the list of their results, "
                "in order",
}

_RETRY_FIELDS = {
    "retries": "retries",
    "retry_delay": "delay",
    "retry_backoff": "backoff",
    "retry_max_delay": "max_delay",
    "retry_jitter": "jitter",
}


_KNOWN = frozenset(TASK_OPTIONS)
_NO_RETRY = RetryPolicy()


def check_option_names(
    options: Mapping[str, Any], *, where: str, extra: tuple[str, ...] = ()
) -> list[Problem]:
    """Problems for option names that do not exist, each with the nearest real one."""
    known = [*TASK_OPTIONS, *extra]
    problems = []
    for key in options:
        if key not in known:
            close = suggest(str(key), known)
            problems.append(Problem(
                f"{where}: unknown option {key!r}",
                hint=f"did you mean {close!r}?" if close else None,
            ))
    return problems


def make_spec(
    task_id: str,
    action: Action,
    *,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    source: tuple[str, int | None] | None = None,
) -> TaskSpec:
    """Build a spec from an option bag; ``defaults`` fill what ``options`` leave out."""
    # The common case first, and cheap: a DAG may add 100,000 tasks through here.
    merged: Mapping[str, Any] = {**defaults, **(options or {})} if defaults else options or {}
    if not merged.keys() <= _KNOWN:
        raise ValidationError(check_option_names(merged, where=f"task {task_id!r}"))
    get = merged.get
    retry = _NO_RETRY
    plain = merged.keys() <= _PLAIN  # no retry policy and no rare option: the usual task
    if not plain and not merged.keys().isdisjoint(_RETRY_FIELDS):
        retry = RetryPolicy(**{field: _duration(merged[key])
                               for key, field in _RETRY_FIELDS.items() if key in merged})
    depends = get("depends_on", ())
    if isinstance(depends, str):
        depends = (depends,)
    trigger = get("trigger_rule", TriggerRule.ALL_SUCCESS)
    if type(trigger) is str:  # a known rule as its enum; anything else is build_graph's to report
        trigger = _RULES.get(trigger, trigger)
    tags = get("tags", ())
    timeout, heartbeat, estimate = get("timeout"), get("heartbeat"), get("estimate")
    # Options most tasks do not have, read only when present (100,000 tasks pass here).
    rare: dict[str, Any] = {}
    if not plain and not merged.keys().isdisjoint(_RARE):
        rare, depends = _rare_options(task_id, merged, depends)
    return TaskSpec(
        id=task_id,
        action=action,
        args=tuple(args),
        kwargs=dict(kwargs) if kwargs else {},
        depends_on=tuple(depends),
        retry=retry,
        timeout=timeout if timeout is None else _duration(timeout),
        heartbeat=heartbeat if heartbeat is None else _duration(heartbeat),
        priority=get("priority", 0),
        resources=dict(get("resources") or {}),
        executor=get("executor"),
        trigger_rule=trigger,
        allow_failure=bool(get("allow_failure", False)),
        estimate=estimate if estimate is None else _duration(estimate),
        tags=(tags,) if isinstance(tags, str) else tuple(tags),
        env=dict(get("env") or {}),
        cwd=get("cwd"),
        queue=get("queue"),
        source=source,
        **rare,
    )


_RARE = frozenset({"when", "inputs", "outputs", "rate_limit", "breaker", "for_each"})
_PLAIN = _KNOWN - _RARE - set(_RETRY_FIELDS)


def _rare_options(task_id: str, merged: Mapping[str, Any],
                  depends: Any) -> tuple[dict[str, Any], Any]:
    """The :data:`_RARE` options as TaskSpec fields; a condition's tasks join ``depends``."""
    rare: dict[str, Any] = {}
    for_each = merged.get("for_each")
    if for_each is not None:
        rare["for_each"] = for_each
        if isinstance(for_each, str) and for_each not in depends:
            depends = (*depends, for_each)
    when = merged.get("when")
    if when is not None:
        rare["when"] = when = _condition(task_id, when)
        depends = (*depends, *(t for t in when.expression.tasks if t not in depends))
    for key in ("inputs", "outputs", "rate_limit"):
        value = merged.get(key)
        if value is not None:
            # a list as a tuple; anything else is build_graph's to report
            rare[key] = (value,) if isinstance(value, str) \
                else tuple(value) if isinstance(value, list | tuple) else value
    if "breaker" in merged:
        rare["breaker"] = merged["breaker"]
    return rare, depends


def _condition(task_id: str, when: Any) -> Any:
    """``when`` as a :class:`~corral._expressions.Condition` (text parsed here, for the
    Python API; pipeline files give one with their parameters bound)."""
    from corral._expressions import Condition, ExpressionError, parse, whole

    if isinstance(when, Condition):
        return when
    if not isinstance(when, str):
        raise ValidationError([Problem(f"task {task_id!r}: when must be an expression, "
                                       f"'${{{{ ... }}}}', not {type(when).__name__}")])
    try:
        return Condition(parse(whole(when) or when))
    except ExpressionError as e:
        raise ValidationError([Problem(f"task {task_id!r}: when: {e}")]) from None


_RULES: dict[str, TriggerRule] = {rule.value: rule for rule in TriggerRule}


def _duration(value: Any) -> Any:
    # Only the one lossless conversion; anything else is checked, as written, by build_graph.
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value
