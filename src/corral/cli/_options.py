"""Options and helpers every command group shares: the pipeline file argument, parameters,
``--json``, ``--only``, where ``call:`` modules are found, the run store, durations.

Every option has a ``CORRAL_*`` variable, shown in ``--help`` (precedence: option > variable
> the configuration file's [env.NAME] section > the file (cli._config) > the pipeline file >
computed defaults).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import click

from corral.cli._exits import StoreError, UserError

if TYPE_CHECKING:
    from corral._pipeline import Pipeline
    from corral.store import Store

__all__ = [
    "CONTEXT_SETTINGS",
    "Duration",
    "emit_json",
    "file_argument",
    "import_options",
    "json_option",
    "load",
    "no_import_option",
    "no_store_option",
    "only_option",
    "open_run_store",
    "params_option",
    "parse_duration",
    "path_option",
    "stdout_to_stderr",
    "store_option",
]

# Every command's click settings: -h as --help, defaults shown, lines up to 100 wide.
CONTEXT_SETTINGS: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "show_default": True,
    "max_content_width": 100,
}

F = TypeVar("F", bound=Callable[..., Any])


def file_argument(f: F) -> F:
    # No exists= check: the loader reports a missing or unreadable file as a problem like any
    # other, so that `validate --json` still prints JSON and every message has one shape.
    return click.argument("file", type=click.Path(), metavar="FILE")(f)


def params_option(f: F) -> F:
    return click.option(
        "-p",
        "--param",
        "params",
        multiple=True,
        metavar="KEY=VALUE",
        envvar="CORRAL_PARAMS",
        show_envvar=True,
        help="Set a pipeline parameter (repeatable; in the variable, separate pairs by spaces).",
    )(f)


def json_option(f: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        envvar="CORRAL_JSON",
        show_envvar=True,
        help="Print one JSON document on stdout instead of text.",
    )(f)


def only_option(f: F) -> F:
    return click.option(
        "--only",
        multiple=True,
        metavar="TASK",
        envvar="CORRAL_ONLY",
        show_envvar=True,
        help="Keep only this task and everything it depends on (repeatable).",
    )(f)


def path_option(f: F) -> F:
    return click.option(
        "--path",
        "paths",
        multiple=True,
        type=click.Path(exists=True, file_okay=False),
        metavar="DIR",
        envvar="CORRAL_PATH",
        show_envvar=True,
        help="Also look for call: modules in DIR, after sys.path and before the pipeline's "
        "python_path: and directory (repeatable; in the variable, separate with ':').",
    )(f)


def no_import_option(f: F) -> F:
    return click.option(
        "--no-import",
        is_flag=True,
        envvar="CORRAL_NO_IMPORT",
        show_envvar=True,
        help="Check call: targets without importing their modules (no module code runs: the "
        "module is found, the function looked for in its source).",
    )(f)


def import_options(f: F) -> F:
    """``--path`` and ``--no-import``, for every command that loads a pipeline."""
    return path_option(no_import_option(f))


store_option = click.option(
    "--store",
    "store_url",
    metavar="URL",
    envvar="CORRAL_STORE",
    show_envvar=True,
    help="Run store: a SQLite file (sqlite:///path or a path) or postgresql://user@host/db "
    "[default: sqlite:///.corral/corral.db]",
)

no_store_option = click.option(
    "--no-store",
    is_flag=True,
    envvar="CORRAL_NO_STORE",
    show_envvar=True,
    help="Do not use the run store: nothing is recorded, no history is read.",
)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``500ms``, ``2w``; a bare number is seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 90m, 12h, 30d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])


class Duration(click.ParamType[float]):
    """A duration option (``30s``, ``2m``, ``30d``; a bare number is seconds), as seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value)).total_seconds()
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def open_run_store(url: str | None, *, create: bool,
                   connections: int | None = None) -> Store | None:
    """The store at ``url`` (else ``$CORRAL_STORE``, else ``.corral/corral.db``).

    With ``create`` false, a SQLite store that does not exist yet is None rather than a new
    empty file: reading history must not leave databases behind. ``connections`` caps a
    PostgreSQL store's pool (``--store-connections``).
    """
    from corral.store import open_store, resolve_url, store_exists

    url = resolve_url(url)
    try:
        if not create and not store_exists(url):
            return None
        return open_store(url, connections=connections)
    except ImportError as exc:  # the postgres extra is missing: say how to install it
        raise StoreError(f"{exc} (store: {url})") from None
    except ValueError as exc:  # not a store URL
        raise UserError(f"--store: {exc}") from None


def load(
    file: str,
    pairs: tuple[str, ...],
    *,
    paths: tuple[str, ...] = (),
    no_import: bool = False,
    as_json: bool = False,
) -> Pipeline:
    """The pipeline in ``file`` with parameters ``pairs``; raises a ValueError-kind error.

    ``paths`` (``--path``) are appended to ``sys.path`` first. Checking ``call:`` targets
    imports their modules unless ``no_import``; under ``as_json`` what those modules print
    goes to stderr, so that stdout stays one JSON document.
    """
    from corral._imports import add_to_sys_path
    from corral._pipeline import load_pipeline, parse_params

    add_to_sys_path(paths)
    params = parse_params(pairs)
    check = "find" if no_import else "import"
    # What a pipeline is read into lives until the command ends: freeze it out of the cyclic
    # garbage collector's sight, which would otherwise walk it again and again (a 100,000-task
    # file is millions of objects). The collector is off while it is read, then on again.
    gc.disable()
    try:
        with stdout_to_stderr() if as_json else contextlib.nullcontext():
            return load_pipeline(file, params=params, check_calls=check)
    finally:
        gc.freeze()
        gc.enable()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout — by Python code, threads, C code or child
    processes — to stderr until the block ends, so ``--json`` output stays one document."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
