"""Logging for the CLI, the headless runner and the control room, with secrets scrubbed.

Any value of an environment variable whose name looks like a secret (``*KEY*``, ``*SECRET*``,
``*PASSWORD*``, ``*TOKEN*``, ``*PASSPHRASE*``) is replaced by ``***`` in every log line, whatever
logged it (ccxt included).
"""

from __future__ import annotations

import logging
import os
import re
from logging.handlers import RotatingFileHandler
from pathlib import Path

_SECRET_NAME = re.compile(r"(KEY|SECRET|PASSWORD|PASSPHRASE|TOKEN)", re.IGNORECASE)


def secret_values() -> list[str]:
    """Values of secret-looking environment variables (long enough to be worth hiding)."""
    return sorted(
        {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6},
        key=len, reverse=True,
    )


def scrub(text: str, secrets: list[str] | None = None) -> str:
    for value in secrets if secrets is not None else secret_values():
        if value in text:
            text = text.replace(value, "***")
    return text


class ScrubSecrets(logging.Filter):
    """Replaces secret values in the formatted message (args included)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = secret_values()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = scrub(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and record.exc_info[1] is not None:
                text = logging.Formatter().formatException(record.exc_info)
                record.exc_text = scrub(text, self.secrets)
        return True


class SafeFormatter(logging.Formatter):
    """Formats as usual, then neutralises control and format characters (escape sequences, bidi
    overrides) that a venue's or an operator's text could carry to a terminal or a log viewer.
    Newlines stay (tracebacks); everything else in Unicode's C* categories becomes ``?``."""

    def format(self, record: logging.LogRecord) -> str:
        return safe_log_text(super().format(record))


def safe_log_text(text: str) -> str:
    if text.isascii() and (text.isprintable() or set(text) <= _PRINTABLE_OR_NEWLINE):
        return text
    import unicodedata

    return "".join(
        ch if ch == "\n" or not unicodedata.category(ch).startswith(("C", "Zl", "Zp")) else "?"
        for ch in text
    )


_PRINTABLE_OR_NEWLINE = {chr(c) for c in range(32, 127)} | {"\n"}


def setup_logging(path: Path | None, *, verbose: bool = False, to_stderr: bool = True) -> None:
    """Log to ``path`` (rotating, owner-only) and optionally to stderr."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    fmt = SafeFormatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s")
    scrubber = ScrubSecrets()
    handlers: list[logging.Handler] = []
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
                os.close(fd)
            handlers.append(RotatingFileHandler(path, maxBytes=10_000_000, backupCount=5))
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot log to %s: %s", path, exc.strerror)
    if to_stderr:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(scrubber)
        root.addHandler(handler)
    logging.getLogger("ccxt").setLevel(logging.WARNING)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
