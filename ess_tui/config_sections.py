"""Sections of ``config.Settings`` kept beside it: ``[gate]``, ``[[alerts]]`` sinks, ``[metrics]``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ess_tui.config_types import Float

__all__ = ["AlertSinkSettings", "GateSettings", "MetricsSettings"]


class AlertSinkSettings(BaseModel):
    """One ``[[alerts]]`` sink: an apprise URL read from the environment variable ``url_env``
    (URLs carry tokens: never in the file), or a ``command`` that gets the event as JSON on stdin."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="sink name: letters, digits, _ . -")
    url_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                description="environment variable holding the apprise URL")
    command: list[str] | None = Field(None, min_length=1, description="program and arguments")
    min_level: Literal["info", "warning", "critical"] = "warning"
    timeout: Float = Field(10.0, gt=0, le=300, description="seconds one delivery may take")

    @model_validator(mode="after")
    def _one_target(self) -> "AlertSinkSettings":
        if (self.url_env is None) == (self.command is None):
            raise ValueError(f"alert sink {self.name!r} needs exactly one of url_env or command")
        return self


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    listen: str | None = Field(None, pattern=r"^[^\s:]*:[0-9]{1,5}$",
                               description="HOST:PORT for /metrics (e.g. 127.0.0.1:9464); none = off")


class GateSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require_runner: bool = Field(
        False, description="block trading while no ESS runner holds a live lease on the database"
    )
    max_silence: Float = Field(
        1.0, gt=0, le=60,
        description="PostgreSQL: seconds without an answer from the server before gates block",
    )
