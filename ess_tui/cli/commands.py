"""The subcommands of ``ess-tui``: each returns its exit code or raises CliError (one line).

Every value printed that came from an operator, a venue or the database goes through
:mod:`ess_tui.cli.safe`.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ess_tui.cli.parser import CliError
from ess_tui.cli.safe import NAME_LIMIT, TEXT_LIMIT, err, out, safe, safe_json
from ess_tui.config import Settings

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_LATCHED = 3
EXIT_UNAVAILABLE = 4


def _store(db: str | Path, *, create: bool) -> Any:
    """The ESS store at ``db``: a SQLite path or a ``postgresql://`` URL."""
    from ess_tui.store.open import URLError, open_store

    try:
        return open_store(db, create=create)
    except URLError as exc:
        raise CliError(f"--db: {safe(exc)}") from None


def where(settings: Settings) -> str:
    """The store's place as it may be printed (a URL without its password)."""
    from ess_tui.store.open import describe_db

    return safe(describe_db(settings.db_target))


# --- init ---------------------------------------------------------------------------------------


async def init(settings: Settings) -> int:
    if settings.db_url is not None:
        from ess_tui.store.postgres.wiring import init_postgres

        out(safe(await init_postgres(settings.db_url)))
        return EXIT_OK
    path = settings.db_path
    if os.path.lexists(path):
        raise CliError(f"{safe(path)} already exists: `init` never writes over a file "
                       "(pick a new path, or use the database that is there)")
    from ess_tui.store.sqlite import init_database

    result = init_database(path)
    if inspect.isawaitable(result):
        await result
    out(f"created {safe(path)}: a new ESS database, ARMED (trading allowed)")
    return EXIT_OK


# --- status -------------------------------------------------------------------------------------


def _gate_decision(settings: Settings) -> Any:
    """The trade gate's answer on this database, or None if the gate itself failed."""
    try:
        from ess_tui.gate import TradeGate

        options: dict[str, Any] = {"require_runner": settings.gate.require_runner}
        if settings.db_url is not None:
            options["max_silence"] = settings.gate.max_silence
        with TradeGate(settings.db_target, **options) as gate:
            return gate.check()
    except Exception:  # noqa: BLE001 - the store's own reading stands
        return None


def _lease_view(lease: Any, decision: Any) -> dict[str, Any]:
    """Whether an acting runner holds a live lease. The gate's verdict is the reference, so status
    and the gate agree; the lease row's own expiry is the fallback (compatibility until the gate's
    decision carries ``runner_live``)."""
    holder = getattr(lease, "holder", None) if lease is not None else None
    live: bool | None = None
    if decision is not None and hasattr(decision, "runner_live"):
        live = bool(decision.runner_live)
        holder = getattr(decision, "holder", None) or holder
    now = datetime.now(timezone.utc)
    if live is None:
        expires = getattr(lease, "expires_at", None)
        live = bool(expires is not None and expires > now)
    beat_at = getattr(lease, "heartbeat_at", None)
    ago = max(0.0, (now - beat_at).total_seconds()) if beat_at is not None else None
    return {"live": live and holder is not None, "holder": holder, "renewed_ago": ago}


def runner_line(view: dict[str, Any]) -> str:
    if view["live"]:
        ago = view["renewed_ago"]
        when = f", renewed {ago:.1f} s ago" if ago is not None else ""
        return f"runner: {safe(view['holder'], NAME_LIMIT)} (lease live{when})"
    if view["holder"]:
        return (f"no ESS runner is watching this desk (the last lease, "
                f"{safe(view['holder'], NAME_LIMIT)}, has expired)")
    return "no ESS runner is watching this desk"


async def status(settings: Settings, as_json: bool) -> int:
    store = _store(settings.db_target, create=False)
    try:
        state = await store.load_state()
        lease = await store.read_lease()
        latches = await store.active_latches()
    except Exception as exc:  # noqa: BLE001 - unknown state: blocked
        reason = safe(str(exc) or type(exc).__name__)
        if as_json:
            out(json.dumps({"status": "unavailable", "trading_allowed": False, "reason": reason,
                            "db": where(settings)}))
        else:
            out(f"STATE UNAVAILABLE — trading blocked: {reason}")
        return EXIT_UNAVAILABLE
    finally:
        await store.close()
    decision = _gate_decision(settings)
    view = _lease_view(lease, decision)
    # A block the store's latches explain (scoped or reduce-only; listed below) is not a
    # disagreement; a desk halt the store does not hold (the latch marker) is.
    explained = bool(latches) and getattr(decision, "level", None) is not None and not (
        getattr(decision, "scope", None) == "desk" and getattr(decision, "level", None) == "halt")
    if not state.active and decision is not None and not decision.allowed and not explained:
        # The store reads armed but the gate blocks (a latch on its second channel, a damaged
        # file the gate sees): trading is blocked, and status says so rather than "armed".
        reason = safe(getattr(decision, "reason", None) or "the trade gate answers blocked")
        if as_json:
            out(json.dumps(safe_json({"status": "unavailable", "trading_allowed": False,
                                      "reason": reason, "db": where(settings),
                                      "runner": view["holder"], "runner_live": view["live"]})))
        else:
            out(f"STATE UNAVAILABLE — trading blocked: the store reads armed but the trade gate "
                f"answers blocked: {reason}")
            out(runner_line(view))
        return EXIT_UNAVAILABLE
    info = {
        "status": "latched" if state.active else "armed",
        "trading_allowed": not state.active,
        "reason": state.reason,
        "since": state.timestamp.isoformat() if state.timestamp else None,
        "activation_count": state.activation_count,
        "last_reset_by": state.last_reset_by,
        "runner": view["holder"],
        "runner_live": view["live"],
        "runner_renewed_ago_sec": round(view["renewed_ago"], 3) if view["renewed_ago"] is not None
        else None,
        "db": where(settings),
        # Every active latch (issue 15): the desk halt first, then scoped and reduce-only ones.
        "latches": ([{"id": None, "scope": "desk", "level": "halt", "reason": state.reason,
                      "since": info_since(state), "latched_by": None}] if state.active else [])
        + [x.to_json() for x in latches],
    }
    if as_json:
        out(json.dumps(safe_json(info)))
    else:
        if state.active:
            out(f"LATCHED since {safe(info['since'], 64)} — {safe(state.reason)} "
                f"(activation #{int(state.activation_count)})")
        else:
            out(f"ARMED — trading allowed (activations so far: {int(state.activation_count)})")
        if latches:
            from ess_tui.cli.safe import latch_lines

            out(f"{len(latches)} scoped or reduce-only latch(es) active:")
            for line in latch_lines(latches):
                out(line)
        out(runner_line(view))
    return EXIT_LATCHED if state.active else EXIT_OK


def info_since(state: Any) -> str | None:
    return state.timestamp.isoformat() if state.timestamp else None


# --- activate -----------------------------------------------------------------------------------


async def activate(settings: Settings, reason: str, by: str | None) -> int:
    from ess_tui.engine.controller import EmergencyStopController, os_user
    from ess_tui.engine.store import StoreError

    if not safe(reason):
        raise CliError("--reason is empty: say why the ESS is latched (it goes in the audit trail)")
    if by is not None and not safe(by, NAME_LIMIT):
        raise CliError("--by is empty: give the operator's name, or leave --by out for the OS user")
    place = where(settings)
    try:
        store = _store(settings.db_target, create=True)
    except StoreError as exc:
        raise CliError(f"could not write the latch to {place}: {safe(exc)}", EXIT_REFUSED) from None
    lease = None
    try:
        controller = EmergencyStopController(store=store, acting=False, actor=by or os_user())
        try:
            state = await controller.latch(reason, source="cli")
        except StoreError as exc:
            raise CliError(f"could not write the latch to {place}: {safe(exc)}", EXIT_REFUSED) from None
        if controller.not_durable or not state.active:
            why = controller.not_durable or "the store did not record it"
            raise CliError(f"could not write the latch to {place}: {safe(why)}", EXIT_REFUSED)
        try:
            lease = await store.read_lease()
        except Exception:  # noqa: BLE001 - the latch is durable; the runner line is a courtesy
            lease = None
    finally:
        await store.close()
    out(f"LATCHED — {safe(state.reason)} (activation #{int(state.activation_count)})")
    view = _lease_view(lease, _gate_decision(settings))
    if view["live"]:
        out(f"the runner {safe(view['holder'], NAME_LIMIT)} flattens within one check interval")
    else:
        err("warning: no ESS runner is watching this desk; start `ess-tui headless` "
            "(or the control room) to flatten the venue")
    return EXIT_OK


# --- audit --------------------------------------------------------------------------------------


def verification_line(verification: Any) -> str:
    if verification.ok:
        return f"audit chain OK: {int(verification.rows)} rows verified"
    at_row = f" at row {verification.first_bad_seq}" if verification.first_bad_seq is not None else ""
    problem = safe(getattr(verification, "problem", None) or "the trail does not verify")
    return f"audit chain BROKEN{at_row}: {problem}"


async def audit(settings: Settings, args: argparse.Namespace) -> int:
    store = _store(settings.db_target, create=False)
    try:
        rows = await store.read_audit(args.limit or None, newest_first=True)
        verification = await store.verify_audit() if args.verify else None
    finally:
        await store.close()
    for row in rows:
        if args.json:
            out(json.dumps(safe_json({
                "seq": row.seq, "at": row.at.isoformat(), "action": row.action, "actor": row.actor,
                "reason": row.reason, "details": row.details, "hash": row.hash,
            })))
        else:
            out(f"{int(row.seq):>6}  {row.at:%Y-%m-%d %H:%M:%S}Z  {safe(row.action, 18):<18} "
                f"{safe(row.actor, NAME_LIMIT):<16} {safe(row.reason, TEXT_LIMIT)}")
    if verification is not None:
        out(verification_line(verification))
        if not verification.ok:
            return EXIT_REFUSED
    if getattr(args, "anchor", None):  # an anchor sent out in an alert or report
        from ess_tui.alerts.cli import check_anchor

        return await check_anchor(settings, args.anchor)
    return EXIT_OK


# --- headless -----------------------------------------------------------------------------------


async def headless(settings: Settings) -> int:
    import signal

    from ess_tui.runtime.assembly import Runtime

    # The runtime opens its store with create=True: a database is created only where no file
    # exists, and only once the venue was accepted (a refused venue leaves nothing behind).
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
                where(settings), settings.check_interval)
    try:
        await stop.wait()
    finally:
        await runtime.stop()
    return EXIT_OK
