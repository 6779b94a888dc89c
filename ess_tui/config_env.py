"""The ``QT_ESS_*`` environment seen by :mod:`ess_tui.config`: the valid names, a warning for an
unknown one (with the closest valid name), and the JSON values of nested settings checked before
pydantic-settings sees them, so a bad one is one line naming the variable, not a library error.

Only names are ever shown for an unknown variable, never values (it may hold a secret).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "QT_ESS_"

# Variables read outside Settings (secrets read at the point of use, switches). Other modules that
# read a QT_ESS_* variable of their own add its name here so it draws no warning.
EXTRA_ENV_NAMES: set[str] = {
    "QT_ESS_CONFIG", "QT_ESS_DEBUG", "QT_ESS_AUDIT_KEY",
    "QT_ESS_API_KEY", "QT_ESS_API_SECRET", "QT_ESS_API_PASSWORD",
}
# Secret-looking names are chosen by the desk (venue ``*_env`` keys, alert sinks): never warned about.
_SECRET_LIKE = re.compile(r"(KEY|SECRET|PASSWORD|PASSPHRASE|TOKEN|DSN|URL)$", re.IGNORECASE)
# Keys under these sections are open (the ccxt venue keys are checked by the venue itself).
_OPEN_SECTIONS = ("QT_ESS_VENUE__",)


def _model_fields(annotation: Any) -> dict[str, Any] | None:
    fields = getattr(annotation, "model_fields", None)
    return fields if isinstance(fields, dict) else None


def _is_complex(annotation: Any) -> bool:
    if _model_fields(annotation) is not None:
        return True
    origin = typing.get_origin(annotation)
    if origin in (list, dict, tuple, set, frozenset):
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_is_complex(a) for a in typing.get_args(annotation) if a is not type(None))
    return False


def env_names(settings_cls: Any) -> dict[str, Any]:
    """Every ``QT_ESS_*`` name Settings reads → the annotation of its field."""
    names: dict[str, Any] = {}
    for name, field in settings_cls.model_fields.items():
        top = ENV_PREFIX + name.upper()
        names[top] = field.annotation
        sub = _model_fields(field.annotation)
        for subname, subfield in (sub or {}).items():
            names[f"{top}__{subname.upper()}"] = subfield.annotation
    return names


def suggest(name: str, candidates: typing.Iterable[str]) -> str | None:
    close = difflib.get_close_matches(name.upper(), [c.upper() for c in candidates], n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_env_warnings(settings_cls: type[Any], environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``QT_ESS_*`` variable that nothing in ``settings_cls`` (or the extra names)
    reads, naming the closest valid one. ``ess_tui.config.env_warnings`` passes its Settings."""
    from ess_tui.engine.text import clean_text

    env = os.environ if environ is None else environ
    known = set(env_names(settings_cls)) | EXTRA_ENV_NAMES
    warnings = []
    for raw in sorted(env):
        name = raw.upper()
        if not name.startswith(ENV_PREFIX) or name in known or name.startswith(_OPEN_SECTIONS):
            continue
        if _SECRET_LIKE.search(name):
            continue
        shown = clean_text(raw, limit=80)
        best = suggest(name, known)
        hint = f"did you mean {best}?" if best else "see README (Configuration) for the valid names"
        warnings.append(f"unknown environment variable {shown} is ignored; {hint}")
    return warnings


def _example(annotation: Any) -> str:
    fields = _model_fields(annotation)
    if fields is not None:
        keys = ", ".join(fields)
        return f"a JSON object with the keys {keys}, e.g. '{{\"{next(iter(fields))}\": …}}'"
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return "a JSON list, e.g. '[\"alice\", \"bob\"]'"
    if origin is dict:
        return "a JSON object, e.g. '{\"stop\": \"f12\"}'"
    return "JSON"


def check_env_json(settings_cls: Any, environ: Mapping[str, str] | None = None) -> str | None:
    """The error line for the first nested-setting variable whose value is not valid JSON."""
    from ess_tui.engine.state import clean_text

    env = os.environ if environ is None else environ
    names = env_names(settings_cls)
    for raw, value in sorted(env.items()):
        annotation = names.get(raw.upper())
        if annotation is None or not _is_complex(annotation):
            continue
        try:
            json.loads(value)
        except ValueError as exc:
            shown = clean_text(repr(value), limit=60)
            why = clean_text(getattr(exc, "msg", str(exc)), limit=80)
            return (f"bad config: {clean_text(raw, limit=80)} = {shown}: not valid JSON ({why}); "
                    f"allowed: {_example(annotation)}")
    return None
