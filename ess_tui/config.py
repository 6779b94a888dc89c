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
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from ess_tui.config_env import (
    EXTRA_ENV_NAMES,
    check_env_json,
    suggest,
    unknown_env_warnings,
)
from ess_tui.config_levels import LevelSettings, reduce_only_below_halt

__all__ = [
    "EXTRA_ENV_NAMES", "ConfigError", "GateSettings", "PaperSettings", "ResetPolicy", "Settings",
    "TuiSettings", "VenueSettings", "env_warnings", "find_config", "load_settings",
]

ENV_PREFIX = "QT_ESS_"
APP_NAME = "ess-tui"

_toml_path: ContextVar[Path | None] = ContextVar("_toml_path", default=None)


class ConfigError(Exception):
    """A configuration value is wrong. ``str(err)`` is one line a person can act on."""


from ess_tui.config_sections import AlertSinkSettings, GateSettings, MetricsSettings  # noqa: E402
from ess_tui.config_types import Float, Int  # noqa: E402


def _path_value(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise ValueError("must be a file path (text)")
    text = os.fspath(value)
    if not str(text).strip():
        raise ValueError("an empty path is not a file (leave it out for the default)")
    if "\0" in str(text):
        raise ValueError("a path cannot contain a NUL character")
    return value


def default_state_dir() -> Path:
    from platformdirs import user_state_dir

    return Path(user_state_dir(APP_NAME, appauthor=False))


def default_config_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False))


class PaperSettings(BaseModel):
    """The embedded paper world."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: Float = Field(20.0, ge=0, le=10_000, description="simulated round trip per venue call")
    seed: Int = Field(7, description="seed of the simulated market")
    drift: bool = Field(True, description="let prices and PnL move so the gauges are alive")
    tick_interval: Float = Field(0.5, gt=0, le=60, description="seconds between simulated ticks")
    rate_limit: Float | None = Field(None, gt=0, description="venue requests per second, none = unlimited")
    call_log: Path | None = Field(None, description="append one JSON line per book-changing call (drills)")


class VenueSettings(BaseModel):
    """Which venue the ESS watches and flattens. ``kind = "ccxt"`` takes the ccxt keys
    (exchange, market_type, symbols, sandbox, demo_trading, ...) documented in README."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["paper", "ccxt"] = "paper"


class TuiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    theme: str | None = Field(None, description="theme name; None = the last one chosen, else dark")
    keys: dict[str, str] = Field(default_factory=dict, description="binding id → key, e.g. stop = 'f12'")
    refresh_hz: Float = Field(4.0, gt=0, le=30, description="most gauge redraws per second")


class ResetPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operators: list[str] = Field(default_factory=list, description="who may reset; empty = anyone")
    two_person: bool = Field(False, description="a second, different approver must confirm a reset")

    def to_engine(self) -> Any:
        """The engine's plain ResetPolicy (the engine never sees pydantic)."""
        from ess_tui.engine.reset_policy import ResetPolicy as EngineResetPolicy

        return EngineResetPolicy(operators=tuple(self.operators), two_person=self.two_person)


class Settings(BaseSettings):
    """Everything ess-tui can be told. Field names are the env vars without ``QT_ESS_``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    # The seed's variables.
    max_daily_loss: Float = Field(10.0, gt=0, le=100, description="max daily loss %% before the ESS fires")
    max_equity_dd: Float = Field(25.0, gt=0, le=100, description="max equity drawdown %% before the ESS fires")
    max_sl_hits: Int = Field(10, ge=1, le=100_000, description="max stop-loss hits in the period")
    sl_period_minutes: Float = Field(15.0, gt=0, le=24 * 60, description="stop-loss monitoring period")
    max_data_staleness: Float = Field(5.0, gt=0, le=24 * 60, description="max minutes without market data")
    check_interval: Float = Field(5.0, ge=0.1, le=3600, description="seconds between condition checks")

    # ess-tui's own.
    db: Path | None = Field(None, description="SQLite file; default: the user's state dir")
    #: ``db`` given as a ``postgresql://`` URL lands here (see :meth:`_a_url_is_not_a_path`).
    db_url: str | None = Field(None, description="PostgreSQL URL of a desk's shared store")
    max_order_failures: Int | None = Field(None, ge=1, description="order rejections in the SL period that fire")
    eval_timeout: Float | None = Field(None, gt=0, le=600, description="seconds an evaluator may take")
    fail_closed_after: Int = Field(3, ge=1, le=1000, description="consecutive evaluator faults that fire")
    lease_ttl: Float = Field(5.0, ge=1, le=600, description="seconds a runner's lease lasts without renewal")
    log_file: Path | None = Field(None, description="log file; default: <state dir>/ess-tui.log")
    venue: VenueSettings = Field(default_factory=VenueSettings)
    paper: PaperSettings = Field(default_factory=PaperSettings)
    tui: TuiSettings = Field(default_factory=TuiSettings)
    reset: ResetPolicy = Field(default_factory=ResetPolicy)
    gate: GateSettings = Field(default_factory=GateSettings)
    alerts: list[AlertSinkSettings] = Field(default_factory=list)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    alert_retry_max: Float = Field(15.0, ge=0.1, le=3600, description="longest wait between alert retries, seconds")
    flatten_failing_every: Float = Field(5.0, gt=0, le=24 * 60, description="minutes between flatten-still-failing alerts")
    levels: LevelSettings = Field(default_factory=LevelSettings)

    @model_validator(mode="after")
    def _reduce_only_below_halt(self) -> Settings:
        reduce_only_below_halt(self)
        return self

    @model_validator(mode="before")
    @classmethod
    def _a_url_is_not_a_path(cls, data: Any) -> Any:
        """``db = "postgresql://…"`` (or QT_ESS_DB, or --db) names a PostgreSQL store, not a file:
        keep it as text in ``db_url`` rather than let it collapse into a path."""
        if isinstance(data, dict):
            value = data.get("db")
            if isinstance(value, str) and value.strip().lower().startswith(
                    ("postgresql://", "postgres://")):
                data = {**data, "db": None, "db_url": value.strip()}
        return data

    @field_validator("db", "log_file", mode="before")
    @classmethod
    def _a_real_path(cls, value: Any) -> Any:
        return _path_value(value)

    @field_validator("db", mode="after")
    @classmethod
    def _not_a_directory(cls, value: Path | None) -> Path | None:
        if value is not None and value.expanduser().is_dir():
            raise ValueError("is a directory, not a database file")
        return value.expanduser() if value is not None else None

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
        """The SQLite file (the state dir's ess.db by default). With a PostgreSQL store this is
        still the local state dir's path, used only for local files (preferences, the log)."""
        return self.db if self.db is not None else default_state_dir() / "ess.db"

    @property
    def db_target(self) -> str:
        """Where the ESS store is: the PostgreSQL URL if one was given, else the SQLite path.
        Open it with ``ess_tui.store.open.open_store``; show it with ``describe_db``."""
        return self.db_url if self.db_url is not None else str(self.db_path)

    @property
    def log_path(self) -> Path:
        return self.log_file if self.log_file is not None else self.db_path.parent / "ess-tui.log"


def env_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``QT_ESS_*`` variable that nothing reads, naming the closest valid one."""
    return unknown_env_warnings(Settings, environ)


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The TOML file to read, or None. An explicitly named file must exist."""
    from ess_tui.engine.state import clean_text

    env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    for given, where in ((explicit, "given with --config"), (env, f"given in {ENV_PREFIX}CONFIG")):
        if given is None:
            continue
        if not str(given).strip():
            raise ConfigError(f"bad config: the config path {where} is empty; allowed: a path to an "
                              "ess.toml file (or leave it out for ./ess.toml)")
        path = Path(given).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {clean_text(path)} does not exist or is not a file ({where})")
        return path
    for candidate in (Path.cwd() / "ess.toml", default_config_dir() / "ess.toml"):
        if candidate.is_file():
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    import typing

    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if args and (origin is typing.Union or type(annotation).__name__ == "UnionType"):
        names = " | ".join(_type_name(a) for a in args)
        return f"{names} or none" if len(args) < len(typing.get_args(annotation)) else names
    if origin in (list, tuple, set):
        return f"a list of {_type_name(args[0]) if args else 'values'}"
    if origin is dict:
        return "a table"
    if annotation is int:
        return "an integer"
    if annotation is float:
        return "a number"
    if annotation is bool:
        return "true or false"
    if annotation is Path:
        return "a file path"
    if annotation is str:
        return "text"
    if getattr(annotation, "model_fields", None):
        return "a table of " + ", ".join(annotation.model_fields)
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


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
    text = f"allowed: {_type_name(field.annotation)}"
    if bounds:
        text += " " + " and ".join(bounds)
    if field.description:
        text += f" ({field.description.replace('%%', '%')})"
    return text


def _format_error(err: ValidationError, toml: Path | None, flags: tuple[str, ...] = ()) -> str:
    first = err.errors()[0]
    loc = tuple(first.get("loc", ()))
    dotted = ".".join(str(p) for p in loc) or "?"
    env_name = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
    if len(loc) == 1 and loc[0] in flags:
        where = "--" + str(loc[0]).replace("_", "-")
    elif env_name in os.environ:
        where = env_name
    else:
        where = f"{dotted} in {toml}" if toml else dotted
    value = first.get("input")
    from ess_tui.engine.state import clean_text

    shown = clean_text(repr(value) if not isinstance(value, dict) else "{…}", limit=60)
    where = clean_text(where, limit=200)
    if first.get("type") == "extra_forbidden":
        allowed = "allowed: only the documented keys (see README, Configuration)"
        siblings = _siblings(loc)
        best = suggest(str(loc[-1]), siblings) if siblings else None
        if best:
            allowed = f"unknown key, did you mean {best.lower()}? " + allowed
    else:
        allowed = _allowed(Settings, loc)
    msg = clean_text(first.get("msg", "invalid"), limit=200).removeprefix("Value error, ")
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"bad config: {where} = {shown}: {msg}; {allowed}{more}"


def _siblings(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Settings
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = fields[part].annotation
    return list(getattr(model, "model_fields", None) or {})


def _read_toml(path: Path) -> None:
    """Refuse, in one line, a config file that is not UTF-8 TOML (binary, UTF-16, ...)."""
    from ess_tui.engine.state import clean_text

    shown = clean_text(path, limit=200)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"bad config: cannot read {shown}: {exc.strerror}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"bad config: {shown} is UTF-16 text; allowed: a TOML file in UTF-8 "
                          "(re-save it as UTF-8)")
    if b"\x00" in raw:
        raise ConfigError(f"bad config: {shown} holds NUL bytes (a binary file, or UTF-16 without a "
                          "byte-order mark); allowed: a TOML file in UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"bad config: {shown} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                          f"offset {exc.start}); allowed: a TOML file in UTF-8") from None
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"bad config: {shown} is not valid TOML: {clean_text(exc, limit=200)}") from None


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from CLI overrides, the environment and the TOML file. Raises ConfigError."""
    path = find_config(config)
    if path is not None:
        _read_toml(path)
    bad_json = check_env_json(Settings)
    if bad_json:
        raise ConfigError(bad_json)
    token = _toml_path.set(path)
    try:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return Settings(**clean)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, path, tuple(clean))) from None
    except SettingsError as exc:
        from ess_tui.engine.state import clean_text

        raise ConfigError(f"bad config: {clean_text(exc, limit=300)}") from None
    finally:
        _toml_path.reset(token)
