"""Bad ccxt venue config is one clear line before anything trades; ccxt is never imported for free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ccxt_stub import running, ENV, make_venue
from ess_tui.config import ConfigError
from ess_tui.venues.ccxt.config import CcxtConfigError, CcxtVenueConfig, check_static
from ess_tui.venues.ccxt.venue import CcxtVenue

SWAP = {"symbols": ["BTC/USDT:USDT"]}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.startswith("bad config: ")
    for value in ENV.values():
        assert value not in text
    return text


@pytest.mark.parametrize(("table", "expected"), [
    ({"exchange": "bitmex", **SWAP}, "bitmex is no longer in ccxt"),
    ({"exchange": "binanceusdn", **SWAP}, "did you mean binanceusdm"),
    ({"exchange": "kraken", "sandbox": True, **SWAP}, "kraken has no sandbox (testnet) in ccxt"),
    ({"exchange": "binanceusdm", "sandbox": True, **SWAP}, "use demo_trading = true instead"),
    ({"exchange": "kraken", "demo_trading": True, **SWAP}, "kraken has no demo-trading environment"),
])
def test_static_problems_are_one_line(table, expected):
    with pytest.raises(CcxtConfigError) as info:
        CcxtVenue(CcxtVenueConfig.from_table(table), environ=ENV)
    assert expected in one_line(info.value)
    assert isinstance(info.value, ConfigError)  # the CLI prints it and exits 2


@pytest.mark.parametrize(("table", "expected"), [
    ({"kind": "ccxt", "exchange": "okx", "symbols": []}, "venue.symbols"),
    ({"exchange": "okx", "sandbox": True, "demo_trading": True, **SWAP}, "exclusive"),
    ({"exchange": "okx", "dead_man_timeout_sec": 5, **SWAP}, "between 10 and 120"),
    ({"exchange": "okx", "include_spot_balances": True, **SWAP}, "needs market_type = 'spot'"),
    ({"exchange": "okx", "market_type": "option", **SWAP}, "venue.market_type = 'option'"),
    ({"exchange": "okx", "api_secret": ENV["QT_ESS_API_SECRET"], **SWAP}, "venue.api_secret: not a venue"),
])
def test_table_problems_are_one_line(table, expected):
    with pytest.raises(CcxtConfigError) as info:
        CcxtVenueConfig.from_table(table)
    assert expected in one_line(info.value)  # one_line also checks a pasted secret is not echoed


def test_missing_keys_name_the_variables_not_the_values():
    cfg = CcxtVenueConfig(exchange="okx", **SWAP)
    with pytest.raises(CcxtConfigError) as info:
        check_static(cfg, {"QT_ESS_API_KEY": ENV["QT_ESS_API_KEY"], "QT_ESS_API_SECRET": ENV["QT_ESS_API_SECRET"]})
    assert "QT_ESS_API_PASSWORD is not set: okx needs an API key, secret and passphrase" in one_line(info.value)

    cfg = CcxtVenueConfig(exchange="binanceusdm", api_key_env="DESK_KEY", secret_env="DESK_SECRET", **SWAP)
    with pytest.raises(CcxtConfigError, match="DESK_KEY, DESK_SECRET are not set"):
        check_static(cfg, ENV)
    check_static(cfg, {"DESK_KEY": "k" * 12, "DESK_SECRET": "s" * 12})  # found under their names


@pytest.fixture
async def server():
    async with running(strict=False) as srv:
        yield srv


@pytest.mark.parametrize(("symbols", "expected"), [
    (["BTC/USDT"], "'BTC/USDT' is not listed on binanceusdm (swap markets); did you mean BTC/USDT:USDT"),
    (["LUNA/USDT:USDT"], "'LUNA/USDT:USDT' is listed but not trading on binanceusdm"),
])
async def test_unlisted_symbols_stop_start_before_any_private_call(server, symbols, expected):
    venue = make_venue(server, "binanceusdm", symbols=symbols)
    with pytest.raises(CcxtConfigError) as info:
        await venue.start()
    await venue.close()
    assert expected in one_line(info.value)
    # public calls only: the markets, and the venue's clock (its offset signs every request)
    assert sorted(r.path for r in server.requests) == ["/fapi/v1/exchangeInfo", "/fapi/v1/time"]


def test_repr_of_config_and_venue_carry_no_keys():
    from ess_tui.engine.venue import Venue

    cfg = CcxtVenueConfig(exchange="okx", demo_trading=True, **SWAP)
    venue = CcxtVenue(cfg, environ=ENV)
    assert isinstance(venue, Venue) and venue.name == "okx (demo)"
    text = repr(cfg) + repr(venue) + repr(venue.status()) + repr(cfg.model_dump())
    for value in ENV.values():
        assert value not in text


def test_importing_ess_tui_and_the_ccxt_modules_does_not_import_ccxt():
    code = (
        "import sys, ess_tui, ess_tui.gate, ess_tui.venues.ccxt.config, ess_tui.venues.ccxt.venue, "
        "ess_tui.venues.ccxt.feed, ess_tui.venues.ccxt.account, ess_tui.venues.ccxt.profiles, "
        "ess_tui.venues.ccxt.deadman, ess_tui.venues.ccxt.errors\n"
        "cfg = ess_tui.venues.ccxt.config.CcxtVenueConfig(exchange='okx', symbols=['BTC/USDT:USDT'])\n"
        "print(sorted(m for m in sys.modules if m == 'ccxt' or m.startswith('ccxt.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
