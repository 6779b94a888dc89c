"""The ESS on a seed-shaped policy store: the emergency_stop key, an in-memory audit chain."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ess_tui.engine.store import NotLatchedError, StateStore, StoreError, StoreUnavailable
from ess_tui.engine.seed_store import MemoryPolicyStore, SeedPolicyStoreAdapter, as_state_store
from ess_tui.store.sqlite import SQLiteStore

T0 = datetime(2025, 11, 30, 4, 3, 31, tzinfo=timezone.utc)


class AsyncPolicyStore:
    """A seed policy store whose get/set are coroutines."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> dict[str, Any]:
        return dict(self.data.get(key, {}))

    async def set(self, key: str, value: dict[str, Any]) -> None:
        self.data[key] = dict(value)


class BrokenPolicyStore(MemoryPolicyStore):
    def __init__(self, *, get_fails: bool = False, set_fails: bool = False) -> None:
        super().__init__()
        self.get_fails, self.set_fails = get_fails, set_fails

    def get(self, key: str) -> dict[str, Any]:
        if self.get_fails:
            raise ConnectionError("redis down")
        return super().get(key)

    def set(self, key: str, value: dict[str, Any]) -> None:
        if self.set_fails:
            raise ConnectionError("redis down")
        super().set(key, value)


def test_memory_policy_store_is_a_seed_store():
    policy = MemoryPolicyStore()
    assert policy.get("emergency_stop") == {}
    value = {"active": True, "nested": {"n": 1}}
    policy.set("emergency_stop", value)
    value["nested"]["n"] = 2  # the caller's dict is copied, not kept
    got = policy.get("emergency_stop")
    assert got == {"active": True, "nested": {"n": 1}}
    got["active"] = False
    assert policy.get("emergency_stop")["active"] is True


async def test_latch_writes_the_seed_key():
    policy = MemoryPolicyStore()
    store = SeedPolicyStoreAdapter(policy)
    assert isinstance(store, StateStore)
    result = await store.latch("Daily PnL catastrophic: -12.00%", at=T0, actor="drawdown")
    assert result.new
    assert policy.writes == [("emergency_stop", {
        "active": True, "status": "active", "reason": "Daily PnL catastrophic: -12.00%",
        "timestamp": T0.isoformat(), "activation_count": 1, "auto_recover": False,
    })]
    ess_state = policy.get("emergency_stop")  # what the seed's orchestrator reads
    assert ess_state.get("active")


async def test_double_latch_reset_and_count():
    store = SeedPolicyStoreAdapter(MemoryPolicyStore())
    await store.latch("Daily PnL catastrophic: -12.00%", at=T0)
    second = await store.latch("System health CRITICAL", at=T0 + timedelta(seconds=1))
    assert not second.new and second.state.reason == "Daily PnL catastrophic: -12.00%"
    assert second.state.activation_count == 1
    state = await store.unlatch("alice", at=T0 + timedelta(minutes=5), note="fixed")
    assert not state.active and state.reason is None and state.activation_count == 1
    assert (await store.load_state()).last_reset_by == "alice"
    again = await store.latch("manual stop", at=T0 + timedelta(minutes=6))
    assert again.new and again.state.activation_count == 2
    actions = [r.action for r in await store.read_audit(newest_first=False)]
    assert actions == ["activate", "extra_trigger", "reset", "activate"]


async def test_refused_reset_is_audited():
    store = SeedPolicyStoreAdapter(MemoryPolicyStore())
    with pytest.raises(NotLatchedError):
        await store.unlatch("bob", note="just checking")
    (row,) = await store.read_audit()
    assert (row.action, row.actor, row.reason) == ("reset_refused", "bob", "not latched")


async def test_async_policy_store_works():
    policy = AsyncPolicyStore()
    store = as_state_store(policy)
    await store.latch("manual stop", at=T0)
    assert policy.data["emergency_stop"]["active"] is True
    assert (await store.load_state()).active


async def test_in_memory_audit_chain_verifies_and_detects_tampering():
    store = SeedPolicyStoreAdapter(MemoryPolicyStore(), audit_key=b"k")
    await store.latch("manual stop", at=T0)
    await store.audit("flatten", actor="ess", details={"orders_canceled": 3})
    await store.unlatch("alice", at=T0 + timedelta(minutes=1))
    assert (await store.verify_audit()).ok
    store._rows[1] = replace(store._rows[1], details={"orders_canceled": 0})
    result = await store.verify_audit()
    assert not result.ok and result.first_bad_seq == 2
    newest = await store.read_audit(2)
    assert [r.seq for r in newest] == [3, 2]


async def test_unreadable_policy_store_reads_latched_and_still_latches():
    policy = BrokenPolicyStore(get_fails=True)
    store = SeedPolicyStoreAdapter(policy)
    with pytest.raises(StoreUnavailable, match="redis down"):
        await store.load_state()
    result = await store.latch("manual stop", at=T0)
    assert result.new
    assert policy.writes[-1][1]["active"] is True


async def test_unwritable_policy_store_fails_the_latch_loudly():
    store = SeedPolicyStoreAdapter(BrokenPolicyStore(set_fails=True))
    with pytest.raises(StoreError, match="redis down"):
        await store.latch("manual stop", at=T0)
    assert await store.read_audit() == []  # no audit row claims a latch that was not written


async def test_policy_key_cannot_unlatch():
    store = SeedPolicyStoreAdapter(MemoryPolicyStore())
    await store.latch("manual stop", at=T0)
    with pytest.raises(ValueError, match="emergency_stop"):
        await store.set_policy("emergency_stop", {"active": False})
    await store.set_policy("risk_limits", {"max_leverage": 3})
    assert await store.get_policy("risk_limits") == {"max_leverage": 3}
    assert (await store.load_state()).active


async def test_lease_is_always_granted():
    store = SeedPolicyStoreAdapter(MemoryPolicyStore())
    assert (await store.acquire_lease("runner-a", ttl_sec=10, at=T0)).holder == "runner-a"
    assert (await store.acquire_lease("runner-b", ttl_sec=10, at=T0)).holder == "runner-b"
    await store.release_lease("runner-b")
    assert await store.read_lease() is None


async def test_as_state_store_picks_the_adapter_only_when_needed(tmp_path):
    sqlite_store = SQLiteStore(tmp_path / "ess.db")
    assert as_state_store(sqlite_store) is sqlite_store
    adapter = SeedPolicyStoreAdapter(MemoryPolicyStore())
    assert as_state_store(adapter) is adapter
    assert isinstance(as_state_store(MemoryPolicyStore()), SeedPolicyStoreAdapter)
    with pytest.raises(TypeError, match="get\\(key\\)"):
        as_state_store(object())
