"""Config edges (hole 12), through the real ``ess-tui`` in a subprocess: each is one line on stderr
naming the key, the value and what is allowed, exit 2, and nothing written; an unknown ``QT_ESS_*``
name is a warning naming the closest valid one."""

from __future__ import annotations

import codecs
import os
import subprocess
import sys

import pytest


@pytest.fixture
def run(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    work = tmp_path / "work"
    work.mkdir()

    def go(*args: str, extra_env: dict[str, str] | None = None, toml: bytes | None = None):
        if toml is not None:
            (work / "ess.toml").write_bytes(toml)
        return subprocess.run(
            [sys.executable, "-m", "ess_tui", *args], cwd=work, env={**env, **(extra_env or {})},
            capture_output=True, text=True, timeout=60,
        )

    go.work = work  # type: ignore[attr-defined]
    go.default_db = tmp_path / "state" / "ess-tui" / "ess.db"  # type: ignore[attr-defined]
    return go


def only_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" not in lines[0].split(":", 1)[0]
    return lines[0]


EDGES = [
    pytest.param({"toml": bytes(range(256)) * 4}, ("ess.toml", "UTF-8"), id="binary toml"),
    pytest.param({"toml": codecs.BOM_UTF16_LE + "max_sl_hits = 3\n".encode("utf-16-le")},
                 ("ess.toml", "UTF-16", "UTF-8"), id="utf-16 toml"),
    pytest.param({"toml": "max_sl_hits = 3\n".encode("utf-16-be")}, ("ess.toml", "UTF-8"),
                 id="utf-16 toml without BOM"),
    pytest.param({"extra_env": {"QT_ESS_PAPER": "{bad"}}, ("QT_ESS_PAPER", "'{bad'", "JSON object"),
                 id="QT_ESS_PAPER bad JSON"),
    pytest.param({"extra_env": {"QT_ESS_RESET__OPERATORS": "ops"}},
                 ("QT_ESS_RESET__OPERATORS", "'ops'", "JSON list"), id="operators not JSON"),
    pytest.param({"toml": b"max_sl_hits = true\n"}, ("max_sl_hits", "True", "not a number", "integer"),
                 id="boolean as a number"),
    pytest.param({"toml": b"[paper]\nlatency_ms = false\n"}, ("paper.latency_ms", "False", "number"),
                 id="nested boolean as a number"),
    pytest.param({"toml": b"max_daily_loss = nan\n"}, ("max_daily_loss", "nan", "allowed"), id="nan"),
    pytest.param({"toml": b"[paper]\nrate_limit = inf\n"}, ("paper.rate_limit", "inf", "finite"),
                 id="inf"),
    pytest.param({"extra_env": {"QT_ESS_DB": ""}}, ("QT_ESS_DB", "''", "empty", "file path"),
                 id="empty QT_ESS_DB"),
    pytest.param({"toml": b'db = ""\n'}, ("db", "''", "empty"), id="empty db in toml"),
    pytest.param({"extra_env": {"QT_ESS_CONFIG": ""}}, ("QT_ESS_CONFIG", "empty"), id="empty QT_ESS_CONFIG"),
    pytest.param({"toml": b"[paper]\nlatncy_ms = 3\n"}, ("paper.latncy_ms", "latency_ms"), id="typo key"),
]


@pytest.mark.parametrize("edge, fragments", EDGES)
def test_config_edge_is_one_line_exit_2(run, edge, fragments):
    proc = run("activate", "--reason", "x", **edge)
    assert proc.returncode == 2, proc.stderr
    line = only_line(proc)
    assert line.startswith("ess-tui: bad config") or "config" in line, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert "allowed" in line, line
    assert not run.default_db.exists(), "a bad config must not latch, create or change anything"


def test_db_that_is_a_directory_is_refused(run):
    proc = run("status", extra_env={"QT_ESS_DB": str(run.work)})
    assert proc.returncode == 2 and "directory" in only_line(proc)


def test_unknown_env_name_warns_with_the_closest_valid_one(run):
    proc = run("status", extra_env={"QT_ESS_MAX_DAILY_LOS": "3", "QT_ESS_CHECK_INTERVALL": "1",
                                    "QT_ESS_API_KEY": "s3cr3t-value-never-shown"})
    assert proc.returncode == 4  # no database: unavailable, as before
    err = proc.stderr
    assert "QT_ESS_MAX_DAILY_LOS" in err and "did you mean QT_ESS_MAX_DAILY_LOSS?" in err
    assert "did you mean QT_ESS_CHECK_INTERVAL?" in err
    assert "QT_ESS_API_KEY" not in err and "s3cr3t" not in err
    assert "3" not in err.replace("QT_ESS", "")  # names only, never values


def test_require_runner_is_a_config_key(run, monkeypatch):
    from ess_tui.config import load_settings

    proc = run("status", toml=b"[gate]\nrequire_runner = true\n")
    assert proc.returncode == 4, proc.stderr  # accepted (no database yet: unavailable)
    proc = run("status", toml=b'[gate]\nrequire_runner = "maybe"\n')
    assert proc.returncode == 2 and "gate.require_runner" in only_line(proc)
    monkeypatch.chdir(run.work)
    for key in [k for k in os.environ if k.startswith("QT_ESS_")]:
        monkeypatch.delenv(key)
    (run.work / "ess.toml").write_bytes(b"[gate]\nrequire_runner = true\n")
    assert load_settings().gate.require_runner is True
