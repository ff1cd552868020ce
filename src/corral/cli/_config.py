"""``corral config show``, and the configuration file made into click's ``default_map``.

:func:`apply_config` runs when the group resolves a command, before the command parses its
options: the file (and its ``$CORRAL_ENV`` section) becomes the command's ``default_map``,
which click ranks below ``CORRAL_*`` variables and options, so precedence falls out of click::

    option > CORRAL_* variable > default_map ([env.NAME] over the file's top) > option default

Each value is converted through the options that use it first, so a value that is out of
range or not a choice is reported with its file and line, before anything starts. Without a
file nothing is imported beyond a look at the working directory and its parents.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import click

from corral.cli._options import CONTEXT_SETTINGS, emit_json

if TYPE_CHECKING:
    from corral._config import Layers, Source

__all__ = ["apply_config", "config"]


def _options(command: click.Command, path: tuple[str, ...] = ()
             ) -> Iterator[tuple[tuple[str, ...], click.Command, click.Option]]:
    """Every option of ``command`` and of its subcommands, with the command path to it."""
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                yield from _options(sub, (*path, name))
        return
    for param in command.params:
        if isinstance(param, click.Option) and isinstance(param.envvar, str):
            yield path, command, param


def _default_map(command: click.Command, layers: Layers) -> dict[str, Any]:
    """The file's values for ``command``'s options (nested per subcommand for a group),
    each checked by the option it sets."""
    from corral._config import setting_key
    from corral._errors import ConfigError

    root: dict[str, Any] = {}
    for path, leaf, option in _options(command):
        key = setting_key(str(option.envvar))
        if key is None or key not in layers.values or option.name is None:
            continue
        value = layers.values[key]
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        try:
            option.type_cast_value(click.Context(leaf), value)
        except click.BadParameter as exc:
            raise ConfigError(f"{layers.sources[key]}: {key}: {exc.message}") from None
        target = root
        for name in path:
            target = target.setdefault(name, {})
        target[option.name] = value
    return root


def apply_config(ctx: click.Context, name: str, command: click.Command) -> None:
    """Give ``command`` (about to run as ``name`` under ``ctx``) the configuration file's
    values as its defaults. Raises ConfigError for a bad file."""
    from corral._config_file import find_config_file

    if find_config_file() is None:
        return
    from corral._config import load_layers

    defaults = _default_map(command, load_layers())
    if defaults:
        if ctx.default_map is None:
            ctx.default_map = {}
        ctx.default_map[name] = defaults


# ---------------------------------------------------------------------- corral config


@click.group(context_settings=CONTEXT_SETTINGS)
def config() -> None:
    """The configuration: corral.toml (or [tool.corral] in pyproject.toml), its [env.NAME]
    section chosen by CORRAL_ENV, CORRAL_* variables."""


_SECRETS = {"jwt_secret"}


def _shown(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _SECRETS:
        return "********"
    if key == "store":
        from corral.store._connector import redact

        return redact(str(value))
    if isinstance(value, tuple):
        return list(value)
    return value


def _option_defaults(main: click.Group) -> dict[str, dict[str, Any]]:
    """Setting key -> {command: its option's default} (None defaults left out), over the
    commands of ``main`` (the ``corral`` group)."""
    from corral._config import setting_key

    defaults: dict[str, dict[str, Any]] = {}
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        if command is None or name == "config":
            continue
        for path, _, option in _options(command, (name,)):
            key = setting_key(str(option.envvar))
            if key is None:
                continue
            default = option.get_default(click.Context(command), call=False)
            if default is not None and not callable(default) and default != ():
                defaults.setdefault(key, {})[" ".join(path)] = _plain(default)
    return defaults


def _plain(value: Any) -> Any:
    # click 8.3+ marks "no default" with its UNSET sentinel (earlier versions with None).
    return None if value is getattr(click.core, "UNSET", None) else value


def _all_rows(layers: Layers, main: click.Group) -> list[dict[str, Any]]:
    """Every setting: its value once the file and the variables apply, else its default."""
    from corral._config import KEYS, Source

    values, sources = layers.effective()
    defaults = _option_defaults(main)
    rows = []
    for key in KEYS:
        if key in values:
            rows.append(_row(key, values[key], sources[key]))
            continue
        per_command = {c: d for c, d in defaults.get(key, {}).items() if d is not None}
        distinct = {repr(d) for d in per_command.values()}
        value = next(iter(per_command.values())) if len(distinct) == 1 else per_command or None
        rows.append(_row(key, value, Source("default")))
    return rows


def _command_rows(
    layers: Layers, command_line: tuple[str, ...], main: click.Group
) -> list[dict[str, Any]]:
    """The settings of one command line (``run p.yaml -c 4``) of ``main`` (the ``corral``
    group), as click resolves them for it: its options, the variables, the file, the
    defaults."""
    from click.core import ParameterSource

    from corral._config import Source, setting_key
    from corral.cli._exits import UserError

    layers.effective()  # a bad variable is named here, as for every setting
    args = list(command_line)
    ctx = click.Context(main, info_name="corral", resilient_parsing=True, default_map={})
    command: click.Command = main
    while isinstance(command, click.Group):
        if not args:
            raise UserError(f"config show: which `{ctx.command_path}` command?")
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            raise UserError(f"config show: no command `{ctx.command_path} {name}`")
        if ctx.parent is None:  # the file's values, as the group gives them to the command
            assert ctx.default_map is not None
            ctx.default_map[name] = _default_map(sub, layers)
        command = sub
        ctx = (click.Context(sub, info_name=name, parent=ctx) if isinstance(sub, click.Group)
               else sub.make_context(name, args, parent=ctx, resilient_parsing=True))
    rows = []
    for option in command.params:
        key = setting_key(str(getattr(option, "envvar", "")))
        if key is None or option.name is None:
            continue
        how = ctx.get_parameter_source(option.name)
        if how is ParameterSource.COMMANDLINE:
            source = Source("option", option=max(option.opts, key=len))
        elif how is ParameterSource.ENVIRONMENT:
            source = Source("env", envvar=str(getattr(option, "envvar", "")))
        elif how is ParameterSource.DEFAULT_MAP:
            source = layers.sources[key]
        else:
            source = Source("default")
        rows.append(_row(key, _plain(ctx.params.get(option.name)), source))
    return rows


def _row(key: str, value: Any, source: Source) -> dict[str, Any]:
    return {"key": key, "value": _shown(key, value), "source": str(source),
            "variable": f"CORRAL_{key.upper()}",
            "origin": {k: v for k, v in asdict(source).items() if v is not None}}


@config.command(context_settings={"ignore_unknown_options": True,
                                  "allow_interspersed_args": False})
@click.option("--json", "as_json", is_flag=True, envvar="CORRAL_JSON", show_envvar=True,
              help="Print one JSON document on stdout instead of text.")
@click.argument("command_line", nargs=-1, type=click.UNPROCESSED,
                metavar="[COMMAND [ARGS]...]")
def show(as_json: bool, command_line: tuple[str, ...]) -> None:
    """Print every setting's effective value and where it came from: an option's default,
    FILE:LINE (with its [env.NAME] section), or a CORRAL_* variable. Secrets are hidden.

    Given a command line (`corral config show run p.yaml -c 4`), print that command's
    settings as it would get them, options included."""
    from corral._config import load_layers
    from corral._config_file import ENV_SECTION_VAR

    layers = load_layers()
    # The `corral` group itself, found from the context rather than imported: corral.cli
    # imports this module's caller, not the other way round.
    main = click.get_current_context().find_root().command
    assert isinstance(main, click.Group)
    rows = (_command_rows(layers, command_line, main) if command_line
            else _all_rows(layers, main))
    if as_json:
        emit_json({"file": str(layers.path) if layers.path else None,
                   "environment": layers.environment, "settings": rows})
        return
    asked = os.environ.get(ENV_SECTION_VAR)
    ignored = f" ({ENV_SECTION_VAR}={asked} ignored: no [env.*] sections)" \
        if asked and not layers.environment else f" ({ENV_SECTION_VAR})"
    click.echo(f"# file: {layers.path or 'none'}; environment: "
               f"{layers.environment or 'none'}{ignored}")
    width = max((len(row["key"]) for row in rows), default=0)
    for row in rows:
        value = row["value"]
        if isinstance(value, dict):
            text = ", ".join(f"{v} ({c})" for c, v in value.items())
        elif isinstance(value, list | tuple):
            text = json.dumps(value)  # as it would be written in the file
        else:
            text = "-" if value is None else str(value)
        click.echo(f"{row['key']:<{width}}  {text}  # {row['source']}")
