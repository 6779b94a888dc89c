"""Secrets never reach the database, the log, the audit trail or a screenshot.

Recognisable fake keys sit in the environment for a full activation — latch, flatten, audit,
reset — and afterwards every byte ess-tui wrote is searched for them: the SQLite file with its
-wal and -shm, the log file, the runner's stderr, the CLI's output, the audit rows, and the control
room's screenshots. The search also looks for each key hex- and base64-encoded.

Three activations: ``ess-tui headless`` on the paper venue driven by the CLI (real processes); the
ccxt venue on a real ccxt exchange class against a local stub exchange whose error bodies echo the
key back (as some venues do); and the control room on screen.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ess_tui.cli import main
from ess_tui.store.sqlite import SQLiteStore

FAKE = {
    "QT_ESS_API_KEY": "FAKEKEY-ess-7f3a9c51d2e84b06",
    "QT_ESS_API_SECRET": "FAKESECRET-ess-c0ffee9e1d2a3b4c5d6e",
    "QT_ESS_API_PASSWORD": "FAKEPASS-ess-91c3e5a7b2",
    "QT_ESS_AUDIT_KEY": "FAKEAUDITKEY-ess-5e7a9c1b3d0f",
}

REPO = Path(__file__).resolve().parents[1]


def encodings(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, raw.hex().encode(), base64.b64encode(raw), value.encode("utf-16-le")]


def leaks(blob: bytes | str) -> list[str]:
    data = blob.encode("utf-8", "replace") if isinstance(blob, str) else blob
    return [name for name, value in FAKE.items() if any(e in data for e in encodings(value))]


def assert_no_secret_in_files(root: Path) -> list[Path]:
    """Every file under ``root`` (db, -wal, -shm, logs, prefs, screenshots); returns them."""
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in files:
        found = leaks(path.read_bytes())
        assert not found, f"{', '.join(found)} found in {path}"
    return files


async def audit_text(db: Path) -> str:
    store = SQLiteStore(db, create=False, audit_key=FAKE["QT_ESS_AUDIT_KEY"])
    try:
        rows = await store.read_audit()
        assert store.audit_mode == "hmac-sha256"  # the audit key was in use...
        assert (await store.verify_audit()).ok  # ...and verifies, yet is stored nowhere
    finally:
        await store.close()
    return "\n".join(json.dumps([r.action, r.actor, r.reason, r.details, r.hash]) for r in rows)


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("QT_ESS_"):
            monkeypatch.delenv(key)
    for key, value in FAKE.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def test_the_scan_finds_a_key_however_it_was_written(tmp_path):
    """The scan itself can fail: a key planted raw, hex- or base64-encoded is found."""
    key = FAKE["QT_ESS_API_KEY"]
    for i, planted in enumerate(encodings(key)):
        (tmp_path / f"f{i}").write_bytes(b"prefix " + planted + b" suffix")
        with pytest.raises(AssertionError, match="QT_ESS_API_KEY"):
            assert_no_secret_in_files(tmp_path)
        (tmp_path / f"f{i}").unlink()
    assert leaks(f"x{FAKE['QT_ESS_AUDIT_KEY']}x") == ["QT_ESS_AUDIT_KEY"]


# --- 1. headless runner and CLI, real processes ---------------------------------------------------


@pytest.mark.slow
def test_headless_activation_and_cli_leak_no_secret(fake_env, capsys):
    work = fake_env / "state"
    work.mkdir()
    db = work / "ess.db"
    env = {**os.environ, "QT_ESS_CHECK_INTERVAL": "0.1", "QT_ESS_PAPER__LATENCY_MS": "5",
           "QT_ESS_LOG_FILE": str(work / "ess-tui.log")}
    err_path = work / "headless.stderr"
    with err_path.open("wb") as err:
        runner = subprocess.Popen(
            [sys.executable, "-m", "ess_tui", "headless", "--db", str(db), "--verbose"],
            env=env, cwd=fake_env, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
        )
        try:
            prefix = f"{socket.gethostname()}:{runner.pid}:"  # host:pid:random
            wait_until(lambda: [r[0].startswith(prefix) for r in query(db, "SELECT holder FROM lease")] == [True])
            assert main(["activate", "--db", str(db), "--reason", "secret scan drill", "--by", "ops"]) == 0
            wait_until(lambda: query(db, "SELECT 1 FROM audit WHERE action = 'flattened'"))
            assert main(["status", "--db", str(db), "--json"]) == 3
            assert main(["audit", "--db", str(db), "--verify", "--json"]) == 0
            assert main(["reset", "--db", str(db), "--by", "ops", "--yes", "--note", "drill over"]) == 0
            time.sleep(0.3)  # the runner notices the reset
            # The WAL holds the newest pages until a checkpoint: scan it while the runner is up.
            wal_files = assert_no_secret_in_files(work)
            assert any(p.name.endswith("-wal") for p in wal_files)
        finally:
            runner.send_signal(signal.SIGTERM)
            runner.wait(timeout=15)
    assert runner.returncode == 0
    out, cli_err = capsys.readouterr()
    assert not leaks(out) and not leaks(cli_err)
    log = (work / "ess-tui.log").read_text()
    assert "flatten verify" in log and "ESS LATCHED" in log  # the log did record the activation
    assert_no_secret_in_files(work)
    assert not leaks(asyncio.run(audit_text(db)))


def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.02)


def query(db: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return []


# --- 2. a ccxt venue (real ccxt class, local stub exchange) that echoes the key back -------------


BINANCE_POSITION = {
    "symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "0.015", "entryPrice": "95000",
    "breakEvenPrice": "95000", "markPrice": "95500", "unRealizedProfit": "1.0",
    "liquidationPrice": "0", "isolatedMargin": "0", "notional": "1432.5", "marginAsset": "USDT",
    "isolatedWallet": "0", "initialMargin": "10", "maintMargin": "1",
    "positionInitialMargin": "10", "openOrderInitialMargin": "0", "adl": "1",
    "bidNotional": "0", "askNotional": "0", "updateTime": 1767225600000,
}


def filled(request) -> dict:
    p = request.params
    return {
        "orderId": 777, "symbol": p["symbol"], "status": "FILLED", "clientOrderId": "x",
        "price": "0", "avgPrice": "95000", "origQty": p["quantity"], "executedQty": p["quantity"],
        "cumQuote": "1", "timeInForce": "GTC", "type": "MARKET", "reduceOnly": True,
        "closePosition": False, "side": p["side"], "positionSide": "BOTH", "stopPrice": "0",
        "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": "MARKET",
        "updateTime": 1767225600000,
    }


@pytest.fixture
def product_logging(fake_env):
    """The product's own log setup (rotating file, secret scrubber), undone afterwards."""
    from ess_tui.logs import setup_logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    path = fake_env / "state" / "ess-tui.log"
    setup_logging(path, verbose=True, to_stderr=False)
    yield path
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


async def test_ccxt_activation_with_key_echoing_venue_leaks_no_secret(fake_env, product_logging,
                                                                      caplog):
    pytest.importorskip("ccxt")
    sys.path.insert(0, str(Path(__file__).parent))
    from ccxt_stub import StubExchangeServer, make_venue

    from ess_tui.engine.bus import EventBus
    from ess_tui.engine.controller import EmergencyStopController
    from ess_tui.engine.flatten import RetryPolicy

    caplog.set_level(logging.DEBUG)
    key, secret = FAKE["QT_ESS_API_KEY"], FAKE["QT_ESS_API_SECRET"]
    echo = {"code": -1001, "msg": f"Internal error; apiKey={key} secret {secret} please retry"}

    server = StubExchangeServer()
    await server.start()
    try:
        venue = make_venue(server, "binanceusdm", env=dict(FAKE), demo_trading=True)
        # Positions: first an outage whose body echoes the keys, then the position, then flat.
        server.on("GET", "/fapi/v3/positionRisk", [])
        server.on("GET", "/fapi/v3/positionRisk", [BINANCE_POSITION], times=2)
        server.on("GET", "/fapi/v3/positionRisk", echo, status=503, times=1)
        server.on("GET", "/fapi/v1/openOrders", [])
        server.on("GET", "/fapi/v1/openOrders", echo, status=500, times=1)
        server.on("GET", "/fapi/v1/openAlgoOrders", [])
        server.on("POST", "/fapi/v1/order", filled)
        done = {"code": 200, "msg": "The operation of cancel all open order is done."}
        server.on("DELETE", "/fapi/v1/allOpenOrders", done)
        server.on("DELETE", "/fapi/v1/algoOpenOrders", done)

        db = fake_env / "state" / "ess.db"
        store = SQLiteStore(db)
        bus = EventBus()
        events: list = []
        bus.subscribe(events.append)
        controller = EmergencyStopController(
            store=store, exchange=venue, bus=bus,
            retry=RetryPolicy(initial_sec=0.01, max_sec=0.05, jitter=0.0), activate_wait_sec=15,
        )
        await controller.activate("Manual stop: secret scan", source="manual",
                                  details={"operator": "ops", "api_key": key})
        report = controller.last_report
        assert report is not None and report.flat is True and report.attempts >= 2
        assert report.positions_closed >= 1
        errors = [e.error for e in events if getattr(e, "error", None)]
        assert errors, "the echoing outage never reached the operator"
        # Scan while the store is open: the -wal holds the newest rows.
        assert_no_secret_in_files(fake_env / "state")
        texts = [repr(e) for e in events] + [repr(report), repr(venue), repr(venue.status()),
                                             caplog.text]
        for text in texts:
            assert not leaks(text), text[:300]
        await store.close()
        await venue.close()
    finally:
        await server.stop()
    # the request really carried the key (so the scan above proves something)
    assert any(r.headers.get("X-MBX-APIKEY") == key for r in server.requests)
    assert_no_secret_in_files(fake_env / "state")
    assert not leaks(await audit_text(fake_env / "state" / "ess.db"))
    log = product_logging.read_text()
    assert "flatten retry" in log and "Internal error" in log  # the echo was logged, scrubbed


# --- 3. the control room on screen ---------------------------------------------------------------


async def test_control_room_screens_show_no_secret(fake_env):
    pytest.importorskip("textual")
    from ess_tui.config import Settings
    from ess_tui.tui.app import ControlRoomApp

    state = fake_env / "state"
    settings = Settings(db=state / "ess.db", check_interval=0.5,
                        paper={"latency_ms": 0.0, "drift": False})
    app = ControlRoomApp(settings, frozen=True, operator="ops", user_theme_dir=fake_env / "none")
    shots = fake_env / "state" / "screenshots"
    shots.mkdir(parents=True)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 10
        while not (app._engine_ready and app.host.view().evaluations):
            assert time.monotonic() < deadline, "engine never came up"
            await pilot.pause(0.05)
        other = SQLiteStore(state / "ess.db")
        try:
            await other.latch("secret scan drill", actor="ops-cli")
        finally:
            await other.close()
        while app.dashboard.banner.mode != "latched":
            assert time.monotonic() < deadline + 5, "the latch never reached the screen"
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        (shots / "latched.svg").write_text(app.export_screenshot())
        await pilot.press("a")
        await pilot.pause(0.5)
        (shots / "audit.svg").write_text(app.export_screenshot())
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        (shots / "help.svg").write_text(app.export_screenshot())
    assert "secret scan drill" in (shots / "latched.svg").read_text().replace("&#160;", " ")
    assert_no_secret_in_files(state)
    committed = [*REPO.glob("screenshots/*.svg"), *REPO.glob("tests/__snapshots__/**/*.svg")]
    for path in committed:  # the README pictures and snapshots hold no key-shaped env value
        assert not leaks(path.read_bytes()), path
