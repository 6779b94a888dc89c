"""``postgresql://`` URLs: recognising them, the password from the environment, and redaction.

Stdlib only: the trade gate and the CLI import this to decide between a file and a server
without importing a PostgreSQL driver.

A URL never needs to carry a password: libpq reads ``PGPASSWORD`` (or ``~/.pgpass``) itself, and
``?password_env=NAME`` names another environment variable to take it from. A password written
into the URL is accepted but never shown: every text ess-tui prints or stores goes through
:func:`redact`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SCHEMES = ("postgresql://", "postgres://")

#: Query parameters of ours, removed before the URL reaches libpq.
_OURS = {"password_env", "schema", "channel"}

#: Default PostgreSQL schema holding ess-tui's tables, and the NOTIFY channel of latch and reset.
DEFAULT_SCHEMA = "ess"
DEFAULT_CHANNEL = "ess_state"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class URLError(ValueError):
    """A ``postgresql://`` URL ess-tui cannot use; the message says what to fix."""


def is_postgres_url(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(SCHEMES)


def redact(text: str) -> str:
    """``text`` with any password inside a ``postgresql://user:pw@host`` URL replaced by ***."""
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", r"\1***@", text,
                  flags=re.IGNORECASE)


def _ident(value: str, what: str) -> str:
    if not _IDENT.match(value):
        raise URLError(f"{what} {value!r} in the database URL must be a lower-case SQL name "
                       "(letters, digits, _)")
    return value


class PGTarget:
    """What a URL points at: libpq conninfo (without our parameters), schema and channel."""

    def __init__(self, url: str, *, environ: Mapping[str, str] | None = None) -> None:
        if not is_postgres_url(url):
            raise URLError("not a postgresql:// URL")
        env = os.environ if environ is None else environ
        parts = urlsplit(url.strip())
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in _OURS}
        rest = [(k, v) for k, v in query if k not in _OURS]
        self.schema = _ident(ours.get("schema", DEFAULT_SCHEMA), "schema")
        self.channel = _ident(ours.get("channel", DEFAULT_CHANNEL), "channel")
        self.password: str | None = None
        name = ours.get("password_env")
        if name:
            value = env.get(name)
            if not value:
                raise URLError(f"password_env names {name}, but {name} is not set in the "
                               "environment: export it (the password never goes in the URL)")
            self.password = value
        self.conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
        # Shown in reasons and logs: user@host:port/db only (no password, no parameters).
        self.display = redact(urlunsplit(parts._replace(query="", fragment="")))

    def connect_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``psycopg.connect(self.conninfo, **kwargs)``."""
        return {"password": self.password} if self.password else {}

    def __repr__(self) -> str:
        return f"PGTarget({self.display!r})"


def quote_ident(name: str) -> str:
    """A checked identifier, double-quoted (names come from :class:`PGTarget` only)."""
    return '"' + _ident(name, "name") + '"'
