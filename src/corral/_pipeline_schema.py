"""The shape of a pipeline file: the header and task models, and the JSON Schema of both.

:mod:`corral._pipeline` validates loaded data against these and translates pydantic's errors
into problems with lines; ``corral schema`` prints :func:`pipeline_schema` for editors. Which
task options exist is :data:`corral._options.TASK_OPTIONS`' business: this module only knows
how their values are written in a file (:data:`OPTION_TYPES`), and an option it does not know
the type of is accepted as any value and checked by ``build_graph``.

Tasks are TypedDicts validated by a ``TypeAdapter`` (half the cost of a model, and a file may
hold 100,000 of them); the header is a strict pydantic model (``strict``: YAML and JSON
already give real ints, floats and booleans, so ``"2"`` is a mistake; no NaN or infinities).
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args, get_origin

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict, is_typeddict

from corral._limits import parse_duration, parse_rate
from corral._options import TASK_OPTIONS

__all__ = ["OPTION_TYPES", "TASK", "FileHeader", "Header", "Task", "known_keys",
           "pipeline_schema"]


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema of pipeline files, for editors and ``corral schema``."""
    schema = _File.model_json_schema()
    schema["patternProperties"] = {
        "^x-": {"description": "ignored: a place for YAML anchors to be reused with <<"}
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --------------------------------------------------------------------------- the models
def _one_or_many(value: object) -> object:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise PydanticCustomError("names_type", "must be a string or a list of strings")
    return value


def _scalar_text(value: object) -> object:
    """A scalar as the string a shell would see; anything else unchanged, for pydantic."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _scalar_values(value: object) -> object:
    if isinstance(value, dict):
        return {k: _scalar_text(v) for k, v in value.items()}
    return value


_Names = Annotated[
    list[str],
    BeforeValidator(_one_or_many),
    WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}),
]
_Scalar: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_ScalarOrNull: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}
_Env = Annotated[
    dict[str, str],
    BeforeValidator(_scalar_values),
    WithJsonSchema({"type": "object", "additionalProperties": _Scalar}),
]
_ParamsDecl = Annotated[
    dict[str, str | None],
    BeforeValidator(_scalar_values),
    WithJsonSchema({"type": "object", "additionalProperties": _ScalarOrNull}),
]
_Amounts = dict[str, Annotated[float, Field(ge=0)]]


def _rate(value: object) -> object:
    try:
        parse_rate(value)
    except ValueError:
        raise PydanticCustomError(
            "rate", "must be a rate written N/s, N/m or N/h (e.g. 10/s)") from None
    return value


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError:
        raise PydanticCustomError(
            "duration", "must be a duration: seconds, or a number with ms, s, m or h (60s)"
        ) from None


_Rate = Annotated[str, BeforeValidator(_rate),
                  WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?/[smh]$"})]
_Duration = Annotated[float, BeforeValidator(_duration),
                      WithJsonSchema({"type": ["number", "string"]})]


class _RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    rate: _Rate = Field(description="N/s, N/m or N/h")
    burst: Annotated[int, Field(ge=1)] = Field(1, description="admitted at once (default 1)")


_RateDecl = Annotated[
    Annotated[_Rate, Tag("rate")] | Annotated[_RateLimit, Tag("mapping")],
    Discriminator(lambda v: "mapping" if isinstance(v, dict | _RateLimit) else "rate"),
]


class _Breaker(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    failures: Annotated[int, Field(ge=1)] = Field(description="failures within window that open it")
    window: _Duration = Field(60.0, description="seconds failures are counted over (60s)")
    reset: _Duration = Field(30.0, description="seconds it stays open before a probe (30s)")
    half_open: Annotated[int, Field(ge=1)] = Field(
        1, description="probes let through when half-open; that many successes close it")
    on_open: Literal["fail", "wait"] = Field(
        "fail", description="while open, tasks fail at once (CircuitOpen) or wait")

# How each task option is written in a file. Which options exist is TASK_OPTIONS' business:
# an option missing here is accepted as any value, and build_graph checks it.
OPTION_TYPES: dict[str, Any] = {
    "depends_on": _Names,
    "retries": int,
    "retry_delay": float,
    "retry_backoff": float,
    "retry_max_delay": float,
    "retry_jitter": float,
    "timeout": float | None,  # null: no timeout, even if the defaults set one
    "heartbeat": float | None,  # null: no heartbeat, even if the defaults set one
    "priority": int,
    "resources": dict[str, float],
    "executor": str | None,  # null: chosen from the action
    "trigger_rule": str,
    "allow_failure": bool,
    "estimate": float | None,
    "tags": _Names,
    "env": _Env,
    "cwd": str | None,
    "queue": str | None,  # null: the default queue
    "when": str,
    "inputs": _Names,
    "outputs": _Names,
    "rate_limit": _Names,
    "breaker": str | None,
    "for_each": str | None,
}


# strict: YAML and JSON already give real ints, floats and booleans, so "2" is a mistake.
# No NaN or infinity in any number corral reads (a NaN timeout would never fire).
_CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class _Strict(BaseModel):
    model_config = _CONFIG


def _queue_name(value: str) -> str:
    from corral.fleet._balance import QUEUE_NAME

    if not QUEUE_NAME.fullmatch(value):
        raise PydanticCustomError("queue_name", "is not a queue name (letters, digits, '_', "
                                  "'.', '-'; up to 100)")
    return value


# As corral worker --queue takes them.
_QueueName = Annotated[str, AfterValidator(_queue_name),
                       WithJsonSchema({"type": "string",
                                       "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"})]


class _PoolBreaker(_Breaker):
    """A queue's pool breaker: as a named breaker, with the pools' defaults."""

    failures: Annotated[int, Field(ge=1)] = Field(
        3, description="infrastructure failures (crashed workers) within window that open it")
    on_open: Literal["fail", "wait"] = Field(
        "wait", description="while open, the queue's tasks wait (default) or fail at once")


_PoolBreakerDecl = Annotated[
    Annotated[_PoolBreaker, Tag("mapping")] | Annotated[bool, Tag("bool")],
    Discriminator(lambda v: "bool" if isinstance(v, bool) else "mapping"),
]


class _QueueDecl(_Strict):
    strategy: Literal["pull", "round_robin", "random", "least_loaded", "weighted"] = Field(
        "pull", description="pull (workers take what they have room for), round_robin, "
        "random, least_loaded (fewest in flight for its concurrency), weighted (--weight)",
    )
    breaker: _PoolBreakerDecl | None = Field(
        None, description="the queue's pool breaker against crashing workers: {failures: 3, "
        "window: 60s, reset: 30s, half_open: 1, on_open: wait} (the default), false: none",
    )


class Header(_Strict):
    name: str | None = Field(None, description="the pipeline's name (default: the file's)")
    description: str | None = Field(None, description="free text, ignored")
    concurrency: Annotated[int, Field(ge=1)] | None = Field(
        None, description="most tasks running at once (default: the CPU count)"
    )
    resources: _Amounts = Field(
        default_factory=dict,
        description="capacity, e.g. {cpu: 2, gpu: 1}; cpu and memory_mb default to the machine's",
    )
    env: _Env = Field(default_factory=dict, description="environment variables of every task")
    params: _ParamsDecl | None = Field(
        None, description="declared parameters and their defaults (null: must be passed)"
    )
    rate_limits: dict[str, _RateDecl] = Field(
        default_factory=dict, description="rate limits by name, tasks use them with rate_limit: "
        "{api: 10/s, llm: {rate: 60/m, burst: 5}}",
    )
    circuit_breakers: dict[str, _Breaker] = Field(
        default_factory=dict, description="circuit breakers by name, tasks use them with "
        "breaker: {payments: {failures: 5, window: 60s, reset: 30s, half_open: 1}}",
    )
    queues: dict[_QueueName, _QueueDecl] = Field(
        default_factory=dict, description="the fleet's queues, by name: how a queue's attempts "
        "are spread over its workers, {gpu: {strategy: least_loaded}} (pull, round_robin, "
        "random, least_loaded, weighted; default pull)",
    )
    python_path: _Names | None = Field(
        None, description="directories searched for call: modules (after sys.path, before the "
        "file's own directory), relative to the pipeline file",
    )


# A task and the defaults are TypedDicts, not models: validating one gives a dict of the keys
# written, at half the cost of a model (a file may hold 100,000 tasks).
_ACTION_FIELDS: dict[str, tuple[Any, str]] = {
    "description": (str | None, "free text, ignored"),
    "cmd": (str | None, "a shell command line (not with call)"),
    "call": (str | None, "a Python function, 'module:function'"),
    "args": (list[Any] | None, "positional arguments of call"),
    "kwargs": (dict[str, Any] | None, "keyword arguments of call"),
    "matrix": (dict[str, Annotated[list[str | int | float | bool], Field(min_length=1)]] | None,
               "one task per combination of these values, named ID[k=v,...]; ${matrix.k} "
               "in cmd, env, cwd, args and kwargs is the task's value of k"),
}
_OPTION_FIELDS = {name: (OPTION_TYPES.get(name, Any), doc) for name, doc in TASK_OPTIONS.items()}
_make_typed_dict: Any = TypedDict  # called with computed fields, which mypy cannot follow


def _typed_dict(name: str, fields: dict[str, tuple[Any, str]], *, required: str = "") -> Any:
    typed = _make_typed_dict(name, {
        key: (Required if key == required else NotRequired)[Annotated[kind, Field(description=doc)]]
        for key, (kind, doc) in fields.items()
    })
    typed.__pydantic_config__ = _CONFIG
    return typed


_Options = _typed_dict("TaskOptions", _OPTION_FIELDS)
Task = _typed_dict("Task", {**_ACTION_FIELDS, **_OPTION_FIELDS})
_ListTask = _typed_dict("ListTask", {"id": (str, "the task's id"), **_ACTION_FIELDS,
                                     **_OPTION_FIELDS}, required="id")
TASK = TypeAdapter(Task)
FileHeader = pydantic.create_model(
    "PipelineHeader",
    __base__=Header,
    defaults=(_Options | None, Field(None, description="options every task gets by default")),
)
_TaskTable: Any = dict[str, Task] | list[_ListTask]  # type: ignore[valid-type]
_File = pydantic.create_model(
    "Pipeline",
    __base__=FileHeader,
    tasks=(_TaskTable, Field(description="tasks by id, or a list of tasks each with an id")),
)


def known_keys(schema: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys the model or TypedDict nested at ``loc`` accepts (for "did you mean")."""
    current = schema
    for part in loc:
        if get_origin(current) is dict:  # a mapping of names to models: the model
            current = get_args(current)[1]
            continue
        fields = _fields_of(current)
        annotation = fields.get(part) if isinstance(part, str) else None
        nested = [kind for kind in _unwrapped(annotation)
                  if _fields_of(kind) or get_origin(kind) is dict]
        if not nested:
            return []
        current = nested[0]
    return list(_fields_of(current))


def _fields_of(kind: Any) -> dict[str, Any]:
    """Field name -> annotation of a model or TypedDict; empty for anything else."""
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return {name: field.annotation for name, field in kind.model_fields.items()}
    if is_typeddict(kind):
        return dict(kind.__annotations__)
    return {}


def _unwrapped(annotation: Any) -> list[Any]:
    """The types inside Optional, unions, Annotated, Required and NotRequired."""
    out, stack = [], [annotation]
    while stack:
        kind = stack.pop()
        origin = get_origin(kind)
        if origin in (Annotated, Required, NotRequired):
            stack.append(get_args(kind)[0])
        elif origin is Union or type(kind) is UnionType:
            stack.extend(get_args(kind))
        else:
            out.append(kind)
    return out
