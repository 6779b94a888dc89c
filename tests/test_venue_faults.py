"""Venue faults: with 30% of venue calls failing the ESS still reaches flat and reports every retry;
with the venue down for good it stays latched, keeps retrying and says what is open.

Faults come from the paper venue's own fault injection (``FaultConfig``): timeouts, 429s, 5xx,
rejected cancels and partial fills, drawn from a seeded RNG so each case is reproducible.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from ess_tui.engine.bus import EventBus
from ess_tui.engine.controller import EmergencyStopController
from ess_tui.engine.flatten import RetryPolicy
from ess_tui.engine.state import FlattenProgressEvent
from ess_tui.engine.venue import VenueError
from ess_tui.store.sqlite import SQLiteStore
from ess_tui.venues.paper.exchange import FaultConfig, PaperExchange
from ess_tui.venues.paper.demo import DEMO_POSITIONS

FAST = RetryPolicy(initial_sec=0.002, max_sec=0.02, jitter=0.0)

#: 30% of venue calls fail (10% timeouts, 10% rate-limited, 10% 503), and on top of that a third of
#: single cancels are rejected and a third of market closes fill only partly.
THIRTY_PERCENT = dict(timeout_rate=0.1, rate_limit_rate=0.1, server_error_rate=0.1,
                      reject_cancel_rate=0.3, partial_fill_rate=0.3)

VENUE_CALLS = ("fetch_positions", "fetch_open_orders", "cancel_all_orders", "close_position",
               "close_all_positions", "get_account_balance")


class CountingVenue:
    """Passes every call through to the paper venue and records each failure the venue raised."""

    def __init__(self, inner: PaperExchange) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0
        self.failures: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in VENUE_CALLS:
            return attr

        async def call(*args: Any) -> Any:
            self.calls += 1
            try:
                return await attr(*args)
            except VenueError as exc:
                self.failures.append(str(exc))
                raise

        return call


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "ess.db", audit_key=None)
    yield s
    await s.close()


def progress_recorder(bus: EventBus) -> list[FlattenProgressEvent]:
    events: list[FlattenProgressEvent] = []
    bus.subscribe(events.append, "emergency.flatten")
    return events


@pytest.mark.parametrize("seed", [1, 4, 5, 7, 11, 23])
async def test_thirty_percent_failing_calls_still_reach_flat_and_every_retry_is_reported(
    store, seed, caplog
):
    caplog.set_level(logging.INFO, logger="ess_tui.engine.flatten")
    paper = PaperExchange.demo(latency_ms=0, faults=FaultConfig(seed=seed, **THIRTY_PERCENT))
    venue = CountingVenue(paper)
    bus = EventBus()
    events = progress_recorder(bus)
    controller = EmergencyStopController(store=store, exchange=venue, bus=bus, retry=FAST)

    await controller.activate("Daily PnL catastrophic: -12.00%")

    report = controller.last_report
    assert report is not None and report.flat is True
    snapshot = paper.snapshot()  # the venue's own book, not the flattener's word for it
    assert snapshot.positions == () and snapshot.orders == ()
    assert controller.is_active, "reaching flat must never un-latch"
    assert venue.failures, "this seed injected no failure: the case proves nothing"

    # Every failed venue call reached the operator as a flatten progress event with its error...
    reported = [e.error for e in events if e.error]
    for failure in venue.failures:
        assert any(failure in text for text in reported), f"failure never reported: {failure}"
    # ...and every retry is an event, a log line and a count in the audit trail.
    retries = [e for e in events if e.step == "retry"]
    assert report.attempts >= 2
    assert [e.attempt for e in retries] == list(range(1, report.attempts))
    logged = [r.getMessage() for r in caplog.records if "flatten retry" in r.getMessage()]
    assert len(logged) == report.attempts - 1
    rows = await store.read_audit()
    flattened = [r for r in rows if r.action == "flattened"]
    assert len(flattened) == 1
    assert flattened[0].details["attempts"] == report.attempts
    assert flattened[0].details["flat"] is True
    assert flattened[0].details["positions_closed"] >= 1
    assert (await store.verify_audit()).ok

    # Never an order that could add exposure: every order sent was a close on the closing side.
    closing_side = {sym: ("sell" if side == "long" else "buy") for sym, side, _, _ in DEMO_POSITIONS}
    sent = [args for _, method, args in paper.calls if method in ("close_position", "place_order")]
    assert sent and all(a["side"] == closing_side[a["symbol"]] for a in sent)
    assert all(f.reduce_only for f in snapshot.recent_fills)


async def test_partial_fills_and_rejected_cancels_are_named_until_gone(store):
    paper = PaperExchange.demo(
        latency_ms=0, faults=FaultConfig(seed=3, reject_cancel_rate=0.6, partial_fill_rate=0.8)
    )
    bus = EventBus()
    events = progress_recorder(bus)
    controller = EmergencyStopController(store=store, exchange=paper, bus=bus, retry=FAST)
    await controller.activate("manual")
    assert controller.last_report is not None and controller.last_report.flat is True
    assert paper.snapshot().flat
    retry_text = " ".join(e.message for e in events if e.step == "retry")
    # What stayed open after a pass is named by symbol in the retry message.
    assert "still open: " in retry_text
    assert " stop " in retry_text  # a rejected cancel of a protective stop
    assert any(f"{sym} long" in retry_text or f"{sym} short" in retry_text
               for sym, *_ in DEMO_POSITIONS)  # a partly filled close


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_venue_down_for_good_stays_latched_keeps_retrying_and_says_what_is_open(
    store, caplog
):
    caplog.set_level(logging.INFO, logger="ess_tui.engine.flatten")
    paper = PaperExchange.demo(latency_ms=0)
    bus = EventBus()
    events = progress_recorder(bus)

    def take_venue_down(event: FlattenProgressEvent) -> None:
        if event.step == "cancel":  # orders cancelled and positions read: then the venue dies
            paper.faults.down = True
            unsubscribe()

    unsubscribe = bus.subscribe(take_venue_down, "emergency.flatten")
    controller = EmergencyStopController(store=store, exchange=paper, bus=bus, retry=FAST)
    await controller.latch("System health CRITICAL")
    await wait_for(lambda: sum(e.step == "retry" for e in events) >= 6)

    assert controller.flattening, "gave up while latched"
    assert controller.is_active and (await store.load_state()).active
    assert paper.snapshot().positions, "the venue was down: nothing can have closed"
    retry = [e for e in events if e.step == "retry"][-1]
    assert "the venue is down" in (retry.error or "")
    for symbol, side, amount, _ in DEMO_POSITIONS:
        assert f"{symbol} {side} {amount:g}" in retry.message
    assert "as last seen" in retry.message
    assert any("still open: BTC/USDT long 0.8" in r.getMessage() for r in caplog.records)
    assert not [r for r in await store.read_audit() if r.action == "flattened"]

    # When the venue comes back the same flatten finishes the job.
    paper.faults.down = False
    report = await controller.wait_flattened(timeout=5)
    assert report is not None and report.flat is True and report.attempts >= 7
    assert paper.snapshot().flat and controller.is_active


async def test_venue_down_from_the_latch_says_the_book_is_unknown_and_why(store):
    paper = PaperExchange.demo(latency_ms=0, faults=FaultConfig(down=True))
    bus = EventBus()
    events = progress_recorder(bus)
    controller = EmergencyStopController(store=store, exchange=paper, bus=bus, retry=FAST)
    await controller.latch("Data feed stale: no update for 6.0 min")
    await wait_for(lambda: sum(e.step == "retry" for e in events) >= 4)
    retry = [e for e in events if e.step == "retry"][-1]
    assert "positions and orders unknown" in retry.message
    assert "the venue is down" in (retry.error or "")
    assert controller.flattening and controller.is_active
    await controller.close()
    assert (await store.load_state()).active, "stopping the runner never un-latches"
