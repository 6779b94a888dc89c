"""An exchange whose ccxt class lacks what flattening needs is refused at startup, in one line that
names what is missing, before any network call and before any database is created.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ccxt_stub import ENV
from ess_tui.venues.ccxt.config import CcxtConfigError, CcxtVenueConfig
from ess_tui.venues.ccxt.venue import CcxtVenue


@pytest.mark.parametrize(("table", "expected"), [
    ({"exchange": "coinbase", "symbols": ["BTC/USDC:USDC"]},
     "lacks reduce-only market orders (createReduceOnlyOrder)"),
    ({"exchange": "kraken", "symbols": ["BTC/USD:USD"]}, "kraken has no swap markets in ccxt"),
])
def test_an_exchange_that_cannot_be_flattened_is_refused_naming_what_it_lacks(table, expected):
    with pytest.raises(CcxtConfigError) as info:
        CcxtVenue(CcxtVenueConfig.from_table(table), environ=ENV)
    text = str(info.value)
    assert "\n" not in text and text.startswith("bad config: ") and expected in text


@pytest.mark.parametrize("exchange", ["binanceusdm", "bybit", "okx", "krakenfutures", "gate"])
def test_the_supported_venues_pass_the_capability_check(exchange):
    CcxtVenue(CcxtVenueConfig.from_table({"exchange": exchange, "symbols": ["BTC/USDT:USDT"]}),
              environ=ENV)


def test_the_cli_refuses_it_with_exit_2_and_creates_nothing(tmp_path):
    (tmp_path / "ess.toml").write_text(
        '[venue]\nkind = "ccxt"\nexchange = "coinbase"\nmarket_type = "swap"\n'
        'symbols = ["BTC/USDC:USDC"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    env.update(ENV)
    proc = subprocess.run(
        [sys.executable, "-m", "ess_tui", "headless", "--db", str(tmp_path / "ess.db")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "createReduceOnlyOrder" in lines[0] and "coinbase" in lines[0]
    assert not (tmp_path / "ess.db").exists()
