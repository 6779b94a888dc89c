"""Alerts: the outbox relay, the sinks (apprise, command), message text, the Prometheus exporter,
and systemd's notify protocol.

Rooms: ``messages`` (what an alert says), ``sinks`` (where it goes), ``relay`` (at-least-once
delivery from the store's outbox), ``metrics`` (``/metrics``), ``sdnotify`` (READY / WATCHDOG),
``cli`` (``ess-tui alerts``, ``alerts test``, ``events``). apprise and prometheus_client are imported
only when a sink or the exporter is used, never by the engine or the trade gate.
"""
