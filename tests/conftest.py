"""Shared test fixtures: one fake clock for every test that moves time by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

#: A default moment for tests that do not care which.
T0 = datetime(2025, 11, 30, 4, 0, tzinfo=timezone.utc)


class FakeClock:
    """A wall clock the test moves by hand, with the monotonic clock that goes with it.

    ``advance(...)`` is time passing: wall and monotonic both move. ``step(...)`` is the wall clock
    being set (NTP, an operator, a VM resume): only the wall moves, as on a real host. Setting
    ``now`` forward counts as time passing; setting it backward is a step. Components that take a
    ``clock`` use ``clock.monotonic`` when the object has one.
    """

    def __init__(self, now: datetime = T0) -> None:
        self._now = now
        self._mono = 1_000.0

    def __call__(self) -> datetime:
        return self._now

    @property
    def now(self) -> datetime:
        return self._now

    @now.setter
    def now(self, value: datetime) -> None:
        delta = (value - self._now).total_seconds()
        if delta > 0:
            self._mono += delta
        self._now = value

    def monotonic(self) -> float:
        return self._mono

    def advance(self, **kwargs: float) -> None:
        delta = timedelta(**kwargs)
        self._now += delta
        self._mono += max(0.0, delta.total_seconds())

    def step(self, **kwargs: float) -> None:
        """Set the wall clock by ``timedelta(**kwargs)`` (either sign); monotonic time stays."""
        self._now += timedelta(**kwargs)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()
