"""Split brain: the acting runner, SIGSTOPped mid-flatten past its lease and SIGCONTed after
another runner took over, sends nothing more and writes no second flatten row.

The drill is ``ess_tui/testing/split_brain.py`` (also ``scripts/soak_split_brain.py --runs N``):
real ``ess-tui headless`` processes, the real ``activate`` and ``reset`` commands, each runner's
paper venue writing its opt-in call log (``QT_ESS_PAPER__CALL_LOG``), which is what is checked.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from ess_tui.testing.split_brain import SplitBrainHarness, SplitBrainSettings, calls_after, read_call_log

posix = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP is POSIX")


def _harness(tmp_path, seed: int = 0) -> SplitBrainHarness:
    return SplitBrainHarness(tmp_path, SplitBrainSettings(timeout=30.0), seed=seed)


@pytest.mark.slow
@posix
def test_a_runner_frozen_mid_cancel_sends_nothing_after_it_wakes(tmp_path):
    # Frozen right after its cancel left: its closes are still to come when it wakes.
    result = _harness(tmp_path).run(1, "takeover", stop_after_calls=1)
    assert result.failures == [], "\n".join(result.failures)
    assert result.calls_after_cont == 0 and result.calls_before_stop == 1
    assert result.a_log  # it says it was fenced, or that it now waits as a standby


@pytest.mark.slow
@posix
def test_a_runner_frozen_after_its_last_close_writes_no_second_flatten_row(tmp_path):
    # Frozen mid-verify (all 5 book-changing calls sent): before the fix it woke, finished
    # verifying and wrote a second 'flattened' row after the runner that took over wrote its own.
    result = _harness(tmp_path).run(2, "takeover", stop_after_calls=5)
    assert result.failures == [], "\n".join(result.failures)
    assert result.calls_after_cont == 0


@pytest.mark.slow
@posix
def test_random_freeze_points_with_a_takeover(tmp_path):
    result = _harness(tmp_path, seed=11).run(4, "takeover")
    assert result.failures == [], "\n".join(result.failures)
    assert result.calls_after_cont == 0


@pytest.mark.slow
@posix
def test_a_runner_frozen_during_an_operator_reset_does_not_latch_again(tmp_path):
    result = _harness(tmp_path).run(3, "reset", stop_after_calls=1)
    assert result.failures == [], "\n".join(result.failures)


def test_the_drill_counts_calls_from_the_call_log(tmp_path):
    log = tmp_path / "calls.jsonl"
    lines = [{"mono": 10.0, "pid": 1, "method": "cancel_all_orders"},
             {"mono": 12.5, "pid": 1, "method": "close_position"},
             {"mono": 13.0, "pid": 2, "method": "close_position"}]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n{\"mono\": 14")  # last line cut short
    calls = read_call_log(log)
    assert len(calls) == 3
    assert [c["method"] for c in calls_after(calls, 12.0)] == ["close_position", "close_position"]
    assert len(calls_after(calls, 12.0, pid=1)) == 1
    assert calls_after(calls, 20.0) == []


def test_the_paper_call_log_is_off_by_default_and_one_line_per_book_changing_call(tmp_path, monkeypatch):
    import asyncio

    from ess_tui.config import load_settings
    from ess_tui.venues.paper.exchange import PaperExchange

    monkeypatch.delenv("QT_ESS_PAPER__CALL_LOG", raising=False)
    assert load_settings().paper.call_log is None
    monkeypatch.setenv("QT_ESS_PAPER__CALL_LOG", str(tmp_path / "calls.jsonl"))
    path = load_settings().paper.call_log
    assert path == tmp_path / "calls.jsonl"

    async def flatten_by_hand(venue: PaperExchange) -> None:
        await venue.fetch_positions()  # a read: not logged
        await venue.cancel_all_orders()
        for position in await venue.fetch_positions():
            await venue.close_position(position)

    quiet = PaperExchange.demo()
    asyncio.run(flatten_by_hand(quiet))
    assert not path.exists()  # nothing written unless asked
    logged = PaperExchange.demo()
    logged.wire.call_log_path = path
    asyncio.run(flatten_by_hand(logged))
    calls = read_call_log(path)
    assert [c["method"] for c in calls] == ["cancel_all_orders"] + ["close_position"] * 4
    assert all(c["pid"] == os.getpid() and c["mono"] > 0 and c["wall"] > 0 for c in calls)


async def test_a_fence_answer_that_comes_back_after_a_freeze_past_the_lease_is_not_acted_on():
    # Found by the drill (reset-alone run 3): A was frozen after its fence checks had answered
    # "yours" but before its closes left; woken after the reset, it sent all four. Here the
    # freeze is a stepped monotonic clock during check_fence, and another runner takes over.
    from dataclasses import replace

    from ess_tui.engine.controller import EmergencyStopController
    from ess_tui.engine.seed_store import MemoryPolicyStore, SeedPolicyStoreAdapter
    from ess_tui.engine.store import FencedOut
    from ess_tui.engine.system import EmergencyStopSystem

    now = [1000.0]
    store = SeedPolicyStoreAdapter(MemoryPolicyStore())
    controller = EmergencyStopController(store=store, exchange=None)
    system = EmergencyStopSystem([], controller, None, 0.1, lease_ttl_sec=1.0)
    system.monotonic = lambda: now[0]
    await system._take_lease()
    state = await controller.latch("split brain", source="test")
    real_check, real_acquire = store.check_fence, store.acquire_lease

    async def taken_over(holder, *, ttl_sec, at):
        lease = await real_acquire(holder, ttl_sec=ttl_sec, at=at)
        return replace(lease, holder="other-host:1:abc", epoch=lease.epoch + 1)

    async def check_then_freeze(holder, epoch, activation):
        await real_check(holder, epoch, activation)  # "yours": true when asked...
        now[0] += 5.0  # ...then SIGSTOP for 5 s, past the 1 s lease, and another runner took over
        store.acquire_lease = taken_over

    store.check_fence = check_then_freeze
    with pytest.raises(FencedOut):
        await system.fence(state.activation_count)
    assert not controller.acting
