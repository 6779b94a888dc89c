"""Small async helpers: calling duck-typed collaborators whose methods may be sync or async."""

from __future__ import annotations

import inspect
from typing import Any


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable, else return it: seed collaborators may be either."""
    if inspect.isawaitable(value):
        return await value
    return value


async def call(obj: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``obj.method(*args)`` whether it is sync or async."""
    return await maybe_await(getattr(obj, method)(*args, **kwargs))
