"""The control room's screens: dashboard, manual stop, guided reset, audit trail and help."""
