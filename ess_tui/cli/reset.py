"""``ess-tui reset``: review the latched activation, ask for RESET, un-latch bound to what was reviewed.

The prompt runs outside any event loop, so Ctrl-C at it interrupts at once (and is audited as
``reset_abandoned``). The reset names the activation the operator reviewed: if another reset and a
new latch happened meanwhile, it is refused (the store compares them in the un-latching transaction).
The reset policy (operators, two-person, flat-or-override) is the controller's to enforce; the CLI
only collects the operator's input.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ess_tui.cli.commands import EXIT_OK, EXIT_REFUSED, _store
from ess_tui.cli.parser import CliError
from ess_tui.cli.safe import NAME_LIMIT, out, safe
from ess_tui.config import Settings


def _confirm_reset(activation: int, reason: str | None) -> None:
    if not sys.stdin.isatty():
        raise CliError("not at a terminal: pass --yes to reset without typing RESET")
    try:
        typed = input(f"Activation #{activation} ({safe(reason, 200)}). "
                      "Type RESET to un-latch the ESS and allow trading again: ")
    except EOFError:
        typed = ""
    if typed.strip() != "RESET":
        raise CliError("reset abandoned: RESET was not typed", EXIT_REFUSED)


def _controller_kwargs(settings: Settings) -> dict[str, Any]:
    """The configured reset policy, handed to the controller, which enforces it itself."""
    return {"reset_policy": settings.reset.to_engine()}


async def _review(settings: Settings, args: argparse.Namespace) -> tuple[int, str | None, Any]:
    """The latched activation (number, reason) the operator reviews, and no policy details (the
    controller checks the policy when it un-latches)."""

    store = _store(settings.db_target, create=False)
    try:
        state = await store.load_state()
        if not state.active:
            await store.audit("reset_refused", actor=safe(args.by, NAME_LIMIT), reason="not latched",
                              details={"via": "cli"})
            raise CliError("the ESS is not latched: nothing to reset", EXIT_REFUSED)
        details = None  # the policy is the controller's to enforce, not the CLI's
        return int(state.activation_count), state.reason, details
    finally:
        await store.close()


async def _abandoned(settings: Settings, by: str, why: str, activation: int) -> None:
    store = _store(settings.db_target, create=False)
    try:
        await store.audit("reset_abandoned", actor=safe(by, NAME_LIMIT), reason=why,
                          details={"via": "cli", "activation": activation})
    finally:
        await store.close()


async def _unlatch(settings: Settings, args: argparse.Namespace, reviewed: int, details: Any) -> None:
    from ess_tui.engine.controller import EmergencyStopController
    from ess_tui.engine.reset_policy import ResetRefused
    from ess_tui.engine.store import NotLatchedError, StaleResetError

    store = _store(settings.db_target, create=False)
    try:
        controller = EmergencyStopController(store=store, acting=False, **_controller_kwargs(settings))
        try:
            await controller.reset(args.by, args.note, approver=args.approver,
                                   override=args.override, expected_activation=reviewed, via="cli",
                                   details=details)
        except ResetRefused as exc:
            raise CliError(f"reset refused: {safe(exc)}", EXIT_REFUSED) from None
        except NotLatchedError:
            raise CliError("the ESS is not latched: nothing to reset", EXIT_REFUSED) from None
        except StaleResetError:
            raise CliError(f"reset refused: activation #{reviewed} is no longer the latched one "
                           "(someone reset it, and the ESS latched again); review it and retry",
                           EXIT_REFUSED) from None
    finally:
        await store.close()


def reset(settings: Settings, args: argparse.Namespace) -> int:
    if not safe(args.by, NAME_LIMIT):
        raise CliError("--by is empty: give the name of the operator resetting")
    reviewed, reason, details = asyncio.run(_review(settings, args))
    if not args.yes:
        try:
            _confirm_reset(reviewed, reason)
        except (CliError, KeyboardInterrupt) as exc:
            why = ("interrupted at the RESET prompt" if isinstance(exc, KeyboardInterrupt)
                   else "RESET not typed")
            asyncio.run(_abandoned(settings, args.by, why, reviewed))
            raise
    asyncio.run(_unlatch(settings, args, reviewed, details))
    out(f"ARMED — reset by {safe(args.by, NAME_LIMIT)}")
    return EXIT_OK
