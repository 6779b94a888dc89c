"""The ``ess-tui`` argument parser.

The global options (``--db``, ``--config``, ``--check-interval``, ``--theme``, ``-v``) work before or
after the command: ``ess-tui --db X activate`` and ``ess-tui activate --db X`` both act on X. Each is
parsed into a dest of its own per position and merged by :func:`resolve`, so a value is never
silently dropped: the same option given twice, or with two values, is refused with one line, and an
option that has no effect on the chosen command (``--check-interval`` for ``status``) is refused too.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from ess_tui.alerts import cli as alerts_cli
from ess_tui.alerts.cli import metrics_address
from ess_tui.cli.safe import safe

EXIT_USAGE = 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (a CliError) instead of usage text and SystemExit."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{safe(message)} (see `{self.prog} --help`)")


class _Once(argparse.Action):
    """Store a value; refuse a second one (argparse would silently keep the last)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if getattr(namespace, self.dest, None) is not None:
            raise CliError(f"{option_string} given twice; give it once")
        setattr(namespace, self.dest, values)


# name, argparse flags, kwargs, the commands it has an effect on (None = all)
GLOBALS: tuple[tuple[str, tuple[str, ...], dict[str, Any], tuple[str, ...] | None], ...] = (
    ("db", ("--db",), {"metavar": "PATH|URL",
                       "help": "ESS database: a SQLite path or a postgresql:// URL (default: $QT_ESS_DB or the state dir)"}, None),
    ("config", ("--config",), {"metavar": "PATH",
                               "help": "ess.toml (default: $QT_ESS_CONFIG, ./ess.toml, the config dir)"},
     None),
    ("check_interval", ("--check-interval",), {"type": float, "metavar": "SEC",
                                               "help": "seconds between checks (tui, headless)"},
     ("tui", "headless")),
    ("theme", ("--theme",), {"metavar": "NAME",
                             "help": "theme name: dark, light, high-contrast, colour-blind (tui)"},
     ("tui",)),
    ("metrics", ("--metrics",), {"metavar": "HOST:PORT", "type": metrics_address,
                                 "help": "serve Prometheus /metrics here, e.g. 127.0.0.1:9464 "
                                         "(tui, headless)"},
     ("tui", "headless")),
)


def _add_globals(parser: argparse.ArgumentParser, where: str, command: str | None = None) -> None:
    for name, flags, kwargs, applies in GLOBALS:
        if command is not None and applies is not None and command not in applies:
            continue  # after the command, only what has an effect on it is offered
        parser.add_argument(*flags, dest=f"{where}_{name}", action=_Once, default=None, **kwargs)
    parser.add_argument("-v", "--verbose", dest=f"{where}_verbose", action="store_true",
                        help="log more")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ess-tui",
        description="Emergency Stop System for trading desks, with a terminal control room. "
                    "Global options work before or after the command.",
    )
    _add_globals(parser, "g")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        _add_globals(p, "s", name)
        return p

    command("tui", "open the control room (the default)")
    command("headless", "run the ESS without a UI")
    p = command("init", "create a new, armed ESS database (refuses an existing path)")
    p = command("status", "is trading allowed? exit 0 armed, 3 latched, 4 unavailable")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("activate", "latch the ESS now (the acting runner flattens); exit 0 once durable")
    p.add_argument("--reason", required=True, help="why (stored in the audit trail)")
    p.add_argument("--by", help="who (default: the OS user)")
    p.add_argument("--scope", metavar="venue=NAME|strategy=TAG",
                   help="latch one venue or one strategy tag (default: the whole desk)")
    p.add_argument("--level", metavar="reduce-only|halt",
                   help="reduce-only: only orders that reduce exposure pass; halt (default)")

    p = command("reset", "audited reset of a latched ESS")
    p.add_argument("--by", required=True, metavar="NAME", help="the operator resetting")
    p.add_argument("--note", help="what was found and fixed")
    p.add_argument("--approver", metavar="NAME", help="second person, where the two-person rule is on")
    p.add_argument("--override", metavar="REASON", help="reset although the venue is not verified flat")
    p.add_argument("--yes", action="store_true", help="do not ask to type RESET")
    p.add_argument("--scope", metavar="desk|venue=NAME|strategy=TAG",
                   help="reset that scope's latch (default: the whole-desk halt)")
    p.add_argument("--level", metavar="reduce-only",
                   help="with the desk scope: reset the desk's reduce-only latch")

    p = command("audit", "show the audit trail")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--verify", action="store_true", help="verify the trail; exit 1 if broken")
    p.add_argument("--limit", type=int, default=50, help="rows to show (default 50, 0 = all)")
    p.add_argument("--anchor", metavar="SEQ:HASH",
                   help="with --verify: the trail still holds this row (an alert's audit head)")

    # alerts, alerts test, events (issue 12)
    alerts_cli.add_parsers(sub, lambda p: _add_globals(p, "s", "alerts"))

    p = command("migrate", "copy a SQLite store to PostgreSQL, audit chain verified on arrival")
    p.add_argument("--from", dest="source", required=True, metavar="FILE", help="the SQLite ess.db")
    p.add_argument("--to", dest="target", required=True, metavar="URL", help="postgresql://…")

    p = command("bench", "benchmarks: print figures (not a test)")
    p.add_argument("--quick", action="store_true", help="a short run for a smoke check")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.add_argument("--only", metavar="NAMES", help="comma-separated scenario names")
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Merge each global option's two positions into ``args.<name>``; refuse what would be lost."""
    command = args.command or "tui"
    args.command = command
    for name, flags, _, applies in GLOBALS:
        before, after = getattr(args, f"g_{name}", None), getattr(args, f"s_{name}", None)
        if before is not None and after is not None:
            raise CliError(f"{flags[0]} given both before and after `{command}` "
                           f"({safe(before, 80)!r} and {safe(after, 80)!r}); give it once")
        value = after if after is not None else before
        if value is not None and applies is not None and command not in applies:
            raise CliError(f"{flags[0]} has no effect on `{command}`; it applies to "
                           + ", ".join(f"`{c}`" for c in applies))
        setattr(args, name, value)
    args.verbose = bool(getattr(args, "g_verbose", False) or getattr(args, "s_verbose", False))
    if getattr(args, "limit", 0) is not None and getattr(args, "limit", 0) < 0:
        raise CliError(f"--limit {args.limit}: must be 0 (all) or a positive number of rows")
    return args
