"""The ``ess-tui`` command.

    ess-tui                      open the control room (the embedded paper world by default)
    ess-tui headless             run the ESS without a UI on the configured venue
    ess-tui init                 create a new ESS database (refuses an existing path)
    ess-tui status [--json]      exit 0 armed, 3 latched, 4 state unavailable
    ess-tui activate --reason T  latch (exit 0 once durable, 1 if not); the acting runner flattens
    ess-tui reset --by NAME      audited reset (type RESET at a terminal, or --yes)
    ess-tui audit [--verify]     the audit trail, and whether it verifies
    ess-tui alerts [test]        alert sinks and their last delivery; a drill alert to each
    ess-tui events [--follow]    the audit trail and alert events as NDJSON
    ess-tui migrate --from F --to URL   copy a SQLite store to PostgreSQL, chain verified
    ess-tui bench [--quick]      benchmarks: print figures

The global options ``--db PATH`` (default ``$QT_ESS_DB``, else the user's state dir), ``--config
PATH``, ``--check-interval SEC``, ``--theme NAME`` and ``-v`` work before or after the command.
Errors are one line on stderr, never a traceback: exit 2 for bad usage or config.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from ess_tui.cli.commands import (
    EXIT_LATCHED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from ess_tui.cli.parser import CliError, build_parser, resolve
from ess_tui.cli.safe import err
from ess_tui.config import ConfigError, Settings, env_warnings, load_settings

__all__ = [
    "EXIT_LATCHED", "EXIT_OK", "EXIT_REFUSED", "EXIT_UNAVAILABLE", "EXIT_USAGE",
    "CliError", "build_parser", "main",
]


def _settings(args: Any) -> Settings:
    overrides: dict[str, Any] = {}
    if args.db is not None:  # "" too: an empty path is refused, never read as "the default"
        overrides["db"] = args.db
    if args.check_interval is not None:
        overrides["check_interval"] = args.check_interval
    if getattr(args, "metrics", None):
        overrides["metrics"] = {"listen": args.metrics}
    return load_settings(args.config, **overrides)


def _setup_logging(settings: Settings, verbose: bool, *, to_stderr: bool) -> None:
    from ess_tui.logs import setup_logging

    setup_logging(settings.log_path, verbose=verbose, to_stderr=to_stderr)


def _run(args: Any) -> int:
    from ess_tui.cli import commands

    command = args.command
    settings = _settings(args)
    for warning in env_warnings():
        err(f"ess-tui: warning: {warning}")
    if command == "tui":
        if args.theme:
            settings.tui.theme = args.theme
        _setup_logging(settings, args.verbose, to_stderr=False)
        from ess_tui.tui.app import run_app

        return run_app(settings) or EXIT_OK
    if command == "headless":
        _setup_logging(settings, args.verbose, to_stderr=True)
        return asyncio.run(commands.headless(settings))
    if command in ("activate", "reset", "init"):
        _setup_logging(settings, args.verbose, to_stderr=False)  # who did what, in the log
    else:
        logging.getLogger().addHandler(logging.NullHandler())  # stdout is the answer
    if command == "init":
        return asyncio.run(commands.init(settings))
    if command == "status":
        return asyncio.run(commands.status(settings, args.json))
    if command == "activate":
        from ess_tui.cli import scoped

        try:
            if scoped.is_scoped(args):
                return asyncio.run(scoped.activate(settings, args))
            return asyncio.run(commands.activate(settings, args.reason, args.by))
        except CliError:
            raise
        except Exception as exc:  # noqa: BLE001 - the latch is not durable: exit 1, not 4
            raise CliError(f"could not write the latch to {commands.where(settings)}: "
                           f"{type(exc).__name__}: {exc}", EXIT_REFUSED) from None
    if command == "reset":
        from ess_tui.cli import scoped
        from ess_tui.cli.reset import reset

        if scoped.is_scoped(args):
            return scoped.reset(settings, args)
        return reset(settings, args)
    if command == "audit":
        return asyncio.run(commands.audit(settings, args))
    if command in ("alerts", "events"):
        from ess_tui.alerts import cli as alerts_cli

        return alerts_cli.run(command, settings, args)
    if command == "migrate":
        from ess_tui.store.postgres.wiring import migrate_main

        return migrate_main(args.source, args.target)
    if command == "bench":
        from ess_tui.bench import run_bench

        return run_bench(settings, quick=args.quick, json_path=args.json, only=args.only)
    raise CliError(f"unknown command {command}")


def main(argv: Sequence[str] | None = None) -> int:
    from ess_tui.logs import scrub

    try:
        args = resolve(build_parser().parse_args(argv))
        return _run(args)
    except ConfigError as exc:
        err(f"ess-tui: {scrub(str(exc))}")
        return EXIT_USAGE
    except CliError as exc:
        err(f"ess-tui: {scrub(str(exc))}")
        return exc.code
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:  # --help, and anything that exits on purpose
        return exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback at the CLI
        from ess_tui.engine.store import StoreError

        code = EXIT_UNAVAILABLE if isinstance(exc, StoreError) else EXIT_REFUSED
        err(f"ess-tui: {type(exc).__name__}: {scrub(str(exc))}")
        if os.environ.get("QT_ESS_DEBUG"):
            raise
        return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
