"""The evaluator protocol and the base class the built-in evaluators share.

* :class:`EmergencyConditionEvaluator` is the seed's protocol: a ``name`` and
  ``async check() -> (triggered, reason)``. Any object with those two passes ``isinstance``.
* :class:`BaseEvaluator` is ess-tui's richer shape: ``async evaluate() -> Evaluation`` with a
  proximity (0.0 far … 1.0 at the limit) and a reading for the gauges. Its ``check()`` is derived
  from ``evaluate()``; a fault (the collaborator raised, or answered garbage) makes ``check()``
  raise :class:`EvaluatorFault`, never answer "all clear".
* :func:`evaluate_any` turns any evaluator (rich or seed-shaped) into one :class:`Evaluation`.

Evaluators that can see a change between checks (a manual trigger, a feed that sees garbage) call
the wake hook bound with :meth:`BaseEvaluator.bind_wake` so the runner checks at once.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from ess_tui.engine.aio import call_off_loop
from ess_tui.engine.state import Evaluation, clamp_proximity
from ess_tui.engine.text import as_utc, clean_text, utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
WakeCallback = Callable[[], None]


class EvaluatorFault(Exception):
    """An evaluator could not decide: its data source raised or answered garbage.

    This is never "all clear": the runner shows the gauge as ERROR and, after repeated faults,
    triggers the ESS with this message as the reason.
    """


@runtime_checkable
class EmergencyConditionEvaluator(Protocol):
    """The seed's evaluator protocol: a human-readable ``name`` and an async ``check()``."""

    @property
    def name(self) -> str:
        """Human-readable name of this evaluator (shown on its gauge)."""
        ...

    async def check(self) -> tuple[bool, str | None]:
        """``(True, reason)`` when the emergency condition holds, else ``(False, None)``."""
        ...


_UNBOUND_LOCK = threading.Lock()
_UNBOUND: list[WakeCallback] = []


def add_unbound_wake(callback: WakeCallback) -> Callable[[], None]:
    """Register a runner's thread-safe "check now" for evaluators not bound to any runner yet.

    A running ESS calls this once (and the returned function when it stops) so that an evaluator
    appended to its list after start, then triggered, wakes it at once instead of after the next
    ``check_interval_sec``.
    """
    with _UNBOUND_LOCK:
        _UNBOUND.append(callback)

    def remove() -> None:
        with _UNBOUND_LOCK:
            if callback in _UNBOUND:
                _UNBOUND.remove(callback)

    return remove


def _unbound_wakes() -> list[WakeCallback]:
    with _UNBOUND_LOCK:
        return list(_UNBOUND)


class Reading:
    """What one ``_read()`` of a built-in evaluator found (internal to the evaluators)."""

    __slots__ = ("triggered", "reason", "proximity", "reading")

    def __init__(
        self, *, triggered: bool, reason: str | None = None, proximity: float | None = None,
        reading: str = "",
    ) -> None:
        self.triggered = triggered
        self.reason = reason
        self.proximity = proximity
        self.reading = reading


class BaseEvaluator:
    """Shared plumbing: name, injectable clock, wake hook, ``evaluate()`` and a derived ``check()``.

    Subclasses implement ``async _read() -> Reading`` and raise (anything) when they cannot
    decide; :meth:`evaluate` turns that into an :class:`Evaluation` with ``error`` set.
    """

    #: Default gauge name; the seed's names are kept.
    default_name = "Evaluator"

    def __init__(self, *, clock: Clock | None = None, name: str | None = None) -> None:
        self._clock: Clock = clock or utcnow
        self._name = clean_text(name, limit=80) if name else self.default_name
        self._wake: WakeCallback | None = None
        self._wake_lock = threading.Lock()

    # -- identity and time -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    def now(self) -> datetime:
        """The evaluator's clock, always timezone-aware UTC."""
        return as_utc(self._clock())

    # -- wake hook ---------------------------------------------------------------------------

    def bind_wake(self, callback: WakeCallback | None) -> None:
        """Register the runner's "check now" callback (``None`` unbinds).

        The callback is called from whatever thread saw the change; the runner passes one that
        is safe to call from any thread (it uses ``loop.call_soon_threadsafe``).
        """
        with self._wake_lock:
            self._wake = callback

    def wake(self) -> None:
        """Ask the runner to check now. Never raises.

        Not yet bound (e.g. appended to a running ESS's evaluator list, as the seed's manual
        trigger example does), it wakes every runner registered with :func:`add_unbound_wake`;
        the runner binds it on that cycle.
        """
        with self._wake_lock:
            callback = self._wake
        callbacks = [callback] if callback is not None else _unbound_wakes()
        for fn in callbacks:
            try:
                fn()
            except Exception:  # a broken runner hook must not break the caller (a feed thread)
                log.exception("%s: wake callback failed", self._name)

    # -- evaluation --------------------------------------------------------------------------

    async def _read(self) -> Reading:  # pragma: no cover - abstract
        raise NotImplementedError

    async def evaluate(self) -> Evaluation:
        """One evaluation. Never raises for a data-source fault: it is reported in ``error``."""
        started = time.perf_counter()
        try:
            result = await self._read()
        except Exception as exc:
            message = describe_fault(self._name, exc)
            log.debug("%s", message)  # the runner logs the first fault of a run
            return Evaluation(
                name=self._name, triggered=False, reason=None, proximity=None,
                reading="no reading", checked_at=self._safe_now(), error=message,
                duration_ms=_ms_since(started),
            )
        reason = clean_text(result.reason) if result.reason else None
        if result.triggered and not reason:
            reason = f"{self._name} triggered"
        return Evaluation(
            name=self._name,
            triggered=bool(result.triggered),
            reason=reason if result.triggered else None,
            proximity=clamp_proximity(result.proximity),
            reading=clean_text(result.reading, limit=160),
            checked_at=self._safe_now(),
            error=None,
            duration_ms=_ms_since(started),
        )

    async def check(self) -> tuple[bool, str | None]:
        """The seed's answer, derived from :meth:`evaluate`. Raises :class:`EvaluatorFault` on a
        fault: an evaluator that cannot decide never answers "all clear"."""
        evaluation = await self.evaluate()
        if evaluation.error is not None:
            raise EvaluatorFault(evaluation.error)
        return evaluation.triggered, evaluation.reason

    def _safe_now(self) -> datetime:
        try:
            return self.now()
        except Exception:  # a broken injected clock must not hide the evaluation
            log.exception("%s: clock failed; using the system clock", self._name)
            return utcnow()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"


def describe_fault(name: str, exc: BaseException) -> str:
    """``"<name>: <what went wrong>"``, bounded and free of control characters."""
    if isinstance(exc, EvaluatorFault) and str(exc):
        detail = str(exc)
    elif str(exc):
        detail = f"{type(exc).__name__}: {exc}"
    else:
        detail = type(exc).__name__
    return clean_text(f"{name}: {detail}")


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def as_number(value: Any, what: str) -> float:
    """``value`` as a finite float, or :class:`EvaluatorFault` saying what was received.

    Booleans, strings, None, NaN and infinities are refused: a metrics source that answers them
    is broken, and a broken source must not read as "all clear".
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        raise EvaluatorFault(f"{what} is not a number: {_short(value)}")
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise EvaluatorFault(f"{what} is not a finite number: {_short(value)}")
    return number


def as_count(value: Any, what: str) -> int:
    """``value`` as a non-negative whole number, or :class:`EvaluatorFault`."""
    number = as_number(value, what)
    if number < 0 or number != int(number):
        raise EvaluatorFault(f"{what} is not a count (a whole number ≥ 0): {_short(value)}")
    return int(number)


def _short(value: Any) -> str:
    return clean_text(repr(value), limit=60)


async def evaluate_any(evaluator: Any, *, clock: Clock | None = None) -> Evaluation:
    """One :class:`Evaluation` from any evaluator.

    Uses ``evaluate()`` when the evaluator has one; otherwise wraps the seed's ``check()`` into an
    Evaluation with ``proximity=None``. Exceptions from ``check()`` (or a malformed answer)
    propagate: the runner counts them as faults.
    """
    name = _name_of(evaluator)
    evaluate = getattr(evaluator, "evaluate", None)
    if callable(evaluate):
        result = await call_off_loop(evaluate)
        if not isinstance(result, Evaluation):
            raise EvaluatorFault(
                f"{name}: evaluate() returned {type(result).__name__}, expected an Evaluation"
            )
        return result
    started = time.perf_counter()
    answer = await call_off_loop(evaluator.check)
    if not isinstance(answer, tuple) or len(answer) != 2:
        raise EvaluatorFault(
            f"{name}: check() returned {_short(answer)}, expected (triggered, reason)"
        )
    triggered, reason = answer
    if not isinstance(triggered, bool):
        raise EvaluatorFault(f"{name}: check() said triggered={_short(triggered)}, expected a bool")
    text = clean_text(reason) if reason else None
    if triggered and not text:
        text = f"{name} triggered"
    return Evaluation(
        name=name,
        triggered=triggered,
        reason=text if triggered else None,
        proximity=None,
        reading="",
        checked_at=as_utc(clock()) if clock else utcnow(),
        error=None,
        duration_ms=_ms_since(started),
    )


def _name_of(evaluator: Any) -> str:
    try:
        name = evaluator.name
    except Exception:
        name = None
    if isinstance(name, str) and name:
        return clean_text(name, limit=80)
    return type(evaluator).__name__


# -- constructor checks: a bad limit is a configuration error, caught before the ESS runs --------


def positive_limit(value: Any, what: str) -> float:
    """A limit that must be a finite number > 0, else :class:`ValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        raise ValueError(f"{what} must be a number > 0, got {_short(value)}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{what} must be a number > 0, got {_short(value)}")
    return number


def count_limit(value: Any, what: str) -> int:
    """A limit that must be a whole number ≥ 0, else :class:`ValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        raise ValueError(f"{what} must be a whole number ≥ 0, got {_short(value)}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise ValueError(f"{what} must be a whole number ≥ 0, got {_short(value)}")
    return int(number)


def fmt_number(value: float) -> str:
    """``5`` for 5.0, ``7.5`` for 7.5: limits as an operator typed them."""
    return f"{value:g}"
