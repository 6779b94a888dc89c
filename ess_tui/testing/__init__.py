"""Test support: fakes in the seed's shapes for users' own tests, and the crash harness.

    from ess_tui.testing import FakeMetricsRepository, FakeExchange, RecordingEventBus

``ess_tui.testing.crash`` (SIGKILL) and ``ess_tui.testing.split_brain`` (SIGSTOP/SIGCONT) hold the
drill harnesses (imported on their own; they spawn runners); ``crash_db`` and ``crash_runner`` their parts.
"""

from __future__ import annotations

from ess_tui.testing.fakes import (
    FakeDataFeedMonitor,
    FakeExchange,
    FakeHealthMonitor,
    FakeMetricsRepository,
    FakeVenue,
    RecordingEventBus,
)

__all__ = [
    "FakeDataFeedMonitor",
    "FakeExchange",
    "FakeHealthMonitor",
    "FakeMetricsRepository",
    "FakeVenue",
    "RecordingEventBus",
]
