"""Test support: fakes in the seed's shapes for users' own tests, and the crash harness.

    from ess_tui.testing import FakeMetricsRepository, FakeExchange, RecordingEventBus

``ess_tui.testing.crash`` holds the SIGKILL drill harness (imported on its own; it spawns runners).
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
