"""The ``[venue]`` table of ``ess.toml`` for a real exchange through ccxt, and its checks.

``CcxtVenueConfig`` is plain pydantic: importing this module does not import ccxt. The checks that
need ccxt import it lazily, inside the functions:

* :func:`check_static` (no network): the exchange id exists in ccxt, sandbox / demo trading exist
  on that exchange, and the API keys the exchange needs are set in the environment.
* :func:`check_markets` (after ``load_markets``): every symbol is listed, active, and of the
  configured market type.

Every failure is a :class:`CcxtConfigError` (a :class:`~ess_tui.config.ConfigError`) whose text is
one line saying what is wrong, where, and what to do. Key *values* never appear in it; only the
names of the environment variables do.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ess_tui.config import ConfigError

__all__ = [
    "CcxtConfigError",
    "CcxtVenueConfig",
    "check_capabilities",
    "check_markets",
    "check_static",
    "exchange_family",
    "read_credentials",
    "validate_exchange_id",
]

#: ccxt ids that used to exist, with what to tell the operator.
_RETIRED = {
    "bitmex": "bitmex is no longer in ccxt",
    "binanceusdm_testnet": "use exchange = 'binanceusdm' with demo_trading = true",
}

#: Credential fields ess-tui knows how to read (ccxt's requiredCredentials name → config field).
_CREDENTIAL_FIELDS = {"apiKey": "api_key_env", "secret": "secret_env", "password": "password_env"}


class CcxtConfigError(ConfigError):
    """The ccxt venue is misconfigured. ``str(err)`` is one line a person can act on."""


def exchange_family(exchange_id: str) -> str:
    """``binance``, ``bybit``, ``okx`` or ``generic``: which venue-specific rules apply."""
    if exchange_id.startswith("binance") and exchange_id != "binanceus":
        return "binance"
    if exchange_id in ("bybit", "bybiteu", "bybitid"):
        return "bybit"
    if exchange_id in ("okx", "myokx", "okxus"):
        return "okx"
    return "generic"


class CcxtVenueConfig(BaseModel):
    """``[venue]`` with ``kind = "ccxt"``. Holds the *names* of the key variables, never keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["ccxt"] = "ccxt"
    exchange: str = Field(..., min_length=2, description="ccxt exchange id, e.g. binanceusdm, bybit, okx")
    market_type: Literal["swap", "future", "spot"] = Field(
        "swap", description="which markets the ESS watches and flattens"
    )
    symbols: list[str] = Field(
        ..., min_length=1, description="unified ccxt symbols, e.g. BTC/USDT:USDT"
    )
    scope: Literal["account", "symbols"] = Field(
        "account",
        description="flatten every position/order of market_type in the account, or only the symbols",
    )
    sandbox: bool = Field(False, description="the exchange's testnet")
    demo_trading: bool = Field(False, description="the exchange's demo-trading environment")
    include_spot_balances: bool = Field(
        False, description="treat spot balances of the listed spot symbols as positions to sell"
    )
    settle_currency: str | None = Field(
        None, description="currency equity is measured in; default: the first symbol's settle/quote"
    )
    dead_man_timeout_sec: float = Field(
        60.0, description="exchange-side cancel-all countdown; 0 disables; 10 to 120"
    )
    poll_interval_sec: float = Field(2.0, ge=0.2, le=300, description="ticker polling without websocket")
    account_poll_interval_sec: float = Field(10.0, ge=1, le=3600, description="balance / order history polling")
    websocket: bool = Field(True, description="use ccxt.pro watch_* for tickers where the exchange has it")
    request_timeout_sec: float = Field(10.0, ge=1, le=120, description="HTTP timeout per venue call")
    api_key_env: str = Field("QT_ESS_API_KEY", min_length=1)
    secret_env: str = Field("QT_ESS_API_SECRET", min_length=1)
    password_env: str = Field("QT_ESS_API_PASSWORD", min_length=1)

    @field_validator("exchange")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        cleaned = [s.strip() for s in value]
        if any(not s for s in cleaned):
            raise ValueError("symbols must not contain an empty string")
        return list(dict.fromkeys(cleaned))

    @field_validator("dead_man_timeout_sec")
    @classmethod
    def _dead_man(cls, value: float) -> float:
        if value != 0 and not 10 <= value <= 120:
            raise ValueError("dead_man_timeout_sec must be 0 (off) or between 10 and 120 seconds")
        return value

    @model_validator(mode="after")
    def _modes(self) -> CcxtVenueConfig:
        if self.sandbox and self.demo_trading:
            raise ValueError("sandbox and demo_trading are exclusive: choose one")
        if self.include_spot_balances and self.market_type != "spot":
            raise ValueError(
                "include_spot_balances needs market_type = 'spot' (run one ESS per market type)"
            )
        return self

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> CcxtVenueConfig:
        """From the ``[venue]`` TOML table; a bad value is a one-line :class:`CcxtConfigError`."""
        from pydantic import ValidationError

        try:
            return cls.model_validate(dict(table))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["venue", *(str(p) for p in first.get("loc", ()))])
            msg = first.get("msg", "invalid").removeprefix("Value error, ")
            if first.get("type") == "extra_forbidden":
                msg = (f"not a venue setting; allowed: {', '.join(cls.model_fields)} "
                       "(keys come from the environment variables named by *_env)")
            value = first.get("input")
            hidden = isinstance(value, dict) or first.get("type") in ("missing", "extra_forbidden")
            shown = "" if hidden else f" = {value!r:.60}"  # an unknown key may hold a pasted secret
            raise CcxtConfigError(f"bad config: {where}{shown}: {msg}") from None

    @property
    def mode(self) -> str:
        """``live``, ``sandbox`` or ``demo``: what the venue panel shows."""
        return "sandbox" if self.sandbox else "demo" if self.demo_trading else "live"

    @property
    def dead_man_enabled(self) -> bool:
        return self.dead_man_timeout_sec > 0

    def __repr__(self) -> str:  # the key variable *names* are fine; there are no values here
        return (
            f"CcxtVenueConfig(exchange={self.exchange!r}, market_type={self.market_type!r}, "
            f"symbols={self.symbols!r}, mode={self.mode!r})"
        )


def validate_exchange_id(exchange_id: str) -> None:
    """Raise :class:`CcxtConfigError` unless ccxt knows ``exchange_id``. Imports ccxt lazily."""
    import ccxt

    if exchange_id in ccxt.exchanges:
        return
    hint = _RETIRED.get(exchange_id)
    if hint is None:
        close = difflib.get_close_matches(exchange_id, ccxt.exchanges, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "see ccxt.exchanges for the ids"
    raise CcxtConfigError(
        f"bad config: venue.exchange = {exchange_id!r} is not an exchange id ccxt "
        f"{ccxt.__version__} knows; {hint}"
    )


def _exchange_class(exchange_id: str) -> Any:
    import ccxt.async_support as ccxt_async

    return getattr(ccxt_async, exchange_id)


def _overrides(cls: type, method: str) -> bool:
    """Whether an exchange class (not ccxt's base class) implements ``method`` itself."""
    return any(
        method in vars(klass) for klass in cls.__mro__
        if klass.__module__.startswith("ccxt.") and ".base." not in klass.__module__
    )


def check_static(config: CcxtVenueConfig, environ: Mapping[str, str] | None = None) -> None:
    """Everything that can be checked before any network call. Raises :class:`CcxtConfigError`."""
    validate_exchange_id(config.exchange)
    probe = _exchange_class(config.exchange)()  # no keys, no session until a request is made
    family = exchange_family(config.exchange)
    urls = probe.urls or {}
    if config.sandbox:
        if not (urls.get("test") or _overrides(type(probe), "set_sandbox_mode")):
            raise CcxtConfigError(
                f"bad config: venue.sandbox = true but {config.exchange} has no sandbox "
                f"(testnet) in ccxt; set sandbox = false"
                + ("; try demo_trading = true" if urls.get("demo") else "")
            )
        if family == "binance" and config.market_type != "spot":
            raise CcxtConfigError(
                f"bad config: venue.sandbox = true: {config.exchange} futures testnet is retired "
                "in ccxt; use demo_trading = true instead"
            )
    if config.demo_trading and family != "okx":  # okx's demo trading is ccxt's sandbox mode
        if not (urls.get("demo") or urls.get("demotrading")
                or _overrides(type(probe), "enable_demo_trading")):
            raise CcxtConfigError(
                f"bad config: venue.demo_trading = true but {config.exchange} has no demo-trading "
                "environment in ccxt; set demo_trading = false"
                + ("; try sandbox = true" if urls.get("test") else "")
            )
    check_capabilities(config, dict(probe.has or {}))
    read_credentials(config, environ, required=probe.requiredCredentials)


#: What flattening needs from a ccxt class, per market type: (has key, what it is, alternatives).
_NEEDED = {
    "derivatives": (
        (("fetchPositions",), "open positions (fetchPositions)"),
        (("fetchOpenOrders",), "open orders (fetchOpenOrders)"),
        (("cancelAllOrders", "cancelOrders", "cancelOrder"), "order cancel (cancelOrder)"),
        (("createReduceOnlyOrder",), "reduce-only market orders (createReduceOnlyOrder)"),
    ),
    "spot": (
        (("fetchBalance",), "balances (fetchBalance)"),
        (("fetchOpenOrders",), "open orders (fetchOpenOrders)"),
        (("cancelAllOrders", "cancelOrders", "cancelOrder"), "order cancel (cancelOrder)"),
        (("createOrder",), "market orders (createOrder)"),
    ),
}


def check_capabilities(config: CcxtVenueConfig, has: Mapping[str, Any]) -> None:
    """Refuse an exchange whose ccxt class lacks what flattening needs, naming what is missing."""
    if has.get(config.market_type) is False:
        raise CcxtConfigError(
            f"bad config: venue.market_type = {config.market_type!r}: {config.exchange} has no "
            f"{config.market_type} markets in ccxt; pick another market_type or exchange"
        )
    needs = _NEEDED["spot" if config.market_type == "spot" else "derivatives"]
    missing = [what for keys, what in needs if not any(has.get(k) is True for k in keys)]
    if missing:
        raise CcxtConfigError(
            f"bad config: venue.exchange = {config.exchange!r} cannot be flattened by ess-tui: "
            f"its ccxt class lacks {', '.join(missing)}; pick an exchange that has them"
        )


def read_credentials(
    config: CcxtVenueConfig,
    environ: Mapping[str, str] | None = None,
    *,
    required: Mapping[str, bool] | None = None,
) -> dict[str, str]:
    """The keys the exchange needs, from the environment variables the config names.

    Returns ``{"apiKey": …, "secret": …, "password": …}`` (only the ones set). Raises
    :class:`CcxtConfigError` naming the missing *variable* when a required one is unset.
    """
    env = os.environ if environ is None else environ
    if required is None:
        required = _exchange_class(config.exchange)().requiredCredentials
    unsupported = sorted(
        name for name, needed in required.items() if needed and name not in _CREDENTIAL_FIELDS
    )
    if unsupported:
        raise CcxtConfigError(
            f"bad config: {config.exchange} needs credentials ess-tui does not read "
            f"({', '.join(unsupported)}); use an exchange that signs with an API key and secret"
        )
    creds: dict[str, str] = {}
    missing: list[str] = []
    for ccxt_name, field in _CREDENTIAL_FIELDS.items():
        var = getattr(config, field)
        value = (env.get(var) or "").strip()
        if value:
            creds[ccxt_name] = value
        elif required.get(ccxt_name):
            missing.append(var)
    if missing:
        what = "an API key, secret and passphrase" if required.get("password") else "an API key and secret"
        raise CcxtConfigError(
            f"bad config: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
            f"{config.exchange} needs {what} from the environment (never from ess.toml)"
        )
    return creds


def check_markets(config: CcxtVenueConfig, markets: Mapping[str, Any]) -> None:
    """Every configured symbol is listed, active and of ``market_type``. Raises CcxtConfigError."""
    for symbol in config.symbols:
        market = markets.get(symbol)
        if market is None:
            close = difflib.get_close_matches(symbol, list(markets), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise CcxtConfigError(
                f"bad config: venue.symbols: {symbol!r} is not listed on {config.exchange} "
                f"({config.market_type} markets){hint}"
            )
        kind = market.get("type")
        if kind != config.market_type:
            raise CcxtConfigError(
                f"bad config: venue.symbols: {symbol!r} is a {kind} market on {config.exchange}, "
                f"but venue.market_type = {config.market_type!r}"
            )
        if market.get("active") is False:
            raise CcxtConfigError(
                f"bad config: venue.symbols: {symbol!r} is listed but not trading on "
                f"{config.exchange} (delisted or suspended); remove it"
            )
