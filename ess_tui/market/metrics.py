"""Account metrics: the metrics repository the Drawdown and Execution evaluators read.

:class:`AccountMetrics` turns an equity source (the venue's account equity) and an execution
record (stop-loss hits and order failures, as the paper exchange keeps them) into the seed's
metrics repository: ``get_daily_pnl_percent()``, ``get_equity_drawdown_percent()``,
``get_recent_sl_hits(minutes)``, ``get_recent_order_failures(minutes)``.

* **Day start**: the first equity read in each UTC day (if the process was down at midnight,
  the first reading after it). Daily PnL % = equity / day start - 1.
* **Peak**: the highest equity ever read; it only ratchets up. Drawdown % = 1 - equity / peak.
* Both survive restarts under the policy key ``account_metrics`` of a small async key-value
  store (anything with ``async get_policy(key)`` / ``async set_policy(key, dict)``, such as the
  SQLite store). A stored record that cannot be read is an error, never a silent fresh start
  (that would forget the peak and hide a drawdown); :meth:`AccountMetrics.rebase` starts afresh
  deliberately.

``refresh()`` reads equity once; the getters answer from the last *successful* refresh and
raise :class:`AccountMetricsError` when there is none, it failed, or it is too old.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ess_tui.engine.aio import maybe_await, nonblocking
from ess_tui.engine.state import as_utc, clean_text, utcnow

log = logging.getLogger(__name__)

POLICY_KEY = "account_metrics"


class AccountMetricsError(Exception):
    """Equity or the stored baseline cannot be used; the Drawdown gauge shows ERROR."""


@dataclass(frozen=True)
class Baseline:
    """What the daily PnL and the drawdown are measured against."""

    day: date
    day_start_equity: float
    peak_equity: float

    def to_policy(self, at: datetime) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "day_start_equity": self.day_start_equity,
            "peak_equity": self.peak_equity,
            "updated_at": at.isoformat(),
        }


def _short(value: Any) -> str:
    return clean_text(repr(value), limit=60)


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def parse_baseline(value: Any, key: str = POLICY_KEY) -> Baseline:
    """A stored baseline, or :class:`AccountMetricsError` saying what is wrong with it."""
    hint = (
        f"the '{key}' record in the store is unreadable ({{}}); check the account, then rebase "
        "the baseline (AccountMetrics.rebase()) to start measuring from today's equity"
    )
    if not isinstance(value, dict):
        raise AccountMetricsError(hint.format(f"not an object: {_short(value)}"))
    try:
        day = date.fromisoformat(str(value["day"]))
    except (KeyError, ValueError) as exc:
        raise AccountMetricsError(hint.format(f"bad day: {_short(value.get('day'))}")) from exc
    day_start = _positive(value.get("day_start_equity"))
    peak = _positive(value.get("peak_equity"))
    if day_start is None:
        raise AccountMetricsError(
            hint.format(f"bad day_start_equity: {_short(value.get('day_start_equity'))}")
        )
    if peak is None:
        raise AccountMetricsError(
            hint.format(f"bad peak_equity: {_short(value.get('peak_equity'))}")
        )
    return Baseline(day=day, day_start_equity=day_start, peak_equity=max(peak, day_start))


class AccountMetrics:
    """The seed's metrics repository, measured from live equity and the execution record.

    ``equity_source``: a callable (sync or async) returning account equity in quote currency.
    ``executions``: an object with ``stop_loss_hits(since)`` and ``order_failures(since)``
    (sync or async; ``since`` is an aware UTC datetime) returning counts.
    ``store``: an object with ``async get_policy(key)`` / ``async set_policy(key, dict)``.
    ``max_reading_age_sec``: getters refuse a reading older than this (None: no limit).
    """

    def __init__(
        self,
        equity_source: Callable[[], Any],
        executions: Any,
        store: Any,
        *,
        clock: Callable[[], datetime] | None = None,
        key: str = POLICY_KEY,
        max_reading_age_sec: float | None = 120.0,
    ) -> None:
        self._equity_source = equity_source
        self._executions = executions
        self._store = store
        self._clock = clock or utcnow
        self.key = key
        self.max_reading_age_sec = max_reading_age_sec
        self._lock = asyncio.Lock()
        self._loaded = False
        self._baseline: Baseline | None = None
        self._unsaved = False
        self._equity: float | None = None
        self._refreshed_at: datetime | None = None
        self._last_error: str | None = None
        #: Stop-loss hits before this moment are not counted (an audited reset cleared them).
        self._sl_cleared_at: datetime | None = None

    # -- reading -------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return as_utc(self._clock())

    async def _read_equity(self) -> float:
        try:
            raw = await maybe_await(self._equity_source())
        except Exception as exc:
            raise AccountMetricsError(
                f"account equity could not be read from the venue: {type(exc).__name__}: {exc}"
            ) from exc
        equity = _positive(raw)
        if equity is None:
            raise AccountMetricsError(
                f"account equity from the venue is unusable: {_short(raw)} (expected a positive "
                "number); daily PnL and drawdown cannot be measured until it is"
            )
        return equity

    async def _load(self) -> None:
        try:
            stored = await maybe_await(self._store.get_policy(self.key))
        except Exception as exc:
            raise AccountMetricsError(
                f"could not read the '{self.key}' baseline from the store: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._baseline = None if stored is None else parse_baseline(stored, self.key)
        self._loaded = True

    async def _save(self, at: datetime) -> None:
        assert self._baseline is not None
        try:
            await maybe_await(self._store.set_policy(self.key, self._baseline.to_policy(at)))
        except Exception as exc:
            raise AccountMetricsError(
                f"could not save the '{self.key}' baseline to the store: "
                f"{type(exc).__name__}: {exc}; it is kept in memory and saving is retried on "
                "the next refresh"
            ) from exc
        self._unsaved = False

    async def refresh(self) -> float:
        """Read equity once, roll the day start at the UTC day boundary, ratchet the peak, and
        persist the baseline when it changed. Returns the equity. Raises
        :class:`AccountMetricsError` (with a reason a person can act on) when anything fails."""
        async with self._lock:
            try:
                equity = await self._read_equity()
                now = self._now()
                if not self._loaded:
                    await self._load()
            except Exception as exc:
                self._last_error = clean_text(str(exc))
                raise
            today = now.date()
            baseline = self._baseline
            if baseline is None:
                new = Baseline(day=today, day_start_equity=equity, peak_equity=equity)
            else:
                new = baseline
                if baseline.day != today:
                    new = Baseline(day=today, day_start_equity=equity,
                                   peak_equity=baseline.peak_equity)
                if equity > new.peak_equity:
                    new = Baseline(day=new.day, day_start_equity=new.day_start_equity,
                                   peak_equity=equity)
            if new != baseline:
                self._baseline = new
                self._unsaved = True
            self._equity = equity
            self._refreshed_at = now
            self._last_error = None
            if self._unsaved:
                await self._save(now)
            return equity

    async def rebase(self) -> Baseline:
        """Start measuring afresh: day start and peak both become the current equity.

        For an operator who has checked the account (e.g. after a deposit or withdrawal, or an
        unreadable stored baseline). The caller audits it."""
        async with self._lock:
            equity = await self._read_equity()
            now = self._now()
            self._baseline = Baseline(day=now.date(), day_start_equity=equity, peak_equity=equity)
            self._loaded = True
            self._unsaved = True
            self._equity = equity
            self._refreshed_at = now
            self._last_error = None
            await self._save(now)
            log.warning("account baseline rebased to equity %.2f", equity)
            return self._baseline

    # -- the seed's metrics repository -----------------------------------------------------------

    def _reading(self) -> tuple[float, Baseline]:
        if self._last_error is not None:
            raise AccountMetricsError(f"the last equity refresh failed: {self._last_error}")
        if self._equity is None or self._baseline is None or self._refreshed_at is None:
            raise AccountMetricsError("no equity reading yet: refresh() has not succeeded")
        if self.max_reading_age_sec is not None:
            age = (self._now() - self._refreshed_at).total_seconds()
            if age > self.max_reading_age_sec:
                raise AccountMetricsError(
                    f"the equity reading is {age:.0f} s old "
                    f"(limit {self.max_reading_age_sec:g} s): "
                    "refresh() has not run or keeps failing"
                )
        return self._equity, self._baseline

    @nonblocking
    def get_daily_pnl_percent(self) -> float:
        """Today's PnL in percent of the day's starting equity (negative = loss)."""
        equity, baseline = self._reading()
        return (equity / baseline.day_start_equity - 1.0) * 100.0

    @nonblocking
    def get_equity_drawdown_percent(self) -> float:
        """How far equity is below its peak, in percent (0 at a new high)."""
        equity, baseline = self._reading()
        return max(0.0, (1.0 - equity / baseline.peak_equity) * 100.0)

    async def get_recent_sl_hits(self, minutes: float) -> int:
        """Stop-loss hits in the last ``minutes``."""
        return await self._count("stop_loss_hits", minutes)

    async def get_recent_order_failures(self, minutes: float) -> int:
        """Orders the venue rejected or failed in the last ``minutes``."""
        return await self._count("order_failures", minutes)

    def clear_sl_window(self) -> tuple[datetime | None, datetime]:
        """Count stop-loss hits from now on (an explicit, audited choice of a reset; the caller
        audits it). Returns (the previous clearing moment or None, the new one)."""
        old, self._sl_cleared_at = self._sl_cleared_at, self._now()
        return old, self._sl_cleared_at

    async def _count(self, method: str, minutes: float) -> int:
        since = self._now() - timedelta(minutes=minutes)
        if method == "stop_loss_hits" and self._sl_cleared_at is not None:
            since = max(since, self._sl_cleared_at)
        value = await maybe_await(getattr(self._executions, method)(since))
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise AccountMetricsError(
                f"the execution record's {method}() answered {_short(value)}, expected a count"
            )
        return int(value)

    # -- for the control room ------------------------------------------------------------------

    @property
    def equity(self) -> float | None:
        return self._equity

    @property
    def baseline(self) -> Baseline | None:
        return self._baseline

    @property
    def refreshed_at(self) -> datetime | None:
        return self._refreshed_at
