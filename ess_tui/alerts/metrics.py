"""``/metrics`` for Prometheus: a custom collector that reads the ESS's state at scrape time.

Names follow prometheus-client's practices: base units (seconds), ``_total`` counters, ratios 0–1,
labels only of bounded sets (trigger names, sink names, bands). prometheus_client is imported only
when the exporter starts. Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

BANDS = ("ok", "warn", "fire", "error", "unknown")
#: Buckets of ess_latch_seconds (trigger → durable latch), seconds.
LATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class Histogram:
    """A plain cumulative histogram (observed in the engine's loop, read by the scrape thread)."""

    buckets: tuple[float, ...] = LATCH_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * len(LATCH_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1


@dataclass
class MetricsSnapshot:
    latched: bool | None = None
    activations: int = 0
    acting: bool = False
    proximity: dict[str, float | None] = field(default_factory=dict)
    bands: dict[str, str] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latch: Histogram = field(default_factory=Histogram)
    flatten_seconds: float | None = None
    open_positions: int | None = None
    open_orders: int | None = None
    alerts_pending: int | None = None
    alert_failures: dict[str, int] = field(default_factory=dict)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``:PORT`` means 127.0.0.1) → (host, port). Raises ValueError."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics address {text!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class EssCollector:
    """Yields the ESS's metric families from ``read()`` on every scrape."""

    def __init__(self, read: Callable[[], MetricsSnapshot]) -> None:
        self.read = read

    def collect(self) -> Any:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = self.read()
        if snap.latched is not None:
            yield GaugeMetricFamily("ess_latched", "1 while the ESS is latched (trading blocked)",
                                    value=1 if snap.latched else 0)
        yield CounterMetricFamily("ess_activations", "Activations since the database was created",
                                  value=snap.activations)
        yield GaugeMetricFamily("ess_runner_acting", "1 while this process holds the runner lease",
                                value=1 if snap.acting else 0)
        prox = GaugeMetricFamily("ess_trigger_proximity_ratio",
                                 "How close each trigger is to firing (0 far, 1 at the limit)",
                                 labels=["trigger"])
        for name, value in snap.proximity.items():
            if value is not None:
                prox.add_metric([name], value)
        yield prox
        state = GaugeMetricFamily("ess_trigger_state", "1 for the band each trigger is in",
                                  labels=["trigger", "band"])
        for name, band in snap.bands.items():
            for each in BANDS:
                state.add_metric([name, each], 1 if band == each else 0)
        yield state
        errors = CounterMetricFamily("ess_evaluation_errors", "Evaluations that faulted",
                                     labels=["trigger"])
        for name, count in snap.errors.items():
            errors.add_metric([name], count)
        yield errors
        hist = snap.latch
        yield HistogramMetricFamily(
            "ess_latch_seconds", "Trigger to durable latch, seconds",
            buckets=[*((repr(b), c) for b, c in zip(hist.buckets, hist.counts)), ("+Inf", hist.count)],
            sum_value=hist.total)
        if snap.flatten_seconds is not None:
            yield GaugeMetricFamily("ess_flatten_seconds", "Latch to verified flat, last activation",
                                    value=snap.flatten_seconds)
        if snap.open_positions is not None:
            yield GaugeMetricFamily("ess_open_positions", "Open positions at the venue",
                                    value=snap.open_positions)
        if snap.open_orders is not None:
            yield GaugeMetricFamily("ess_open_orders", "Open orders at the venue", value=snap.open_orders)
        if snap.alerts_pending is not None:
            yield GaugeMetricFamily("ess_alerts_pending", "Alert deliveries waiting in the outbox",
                                    value=snap.alerts_pending)
        failures = CounterMetricFamily("ess_alert_failures", "Failed alert delivery attempts",
                                       labels=["sink"])
        for name, count in snap.alert_failures.items():
            failures.add_metric([name], count)
        yield failures


class MetricsServer:
    """The HTTP exporter on its own daemon thread; :meth:`close` stops it."""

    def __init__(self, listen: str, read: Callable[[], MetricsSnapshot]) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        self.host, port = parse_listen(listen)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(EssCollector(read))
        self._server, self._thread = start_http_server(port, addr=self.host, registry=self.registry)
        self.port = int(self._server.server_address[1])
        log.warning("metrics on http://%s:%d/metrics", self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
