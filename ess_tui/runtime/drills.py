"""Drills: the one table of rehearsals the paper venue can run, and running one.

Each drill pushes the simulated world toward a trigger so an operator can rehearse a latch and a
reset. The control room's keys, its help screen, the audit row and the runtime all read
:data:`DRILLS`; nothing else defines a drill or its wording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ess_tui.runtime.assembly import Runtime


@dataclass(frozen=True)
class Drill:
    """One rehearsal: its name, the control-room key and what it does (shown and audited)."""

    name: str
    key: str
    what: str


#: Every drill, in the order the help screen lists them.
DRILL_TABLE: tuple[Drill, ...] = (
    Drill("crash", "1", "the account falls: prices drop 12% against the book"),
    Drill("stall_feed", "2", "the market feed stalls"),
    Drill("garbage_tick", "3", "the feed delivers a garbage tick"),
    Drill("sl_burst", "4", "a burst of stop-loss hits"),
    Drill("sick_health", "5", "the system health signal turns critical"),
    Drill("recover", "0", "the whole simulated world back to normal, account included"),
)

#: Drill name → what it does.
DRILLS: dict[str, str] = {d.name: d.what for d in DRILL_TABLE}

CRASH_PCT = 12.0


async def run_drill(runtime: Runtime, name: str, actor: str | None = None) -> str:
    """Audit, then push ``runtime``'s simulated world. Returns what the drill does."""
    if name not in DRILLS:
        raise ValueError(f"unknown drill {name!r}; drills: {', '.join(DRILLS)}")
    paper = runtime.paper
    if paper is None:
        raise RuntimeError("drills run only on the paper venue")
    what = DRILLS[name]
    await runtime.store.audit("drill", actor=actor or runtime.actor, reason=what,
                              details={"drill": name})
    if name == "crash":
        paper.drill_crash(CRASH_PCT)
    elif name == "stall_feed":
        paper.drill_stall_feed()
    elif name == "garbage_tick":
        paper.drill_garbage_tick("nan")
    elif name == "sl_burst":
        paper.drill_stop_hits(runtime.settings.max_sl_hits + 1)
    elif name == "sick_health":
        runtime.health.force("CRITICAL")
    elif name == "recover":
        paper.drill_recover_feed()
        runtime.health.clear_force()
        runtime.feed.clear()
        # The account too: the loss and drawdown are measured from current equity again, and the
        # stop-loss hits of the rehearsal no longer count (each an audited re-baseline), so the
        # rehearsal can end armed instead of re-latching the moment it is reset.
        await runtime.rebaseline("loss", actor or runtime.actor, f"drill recover: {what}")
        await runtime.rebaseline("sl_window", actor or runtime.actor, f"drill recover: {what}")
    runtime.system.wake()
    return what
