"""The ``corral`` command group: exit codes, the errors that map to them, lazy commands.

Every command lives in a module of its own group (:mod:`._pipeline`, :mod:`._run`,
:mod:`._history`, ``corral.server._cli``, ...) and is registered here by name with
:func:`register_command`: it is imported only when invoked or listed in ``--help``, so a new
command costs nothing to the others' startup. A user's mistake (an invalid pipeline, a bad
parameter, an unknown run) raised anywhere below becomes an exit-2 message, a broken store
exit 3, a live run exit 4, an executor that cannot start exit 5: never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from corral import __version__
from corral._errors import (
    BrokenBroker,
    BrokenExecutor,
    BrokenStore,
    ConfigError,
    NotResumable,
    ParameterError,
    RunLocked,
    RunNotFound,
    ValidationError,
)
from corral.cli._exits import (
    _EXIT_HELP,
    ExecutorError,
    ExitCode,
    LockedError,
    StoreError,
    UserError,
)
from corral.cli._options import CONTEXT_SETTINGS

__all__ = ["CorralGroup", "main", "register_command"]


# ---------------------------------------------------------------------- the command group

# Commands defined in other modules: name -> "module:attribute". They are imported only when
# invoked or listed in --help, so a new command costs nothing to the others' startup.
_LAZY_COMMANDS: dict[str, str] = {}


def register_command(name: str, target: str) -> None:
    """Add command ``name``, found at ``target`` (``"corral.cli._history:runs"``) when first
    used. Every command is registered so (:mod:`corral.cli` lists them): one line each."""
    _LAZY_COMMANDS[name] = target


class CorralGroup(click.Group):
    """A click group that loads registered commands lazily and turns a user's mistake (an
    invalid pipeline, a bad parameter) into an exit-2 message instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        target = _LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return None
        import importlib

        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):  # pragma: no cover - a registration bug
            raise TypeError(f"{target} is not a click command")
        self.add_command(command, cmd_name)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The command to run, given the configuration file's values as its defaults
        (corral.cli._config: the file < CORRAL_* variables < options)."""
        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and command is not None and not ctx.resilient_parsing:
            from corral.cli._config import apply_config

            apply_config(ctx, name, command)
        return name, command, rest

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command line. From here until a run takes the signals over (and again
        after it), SIGINT and SIGTERM end corral with exactly 130 and 143, wherever they land
        (click alone turns a Ctrl-C before a command runs into "Aborted!" and exit 1, and
        SIGTERM would kill the process outright)."""
        import signal

        from corral._signal_handlers import give_back, take

        installed = take((signal.SIGINT, signal.SIGTERM), _exit_on_signal)
        try:
            return super().main(*args, **kwargs)
        finally:
            give_back(installed)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ValidationError, ParameterError, ConfigError, RunNotFound, NotResumable) as exc:
            raise UserError(str(exc)) from None
        except BrokenStore as exc:  # names the store's URL
            raise StoreError(str(exc)) from None
        except BrokenBroker as exc:  # names the broker's URL; nothing was started
            raise StoreError(str(exc)) from None
        except RunLocked as exc:
            raise LockedError(str(exc)) from None
        except BrokenExecutor as exc:  # raised before the run starts: nothing ran
            raise ExecutorError(str(exc)) from None
        except KeyboardInterrupt:
            # Ctrl-C outside a run (a run handles its own signals and exits 130 itself).
            click.echo("interrupted", err=True)
            raise click.exceptions.Exit(int(ExitCode.INTERRUPTED)) from None


def _exit_on_signal(sig: int, frame: Any) -> NoReturn:
    """SIGINT or SIGTERM outside a run: nothing is running, nothing is half-recorded (a run's
    end is recorded before it gives the signals back), so exit at once with 128 + N."""
    sys.stderr.write("corral: interrupted\n")
    raise SystemExit(128 + sig)


def _epilog() -> str:
    # "\b" keeps click from re-wrapping the lines into one paragraph.
    lines = ["\b", "Exit codes:"]
    lines += [f"  {int(code):<4} {_EXIT_HELP[code]}" for code in ExitCode]
    lines += ["\b", "Every option can also be set by the CORRAL_* variable shown next to it."]
    return "\n".join(lines)




@click.group(cls=CorralGroup, context_settings=CONTEXT_SETTINGS, epilog=_epilog())
@click.version_option(__version__, "-V", "--version", prog_name="corral")
def main() -> None:
    """corral: define a DAG of tasks in a pipeline file, check it, plan it and run it."""
