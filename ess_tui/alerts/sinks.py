"""Where alerts go: :class:`AppriseSink` (Slack, Teams, Telegram, e-mail, PagerDuty, ntfy, JSON
webhooks... through one kept library) and :class:`CommandSink` (a desk's own program, the event as
JSON on stdin).

An apprise URL carries tokens: it is read from the environment variable the sink names, held in
memory only, and cut out of every error text (:func:`redact`) before that text reaches the log, the
outbox or the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from ess_tui.alerts.messages import AlertMessage
from ess_tui.engine.state import clean_text
from ess_tui.engine.store import OutboxEvent
from ess_tui.store.outbox import LEVELS


class SinkError(Exception):
    """A delivery failed; the text is safe to show (no secret in it)."""


class Sink(Protocol):
    name: str
    min_level: str
    timeout: float

    async def send(self, message: AlertMessage, event: OutboxEvent) -> None: ...


def levels_from(min_level: str) -> tuple[str, ...]:
    """The levels a sink with ``min_level`` takes."""
    return LEVELS[LEVELS.index(min_level):]


def secret_parts(url: str) -> list[str]:
    """The pieces of ``url`` that may be secret, longest first (the whole URL, user, password,
    host path segments, query values)."""
    parts = {url}
    try:
        split = urlsplit(url)
        parts.update({split.netloc, split.username or "", split.password or "", split.path})
        parts.update(unquote(p) for p in split.path.split("/"))
        parts.update(p for p in re.split(r"[/@:]", split.netloc))
        parts.update(v for _, v in parse_qsl(split.query))
        parts.add(url.split("://", 1)[-1])
    except ValueError:
        pass
    return sorted((p for p in parts if p and len(p) >= 4 and p not in {"127.0.0.1", "localhost"}),
                  key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


_APPRISE_TYPE = {"info": "info", "warning": "warning", "critical": "failure"}


class AppriseSink:
    """One apprise URL, read from ``$url_env`` when the sink is built."""

    def __init__(self, name: str, url_env: str, *, min_level: str = "warning", timeout: float = 10.0,
                 environ: dict[str, str] | None = None) -> None:
        self.name = name
        self.url_env = url_env
        self.min_level = min_level
        self.timeout = timeout
        url = (environ if environ is not None else os.environ).get(url_env, "").strip()
        self._url = url
        self._secrets = secret_parts(url) if url else []
        self._apprise: Any = None

    @property
    def target(self) -> str:
        scheme = self._url.split("://", 1)[0] if "://" in self._url else "?"
        return f"apprise {scheme}:// from ${self.url_env}"

    def prepare(self) -> None:
        """Import apprise and parse the URL now (blocking; the relay runs it on a thread), so the
        first alert does not pay for it. A bad URL is reported at the first delivery."""
        try:
            self._client()
        except SinkError:
            pass

    def _client(self) -> Any:
        if not self._url:
            raise SinkError(f"${self.url_env} is not set: put the sink's apprise URL in it")
        if self._apprise is None:
            import apprise  # lazily: never imported by the engine or the gate

            client = apprise.Apprise()
            if not client.add(self._url):
                raise SinkError(f"${self.url_env} does not hold an apprise URL apprise understands")
            self._apprise = client
        return self._apprise

    async def send(self, message: AlertMessage, event: OutboxEvent) -> None:
        client = self._client()
        logs: list[str] = []

        def keep(entry: Any, *_: Any) -> None:
            if getattr(entry, "level", "") in ("WARNING", "ERROR", "CRITICAL"):
                logs.append(str(getattr(entry, "message", entry)))

        body = message.body
        if message.dedup_key:
            body += f"\nDedup key: {message.dedup_key} ({message.action})"
        try:
            result = await client.async_notify(
                body=body, title=message.title, notify_type=_APPRISE_TYPE.get(message.level, "info"),
                timeout=self.timeout, log_callback=keep,
            )
        except Exception as exc:  # noqa: BLE001 - a library error is a failed delivery
            raise SinkError(self._safe(f"{type(exc).__name__}: {exc}")) from None
        if not result:
            status = getattr(getattr(result, "status", None), "name", "failed")
            why = "; ".join(logs[-2:]) or "no reason given"
            raise SinkError(self._safe(f"apprise {status.lower()}: {why}"))

    def _safe(self, text: str) -> str:
        return clean_text(redact(text, self._secrets), limit=300)


class CommandSink:
    """Runs ``command`` with the event as one JSON object on stdin; exit 0 means delivered."""

    def __init__(self, name: str, command: list[str], *, min_level: str = "warning",
                 timeout: float = 10.0) -> None:
        self.name = name
        self.command = list(command)
        self.min_level = min_level
        self.timeout = timeout

    @property
    def target(self) -> str:
        return f"command {self.command[0]}"

    @staticmethod
    async def _kill(proc: Any) -> None:
        """Kill the program and everything it forked: it runs in its own session, so its process
        group is its pid. Killing only the program would leave a forked child holding the
        pipes, and ``wait`` would wait for it (a runner SIGTERM could not stop, and orphans)."""
        if proc.returncode is None:
            proc.kill()
        if hasattr(os, "killpg"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def send(self, message: AlertMessage, event: OutboxEvent) -> None:
        data = (json.dumps(message.as_json(event), sort_keys=True, default=str) + "\n").encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:
            raise SinkError(f"cannot run {self.command[0]}: {exc.strerror or exc}") from None
        try:
            _, err = await asyncio.wait_for(proc.communicate(data), self.timeout)
        except asyncio.TimeoutError:
            await self._kill(proc)
            raise SinkError(f"{self.command[0]} took longer than {self.timeout:g}s (killed)") from None
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(proc))
            raise
        if proc.returncode != 0:
            tail = clean_text(err.decode("utf-8", "replace").strip()[-200:], limit=200)
            raise SinkError(f"{self.command[0]} exited {proc.returncode}" + (f": {tail}" if tail else ""))


def build_sinks(configs: Iterable[Any], environ: dict[str, str] | None = None) -> list[Any]:
    """Sinks from the ``[[alerts]]`` settings. Raises ``ValueError`` on a repeated name."""
    sinks: list[Any] = []
    for cfg in configs:
        if any(s.name == cfg.name for s in sinks):
            raise ValueError(f"alert sink name {cfg.name!r} is used twice in [[alerts]]")
        if cfg.command:
            sinks.append(CommandSink(cfg.name, cfg.command, min_level=cfg.min_level, timeout=cfg.timeout))
        else:
            sinks.append(AppriseSink(cfg.name, cfg.url_env, min_level=cfg.min_level,
                                     timeout=cfg.timeout, environ=environ))
    return sinks
