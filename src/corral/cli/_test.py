"""``corral test``: run a pytest suite on corral (see :mod:`corral.testrun`).

Every argument that is not corral's goes to pytest unchanged, so corral's own options are
picked out by hand (click would read pytest's ``-k EXPR`` as options of its own); mistakes in
them exit 4, pytest's usage error, as pytest's own do. The exit code is pytest's.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import click

from corral._signal_handlers import give_back, take
from corral.cli._exits import UserError
from corral.cli._options import CONTEXT_SETTINGS

__all__ = ["TestArgs", "parse_test_args", "test"]

USAGE_ERROR = 4  # pytest's ExitCode.USAGE_ERROR

HELP = """Run a pytest suite in parallel on corral's scheduler.

\b
corral test [--workers N|auto] [--timeout S] [--last-failed|--lf] [--failed-first|--ff]
            [--check-order] [--store URL | --no-store] [PYTEST ARGS...]

pytest collects (same paths, -k, -m and configuration); the tests run on N worker
processes, longest first by the durations the store kept from earlier runs; the output,
--junit-xml and the exit code are pytest's (0 passed, 1 failed, 2 interrupted, 3 internal
error, 4 usage error, 5 no tests). A test that crashes its worker fails alone; --timeout
stops a test that runs too long.

\b
--workers N|auto   worker processes [default: auto, or $CORRAL_TEST_WORKERS]: auto runs a
                   small suite in this process
--timeout S        fail a test that runs longer than S seconds, and stop it
                   [$CORRAL_TEST_TIMEOUT]
--last-failed, --lf    run only the tests that failed in the latest recorded run
--failed-first, --ff   run those first, then the rest
--check-order      then run each failed test again, fresh, after its module's tests in
                   pytest's order: those that pass are reported as order-dependent
                   [$CORRAL_TEST_CHECK_ORDER=1]
--store URL        the run store [default: $CORRAL_STORE, else .corral/corral.db]
--no-store         record nothing and read no durations [$CORRAL_NO_STORE]
"""


class UsageProblem(ValueError):
    """A corral test option is wrong (exit 4)."""


@dataclass
class TestArgs:
    """``corral test``'s own options, and what goes to pytest."""

    __test__ = False

    workers: int | None = None  # None: auto
    timeout: float | None = None
    last_failed: bool = False
    failed_first: bool = False
    check_order: bool = False
    store_url: str | None = None
    no_store: bool = False
    pytest_args: list[str] = field(default_factory=list)


def _workers(text: str) -> int | None:
    if text == "auto":
        return None
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageProblem(f"--workers must be a whole number >= 1 or 'auto', not {text!r}")


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and value != float("inf")):
        raise UsageProblem(f"--timeout must be a number of seconds > 0, not {text!r}")
    return value


def parse_test_args(argv: Sequence[str], env: dict[str, str] | None = None) -> TestArgs:
    """Pick corral's options out of ``argv``; raises :class:`UsageProblem`."""
    env = dict(os.environ) if env is None else env
    out = TestArgs(no_store=bool(env.get("CORRAL_NO_STORE")))
    if "CORRAL_TEST_WORKERS" in env:
        out.workers = _workers(env["CORRAL_TEST_WORKERS"])
    if "CORRAL_TEST_TIMEOUT" in env:
        out.timeout = _timeout(env["CORRAL_TEST_TIMEOUT"])
    out.check_order = env.get("CORRAL_TEST_CHECK_ORDER", "") not in ("", "0", "false", "no")
    with_value = {"--workers", "--timeout", "--store"}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.pytest_args.extend(args[i:])
            break
        name, eq, value = arg.partition("=")
        if name in with_value:
            if not eq:
                if i + 1 >= len(args):
                    raise UsageProblem(f"{name} needs a value")
                i += 1
                value = args[i]
            if name == "--workers":
                out.workers = _workers(value)
            elif name == "--timeout":
                out.timeout = _timeout(value)
            else:
                out.store_url = value
        elif arg in ("--last-failed", "--lf"):
            out.last_failed = True
        elif arg in ("--failed-first", "--ff"):
            out.failed_first = True
        elif arg == "--check-order":
            out.check_order = True
        elif arg == "--no-store":
            out.no_store = True
        else:
            out.pytest_args.append(arg)
        i += 1
    return out


@click.command(
    "test", help=HELP, add_help_option=False,
    context_settings={**CONTEXT_SETTINGS, "ignore_unknown_options": True,
                      "allow_interspersed_args": False, "help_option_names": []},
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def test(ctx: click.Context, argv: tuple[str, ...]) -> None:
    if "--help" in argv or "-h" in argv:
        click.echo(ctx.get_help())
        ctx.exit(0)
    try:
        parsed = parse_test_args(argv)
    except UsageProblem as exc:
        click.echo(f"corral test: error: {exc}", err=True)
        ctx.exit(USAGE_ERROR)
    ctx.exit(run_tests(parsed))


def run_tests(parsed: TestArgs) -> int:
    """Run pytest with the corral controller; pytest's exit code."""
    import pytest

    from corral.cli._options import open_run_store
    from corral.testrun._controller import Controller, TestSettings

    store_url = parsed.store_url or os.environ.get("CORRAL_STORE")
    try:
        store = None if parsed.no_store else open_run_store(store_url, create=True)
    except UserError as exc:  # a --store that is no store URL: a usage error, as pytest's
        click.echo(f"corral test: error: {exc.message}", err=True)
        return USAGE_ERROR
    settings = TestSettings(args=parsed.pytest_args, workers=parsed.workers,
                            timeout=parsed.timeout, store=store,
                            last_failed=parsed.last_failed, failed_first=parsed.failed_first,
                            check_order=parsed.check_order)
    # pytest reports Ctrl-C itself (KeyboardInterrupt, exit 2), as it always does.
    previous = take((signal.SIGINT,), signal.default_int_handler)
    try:
        code = int(pytest.main(list(parsed.pytest_args), plugins=[Controller(settings)]))
    finally:
        give_back(previous)
        if store is not None:
            store.close()
    sys.stdout.flush()
    return code
