"""What an alert says: short and actionable — what, why, when, what to do, the audit sequence.

:func:`render` turns an outbox event into an :class:`AlertMessage`: a title, a body, a level, the
event's idempotency key, and a PagerDuty-style ``dedup_key`` per activation with ``action``
``trigger`` (latched) or ``resolve`` (reset), so a paging service opens one incident per activation
and closes it on reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ess_tui.engine.store import OutboxEvent

RESET_HINT = "reset with `ess-tui reset --by NAME` (or the control room) once flat and the cause is fixed"


@dataclass(frozen=True)
class AlertMessage:
    title: str
    body: str
    level: str
    key: str
    kind: str
    dedup_key: str | None = None
    action: str | None = None  # trigger | resolve | None

    def as_json(self, event: OutboxEvent) -> dict[str, Any]:
        """The event as a command sink gets it on stdin."""
        return {
            "kind": self.kind, "level": self.level, "title": self.title, "message": self.body,
            "idempotency_key": self.key, "dedup_key": self.dedup_key, "action": self.action,
            "activation": event.activation, "audit_seq": event.audit_seq,
            "created_at": event.created_at.isoformat(), "payload": event.payload,
        }


def _line(label: str, value: Any) -> str | None:
    return f"{label}: {value}" if value not in (None, "", [], {}) else None


def render(event: OutboxEvent) -> AlertMessage:
    p = event.payload
    act = event.activation
    when = p.get("since") or p.get("at") or event.created_at.isoformat(timespec="seconds")
    dedup = f"ess-activation-{act}" if act is not None else None
    action = None
    kind = event.kind
    if kind == "latched":
        title = f"ESS LATCHED #{act}: {p.get('reason')}"
        what = "trading is blocked; the ESS is cancelling every order and closing every position"
        do = f"watch the venue go flat in the control room; {RESET_HINT}"
        extra = [_line("Fired by", p.get("source") or p.get("actor")), _line("Reading", p.get("reading"))]
        action = "trigger"
    elif kind == "reset":
        title = f"ESS reset #{act} by {p.get('who')}: trading allowed again"
        what = f"activation #{act} ({p.get('reason')}) was reset"
        do = "nothing, unless this reset was not expected: then latch again (`ess-tui activate`)"
        extra = [_line("Note", p.get("note")), _line("Overrides", p.get("overrides"))]
        action = "resolve"
    elif kind == "flattened":
        title = f"ESS #{act} flat: {p.get('orders_canceled', 0)} orders cancelled, {p.get('positions_closed', 0)} positions closed"
        what = "the venue is verified flat; trading stays blocked until a reset"
        do = RESET_HINT
        extra = [_line("Time to flat", f"{p['seconds']:.2f}s" if isinstance(p.get("seconds"), (int, float)) else None)]
    elif kind == "flatten_failing":
        title = f"ESS #{act} NOT FLAT: {p.get('last_error') or 'positions or orders still open'}"
        what = "the ESS keeps retrying, but the venue is still not flat"
        do = "close what is open by hand at the venue, check API keys and connectivity"
        extra = [_line("Still open", ", ".join(p.get("remaining", []) or []) or None),
                 _line("Last venue error", p.get("last_error"))]
    elif kind == "report":
        title = f"ESS report, activation #{act}: {p.get('reason')}"
        what = (f"latched {p.get('since')}, {p.get('orders_canceled')} orders cancelled, "
                f"{p.get('positions_closed')} positions closed, reset by {p.get('who')}")
        do = "file it; check the anchor against the trail: `ess-tui audit --verify --anchor SEQ:HASH`"
        secs = p.get("time_to_flat_sec")
        extra = [_line("Time to flat", f"{secs:.2f}s" if isinstance(secs, (int, float)) else "not flat"),
                 _line("Reading", p.get("reading")), _line("Reset note", p.get("note")),
                 _line("Overrides", p.get("overrides")), "Timeline:", *p.get("timeline", [])]
    elif kind == "digest":
        title = f"ESS daily digest {p.get('day')}: {p.get('message')}"
        what = p.get("message")
        do = "nothing if this is what you expected"
        extra = []
    elif kind == "drill":
        title = "ESS alert drill: this is a test"
        what = f"a drill alert sent by {p.get('actor')}"
        do = "nothing: this sink works"
        extra = []
    else:
        title = f"ESS {kind.replace('_', ' ')}: {p.get('message') or p.get('reason') or ''}".strip()
        what = p.get("message") or kind
        do = p.get("do") or "look at the control room and the log (`ess-tui events`)"
        extra = [_line("Source", p.get("source"))]
    lines = [f"What: {what}", _line("Why", p.get("reason") if kind not in ("reset", "report") else None),
             f"When: {when}", *extra, f"Do: {do}",
             f"Audit seq: {event.audit_seq if event.audit_seq is not None else '-'} · key {event.key}",
             _line("Audit head (anchor)", p.get("audit_head"))]
    body = "\n".join(line for line in lines if line)
    return AlertMessage(title=title[:200], body=body, level=event.level, key=event.key, kind=kind,
                        dedup_key=dedup if kind in ("latched", "reset") else None, action=action)
