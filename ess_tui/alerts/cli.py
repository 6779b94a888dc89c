"""``ess-tui alerts`` (sinks and their last delivery / failure), ``ess-tui alerts test [--name N]``
(a drill alert to every sink or one, audited, delivered / failed per sink) and ``ess-tui events
[--follow] [--json]`` (the audit trail and the alert outbox, as NDJSON for other tools).

``ess_tui.cli`` wires these in with :func:`add_parsers` and :func:`run`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ess_tui.config import ConfigError, Settings
from ess_tui.engine.state import os_user, utcnow
from ess_tui.engine.store import OutboxEvent

COMMANDS = ("alerts", "events")


def metrics_address(text: str) -> str:
    """argparse type of ``--metrics HOST:PORT``."""
    from ess_tui.alerts.metrics import parse_listen

    try:
        host, port = parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return f"{host}:{port}"


def add_metrics_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", metavar="HOST:PORT", type=metrics_address,
                        help="serve Prometheus /metrics here (e.g. 127.0.0.1:9464)")


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("alerts", help="alert sinks: last delivery and failure; `alerts test` drills")
    common(p)
    inner = p.add_subparsers(dest="alerts_command", metavar="test")
    t = inner.add_parser("test", help="send a drill alert to every sink (or --name), audited")
    common(t)
    t.add_argument("--name", help="only this sink")
    t.add_argument("--by", help="who runs the drill (default: the OS user)")
    p = sub.add_parser("events", help="the audit trail and alert events as NDJSON")
    common(p)
    p.add_argument("--follow", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="NDJSON (default: one readable line each)")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)


def run(command: str, settings: Settings, args: argparse.Namespace) -> int:
    if command == "alerts":
        if getattr(args, "alerts_command", None) == "test":
            return asyncio.run(_drill(settings, args.name, args.by))
        return asyncio.run(_list(settings))
    return asyncio.run(_events(settings, args.follow, args.json, args.interval))


def _sinks(settings: Settings) -> list[Any]:
    from ess_tui.alerts.sinks import build_sinks

    try:
        return build_sinks(settings.alerts)
    except ValueError as exc:
        raise ConfigError(f"bad config: {exc}") from None


async def _list(settings: Settings) -> int:
    from ess_tui.store.open import open_outbox

    sinks = _sinks(settings)
    if not sinks:
        print("no alert sinks: add [[alerts]] entries to ess.toml (see README, Alerts)")
        return 0
    outbox = open_outbox(settings.db_target)
    try:
        rows = await outbox.deliveries()
    except Exception as exc:  # noqa: BLE001 - still list the sinks
        print(f"warning: delivery history unreadable: {exc}", file=sys.stderr)
        rows = []
    finally:
        await outbox.close()
    for sink in sinks:
        mine = [r for r in rows if r.sink == sink.name]
        done = max((r.delivered_at for r in mine if r.delivered_at), default=None)
        failed = [r for r in mine if r.last_error and r.attempts > (1 if r.delivered_at else 0)]
        waiting = sum(1 for r in mine if r.delivered_at is None)
        when = f"{done:%Y-%m-%d %H:%M:%S}Z" if done else "never"
        print(f"{sink.name:<16} {sink.target:<36} min_level={sink.min_level:<8} "
              f"last delivered: {when}", end="")
        if failed:
            print(f"  last failure: {failed[0].last_error}  (retrying: {waiting})", end="")
        print()
    return 0


async def _drill(settings: Settings, name: str | None, by: str | None) -> int:
    from ess_tui.alerts.messages import render
    from ess_tui.alerts.relay import AlertRelay
    from ess_tui.store.open import open_store

    sinks = _sinks(settings)
    if name is not None:
        sinks = [s for s in sinks if s.name == name]
        if not sinks:
            known = ", ".join(s.name for s in _sinks(settings)) or "none configured"
            raise ConfigError(f"no alert sink named {name!r} (sinks: {known})")
    if not sinks:
        raise ConfigError("no alert sinks: add [[alerts]] entries to ess.toml (see README, Alerts)")
    actor = by or os_user()
    event = OutboxEvent(id=0, kind="drill", level="critical", key=f"drill:{utcnow().isoformat()}",
                        created_at=utcnow(), payload={"actor": actor})
    relay = AlertRelay(None, sinks)
    message = render(event)

    async def one(sink: Any) -> tuple[str | None, float]:
        started = time.perf_counter()
        error = await relay.send(sink, message, event)
        return error, time.perf_counter() - started

    results = await asyncio.gather(*(one(s) for s in sinks))
    store = open_store(settings.db_target, create=False)
    try:
        await store.audit("alert_drill", actor=actor, reason="drill alert to the sinks",
                          details={s.name: (e or "delivered") for s, (e, _) in zip(sinks, results)})
    except Exception as exc:  # noqa: BLE001 - the drill happened; say it is not on the record
        print(f"warning: the drill could not be audited: {exc}", file=sys.stderr)
    finally:
        await store.close()
    for sink, (error, took) in zip(sinks, results):
        if error is None:
            print(f"{sink.name}: delivered ({took:.2f}s)")
        else:
            print(f"{sink.name}: FAILED — {error}")
    return 0 if all(e is None for e, _ in results) else 1


async def check_anchor(settings: Settings, anchor: str) -> int:
    """``ess-tui audit --verify --anchor SEQ:HASH``: the row an alert named is still in the trail
    with that hash (a truncation or rewrite since the alert went out shows here). Exit 0 / 1."""
    from ess_tui.store.open import open_store

    seq_text, _, digest = anchor.strip().partition(":")
    if not seq_text.isdigit() or len(digest) < 16:
        raise ConfigError(f"--anchor {anchor!r} is not SEQ:HASH (as an alert's 'Audit head' shows it)")
    seq = int(seq_text)
    store = open_store(settings.db_target, create=False)
    try:
        rows = await store.read_audit(None, newest_first=True)
    finally:
        await store.close()
    found = next((r for r in rows if r.seq == seq), None)
    if found is None:
        newest = rows[0].seq if rows else 0
        print(f"anchor BROKEN: row {seq} is gone (the trail ends at {newest}): it was truncated")
        return 1
    if found.hash != digest:
        print(f"anchor BROKEN: row {seq} has hash {found.hash[:16]}…, the anchor says {digest[:16]}…: "
              "the trail was rewritten")
        return 1
    print(f"anchor OK: row {seq} matches; {len([r for r in rows if r.seq > seq])} rows since")
    return 0


def _audit_json(row: Any) -> dict[str, Any]:
    return {"source": "audit", "seq": row.seq, "at": row.at.isoformat(), "action": row.action,
            "actor": row.actor, "reason": row.reason, "details": row.details, "hash": row.hash}


def _event_json(ev: OutboxEvent) -> dict[str, Any]:
    return {"source": "alert", "id": ev.id, "at": ev.created_at.isoformat(), "kind": ev.kind,
            "level": ev.level, "key": ev.key, "activation": ev.activation,
            "audit_seq": ev.audit_seq, "payload": ev.payload}


def _print(item: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(item, sort_keys=True, default=str), flush=True)
    elif item["source"] == "audit":
        print(f"{item['at'][:19]}Z  audit #{item['seq']:<6} {item['action']:<18} {item['actor']:<16} "
              f"{item['reason'] or ''}", flush=True)
    else:
        print(f"{item['at'][:19]}Z  alert {item['level']:<8} {item['kind']:<18} {item['key']}", flush=True)


async def _events(settings: Settings, follow: bool, as_json: bool, interval: float) -> int:
    from ess_tui.store.open import open_outbox, open_store

    store = open_store(settings.db_target, create=False)
    # On PostgreSQL the outbox shares the store's pool; on SQLite it has its own connection.
    outbox = open_outbox(settings.db_target, store=store)
    last_seq, last_id = 0, 0
    try:
        while True:
            recent = await store.read_audit(None if not last_seq else 500, newest_first=False)
            rows = [r for r in recent if r.seq > last_seq]
            await store.load_state()  # opened (and migrated) before the outbox is read
            events = await outbox.events(last_id)
            items = [(r.at, 0, _audit_json(r)) for r in rows] + [
                (e.created_at, 1, _event_json(e)) for e in events]
            for _, _, item in sorted(items, key=lambda t: (t[0], t[1])):
                _print(item, as_json)
            if rows:
                last_seq = rows[-1].seq
            if events:
                last_id = events[-1].id
            if not follow:
                return 0
            await asyncio.sleep(interval)
    finally:
        await outbox.close()
        await store.close()
