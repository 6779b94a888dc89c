"""Strict number types for the settings: a boolean is not a number, NaN and infinity are not values.

TOML ``max_sl_hits = true`` would otherwise become 1. Shared by ``config`` and ``config_sections``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AllowInfNan, BeforeValidator

__all__ = ["Float", "Int"]


def _not_bool(value: Any) -> Any:
    # TOML ``true`` would otherwise become 1: a boolean is not a number.
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool), AllowInfNan(False)]
