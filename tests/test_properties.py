"""Bad input, property-tested: market ticks, config values and operator text.

Whatever arrives, the answer is a clear error or a safe value, never a crash; stored text is
cleaned (no control characters, ANSI escapes or bidi overrides) and bounded; the audit chain stays
valid after every write. Example counts are modest so the file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import tempfile
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from ess_tui.cli import main
from ess_tui.config import ConfigError, Settings, load_settings
from ess_tui.engine.controller import EmergencyStopController
from ess_tui.engine.evaluators import DataFeedEmergencyEvaluator
from ess_tui.engine.state import MAX_TEXT, Evaluation, clean_text
from ess_tui.market.feed import FeedMonitor
from ess_tui.market.ticks import Tick
from ess_tui.store.sqlite import SQLiteStore

NOW = datetime(2025, 11, 30, 4, 3, 31, tzinfo=timezone.utc)
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}

#: Operator text an ESS meets on its worst day.
NASTY = [
    "", " ", "\t\n", "\x00", "\x1b[31mRED\x1b[0m", "\x1b]0;pwned\x07", "\x1b[2J\x1b[H",
    "\u202egnirts desrever", "\u200f\u200e\u2066rtl\u2069", "\u0627\u0644\u0633\u0644\u0627\u0645",
    "line1\nline2\rline3", "\ufeffBOM", "\ud800", "[bold red]markup[/]", "[/]", "%s %d {0}",
    "'; DROP TABLE audit; --", "🚨" * 50, "e\u0301" * 30, "\u0000" * 10,
]

operator_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=80),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=4), st.integers(200, 30_000)),
)


def assert_safe(text: str | None, *, limit: int = MAX_TEXT) -> None:
    """Stored or shown text: bounded, one line, no control/format characters, no escapes."""
    assert text is not None
    assert len(text) <= limit
    assert "\x1b" not in text and "\n" not in text
    assert not [c for c in text if unicodedata.category(c) in BAD_CATEGORIES]


def rendered(text: str) -> str:
    """What a terminal shows for ``text`` the way the control room builds its lines (rich Text)."""
    console = Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)
    console.print(Text(text))
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# --- operator text ------------------------------------------------------------------------------


@FAST
@given(text=operator_text)
def test_clean_text_is_bounded_single_line_and_idempotent(text):
    cleaned = clean_text(text)
    assert_safe(cleaned)
    assert clean_text(cleaned) == cleaned
    shown = rendered(cleaned)
    assert "\x1b" not in shown and "\u202e" not in shown


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(reason=operator_text, name=operator_text, note=operator_text, detail=operator_text)
def test_operator_text_through_latch_reset_and_audit_is_stored_safely(workdir, reason, name, note,
                                                                       detail):
    async def scenario() -> None:
        store = SQLiteStore(workdir / "text.db", audit_key=None)
        try:
            controller = EmergencyStopController(store=store, acting=False, actor="desk")
            before = len(await store.read_audit())
            state = await controller.latch(reason, source="manual",
                                           details={"operator": name, "note": detail})
            assert state.active
            assert state.reason == (clean_text(reason) or "Emergency stop")
            assert_safe(state.reason)
            state = await controller.reset(name, note)
            assert not state.active
            assert_safe(state.last_reset_by, limit=200)
            await store.audit("note", actor=name, reason=detail, details={detail[:50]: note})
            rows = await store.read_audit(3)
            assert len(await store.read_audit()) == before + 3  # one row per act, none lost
            for row in rows:
                assert_safe(row.actor, limit=200)
                if row.reason is not None:
                    assert_safe(row.reason)
                for key, value in row.details.items():
                    assert_safe(key, limit=200)
                    if isinstance(value, str):
                        assert_safe(value, limit=2000)
                assert "\x1b" not in rendered(f"{row.actor} {row.reason or ''}")
            verification = await store.verify_audit()
            assert verification.ok, verification.problem
        finally:
            await store.close()

    asyncio.run(scenario())


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(reason=operator_text, by=operator_text)
def test_cli_activate_with_any_text_is_a_clean_latch_or_a_clear_error(workdir, reason, by, capsys):
    db = str(workdir / "cli.db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            code = main(["activate", "--db", db, f"--reason={reason}", f"--by={by}"])
        except SystemExit as exc:  # argparse: a usage error, one line on stderr
            code = exc.code
    out, err = capsys.readouterr()
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 0:
        assert "\x1b" not in out and "\u202e" not in out
        assert (workdir / "cli.db").exists()


# --- market ticks -------------------------------------------------------------------------------

prices = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-10**30, max_value=10**30),
    st.sampled_from([0, -1, 1e-300, 1e308, float("nan"), float("inf"), True, None, "97000", b"1"]),
)
stamps = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                 timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=-11))])),
    st.sampled_from([None, "2025-11-30T04:03:31Z", 0, NOW]),
)
ticks = st.builds(Tick, symbol=st.one_of(st.sampled_from(["BTC/USDT", "ETH/USDT"]), st.text(max_size=30),
                                          st.none(), st.integers()),
                  bid=prices, ask=prices, last=prices, timestamp=stamps)
not_ticks = st.one_of(st.none(), st.text(max_size=20), st.integers(), st.dictionaries(st.text(max_size=5), st.integers()),
                      st.lists(st.floats(), max_size=3))


def good(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


@FAST
@given(stream=st.lists(st.one_of(ticks, not_ticks), min_size=1, max_size=8))
def test_any_market_data_is_judged_never_crashes_the_feed_or_its_evaluator(stream):
    feed = FeedMonitor(symbols=["BTC/USDT"], max_jump_pct=50.0, clock=lambda: NOW)
    for item in stream:
        problem = feed.on_tick(item)
        if problem is not None:
            assert_safe(problem, limit=200)
            assert feed.is_corrupted()
        else:  # accepted: it really was a sound quote
            assert isinstance(item, Tick) and all(good(getattr(item, f)) for f in ("bid", "ask", "last"))
            assert item.bid <= item.ask
    evaluator = DataFeedEmergencyEvaluator(feed, max_staleness_minutes=5, clock=lambda: NOW)
    evaluation = asyncio.run(evaluator.evaluate())
    assert isinstance(evaluation, Evaluation)
    if evaluation.triggered:
        assert evaluation.reason and evaluation.reason.startswith("Data feed")
        assert_safe(evaluation.reason)
    if feed.is_corrupted():
        assert evaluation.triggered and "corrupted" in (evaluation.reason or "")


# --- config values ------------------------------------------------------------------------------

NUMERIC_ENV = ["QT_ESS_MAX_DAILY_LOSS", "QT_ESS_MAX_EQUITY_DD", "QT_ESS_MAX_SL_HITS",
               "QT_ESS_SL_PERIOD_MINUTES", "QT_ESS_MAX_DATA_STALENESS", "QT_ESS_CHECK_INTERVAL",
               "QT_ESS_LEASE_TTL", "QT_ESS_FAIL_CLOSED_AFTER", "QT_ESS_PAPER__LATENCY_MS"]
env_values = st.one_of(
    st.sampled_from(["", "0", "-1", "nan", "inf", "-inf", "1e309", "0.01", "5", "100", "100.0001",
                     "ten", "5%", " 5 ", "0x10", "1_000", "True", "[1]", "{}", "\x1b[31m9"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**20, max_value=10**20).map(str),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)


@FAST
@given(name=st.sampled_from(NUMERIC_ENV), value=env_values)
def test_any_env_value_is_accepted_within_bounds_or_one_clear_line(workdir, name, value):
    empty = workdir / "empty.toml"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    env[name] = value
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            s = load_settings(empty)
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message and len(message) < 600
            assert name in message and "allowed" in message
            return
    assert isinstance(s, Settings)
    assert 0 < s.max_daily_loss <= 100 and 0 < s.max_equity_dd <= 100
    assert s.check_interval >= 0.1 and s.lease_ttl >= 1 and s.fail_closed_after >= 1
    assert s.max_sl_hits >= 1 and s.sl_period_minutes > 0 and s.max_data_staleness > 0
    assert all(math.isfinite(v) for v in (s.max_daily_loss, s.check_interval, s.lease_ttl,
                                          s.paper.latency_ms, s.max_data_staleness))


toml_values = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "true", '"ten"', "[]", "{}", '""', "1979-05-27", '"\\u001b[31m"']),
)
toml_keys = st.sampled_from(["max_daily_loss", "check_interval", "lease_ttl", "fail_closed_after",
                             "max_sl_hits", "paper.latency_ms", "tui.refresh_hz", "reset.two_person",
                             "no_such_key"])


@FAST
@given(key=toml_keys, value=toml_values)
def test_any_toml_value_is_accepted_within_bounds_or_one_clear_line(workdir, key, value):
    table, _, field = key.rpartition(".")
    config = workdir / "ess.toml"
    config.write_text((f"[{table}]\n" if table else "") + f"{field} = {value}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            s = load_settings(config)
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message and len(message) < 600
            assert field in message or "TOML" in message
            return
    assert s.check_interval >= 0.1 and s.lease_ttl >= 1 and 0 < s.max_daily_loss <= 100
    assert math.isfinite(s.paper.latency_ms) and s.tui.refresh_hz > 0
