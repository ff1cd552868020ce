"""The ``corral`` command line: validate, plan, draw and run a pipeline file, read the run
store, serve it over HTTP.

One module per command group, each command registered here by name and imported only when
it runs or ``--help`` lists it (:func:`register_command`)::

    _app.py       the group: exit codes, errors that map to them, lazy commands
    _options.py   options every group shares (pipeline file, parameters, store, --path...)
    _pipeline.py  validate, plan, graph, schema       (nothing runs)
    _run.py       run, resume                          (through corral._launch)
    _history.py   runs, show, logs, prune              (the run store, read only)
    _fleet.py     worker, workers, dlq                 (the fleet's broker)
    _config.py    config show; the config file as click's default_map
    _test.py      test                                 (a pytest suite, through corral._launch)
    corral.server._cli   serve, token                  (the `server` extra)
    corral.mcp._cli      mcp                           (the `mcp` extra)

Policies: exit codes live in :class:`ExitCode` and are listed in ``corral --help``; a user's
mistake never shows a traceback; startup stays fast (this package imports only click and the
light ``corral`` package until a command runs); ``--json`` owns stdout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral._lazy import lazy_attributes
from corral.cli._app import main, register_command
from corral.cli._exits import ExitCode

if TYPE_CHECKING:
    from corral.cli._run import RunOptions, run_options

__all__ = ["ExitCode", "RunOptions", "main", "register_command", "run_options"]

# Imported when first used: `corral test` (and every command but run and resume) needs
# neither the runner nor the scheduler that corral.cli._run brings in.
__getattr__ = lazy_attributes(__name__, dict.fromkeys(["RunOptions", "run_options"],
                                                      "corral.cli._run"), globals())

for _name in ("graph", "plan", "schema", "validate"):
    register_command(_name, f"corral.cli._pipeline:{_name}")
for _name in ("resume", "run"):
    register_command(_name, f"corral.cli._run:{_name}")
for _name in ("logs", "prune", "runs", "show"):
    register_command(_name, f"corral.cli._history:{_name}")
# The fleet: workers over a broker, and its dead-letter queue (docs/fleet.md).
for _name in ("dlq", "worker", "workers"):
    register_command(_name, f"corral.cli._fleet:{_name}")
# The configuration file and what it resolves to, see corral._config.
register_command("config", "corral.cli._config:config")
# A pytest suite on corral's scheduler, see corral.testrun.
register_command("test", "corral.cli._test:test")
# The HTTP service and its tokens (the `server` extra), see corral.server.
register_command("serve", "corral.server._cli:serve")
register_command("token", "corral.server._cli:token")
# The MCP server over stdio (the `mcp` extra), see corral.mcp.
register_command("mcp", "corral.mcp._cli:mcp")
