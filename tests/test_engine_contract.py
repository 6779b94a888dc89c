"""Issue 9: the engine owns its contract. The reset policy is enforced by the controller itself
(inside the store's un-latching transaction), keep-flat-while-latched works under the seed API
alone, and the engine imports nothing from a higher room."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from ess_tui import EmergencyStopController, EmergencyStopSystem, SQLiteStore
from ess_tui.engine.flatten import RetryPolicy
from ess_tui.engine.reset_policy import ResetPolicy, ResetRefused
from ess_tui.engine.seed_store import MemoryPolicyStore, SeedPolicyStoreAdapter
from ess_tui.engine.store import StaleResetError
from ess_tui.engine.evaluators import ManualTriggerEmergencyEvaluator
from ess_tui.engine.venue import Order, Position
from ess_tui.testing.fakes import FakeExchange, FakeVenue, RecordingEventBus

FAST = RetryPolicy(initial_sec=0.001, max_sec=0.005, jitter=0.0)
ONE_PASS = RetryPolicy(initial_sec=0.001, max_sec=0.005, jitter=0.0, max_attempts=1)
ENGINE = Path(__file__).resolve().parents[1] / "ess_tui" / "engine"


def open_book() -> FakeVenue:
    return FakeVenue(positions=[Position("BTC/USDT", "long", 0.5, 60_000, 61_000)],
                     orders=[Order("1", "BTC/USDT", "buy", 0.1, 59_000, "limit")])


class GuardSpy(SeedPolicyStoreAdapter):
    """The seed-store adapter, recording whether the guard ran inside ``unlatch``."""

    guards_run = 0

    async def unlatch(self, *args, guard=None, **kwargs):
        if guard is not None:
            inner = guard

            def counting(state, last):
                GuardSpy.guards_run += 1
                return inner(state, last)

            guard = counting
        return await super().unlatch(*args, guard=guard, **kwargs)


async def refusals(store) -> list[str]:
    return [r.reason or "" for r in await store.read_audit() if r.action == "reset_refused"]


@pytest.mark.parametrize(
    "policy, kwargs, fragment",
    [
        (ResetPolicy(operators=("alice", "bob")), {"reset_by": "mallory"},
         "mallory is not on the list of operators allowed to reset"),
        (ResetPolicy(two_person=True), {"reset_by": "alice"},
         "a second approver is required"),
        (ResetPolicy(two_person=True), {"reset_by": "alice", "approver": " ALICE "},
         "the approver must be a different person"),
        (ResetPolicy(), {"reset_by": "alice"}, "not verified flat"),
    ],
    ids=["operator-not-listed", "two-person-no-approver", "two-person-same-approver",
         "not-flat-no-override"],
)
async def test_a_reset_that_breaks_the_policy_is_refused_by_the_controller_and_audited(
    policy, kwargs, fragment
):
    store = GuardSpy(MemoryPolicyStore())
    venue = open_book()
    venue.refuse_close = True  # the flatten ends not flat
    controller = EmergencyStopController(store=store, exchange=venue, retry=ONE_PASS,
                                         reset_policy=policy)
    await controller.activate("Daily PnL catastrophic: -12.00%")
    GuardSpy.guards_run = 0
    with pytest.raises(ResetRefused, match=fragment):
        await controller.reset(**kwargs)
    assert GuardSpy.guards_run == 1  # the policy ran inside the store's unlatch
    assert controller.is_active and (await store.load_state()).active
    assert any(fragment in reason for reason in await refusals(store))


async def test_the_policy_lets_a_good_reset_through_and_audits_how():
    store = MemoryPolicyStore()
    venue = open_book()
    venue.refuse_close = True
    controller = EmergencyStopController(
        store, venue, retry=ONE_PASS,
        reset_policy={"operators": ["alice", "bob"], "two_person": True},
    )
    await controller.activate("x")
    state = await controller.reset("alice", approver="bob", override="closed by hand at the venue")
    assert not state.active and not controller.is_active
    row = next(r for r in await controller.store.read_audit() if r.action == "reset")
    assert row.details["approver"] == "bob"
    assert row.details["override"] == "closed by hand at the venue"
    assert row.details["via"] == "api"


async def test_seed_constructor_default_never_unlatches_a_book_known_open():
    """The 3-argument constructor: a seed exchange (unverifiable) resets as in the seed; a venue
    known not flat needs an override."""
    seed = EmergencyStopController(MemoryPolicyStore(), FakeExchange(), RecordingEventBus())
    await seed.activate("x")
    assert not (await seed.reset("alice")).active

    venue = open_book()
    venue.refuse_close = True
    known_open = EmergencyStopController(MemoryPolicyStore(), venue, RecordingEventBus())
    known_open.retry = ONE_PASS
    await known_open.activate("x")
    with pytest.raises(ResetRefused, match="not verified flat"):
        await known_open.reset("alice")
    assert known_open.is_active
    assert not (await known_open.reset("alice", override="flat at the venue")).active


@pytest.fixture(params=["seed-store", "sqlite"])
async def store(request, tmp_path):
    if request.param == "seed-store":
        yield MemoryPolicyStore()
        return
    s = SQLiteStore(tmp_path / "ess.db")
    yield s
    await s.close()


async def test_a_stale_interactive_reset_does_not_unlatch_the_next_activation(store):
    """Hole 8: alice reviewed #1; meanwhile bob reset #1, #2 latched and its flatten failed.
    Alice's reset must not un-latch #2: bound to the activation she reviewed, and the policy
    (flat or override) is checked at the moment of un-latching."""
    venue = open_book()
    controller = EmergencyStopController(store, venue, retry=ONE_PASS)
    await controller.activate("first")
    reviewed = controller.state.activation_count  # alice sits at the "Type RESET" prompt
    assert (await controller.wait_flattened()).flat

    await controller.reset("bob", expected_activation=reviewed)  # bob resets #1
    venue.positions = [Position("ETH/USDT", "short", 2.0)]
    venue.refuse_close = True
    await controller.activate("second")  # #2: its flatten fails
    assert controller.last_report is not None and controller.last_report.flat is False

    with pytest.raises(StaleResetError):
        await controller.reset("alice", expected_activation=reviewed)
    with pytest.raises(ResetRefused, match="not verified flat"):
        await controller.reset("alice")  # not stale, but the book is open: override needed
    assert controller.is_active and (await controller.store.load_state()).active
    assert controller.state.activation_count == reviewed + 1
    actions = [r.action for r in await controller.store.read_audit()]
    assert actions.count("reset_refused") == 2 and actions.count("reset") == 1


async def test_a_book_that_drifts_open_while_latched_is_flattened_again_under_the_seed_api():
    """Keep-flat-while-latched lives in the controller: the seed's controller + runner alone (no
    runtime, no control room) flatten a position that re-opens, and the seed bus still gets one
    ``emergency.stop`` for the activation."""
    venue = open_book()
    bus = RecordingEventBus()
    policy_store = MemoryPolicyStore()
    controller = EmergencyStopController(policy_store, venue, bus)
    manual = ManualTriggerEmergencyEvaluator()
    system = EmergencyStopSystem([manual], controller, policy_store, check_interval_sec=0.1)
    system.start()
    try:
        manual.trigger("operator stop")
        for _ in range(300):
            if controller.last_report is not None and not controller.flattening:
                break
            await asyncio.sleep(0.01)
        assert controller.last_report.flat is True and venue.positions == []

        venue.positions = [Position("SOL/USDT", "long", 3.0)]  # a strategy ignored the gate
        for _ in range(800):
            if not venue.positions and not controller.flattening:
                break
            await asyncio.sleep(0.01)
        assert venue.positions == []
        reflatten = [r for r in await controller.store.read_audit() if r.action == "reflatten"]
        assert reflatten and "SOL/USDT" in (reflatten[0].reason or "")
        assert len(bus.of_type("emergency.stop")) == 1
        assert controller.is_active
    finally:
        await system.stop()
        await controller.close()


def test_the_engine_imports_nothing_from_a_higher_room():
    code = (
        "import sys, ess_tui.engine.seed_store, ess_tui.engine.reset_policy, "
        "ess_tui.engine.controller, ess_tui.engine.system\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('ess_tui.store', 'ess_tui.config', "
        "'ess_tui.runtime', 'ess_tui.tui', 'ess_tui.venues', 'pydantic', 'textual', 'ccxt', "
        "'aiosqlite')))\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_engine_modules_stay_under_400_lines():
    sizes = {p.relative_to(ENGINE).as_posix(): len(p.read_text().splitlines())
             for p in ENGINE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def test_reset_policy_from_the_config_model_and_mappings():
    from ess_tui.config import ResetPolicy as ConfigResetPolicy

    converted = ResetPolicy.from_mapping(ConfigResetPolicy(operators=["alice"], two_person=True))
    assert converted == ResetPolicy(operators=("alice",), two_person=True)
    assert ResetPolicy.from_mapping(None) == ResetPolicy()
    assert ResetPolicy.from_mapping({"operators": ["a\x1b[2Jb"]}).operators == ("a?[2Jb",)
    with pytest.raises(ValueError, match="list of names"):
        ResetPolicy.from_mapping({"operators": "alice"})
