"""The control room's widgets: banner, gauges, venue panel and event log."""
