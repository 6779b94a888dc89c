"""Settings: the seed's ``QT_ESS_*`` variables, an ``ess.toml``, and CLI flags over both.

Precedence, highest first: CLI flags → environment (``QT_ESS_*``) → ``ess.toml`` → defaults.
The TOML file is ``--config PATH``, else ``$QT_ESS_CONFIG``, else ``./ess.toml``, else
``<user config dir>/ess-tui/ess.toml``; none is needed.

Secrets (API keys, the audit HMAC key) are never settings: they are read from the environment at
the point of use, so they cannot end up in a settings dump, the database or a screenshot.

A bad value raises :class:`ConfigError` whose message is one line naming the key, the value and
what is allowed; the CLI prints it and exits 2.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "QT_ESS_"
APP_NAME = "ess-tui"

_toml_path: ContextVar[Path | None] = ContextVar("_toml_path", default=None)


class ConfigError(Exception):
    """A configuration value is wrong. ``str(err)`` is one line a person can act on."""


def default_state_dir() -> Path:
    from platformdirs import user_state_dir

    return Path(user_state_dir(APP_NAME, appauthor=False))


def default_config_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False))


class PaperSettings(BaseModel):
    """The embedded paper world."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(20.0, ge=0, le=10_000, description="simulated round trip per venue call")
    seed: int = Field(7, description="seed of the simulated market")
    drift: bool = Field(True, description="let prices and PnL move so the gauges are alive")
    tick_interval: float = Field(0.5, gt=0, le=60, description="seconds between simulated ticks")
    rate_limit: float | None = Field(None, gt=0, description="venue requests per second, none = unlimited")


class VenueSettings(BaseModel):
    """Which venue the ESS watches and flattens. ``kind = "ccxt"`` takes the ccxt keys
    (exchange, market_type, symbols, sandbox, demo_trading, ...) documented in README."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["paper", "ccxt"] = "paper"


class TuiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    theme: str | None = Field(None, description="theme name; None = the last one chosen, else dark")
    keys: dict[str, str] = Field(default_factory=dict, description="binding id → key, e.g. stop = 'f12'")
    refresh_hz: float = Field(4.0, gt=0, le=30, description="most gauge redraws per second")


class ResetPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operators: list[str] = Field(default_factory=list, description="who may reset; empty = anyone")
    two_person: bool = Field(False, description="a second, different approver must confirm a reset")


# --- alerts and metrics (issue 12) ---------------------------------------------------------------


class AlertSinkSettings(BaseModel):
    """One ``[[alerts]]`` sink: an apprise URL read from the environment variable ``url_env``
    (URLs carry tokens: never in the file), or a ``command`` that gets the event as JSON on stdin."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="sink name: letters, digits, _ . -")
    url_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                description="environment variable holding the apprise URL")
    command: list[str] | None = Field(None, min_length=1, description="program and arguments")
    min_level: Literal["info", "warning", "critical"] = "warning"
    timeout: float = Field(10.0, gt=0, le=300, description="seconds one delivery may take")

    @model_validator(mode="after")
    def _one_target(self) -> "AlertSinkSettings":
        if (self.url_env is None) == (self.command is None):
            raise ValueError(f"alert sink {self.name!r} needs exactly one of url_env or command")
        return self


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str | None = Field(None, pattern=r"^[^\s:]*:[0-9]{1,5}$",
                               description="HOST:PORT for /metrics (e.g. 127.0.0.1:9464); none = off")


class Settings(BaseSettings):
    """Everything ess-tui can be told. Field names are the env vars without ``QT_ESS_``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # The seed's variables.
    max_daily_loss: float = Field(10.0, gt=0, le=100, description="max daily loss %% before the ESS fires")
    max_equity_dd: float = Field(25.0, gt=0, le=100, description="max equity drawdown %% before the ESS fires")
    max_sl_hits: int = Field(10, ge=1, le=100_000, description="max stop-loss hits in the period")
    sl_period_minutes: float = Field(15.0, gt=0, le=24 * 60, description="stop-loss monitoring period")
    max_data_staleness: float = Field(5.0, gt=0, le=24 * 60, description="max minutes without market data")
    check_interval: float = Field(5.0, ge=0.1, le=3600, description="seconds between condition checks")

    # ess-tui's own.
    db: Path | None = Field(None, description="SQLite file; default: the user's state dir")
    max_order_failures: int | None = Field(None, ge=1, description="order rejections in the SL period that fire")
    eval_timeout: float | None = Field(None, gt=0, le=600, description="seconds an evaluator may take")
    fail_closed_after: int = Field(3, ge=1, le=1000, description="consecutive evaluator faults that fire")
    lease_ttl: float = Field(5.0, ge=1, le=600, description="seconds a runner's lease lasts without renewal")
    log_file: Path | None = Field(None, description="log file; default: <state dir>/ess-tui.log")
    venue: VenueSettings = Field(default_factory=VenueSettings)
    paper: PaperSettings = Field(default_factory=PaperSettings)
    tui: TuiSettings = Field(default_factory=TuiSettings)
    reset: ResetPolicy = Field(default_factory=ResetPolicy)
    alerts: list[AlertSinkSettings] = Field(default_factory=list)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    alert_retry_max: float = Field(15.0, ge=0.1, le=3600, description="longest wait between alert retries, seconds")
    flatten_failing_every: float = Field(5.0, gt=0, le=24 * 60, description="minutes between flatten-still-failing alerts")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else default_state_dir() / "ess.db"

    @property
    def log_path(self) -> Path:
        return self.log_file if self.log_file is not None else self.db_path.parent / "ess-tui.log"


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The TOML file to read, or None. An explicitly named file must exist."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (given with --config)")
        return path
    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (given in {ENV_PREFIX}CONFIG)")
        return path
    for candidate in (Path.cwd() / "ess.toml", default_config_dir() / "ess.toml"):
        if candidate.is_file():
            return candidate
    return None


def _allowed(settings_cls: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """What a field accepts, from its type and bounds, for the error line."""
    model: Any = settings_cls
    field = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            break
        field = fields[part]
        model = field.annotation
    if field is None:
        return ""
    bounds = []
    for meta in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                bounds.append(f"{sym} {value}")
    annotation = getattr(field.annotation, "__name__", None) or str(field.annotation)
    annotation = annotation.replace("typing.", "")
    text = f"allowed: {annotation}"
    if bounds:
        text += " " + " and ".join(bounds)
    if field.description:
        text += f" ({field.description.replace('%%', '%')})"
    return text


def _format_error(err: ValidationError, toml: Path | None) -> str:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    dotted = ".".join(str(p) for p in loc) or "?"
    env_name = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
    where = env_name if env_name in os.environ else (f"{dotted} in {toml}" if toml else dotted)
    value = first.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{…}"
    if len(shown) > 60:
        shown = shown[:57] + "…"
    allowed = _allowed(Settings, loc) if first.get("type") != "extra_forbidden" else (
        "allowed: only the documented keys (see README, Configuration)"
    )
    msg = first.get("msg", "invalid")
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"bad config: {where} = {shown}: {msg}; {allowed}{more}"


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from CLI overrides, the environment and the TOML file. Raises ConfigError."""
    path = find_config(config)
    if path is not None:
        try:
            with path.open("rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"bad config: {path} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"bad config: cannot read {path}: {exc.strerror}") from None
    token = _toml_path.set(path)
    try:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**clean)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, path)) from None
    finally:
        _toml_path.reset(token)
