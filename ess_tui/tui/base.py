"""The control room's app type, declared once for every screen and widget that needs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.dom import DOMNode

if TYPE_CHECKING:
    from ess_tui.tui.app import ControlRoomApp
    from ess_tui.tui.engine_host import EngineHost


def room(node: DOMNode) -> ControlRoomApp:
    """The :class:`~ess_tui.tui.app.ControlRoomApp` that ``node`` runs in."""
    return cast("ControlRoomApp", node.app)


def host(node: DOMNode) -> EngineHost:
    """The engine host of the control room that ``node`` runs in."""
    return room(node).host
