"""The policy keys a store holds beside the latch, and the rule for writing them.

The seed's ``emergency_stop`` key is the latch itself: only ``latch`` and ``unlatch`` (audited, in
their own transaction) write it. Every other key is plain JSON under a bounded name. Both stores
(the seed-store adapter here, ``ess_tui.store.sqlite``) apply the same rule through
:func:`policy_json`, so it lives in the engine and the store imports it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: The seed's policy key holding the latch.
EMERGENCY_KEY = "emergency_stop"


def policy_json(key: str, value: Any) -> str:
    """Validate a policy write from outside latch/reset and return its JSON text.

    Raises :class:`ValueError` for a bad key, the ``emergency_stop`` key (nothing may un-latch the
    ESS by writing it), a value that is not a dict, or a value that is not plain JSON.
    """
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise ValueError("policy key must be a non-empty text of at most 200 characters")
    if key == EMERGENCY_KEY:
        raise ValueError(
            "the 'emergency_stop' policy key is written only by latch and reset: nothing may "
            "un-latch the ESS by writing it (use an audited reset)"
        )
    if not isinstance(value, Mapping):
        raise ValueError(f"policy value for {key!r} must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"policy value for {key!r} is not plain JSON: {exc}") from exc


__all__ = ["EMERGENCY_KEY", "policy_json"]
