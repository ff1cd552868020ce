"""Layered configuration: one model of every setting, read from a file before a command runs.

Precedence, lowest first::

    defaults (each option's own)  <  corral.toml, or [tool.corral] in pyproject.toml
    <  its [env.NAME] section, NAME from $CORRAL_ENV  <  CORRAL_* variables  <  options

A setting's key is its variable without ``CORRAL_``, lowercased (``CORRAL_LOG_DIR`` is
``log_dir``; ``log-dir`` is accepted too), so a file uses the names users already know. Every
option's variable is a setting, but ``CORRAL_JSON``: how one command prints is not
configuration.

The file and its section become click's ``default_map`` (:func:`default_map_for`), which
click ranks below variables and options: precedence falls out of click, and this module only
reads, checks and locates. :class:`Settings` knows every key and its type; a file with a
syntax error, an unknown key (with a did-you-mean) or a bad value is a :class:`ConfigError`
naming the file, the key and the line, raised before the command starts.

Seam for pools and brokers (issue 13 §1-2): they become fields here (``broker``, and a
``pools`` table of small models), and their demands join :mod:`corral._preflight`'s.

This module imports pydantic-settings; ``import corral`` and ``corral --help`` do not load
it: the CLI asks for it only when :mod:`corral._config_file` (light) finds a file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from corral._config_file import ENV_SECTION_VAR, find_config_file, read_config_text
from corral._errors import ConfigError
from corral._words import Suggester, short_repr

__all__ = [
    "ENV_PREFIX",
    "KEYS",
    "Layers",
    "Settings",
    "Source",
    "load_layers",
    "setting_key",
]

ENV_PREFIX = "CORRAL_"

Words = Annotated[list[str] | None, NoDecode]


class Settings(BaseModel):
    """Every setting a configuration file may hold; None means "not set here".

    Types are checked here; a setting's choices and ranges are also checked by the options
    that use it (the CLI converts each value through them before the command starts).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Running pipelines: run, resume, plan.
    concurrency: int | None = Field(None, ge=1)
    fail_fast: bool | None = None
    dry_run: bool | None = None
    lease: str | float | None = None
    log_dir: str | None = None
    dask_address: str | None = None
    junit_xml: str | None = None
    report: Annotated[list[tuple[str, str]] | None, NoDecode] = None
    resume: bool | None = None
    changed_only: bool | None = None
    # The fleet (docs/fleet.md): run --broker, worker, workers, dlq.
    broker: str | None = None
    queues: Words = None
    worker_resources: str | None = None
    heartbeat_timeout: str | float | None = None
    max_deliveries: int | None = Field(None, ge=1)
    max_value_size: int | None = Field(None, ge=1)
    worker_grace: str | float | None = None
    worker_weight: int | None = Field(None, ge=0)
    health_window: str | float | None = None
    balance: Words = None
    pool_breaker: str | None = None
    # Pools (corral worker --min-workers/--max-workers) and worker health (corral workers).
    min_workers: int | None = Field(None, ge=0)
    max_workers: int | None = Field(None, ge=1)
    target_utilisation: float | None = Field(None, gt=0, le=1)
    scale_cooldown: str | float | None = None
    scale_interval: str | float | None = None
    pool_metrics_port: int | None = Field(None, ge=1, le=65535)
    pool_metrics_host: str | None = None
    max_error_rate: float | None = Field(None, ge=0, le=1)
    max_latency: str | float | None = None
    # Loading pipelines: every command that reads one.
    params: Words = None
    only: Words = None
    path: Words = None
    no_import: bool | None = None
    # The run store.
    store: str | None = None
    no_store: bool | None = None
    store_connections: int | None = Field(None, ge=1)
    # Reading history: runs, logs, prune; drawing: graph.
    status: str | None = None
    pipeline: str | None = None
    limit: int | None = Field(None, ge=1)
    attempt: int | None = Field(None, ge=1)
    older_than: str | float | None = None
    graph_format: str | None = None
    graph_output: str | None = None
    # The server (corral serve, corral token) and MCP.
    host: str | None = None
    port: int | None = Field(None, ge=0, le=65535)
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwks_file: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    api_tokens_file: str | None = None
    metrics_public: bool | None = None
    log_format: str | None = None
    log_level: str | None = None
    mcp: bool | None = None
    mcp_allow_shell: bool | None = None
    token_role: str | None = None
    token_subject: str | None = None
    token_static: bool | None = None
    token_ttl: str | float | None = None

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        # A table {key = "value"} reads better in a file; a variable is "k=v k2=v2" as click
        # splits it.
        if isinstance(value, Mapping):
            return [f"{k}={v}" for k, v in value.items()]
        return value.split() if isinstance(value, str) else value

    @field_validator("only", "queues", "balance", mode="before")
    @classmethod
    def _only(cls, value: Any) -> Any:
        return value.split() if isinstance(value, str) else value

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return value.split(os.pathsep) if isinstance(value, str) else value

    @field_validator("report", mode="before")
    @classmethod
    def _report(cls, value: Any) -> Any:
        # {md = "summary.md", json = "report.json"} or [["md", "summary.md"], ...]
        if isinstance(value, Mapping):
            return list(value.items())
        if isinstance(value, str):  # the variable: "md PATH json PATH", as click splits it
            words = value.split()
            return list(zip(words[::2], words[1::2], strict=False))
        return value


class _EnvSettings(BaseSettings, Settings):
    """:class:`Settings` with the ``CORRAL_*`` variables above the given values, for
    ``corral config show``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)  # variables win over the file's values


KEYS: tuple[str, ...] = tuple(Settings.model_fields)
_suggest = Suggester(KEYS)


def setting_key(envvar: str) -> str | None:
    """The key of the setting an option's variable names (None: not a corral variable)."""
    if not envvar.startswith(ENV_PREFIX):
        return None
    key = envvar[len(ENV_PREFIX):].lower()
    return key if key in Settings.model_fields else None


# ---------------------------------------------------------------------- reading it


@dataclass(frozen=True, slots=True)
class Source:
    """Where a value came from: an option's ``default``, a file (with its line and section), a
    variable, or the command line (``corral config show COMMAND ARGS...``)."""

    kind: str  # "default", "file", "env", "option"
    path: str | None = None
    line: int | None = None
    section: str | None = None  # "env.production" for a CORRAL_ENV section
    envvar: str | None = None
    option: str | None = None  # "--concurrency"

    def __str__(self) -> str:
        if self.kind == "option":
            return f"option {self.option}"
        if self.kind == "file":
            where = f"{self.path}:{self.line}" if self.line else str(self.path)
            return f"{where} [{self.section}]" if self.section else where
        if self.kind == "env":
            return f"env {self.envvar}"
        return self.kind


@dataclass(frozen=True, slots=True)
class Layers:
    """The file's values, its environment section's on top, each with where it was written."""

    path: Path | None = None
    environment: str | None = None  # the [env.NAME] section applied, if any
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)

    def effective(self) -> tuple[dict[str, Any], dict[str, Source]]:
        """Every setting that is set, with the ``CORRAL_*`` variables on top, and where each
        came from. A bad variable is a :class:`ConfigError` naming it."""
        try:
            merged = _EnvSettings(**self.values)
        except ValidationError as exc:
            raise _error(exc, lambda key: f"{ENV_PREFIX}{key.upper()}") from None
        values: dict[str, Any] = {}
        sources: dict[str, Source] = {}
        for key in KEYS:
            value = getattr(merged, key)
            if value is None:
                continue
            values[key] = value
            envvar = f"{ENV_PREFIX}{key.upper()}"
            sources[key] = (Source("env", envvar=envvar) if envvar in os.environ
                            else self.sources[key])
        return values, sources


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """(table..., key) -> the line it is set on, for messages and ``config show`` (tomllib
    gives values, not positions; plain ``key =`` lines under ``[table]`` headers suffice)."""
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            name = key.group(1).strip("\"'").replace("-", "_")
            lines.setdefault((*table, name), number)
    return lines


def load_layers(start: Path | None = None) -> Layers:
    """The configuration file's settings (none when there is no file), its ``$CORRAL_ENV``
    section on top, checked: a :class:`ConfigError` names file, key and line."""
    found = find_config_file(start)
    environment = os.environ.get(ENV_SECTION_VAR) or None
    if found is None:
        return Layers()
    path, table = found
    text = read_config_text(path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line 3, column 7)"
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    lines = _key_lines(text)
    root: Any = document
    for part in table:
        root = root.get(part, {}) if isinstance(root, dict) else {}
    sections = root.pop("env", {}) if isinstance(root, dict) else {}

    def where(*keys: str) -> str:
        line = lines.get((*table, *keys))
        return f"{path}:{line}" if line else str(path)

    if not isinstance(sections, dict) or not all(isinstance(s, dict) for s in sections.values()):
        raise ConfigError(f"{where('env')}: env: each [env.NAME] must be a table of settings")
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    # A file without [env.*] sections ignores CORRAL_ENV; a file with some names the one
    # wanted, or it is a typo (the file's own settings are checked first).
    layers: list[tuple[dict[str, Any], tuple[str, ...]]] = [(root, ())]
    if environment is not None and sections:
        layers.append((sections.get(environment, {}), ("env", environment)))
    for layer, prefix in layers:
        if prefix and prefix[-1] not in sections:
            guess = Suggester(sections)(prefix[-1])
            hint = f"did you mean {guess!r}? " if guess else ""
            raise ConfigError(f"{path}: {ENV_SECTION_VAR}={environment}: no [env.{environment}] "
                              f"section ({hint}sections: {', '.join(sorted(sections))})")
        layer = {key.replace("-", "_"): value for key, value in layer.items()}
        try:
            checked = Settings.model_validate(layer)
        except ValidationError as exc:
            raise _error(exc, lambda key, p=prefix: f"{where(*p, key)}: "
                         f"{'.'.join((*p, key))}") from None
        section = ".".join(prefix) if prefix else None
        for key in layer:
            values[key] = getattr(checked, key)
            sources[key] = Source("file", path=str(path), line=lines.get((*table, *prefix, key)),
                                  section=section)
    return Layers(path=path, environment=environment if len(layers) > 1 else None,
                  values=values, sources=sources)


def _error(exc: ValidationError, locate: Any) -> ConfigError:
    """One message per problem, each naming where it is and what to write instead."""
    messages = []
    for problem in exc.errors():
        key = str(problem["loc"][0]) if problem["loc"] else "?"
        if problem["type"] == "extra_forbidden":
            guess = _suggest(key)
            hint = f" (did you mean {guess!r}?)" if guess else ""
            messages.append(f"{locate(key)}: unknown setting{hint}")
        else:
            messages.append(f"{locate(key)}: {problem['msg']} "
                            f"(got {short_repr(problem.get('input'))})")
    return ConfigError("\n".join(messages))
