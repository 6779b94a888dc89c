"""The runner lease: an epoch to fence by, a beat judged by the standby's own monotonic clock
(holes 6 and 7, store side), and the gate's "is anyone watching?"."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from ess_tui.engine.state import utcnow
from ess_tui.engine.store import FencedOut, FencedStore
from ess_tui.gate import NO_RUNNER, TradeGate
from ess_tui.store.sqlite import SQLiteStore

TTL = 0.6
HOUR = timedelta(hours=1)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ess.db"


async def test_a_standby_an_hour_ahead_does_not_steal_a_live_lease(db):
    holder, standby = SQLiteStore(db, audit_key=None), SQLiteStore(db, audit_key=None)
    try:
        assert (await holder.acquire_lease("a", ttl_sec=TTL, at=utcnow())).holder == "a"
        deadline = time.monotonic() + 3 * TTL
        while time.monotonic() < deadline:
            await holder.acquire_lease("a", ttl_sec=TTL, at=utcnow())
            seen = await standby.acquire_lease("b", ttl_sec=TTL, at=utcnow() + HOUR)
            assert seen.holder == "a", "the standby's clock being an hour ahead stole the lease"
            await asyncio.sleep(TTL / 4)
    finally:
        await holder.close()
        await standby.close()


async def test_a_dead_lease_stamped_an_hour_ahead_is_taken_within_its_ttl(db):
    # The holder's clock was an hour ahead (or the standby's stepped back an hour): its stored
    # expiry lies an hour in the standby's future. It dies; the standby takes over within
    # about one ttl plus one polling interval anyway.
    holder, standby = SQLiteStore(db, audit_key=None), SQLiteStore(db, audit_key=None)
    try:
        first = await holder.acquire_lease("a", ttl_sec=TTL, at=utcnow() + HOUR)
        await holder.close()  # it dies: no more beats
        died = time.monotonic()
        interval = TTL / 4
        while True:
            lease = await standby.acquire_lease("b", ttl_sec=TTL, at=utcnow())
            if lease.holder == "b":
                break
            assert time.monotonic() - died < 10 * TTL, "the dead lease stayed live"
            await asyncio.sleep(interval)
        took = time.monotonic() - died
        assert took < TTL + 2 * interval + 0.5, f"took over after {took:.2f}s"
        assert lease.epoch == first.epoch + 1 and lease.beat == 0
    finally:
        await standby.close()


async def test_epoch_grows_with_every_change_of_holder_and_beat_with_every_renewal(db):
    clock = [0.0]
    store = SQLiteStore(db, audit_key=None, monotonic=lambda: clock[0])
    try:
        a1 = await store.acquire_lease("a", ttl_sec=5, at=utcnow())
        a2 = await store.acquire_lease("a", ttl_sec=5, at=utcnow())
        assert (a1.epoch, a1.beat, a2.epoch, a2.beat) == (1, 0, 1, 1)
        await store.release_lease("a")
        b = await store.acquire_lease("b", ttl_sec=5, at=utcnow())
        assert b.epoch == 2, "a released lease must not reset the epoch"
        assert (await store.read_lease()).epoch == 2
    finally:
        await store.close()


async def test_check_fence_refuses_a_runner_that_lost_the_lease_or_the_activation(db):
    clock = [100.0]
    a = SQLiteStore(db, audit_key=None)
    b = SQLiteStore(db, audit_key=None, monotonic=lambda: clock[0])
    try:
        assert isinstance(a, FencedStore)
        lease = await a.acquire_lease("a", ttl_sec=5, at=utcnow())
        await a.latch("halt")
        await a.check_fence("a", lease.epoch, 1)
        await a.check_fence("a", lease.epoch, None)
        with pytest.raises(FencedOut, match="activation #2"):
            await a.check_fence("a", lease.epoch, 2)
        # a stops (SIGSTOP); b watches the beat stand still for the ttl and takes over.
        await b.acquire_lease("b", ttl_sec=5, at=utcnow())
        clock[0] += 5.1
        taken = await b.acquire_lease("b", ttl_sec=5, at=utcnow())
        assert taken.holder == "b" and taken.epoch == lease.epoch + 1
        with pytest.raises(FencedOut, match="no longer holds"):
            await a.check_fence("a", lease.epoch, 1)
        await b.check_fence("b", taken.epoch, 1)
        await b.unlatch("alice")
        with pytest.raises(FencedOut, match="no longer the latched one"):
            await b.check_fence("b", taken.epoch, 1)
    finally:
        await a.close()
        await b.close()


async def test_a_holder_that_has_not_renewed_for_its_ttl_fences_itself(db):
    clock = [0.0]
    store = SQLiteStore(db, audit_key=None, monotonic=lambda: clock[0])
    try:
        lease = await store.acquire_lease("a", ttl_sec=2, at=utcnow())
        await store.check_fence("a", lease.epoch, None)
        clock[0] += 2.5  # e.g. SIGSTOPped past its lease: a standby may hold it by now
        with pytest.raises(FencedOut, match="has not renewed"):
            await store.check_fence("a", lease.epoch, None)
    finally:
        await store.close()


HOLDER = """
import asyncio, sys
from ess_tui.engine.state import utcnow
from ess_tui.store.sqlite import SQLiteStore
async def main():
    store = SQLiteStore(sys.argv[1], audit_key=None)
    while True:
        await store.acquire_lease("runner-x", ttl_sec=float(sys.argv[2]), at=utcnow())
        print("beat", flush=True)
        await asyncio.sleep(float(sys.argv[2]) / 4)
asyncio.run(main())
"""


def test_the_gate_says_whether_a_runner_is_watching(db):
    asyncio.run(_fresh(db))
    with TradeGate(db, require_runner=True) as strict, TradeGate(db) as plain:
        decision = strict.check()
        assert not decision.allowed and NO_RUNNER in decision.reason
        assert decision.runner_live is False and plain.check().allowed
        runner = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(TTL)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert runner.stdout.readline().strip() == "beat"
            assert _wait(lambda: strict.check().allowed, 5), strict.check()
            decision = strict.check()
            assert decision.runner_live is True and decision.holder == "runner-x"
            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=10)
            died = time.monotonic()
            assert _wait(lambda: not strict.check().allowed, 5)
            assert time.monotonic() - died < TTL + 0.5
            decision = strict.check()
            assert NO_RUNNER in decision.reason and decision.runner_live is False
            assert plain.check().allowed and plain.check().runner_live is False
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.wait()


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


async def _fresh(db: Path) -> None:
    store = SQLiteStore(db, audit_key=None)
    await store.load_state()
    await store.close()


FRESH_GATE = """
import sys
from ess_tui.gate import TradeGate
d = TradeGate(sys.argv[1], require_runner=True).check()
print(d.allowed, d.runner_live)
"""


@pytest.mark.parametrize("tamper", ["expiry an hour ahead", "ttl a day long", "renewed long ago"])
def test_a_fresh_gate_never_takes_a_dead_runner_for_a_live_one(db, tamper):
    """A gate built for one check (an order script's) sees the lease row once: a dead holder whose
    clock ran ahead, a row claiming a huge ttl, or a renewal long past never reads live."""
    import sqlite3

    asyncio.run(_fresh(db))
    runner = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(TTL)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout.readline().strip() == "beat"
    finally:
        runner.kill()
        runner.wait(timeout=10)
    now = utcnow()
    change = {
        "expiry an hour ahead": ("expires_at", (now + HOUR).isoformat()),
        "ttl a day long": ("ttl_sec", 86_400.0),
        "renewed long ago": ("heartbeat_at", (now - HOUR).isoformat()),
    }[tamper]
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE lease SET {change[0]} = ?", (change[1],))
        if tamper == "ttl a day long":
            conn.execute("UPDATE lease SET expires_at = ?", ((now + HOUR).isoformat(),))
    time.sleep(TTL + 0.2)
    out = subprocess.run([sys.executable, "-c", FRESH_GATE, str(db)], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], (out.stdout, out.stderr)
