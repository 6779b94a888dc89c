"""In-process event bus for ess-tui's own notifications.

The control room, alert sinks and the log subscribe here. A user's seed-style ``event_bus`` is a
different object: it only ever receives the seed's two events (see ``controller.py``).

``publish`` never blocks the publisher and never raises: a failing subscriber is logged and the
others still get the event. Async handlers are scheduled as tasks.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[Any], Any]


class EventBus:
    """Subscribe handlers by event ``type`` (or ``"*"`` for all); publish dataclass events."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def subscribe(self, handler: Handler, event_type: str = "*") -> Callable[[], None]:
        """Call ``handler(event)`` for events of ``event_type``. Returns an unsubscribe function."""
        self._handlers.setdefault(event_type, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(event_type, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe

    def publish(self, event: Any) -> None:
        event_type = getattr(event, "type", type(event).__name__)
        for handler in (*self._handlers.get(event_type, ()), *self._handlers.get("*", ())):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
            except Exception:  # a broken subscriber must not break the ESS
                log.exception("event handler %r failed on %s", handler, event_type)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("async event handler failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for async handlers already scheduled (tests and clean shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
