"""The shipped control-room themes (TOML files), packaged into the wheel as ``ess_tui.themes``."""
