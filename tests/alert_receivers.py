"""Real alert receivers on 127.0.0.1 for the alert tests: an HTTP server that takes apprise's
``json://`` posts, an SMTP server (aiosmtpd) that takes ``mailto://`` mail, and a command sink
script that appends its stdin to a file. Each is started and stopped by the test that uses it."""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class WebhookReceiver:
    """Collects JSON bodies posted to it. ``status`` is the answer (500 = refuse); ``hang``
    makes it hold every request for that many seconds."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.arrived = 0  # requests that reached the server (answered or not yet)
        self.status = 200
        self.hang = 0.0
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                outer.arrived += 1
                if outer.hang:
                    time.sleep(outer.hang)
                status = outer.status
                if status == 200:
                    with outer.cond:
                        try:
                            outer.received.append(json.loads(raw))
                        except ValueError:
                            outer.received.append({"raw": raw.decode("utf-8", "replace")})
                        outer.times.append(time.perf_counter())
                        outer.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"webhook got {len(self.received)} of {count}: {self.received}")
                self.cond.wait(left)
            return list(self.received)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpReceiver:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        self.event = threading.Event()
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                outer.messages.append(envelope)
                outer.event.set()
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> "SmtpReceiver":
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def url(self) -> str:
        return (f"mailto://127.0.0.1:{self.port}?from=ess@desk.example&to=ops@desk.example"
                "&mode=insecure")

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"SMTP got {len(self.messages)} of {count}")
            time.sleep(0.05)
        return list(self.messages)


def command_sink(path: Path) -> list[str]:
    """A command that appends its stdin (one JSON line) to ``path``."""
    script = ("import sys; data = sys.stdin.read(); "
              f"open({str(path)!r}, 'a', encoding='utf-8').write(data)")
    return [sys.executable, "-c", script]


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
