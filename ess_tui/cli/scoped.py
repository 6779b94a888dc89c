"""``activate --scope/--level``, ``reset --scope`` and the latch list of ``status`` (issue 15).

A whole-desk halt goes through the controller as always (``commands.activate``); every narrower or
softer latch is written straight to the store, durable and audited in one transaction, and the
acting runner acts on it (a scoped halt flattens what it covers; reduce-only flattens nothing).
A scoped reset applies the [reset] policy's operators and two-person rule, names the latch the
operator reviewed (a latch reset and re-latched meanwhile is refused) and is audited.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ess_tui.cli.commands import EXIT_OK, EXIT_REFUSED, _store
from ess_tui.cli.parser import CliError
from ess_tui.cli.safe import NAME_LIMIT, err, out, safe
from ess_tui.config import Settings
from ess_tui.engine.scopes import DESK, HALT, Scope, parse_level, parse_scope


def scope_and_level(args: argparse.Namespace) -> tuple[Scope, str]:
    try:
        return parse_scope(getattr(args, "scope", None)), parse_level(getattr(args, "level", None))
    except ValueError as exc:
        raise CliError(str(exc)) from None


def is_scoped(args: argparse.Namespace) -> bool:
    scope, level = scope_and_level(args)
    return not (scope.is_desk and level == HALT)


async def activate(settings: Settings, args: argparse.Namespace) -> int:
    from ess_tui.engine.store import StoreError

    scope, level = scope_and_level(args)
    if not safe(args.reason):
        raise CliError("--reason is empty: say why the ESS is latched (it goes in the audit trail)")
    if args.by is not None and not safe(args.by, NAME_LIMIT):
        raise CliError("--by is empty: give the operator's name, or leave --by out for the OS user")
    where = safe(settings.db_path)
    try:
        store = _store(settings.db_path, create=True)
        try:
            latch, changed = await store.latch_scope(scope, level, args.reason, actor=args.by,
                                                     details={"source": "cli"})
        finally:
            await store.close()
    except StoreError as exc:
        raise CliError(f"could not write the latch to {where}: {safe(exc)}", EXIT_REFUSED) from None
    what = "HALTED" if latch.level == HALT else "REDUCE-ONLY"
    out(f"{what} ({safe(str(latch.scope), 80)}) — {safe(latch.reason)} (latch {latch.id})")
    if not changed:
        err(f"note: {safe(str(scope), 80)} already held this latch at level "
            f"{latch.level.replace('_', '-')}; a latch only escalates until it is reset")
    return EXIT_OK


def _confirm(latch: Any) -> None:
    if not sys.stdin.isatty():
        raise CliError("not at a terminal: pass --yes to reset without typing RESET")
    try:
        typed = input(f"Latch {latch.id} on {safe(str(latch.scope), 80)} "
                      f"({latch.level.replace('_', '-')}: {safe(latch.reason, 200)}). "
                      "Type RESET to clear it: ")
    except EOFError:
        typed = ""
    if typed.strip() != "RESET":
        raise CliError("reset abandoned: RESET was not typed", EXIT_REFUSED)


def _not_flat(latch: Any, rows: list[Any]) -> str | None:
    """A scoped halt is reset only after the runner reported flattening what it covers, with no
    error, since it became a halt -- or with --override REASON."""
    halted_at = max((i for i, r in enumerate(rows)
                     if r.action in ("scope_latch", "scope_escalate")
                     and r.details.get("latch_id") == latch.id), default=-1)
    reports = [r for r in rows[halted_at + 1:]
               if r.action in ("scope_flattened", "scope_flatten_failed")
               and r.details.get("latch_id") == latch.id]
    if reports and reports[-1].action == "scope_flattened":
        return None
    return (f"latch {latch.id} on {latch.scope} is a halt whose flatten the runner has not "
            "reported done; wait for the runner, or pass --override REASON")


def _policy(settings: Settings, args: argparse.Namespace) -> str | None:
    policy = settings.reset
    if policy.operators and args.by not in policy.operators:
        return f"{args.by!r} is not among the [reset] operators"
    if policy.two_person and (not args.approver or args.approver == args.by):
        return "the two-person rule is on: --approver must name a second, different operator"
    if args.approver and policy.operators and args.approver not in policy.operators:
        return f"approver {args.approver!r} is not among the [reset] operators"
    return None


def reset(settings: Settings, args: argparse.Namespace) -> int:
    from ess_tui.engine.store import NotLatchedError

    scope = scope_and_level(args)[0]
    if not safe(args.by, NAME_LIMIT):
        raise CliError("--by is empty: give the name of the operator resetting")

    async def review() -> Any:
        store = _store(settings.db_path, create=False)
        try:
            found = [x for x in await store.active_latches() if x.scope == scope]
            refusal = "not latched" if not found else _policy(settings, args)
            if not refusal and found[0].level == HALT and not args.override:
                refusal = _not_flat(found[0], await store.read_audit(None, newest_first=False))
            if refusal:
                await store.audit("reset_refused", actor=safe(args.by, NAME_LIMIT),
                                  reason=refusal, details={"via": "cli", "scope": str(scope)})
                if not found:
                    raise CliError(f"{safe(str(scope), 80)} holds no latch: nothing to reset",
                                   EXIT_REFUSED)
                raise CliError(f"reset refused: {safe(refusal)}", EXIT_REFUSED)
            return found[0]
        finally:
            await store.close()

    latch = asyncio.run(review())
    if not args.yes:
        _confirm(latch)

    async def unlatch() -> None:
        store = _store(settings.db_path, create=False)
        try:
            await store.reset_scope(scope, args.by, args.note, expected_id=latch.id,
                                    details={"via": "cli", "approver": args.approver,
                                             "override": args.override})
        except NotLatchedError:
            raise CliError(f"reset refused: latch {latch.id} on {safe(str(scope), 80)} is no "
                           "longer the active one; review it and retry", EXIT_REFUSED) from None
        finally:
            await store.close()

    asyncio.run(unlatch())
    out(f"CLEARED {safe(str(scope), 80)} latch {latch.id} — reset by {safe(args.by, NAME_LIMIT)}")
    return EXIT_OK


__all__ = ["DESK", "activate", "is_scoped", "reset"]
