"""The ``ess-tui`` command.

    ess-tui                      open the control room (the embedded paper world by default)
    ess-tui headless             run the ESS without a UI on the configured venue
    ess-tui status [--json]      exit 0 armed, 3 latched, 4 state unavailable
    ess-tui activate --reason T  latch; the runner holding the lease flattens
    ess-tui reset --by NAME      audited reset (type RESET at a terminal, or --yes)
    ess-tui audit [--verify]     the audit trail, and whether its chain is intact
    ess-tui bench [--quick]      benchmarks: print figures

Every subcommand takes ``--db PATH`` (default ``$QT_ESS_DB``, else the user's state dir) and
``--config PATH``. Errors are one line on stderr, never a traceback: exit 2 for bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ess_tui.alerts import cli as alerts_cli
from ess_tui.config import ConfigError, Settings, load_settings

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_LATCHED = 3
EXIT_UNAVAILABLE = 4


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", metavar="PATH", help="SQLite database (default: $QT_ESS_DB or the state dir)")
    parser.add_argument("--config", metavar="PATH", help="ess.toml (default: ./ess.toml, then the config dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ess-tui",
        description="Emergency Stop System for trading desks, with a terminal control room.",
    )
    _common(parser)
    parser.add_argument("--check-interval", type=float, metavar="SEC", help="seconds between checks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("tui", help="open the control room (the default)")
    _common(p)
    p.add_argument("--theme", help="theme name (dark, light, high-contrast, colour-blind)")
    alerts_cli.add_metrics_flag(p)  # alerts (issue 12)
    p.add_argument("--check-interval", type=float, metavar="SEC")

    p = sub.add_parser("headless", help="run the ESS without a UI")
    _common(p)
    alerts_cli.add_metrics_flag(p)  # alerts (issue 12)
    p.add_argument("--check-interval", type=float, metavar="SEC", help="seconds between checks")

    p = sub.add_parser("status", help="is trading allowed? exit 0 armed, 3 latched, 4 unavailable")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("activate", help="latch the ESS now (the acting runner flattens)")
    _common(p)
    p.add_argument("--reason", required=True, help="why (stored in the audit trail)")
    p.add_argument("--by", help="who (default: the OS user)")

    p = sub.add_parser("reset", help="audited reset of a latched ESS")
    _common(p)
    p.add_argument("--by", required=True, metavar="NAME", help="the operator resetting")
    p.add_argument("--note", help="what was found and fixed")
    p.add_argument("--approver", metavar="NAME", help="second person, where the two-person rule is on")
    p.add_argument("--override", metavar="REASON", help="reset although the venue is not verified flat")
    p.add_argument("--yes", action="store_true", help="do not ask to type RESET")

    p = sub.add_parser("audit", help="show the audit trail")
    _common(p)
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--verify", action="store_true", help="verify the hash chain; exit 1 if broken")
    p.add_argument("--limit", type=int, default=50, help="rows to show (default 50, 0 = all)")
    p.add_argument("--anchor", metavar="SEQ:HASH", help="with --verify: the trail still holds this row (from an alert)")

    alerts_cli.add_parsers(sub, _common)  # alerts, alerts test, events (issue 12)

    p = sub.add_parser("bench", help="benchmarks: print figures (not a test)")
    _common(p)
    p.add_argument("--quick", action="store_true", help="a short run for a smoke check")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.add_argument("--only", metavar="NAMES", help="comma-separated scenario names")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        overrides["db"] = args.db
    if getattr(args, "check_interval", None) is not None:
        overrides["check_interval"] = args.check_interval
    if getattr(args, "metrics", None):
        overrides["metrics"] = {"listen": args.metrics}  # alerts (issue 12)
    return load_settings(getattr(args, "config", None), **overrides)


def _setup_logging(settings: Settings, verbose: bool, *, to_stderr: bool) -> None:
    from ess_tui.logs import setup_logging

    setup_logging(settings.log_path, verbose=verbose, to_stderr=to_stderr)


# --- subcommands ------------------------------------------------------------------------------


async def _status(settings: Settings, as_json: bool) -> int:
    from ess_tui.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path, create=False)
    try:
        state = await store.load_state()
        lease = await store.read_lease()
    except Exception as exc:  # noqa: BLE001 - unknown state: blocked
        reason = str(exc) or type(exc).__name__
        if as_json:
            print(json.dumps({"status": "unavailable", "trading_allowed": False, "reason": reason,
                              "db": str(settings.db_path)}))
        else:
            print(f"STATE UNAVAILABLE — trading blocked: {reason}")
        return EXIT_UNAVAILABLE
    finally:
        await store.close()
    info = {
        "status": "latched" if state.active else "armed",
        "trading_allowed": not state.active,
        "reason": state.reason,
        "since": state.timestamp.isoformat() if state.timestamp else None,
        "activation_count": state.activation_count,
        "last_reset_by": state.last_reset_by,
        "runner": lease.holder if lease else None,
        "db": str(settings.db_path),
    }
    if as_json:
        print(json.dumps(info))
    elif state.active:
        print(f"LATCHED since {info['since']} — {state.reason} (activation #{state.activation_count})")
    else:
        print(f"ARMED — trading allowed (activations so far: {state.activation_count})")
    return EXIT_LATCHED if state.active else EXIT_OK


async def _activate(settings: Settings, reason: str, by: str | None) -> int:
    from ess_tui.engine.controller import EmergencyStopController, os_user
    from ess_tui.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path)
    try:
        controller = EmergencyStopController(store=store, acting=False, actor=by or os_user())
        state = await controller.latch(reason, source="cli")
        if controller.not_durable:
            raise CliError(f"could not write the latch to {settings.db_path}: {controller.not_durable}", 1)
        lease = await store.read_lease()
    finally:
        await store.close()
    print(f"LATCHED — {state.reason} (activation #{state.activation_count})")
    if lease is None:
        print("warning: no runner holds the lease on this database; start `ess-tui headless` "
              "(or the control room) to flatten the venue", file=sys.stderr)
    else:
        print(f"the runner {lease.holder} flattens within one check interval")
    return EXIT_LATCHED


def _confirm_reset() -> None:
    if not sys.stdin.isatty():
        raise CliError("not at a terminal: pass --yes to reset without typing RESET")
    try:
        typed = input("Type RESET to un-latch the ESS and allow trading again: ")
    except EOFError:
        typed = ""
    if typed.strip() != "RESET":
        raise CliError("reset abandoned: RESET was not typed", EXIT_REFUSED)


async def _reset(settings: Settings, args: argparse.Namespace) -> int:
    from ess_tui.engine.controller import EmergencyStopController
    from ess_tui.engine.store import NotLatchedError
    from ess_tui.engine.reset_policy import ResetRefused, check_reset_allowed
    from ess_tui.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path, create=False)
    try:
        state = await store.load_state()
        if not state.active:
            await store.audit("reset_refused", actor=args.by, reason="not latched",
                              details={"via": "cli"})
            raise CliError("the ESS is not latched: nothing to reset", EXIT_REFUSED)
        try:
            details = await check_reset_allowed(
                settings.reset, store, operator=args.by, approver=args.approver,
                override=args.override, via="cli",
            )
        except ResetRefused as exc:
            raise CliError(f"reset refused: {exc}", EXIT_REFUSED) from None
        if not args.yes:
            try:
                _confirm_reset()
            except CliError:
                await store.audit("reset_abandoned", actor=args.by, reason="RESET not typed",
                                  details={"via": "cli"})
                raise
        controller = EmergencyStopController(store=store, acting=False)
        try:
            await controller.reset(args.by, args.note, details=details)
        except NotLatchedError:
            raise CliError("the ESS is not latched: nothing to reset", EXIT_REFUSED) from None
    finally:
        await store.close()
    print(f"ARMED — reset by {args.by}")
    return EXIT_OK


async def _audit(settings: Settings, args: argparse.Namespace) -> int:
    from ess_tui.store.sqlite import SQLiteStore

    store = SQLiteStore(settings.db_path, create=False)
    try:
        rows = await store.read_audit(args.limit or None, newest_first=True)
        verification = await store.verify_audit() if args.verify else None
    finally:
        await store.close()
    for row in rows:
        if args.json:
            print(json.dumps({"seq": row.seq, "at": row.at.isoformat(), "action": row.action,
                              "actor": row.actor, "reason": row.reason, "details": row.details,
                              "hash": row.hash}))
        else:
            print(f"{row.seq:>6}  {row.at:%Y-%m-%d %H:%M:%S}Z  {row.action:<18} {row.actor:<16} "
                  f"{row.reason or ''}")
    if verification is not None:
        if verification.ok:
            print(f"audit chain OK: {verification.rows} rows verified")
        else:
            print(f"audit chain BROKEN at row {verification.first_bad_seq}: {verification.problem}")
            return EXIT_REFUSED
    if getattr(args, "anchor", None):  # alerts (issue 12): an anchor sent out in an alert
        return await alerts_cli.check_anchor(settings, args.anchor)
    return EXIT_OK


async def _headless(settings: Settings) -> int:
    import signal

    from ess_tui.runtime.assembly import Runtime

    runtime = await Runtime.build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await runtime.start()
    log = logging.getLogger("ess_tui.headless")
    log.warning("ESS running headless on %s, db %s, every %.2fs", runtime.venue_name,
                settings.db_path, settings.check_interval)
    try:
        await stop.wait()
    finally:
        await runtime.stop()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = args.command or "tui"
    try:
        settings = _settings(args)
        if command == "tui":
            if getattr(args, "theme", None):
                settings.tui.theme = args.theme
            _setup_logging(settings, args.verbose, to_stderr=False)
            from ess_tui.tui.app import run_app

            return run_app(settings) or EXIT_OK
        if command == "headless":
            _setup_logging(settings, args.verbose, to_stderr=True)
            return asyncio.run(_headless(settings))
        if command in ("activate", "reset"):
            _setup_logging(settings, args.verbose, to_stderr=False)  # who did what, in the log
        elif command in ("status", "audit"):
            logging.getLogger().addHandler(logging.NullHandler())  # stdout is the answer
        if command == "status":
            return asyncio.run(_status(settings, args.json))
        if command == "activate":
            return asyncio.run(_activate(settings, args.reason, args.by))
        if command == "reset":
            return asyncio.run(_reset(settings, args))
        if command == "audit":
            return asyncio.run(_audit(settings, args))
        if command in alerts_cli.COMMANDS:  # alerts (issue 12)
            logging.getLogger().addHandler(logging.NullHandler())
            return alerts_cli.run(command, settings, args)
        if command == "bench":
            from ess_tui.bench import run_bench

            return run_bench(settings, quick=args.quick, json_path=args.json, only=args.only)
    except ConfigError as exc:
        print(f"ess-tui: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"ess-tui: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback at the CLI
        from ess_tui.engine.store import StoreError

        code = EXIT_UNAVAILABLE if isinstance(exc, StoreError) else 1
        print(f"ess-tui: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("QT_ESS_DEBUG"):
            raise
        return code
    parser.error(f"unknown command {command}")
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
