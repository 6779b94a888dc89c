"""A local HTTP server on 127.0.0.1 that speaks an exchange's REST from recorded JSON.

Only the HTTP layer is replaced: the real ccxt exchange class signs, sends (aiohttp, real sockets),
parses and maps errors exactly as it would against the exchange. ``StubExchangeServer.attach``
rewrites the exchange's API URLs from ``https://host/...`` to ``http://127.0.0.1:PORT/host/...``,
so every recorded request still says which host it was meant for (``api.binance.com``,
``demo-fapi.binance.com``…).

Routes are matched newest first on method, path and (optionally) a subset of the query/body;
a request that matches nothing gets a 500 and is kept in ``unmatched`` for the test to fail on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "ccxt"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Request:
    method: str
    host: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]

    @property
    def params(self) -> dict[str, Any]:
        """Query and body merged (binance signs both into the query string or form body)."""
        merged: dict[str, Any] = dict(self.query)
        if isinstance(self.body, dict):
            merged.update(self.body)
        return merged


@dataclass
class Route:
    method: str
    path: str
    response: Any
    status: int = 200
    match: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    times: int | None = None  # None: forever
    hits: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, request: Request) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if request.method != self.method or request.path != self.path:
            return False
        params = request.params
        return all(str(params.get(k)) == str(v) for k, v in self.match.items())


class StubExchangeServer:
    def __init__(self) -> None:
        self.routes: list[Route] = []
        self.requests: list[Request] = []
        self.unmatched: list[Request] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.port = 0

    # -- routes ----------------------------------------------------------------------------------

    def on(self, method: str, path: str, response: Any, *, status: int = 200,
           match: dict[str, Any] | None = None, delay: float = 0.0, times: int | None = None,
           headers: dict[str, str] | None = None) -> Route:
        route = Route(method.upper(), path, response, status, match or {}, delay, times,
                      headers=dict(headers or {}))
        self.routes.insert(0, route)
        return route

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        return [
            r for r in self.requests
            if (method is None or r.method == method.upper()) and (path is None or r.path == path)
        ]

    # -- server ----------------------------------------------------------------------------------

    async def _handle(self, http: web.Request) -> web.StreamResponse:
        raw_path = http.path.lstrip("/")
        host, _, rest = raw_path.partition("/")
        text = await http.text()
        body: Any = None
        if text:
            try:
                body = json.loads(text)
            except ValueError:
                body = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
        request = Request(
            method=http.method, host=host, path="/" + rest, query=dict(http.query),
            body=body, headers=dict(http.headers),
        )
        self.requests.append(request)
        for route in self.routes:
            if route.matches(request):
                route.hits += 1
                if route.delay:
                    try:
                        await asyncio.wait_for(self._stopping.wait(), route.delay)
                    except asyncio.TimeoutError:
                        pass
                payload = route.response(request) if callable(route.response) else route.response
                status = route.status
                if isinstance(payload, tuple):  # a handler's (status, payload)
                    status, payload = payload
                return web.Response(
                    status=status,
                    text=payload if isinstance(payload, str) else json.dumps(payload),
                    content_type="application/json",
                    headers=route.headers,
                )
        self.unmatched.append(request)
        return web.Response(status=500, text='{"stub": "no route"}', content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- exchange --------------------------------------------------------------------------------

    def _rewrite(self, value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("https://", f"http://127.0.0.1:{self.port}/", 1)
        if isinstance(value, dict):
            return {k: self._rewrite(v) for k, v in value.items()}
        return value

    def attach(self, exchange: Any) -> Any:
        """Point ``exchange`` here; fast rate limiter and close for tests (limiter still on)."""
        exchange.urls["api"] = self._rewrite(exchange.urls["api"])
        exchange.rateLimit = 1
        exchange.tokenBucket = None
        exchange.init_rest_rate_limiter()
        exchange.timeout_on_exit = 0
        return exchange


# -- venues on the stub -----------------------------------------------------------------------------

#: Fake keys, long enough for the secret scan to be meaningful.
ENV = {
    "QT_ESS_API_KEY": "stubKEY-4f1d9a7c2e8b6d30",
    "QT_ESS_API_SECRET": "stubSECRET-9b7e5c3a1f2d4e6a8c0b",
    "QT_ESS_API_PASSWORD": "stubPASS-71c3e9",
}

#: Kraken Futures signs with a base64 secret.
ENV_BASE64 = {**ENV, "QT_ESS_API_SECRET": "c3R1YlNFQ1JFVC05YjdlNWMzYTFmMmQ0ZTZhOGMwYg=="}

SYMBOLS = {
    "binanceusdm": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
    "bybit": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
    "okx": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
    "krakenfutures": ["BTC/USD:USD", "ETH/USD:USD"],
    "gate": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
}


def serve_markets(server: StubExchangeServer, exchange_id: str, market_type: str = "swap") -> None:
    """The recorded markets endpoint(s) ``load_markets`` calls for the configured market type."""
    if market_type == "spot":
        if exchange_id == "okx":
            server.on("GET", "/api/v5/public/instruments", fixture("okx_instruments_spot.json"))
        elif exchange_id == "bybit":
            server.on("GET", "/v5/market/instruments-info", fixture("bybit_instruments_spot.json"))
            server.on("GET", "/v5/user/query-api", {
                "retCode": 0, "retMsg": "", "result": {"unified": 0, "uta": 1, "readOnly": 0}})
            server.on("GET", "/v5/account/info", {"retCode": 0, "retMsg": "OK", "result": {
                "unifiedMarginStatus": 6, "marginMode": "REGULAR_MARGIN"}})
        else:
            raise ValueError(f"no spot fixture for {exchange_id}")
        return
    if exchange_id == "binanceusdm":
        server.on("GET", "/fapi/v1/exchangeInfo", fixture("binanceusdm_exchangeInfo.json"))
        server.on("GET", "/fapi/v1/time", lambda r: {"serverTime": int(time.time() * 1000)})
    elif exchange_id == "bybit":
        empty = {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": []}}
        server.on("GET", "/v5/market/instruments-info", fixture("bybit_instruments_linear.json"))
        server.on("GET", "/v5/market/instruments-info", empty, match={"status": "PreLaunch"})
        server.on("GET", "/v5/market/instruments-info",
                  {**empty, "result": {"category": "inverse", "list": []}}, match={"category": "inverse"})
        # account type, asked once before the first private call
        server.on("GET", "/v5/user/query-api", {
            "retCode": 0, "retMsg": "", "result": {"unified": 0, "uta": 1, "readOnly": 0},
        })
        server.on("GET", "/v5/account/info", {
            "retCode": 0, "retMsg": "OK", "result": {"unifiedMarginStatus": 6, "marginMode": "REGULAR_MARGIN"},
        })
    elif exchange_id == "okx":
        server.on("GET", "/api/v5/public/instruments", fixture("okx_instruments_swap.json"))
    elif exchange_id == "krakenfutures":
        server.on("GET", "/derivatives/api/v3/instruments", fixture("krakenfutures_instruments.json"))
    elif exchange_id == "gate":
        for settle in ("usdt", "btc"):
            server.on("GET", f"/api/v4/futures/{settle}/contracts",
                      fixture("gate_contracts_usdt.json") if settle == "usdt" else [])
    else:
        raise ValueError(exchange_id)


def make_venue(server: StubExchangeServer, exchange_id: str, env: dict[str, str] | None = None,
               **config: Any) -> Any:
    """A CcxtVenue on the real ccxt class, pointed at ``server``; markets served from fixtures."""
    from ess_tui.venues.ccxt.config import CcxtVenueConfig, read_credentials
    from ess_tui.venues.ccxt.venue import CcxtVenue, build_exchange

    env = (ENV_BASE64 if exchange_id == "krakenfutures" else ENV) if env is None else env
    cfg = CcxtVenueConfig(exchange=exchange_id, symbols=config.pop("symbols", SYMBOLS[exchange_id]), **config)
    exchange = server.attach(build_exchange(cfg, read_credentials(cfg, env)))
    serve_markets(server, exchange_id, cfg.market_type)
    return CcxtVenue(cfg, environ=env, exchange=exchange)


@contextlib.asynccontextmanager
async def running(*, strict: bool = True):
    """A started stub server; with ``strict``, a request no route matched fails the test."""
    srv = StubExchangeServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
    if strict:
        assert not srv.unmatched, [f"{r.method} {r.path}" for r in srv.unmatched]


# -- batched orders ---------------------------------------------------------------------------------

@dataclass
class Item:
    """One order of a batch, shaped like a :class:`Request` for the handlers tests already have."""

    params: dict[str, Any]
    body: Any = None
    path: str = ""


def binance_batch_items(request: Request) -> list[Item]:
    return [Item(dict(order)) for order in json.loads(request.params["batchOrders"])]


def serve_binance_orders(server: StubExchangeServer, handler: Any, path: str = "/fapi/v1") -> None:
    """``handler(request)`` answers single orders and each order of a ``batchOrders`` call."""
    server.on("POST", f"{path}/order", handler)
    server.on("POST", f"{path}/batchOrders", lambda r: [handler(i) for i in binance_batch_items(r)])


def binance_orders_sent(server: StubExchangeServer, path: str = "/fapi/v1") -> list[dict[str, Any]]:
    """Every order sent, single or batched, in the order they reached the stub."""
    out: list[dict[str, Any]] = []
    for request in server.requests:
        if request.method == "POST" and request.path == f"{path}/order":
            out.append(request.params)
        elif request.method == "POST" and request.path == f"{path}/batchOrders":
            out.extend(i.params for i in binance_batch_items(request))
    return out
