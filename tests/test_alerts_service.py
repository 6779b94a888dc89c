"""The alerts as a service sees them, from outside: a headless runner in another process speaking
systemd's notify protocol and serving /metrics to a real HTTP client, a SIGKILL right after a
latch, the `alerts`, `alerts test` and `events` commands, the rules file, and import hygiene."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from alert_receivers import WebhookReceiver, command_sink, free_port, read_lines

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "ess_tui", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def write_config(tmp_path, sinks: str) -> Path:
    path = tmp_path / "ess.toml"
    path.write_text(
        f'db = "{tmp_path / "ess.db"}"\ncheck_interval = 0.2\nlease_ttl = 2\nalert_retry_max = 1\n'
        '[paper]\ndrift = false\nlatency_ms = 1\n' + sinks, encoding="utf-8")
    return path


def start_headless(config, env, *extra):
    return subprocess.Popen([sys.executable, "-m", "ess_tui", "headless", "--config", str(config), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait(predicate, timeout=60.0, what="condition"):  # generous: a loaded CI box starts runners slowly
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lease_holder(db: Path):
    # Read-only: a plain connect would create an empty file, which the store then (rightly)
    # refuses to initialise over.
    try:
        with sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT holder FROM lease").fetchone()
            return row[0] if row else None
    except sqlite3.Error:
        return None


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric(text, name, labels=""):
    pattern = rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else None


@pytest.mark.slow
def test_headless_is_ready_pings_the_watchdog_and_serves_metrics(tmp_path):
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(30)
    config = write_config(tmp_path, "")
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "4000000"}
    env.pop("WATCHDOG_PID", None)
    proc = start_headless(config, env, "--metrics", f"127.0.0.1:{port}")
    try:
        first = listener.recv(4096).decode()
        assert first.startswith("READY=1") and "armed" in first and "acting" in first
        assert lease_holder(tmp_path / "ess.db")  # the lease is taken before READY
        seen = [listener.recv(4096).decode() for _ in range(2)]
        assert "WATCHDOG=1" in seen
        text = scrape(port)
        assert metric(text, "ess_latched") == 0.0
        assert metric(text, "ess_runner_acting") == 1.0
        assert metric(text, "ess_activations_total") == 0.0
        assert metric(text, "ess_trigger_proximity_ratio", '{trigger="Drawdown"}') is not None
        assert metric(text, "ess_trigger_state", '{band="ok",trigger="Drawdown"}') == 1.0
        assert metric(text, "ess_latch_seconds_count") == 0.0
        done = cli("activate", "--config", str(config), "--reason", "metrics check")
        assert done.returncode == 0, done.stderr  # activate exits 0 once the latch is durable
        wait(lambda: metric(scrape(port), "ess_latched") == 1.0, what="ess_latched 1")
        text = scrape(port)
        assert metric(text, "ess_activations_total") == 1.0
        assert metric(text, "ess_open_positions") is not None
    finally:
        stop(proc)
        listener.close()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


async def test_watchdog_pings_stop_when_the_evaluator_loop_hangs(tmp_path, monkeypatch):
    from ess_tui.config import load_settings
    from ess_tui.runtime.assembly import Runtime

    sock_path = tmp_path / "n.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, db=str(tmp_path / "ess.db"), check_interval=0.1,
                             paper={"drift": False, "latency_ms": 1})
    rt = await Runtime.build(settings)
    hang, release = asyncio.Event(), asyncio.Event()
    real = rt.system.run_cycle

    async def cycle():
        if hang.is_set():
            await release.wait()  # a hung loop (released so the runtime can stop)
        return await real()

    rt.system.run_cycle = cycle
    await rt.start()

    def drain():
        out = []
        while True:
            try:
                out.append(listener.recv(4096).decode())
            except BlockingIOError:
                return out

    try:
        await asyncio.sleep(2.5)
        assert "WATCHDOG=1" in drain()
        hang.set()
        await asyncio.sleep(0.5)
        drain()
        await asyncio.sleep(2.5)
        assert "WATCHDOG=1" not in drain()  # systemd would kill and restart it
    finally:
        release.set()
        await rt.stop()
        listener.close()


@pytest.mark.slow
def test_sigkill_right_after_a_latch_still_delivers_the_alert_after_restart(tmp_path):
    with WebhookReceiver() as hook:
        hook.status = 503  # nothing can be delivered before the kill
        config = write_config(tmp_path, '[[alerts]]\nname = "hook"\nurl_env = "ESS_ALERT_HOOK"\n'
                                        'min_level = "critical"\n')
        env = {**os.environ, "ESS_ALERT_HOOK": hook.url}
        db = tmp_path / "ess.db"
        proc = start_headless(config, env)
        try:
            wait(lambda: lease_holder(db), what="the runner lease")
            done = cli("activate", "--config", str(config), "--reason", "kill me now", env=env)
            assert done.returncode == 0, done.stderr  # activate exits 0 once the latch is durable
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            stop(proc)
        assert hook.received == []
        hook.status = 200
        proc = start_headless(config, env)
        try:
            got = hook.wait_for(1, timeout=40)
            assert "LATCHED #1: kill me now" in got[0]["title"]
        finally:
            stop(proc)
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM outbox_delivery WHERE sink = 'hook' AND "
                                "delivered_at IS NOT NULL").fetchone() == (1,)


@pytest.mark.slow
def test_alerts_test_reports_each_sink_and_is_audited(tmp_path):
    with WebhookReceiver() as hook:
        out = tmp_path / "drill.ndjson"
        config = write_config(tmp_path, (
            '[[alerts]]\nname = "hook"\nurl_env = "ESS_ALERT_HOOK"\n'
            f'[[alerts]]\nname = "cmd"\ncommand = {json.dumps(command_sink(out))}\n'
            '[[alerts]]\nname = "broken"\ncommand = ["false"]\n'))
        env = {**os.environ, "ESS_ALERT_HOOK": hook.url}
        assert cli("status", "--config", str(config), env=env).returncode in (0, 4)
        cli("activate", "--config", str(config), "--reason", "make the db", env=env)
        proc = cli("alerts", "test", "--config", str(config), "--by", "carol", env=env)
        assert proc.returncode == 1, proc.stderr
        assert "hook: delivered" in proc.stdout and "cmd: delivered" in proc.stdout
        assert "broken: FAILED — false exited 1" in proc.stdout
        assert "drill" in hook.received[0]["title"] and read_lines(out)[0]["kind"] == "drill"
        one = cli("alerts", "test", "--name", "hook", "--config", str(config), env=env)
        assert one.returncode == 0 and "broken" not in one.stdout
        bad = cli("alerts", "test", "--name", "nope", "--config", str(config), env=env)
        assert bad.returncode == 2 and "no alert sink named 'nope'" in bad.stderr
        listing = cli("alerts", "--config", str(config), env=env)
        assert listing.returncode == 0 and "hook" in listing.stdout and "json://" in listing.stdout
        assert hook.url.split("//")[1] not in listing.stdout
        events = cli("events", "--json", "--config", str(config), env=env)
        lines = [json.loads(line) for line in events.stdout.splitlines()]
        drills = [e for e in lines if e.get("action") == "alert_drill"]
        assert drills and drills[0]["actor"] == "carol"
        assert drills[0]["details"]["broken"].startswith("false exited 1")
        assert any(e.get("kind") == "latched" and e["source"] == "alert" for e in lines)


@pytest.mark.slow
def test_events_follow_prints_new_rows_as_ndjson(tmp_path):
    config = write_config(tmp_path, "")
    cli("activate", "--config", str(config), "--reason", "one")
    proc = subprocess.Popen([sys.executable, "-m", "ess_tui", "events", "--follow", "--json",
                             "--config", str(config)], stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["source"] in ("audit", "alert")
        cli("reset", "--config", str(config), "--by", "dave", "--yes", "--override", "test")
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(s.get("kind") == "reset" for s in seen):
            seen.append(json.loads(proc.stdout.readline()))
        assert any(s.get("action") == "reset" and s["actor"] == "dave" for s in seen)
        assert any(s.get("kind") == "reset" for s in seen)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_rules_file_parses_and_names_only_exported_metrics():
    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-rules.yml").read_text())
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    assert set(by_name) == {"EssLatched", "EssRunnerNotActing", "EssTriggerNearLimit", "EssAlertsPending"}
    assert by_name["EssTriggerNearLimit"]["for"] == "5m" and ">= 0.8" in by_name["EssTriggerNearLimit"]["expr"]
    assert by_name["EssAlertsPending"]["for"] == "2m"
    exported = set(re.findall(r'"(ess_[a-z_]+)"', (ROOT / "ess_tui/alerts/metrics.py").read_text()))
    for rule in by_name.values():
        for name in re.findall(r"\bess_[a-z_]+", rule["expr"]):
            assert name in exported, name


def test_the_gate_and_the_engine_never_import_apprise_or_prometheus():
    code = ("import sys, ess_tui, ess_tui.gate, ess_tui.engine.system, ess_tui.store.outbox; "
            "bad = [m for m in ('apprise', 'prometheus_client', 'aiosmtpd') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
