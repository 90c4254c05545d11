"""HTTP clients for the load tester: one request in, one (status, error kind, completion time) out.

Two engines share one callback interface:

* ``fast`` (default): HTTP/1.1 keep-alive connections on asyncio protocols, callbacks instead of a task
  per request, timeouts from one FIFO instead of a timer per request, request bytes built once. A load
  tester must outrun the server it measures; on one core this engine sends several times what a general
  purpose client does (see ``bench/loadgen.py``), so the client is rarely the bottleneck it measures.
* ``aiohttp``: the general-purpose client, for servers that need more of HTTP than the fast engine
  speaks (it handles Content-Length, chunked and read-until-close bodies, ``http`` and ``https``).

Both classify every failure into a small closed set of kinds (``http_<status>``, ``timeout``,
``connection``, ``protocol``, ``other``) and never drop one: a request that was submitted always
calls back exactly once.
"""

from __future__ import annotations

import asyncio
import json
import ssl as ssl_lib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol
from urllib.parse import urlsplit

from eks_inference import __version__
from eks_inference.artifacts.family_index import COLD_HEADER
from eks_inference.config import ConfigError

Callback = Callable[[int, "str | None", float], None]
"""``(status, error_kind, t_done)``: status 0 when no response; error None for a 2xx; loop-clock time."""

USER_AGENT = f"eks-inference-loadtest/{__version__}"
MAX_HEAD_BYTES = 64 * 1024
IDLE_S = 2.0
MAX_CONNECTING = 16
_COLD = COLD_HEADER.encode()
_COLD_NEEDLE = b"\r\n" + _COLD + b":"
"""Connections being opened at once. A burst (the loop woke late, a server stall ended) would otherwise
open one connection per queued request, and opening them costs more than the requests: the client
falls further behind and opens yet more. Queued requests keep their intended send time either way."""
"""Idle connections older than this are closed, not reused: servers close idle keep-alives (uvicorn
after 5 s) and reusing one at that moment would count a spurious connection error."""


class ErrorKind(str, Enum):
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    PROTOCOL = "protocol"
    OTHER = "other"


def http_error_kind(status: int) -> str | None:
    return None if 200 <= status < 300 else f"http_{status}"


def exception_kind(exc: BaseException) -> str:
    """Closed-set error kind for an exception raised while connecting, sending or receiving."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ErrorKind.TIMEOUT.value
    try:
        import aiohttp

        if isinstance(exc, aiohttp.ClientResponseError):
            return ErrorKind.PROTOCOL.value
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientConnectionError):
            return ErrorKind.CONNECTION.value
    except ImportError:  # pragma: no cover - aiohttp is a dependency of the loadtest extra
        pass
    if isinstance(exc, ConnectionError | OSError | ssl_lib.SSLError | EOFError):
        return ErrorKind.CONNECTION.value
    return ErrorKind.OTHER.value


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A model's endpoint base, e.g. ``http://127.0.0.1:8000/minilm`` (``/predict`` and ``/info`` below it)."""

    url: str
    scheme: str
    host: str
    port: int
    base_path: str

    @property
    def predict_url(self) -> str:
        return f"{self.url}/predict"

    @property
    def info_url(self) -> str:
        return f"{self.url}/info"

    @property
    def predict_path(self) -> str:
        return f"{self.base_path}/predict"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_endpoint(url: str) -> Endpoint:
    """Validate ``--url``; the message says what a good one looks like."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--url: {url!r} is not an http(s) URL of a model endpoint; "
            "give its base, e.g. http://127.0.0.1:8000/minilm (requests go to URL/predict)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--url: {url!r} has a query or fragment; give the endpoint base only")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"--url: {url!r} has an invalid port") from None
    base = parts.path.rstrip("/")
    if base.endswith("/predict"):
        base = base[: -len("/predict")]
    url_base = f"{parts.scheme}://{parts.netloc}{base}"
    return Endpoint(url=url_base, scheme=parts.scheme, host=parts.hostname, port=port, base_path=base)


def build_request(endpoint: Endpoint, body: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST {endpoint.predict_path} HTTP/1.1\r\n"
        f"Host: {endpoint.host_header}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


@dataclass(kw_only=True)
class ClientCounters:
    """How the client itself behaved; a report shows these so client-side limits are never mistaken
    for server latency."""

    connections_opened: int = 0
    connect_errors: int = 0
    max_open: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    waited_for_connection: int = 0
    """Requests submitted with ``counted`` (the measured ones) that had to wait for a free connection, each once
    however often it was queued: never more than the measured requests sent."""
    first_error: dict[str, str] | None = None

    def note_error(self, kind: str, detail: str) -> None:
        if self.first_error is None:
            self.first_error = {}
        self.first_error.setdefault(kind, detail[:300])

    def reset_step(self) -> None:
        self.max_in_flight = self.in_flight
        self.waited_for_connection = 0


class HttpClient(Protocol):
    counters: ClientCounters
    limit: int
    reply_cold: bool | None
    """Of the reply whose callback runs now: whether a family's replica loaded the member for it (its
    ``x-eks-inference-cold`` header); None when the target sent no such header."""

    def submit(self, index: int, callback: Callback, *, counted: bool = True) -> None: ...

    async def aclose(self) -> None: ...


class _Req:
    __slots__ = ("callback", "conn", "counted", "data", "deadline", "done", "waited")

    def __init__(self, data: bytes, callback: Callback, deadline: float, counted: bool = True) -> None:
        self.data = data
        self.callback = callback
        self.deadline = deadline
        self.conn: _Conn | None = None
        self.done = False
        self.counted = counted
        self.waited = False


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, client: FastHttpClient) -> None:
        self.client = client
        self.transport: Any = None
        self.req: _Req | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.head = b""
        self.status = 0
        self.remaining = -1  # body bytes still expected; -1: chunked or until close
        self.chunked = False
        self.close_after = False
        self.cbuf = bytearray()
        self.chunk_left = 0
        self.in_trailer = False
        self.cold: bool | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self, req: _Req) -> None:
        self.req = req
        req.conn = self
        self.transport.write(req.data)

    def data_received(self, data: bytes) -> None:
        if self.req is None:  # bytes nobody asked for: the connection is out of step
            self.transport.close()
            return
        if self.status == 0:
            buf = self.head + data if self.head else data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail(ErrorKind.PROTOCOL.value, "response head larger than 64 KiB")
                else:
                    self.head = buf
                return
            if not self._parse_head(buf[:end]):
                self._fail(ErrorKind.PROTOCOL.value, f"malformed response head: {buf[:80]!r}")
                return
            self.head = b""
            data = buf[end + 4 :]
        if self.remaining >= 0:
            n = len(data)
            if n < self.remaining:
                self.remaining -= n
                return
            self._complete(leftover=n > self.remaining)
        elif self.chunked:
            self.cbuf += data
            try:
                finished = self._feed_chunks()
            except ValueError:
                self._fail(ErrorKind.PROTOCOL.value, "malformed chunked body")
                return
            if finished:
                self._complete(leftover=bool(self.cbuf))
        # else: body runs until the server closes; connection_lost completes it

    def _parse_head(self, head: bytes) -> bool:
        if head[:7] != b"HTTP/1." or len(head) < 12:
            return False
        try:
            self.status = status = int(head[9:12])
        except ValueError:
            return False
        lower = head.lower()
        http10 = head[5:8] == b"1.0"
        cold = _header(lower, _COLD) if _COLD_NEEDLE in lower else None
        self.cold = None if cold is None else cold.strip() == b"1"
        if b"\r\nconnection:" in lower:
            conn = _header(lower, b"connection") or b""
            self.close_after = b"close" in conn or (http10 and b"keep-alive" not in conn)
        else:
            self.close_after = http10
        if status in (204, 304) or 100 <= status < 200:
            self.remaining = 0
            return True
        if b"\r\ntransfer-encoding:" in lower and b"chunked" in (_header(lower, b"transfer-encoding") or b""):
            self.chunked = True
            self.remaining = -1
            return True
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            end = lower.find(b"\r\n", i + 17)
            try:
                self.remaining = int(lower[i + 17 : end if end >= 0 else len(lower)])
            except ValueError:
                return False
        else:
            self.remaining = -1
            self.close_after = True
        return True

    def _feed_chunks(self) -> bool:
        buf = self.cbuf
        while True:
            if self.chunk_left:
                n = min(self.chunk_left, len(buf))
                del buf[:n]
                self.chunk_left -= n
                if self.chunk_left:
                    return False
            i = buf.find(b"\r\n")
            if i < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ValueError("chunk header too long")
                return False
            line = bytes(buf[:i])
            del buf[: i + 2]
            if self.in_trailer:
                if not line:
                    return True
                continue
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                self.in_trailer = True
            else:
                self.chunk_left = size + 2

    def _complete(self, *, leftover: bool) -> None:
        t = self.client.loop.time()
        req = self.req
        assert req is not None
        status = self.status
        cold = self.cold
        reusable = not self.close_after and not leftover
        self.req = None
        self._reset()
        req.done = True
        self.client._finished(self, reusable)
        self.client.reply_cold = cold
        kind = http_error_kind(status)
        if kind is not None:
            self.client.counters.note_error(kind, f"HTTP {status} from {self.client.endpoint.predict_url}")
        req.callback(status, kind, t)

    def _fail(self, kind: str, detail: str) -> None:
        req = self.req
        self.req = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        if req is not None and not req.done:
            self.client._fail(req, kind, detail)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        req = self.req
        if req is not None and not req.done:
            if self.status and self.remaining < 0 and not self.chunked:
                self._complete(leftover=False)  # body delimited by close: complete now
            else:
                self.req = None
                detail = f"server closed the connection ({exc or 'EOF'})"
                self.client._fail(req, ErrorKind.CONNECTION.value, detail)
        self.client._lost(self)


def _header(lower_head: bytes, name: bytes) -> bytes | None:
    i = lower_head.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    start = i + len(name) + 3
    end = lower_head.find(b"\r\n", start)
    return lower_head[start : end if end >= 0 else len(lower_head)].strip()


class FastHttpClient:
    """Keep-alive pool of at most ``limit`` connections; requests beyond it wait in FIFO order.

    A request that waits for a connection keeps its original submit time, so an open-loop latency
    still counts the wait (the client's limit shows up in ``counters.waited_for_connection``).
    """

    def __init__(
        self, endpoint: Endpoint, bodies: Sequence[bytes], *, limit: int, timeout_s: float, idle_s: float = IDLE_S,
        headers: Sequence[Mapping[str, str] | None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.loop = asyncio.get_running_loop()
        self.limit = limit
        self.timeout_s = timeout_s
        self.idle_s = idle_s
        self.counters = ClientCounters()
        self.reply_cold: bool | None = None
        self._wire = [build_request(endpoint, b, h) for b, h in zip(bodies, headers or [None] * len(bodies),
                                                                    strict=True)]
        self._idle: list[_Conn] = []
        self._pending: deque[_Req] = deque()
        self._deadlines: deque[_Req] = deque()
        self._open = 0
        self._connecting = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ssl: ssl_lib.SSLContext | None = (
            ssl_lib.create_default_context() if endpoint.scheme == "https" else None
        )
        self._closed = False

    def submit(self, index: int, callback: Callback, *, counted: bool = True) -> None:
        """Send request ``index``; ``counted`` False keeps it out of ``waited_for_connection`` (warm-up)."""
        now = self.loop.time()
        req = _Req(self._wire[index], callback, now + self.timeout_s, counted)
        c = self.counters
        c.in_flight += 1
        if c.in_flight > c.max_in_flight:
            c.max_in_flight = c.in_flight
        self._deadlines.append(req)
        if self._sweeper is None:
            self._arm_sweeper()
        self._dispatch(req)

    def _dispatch(self, req: _Req) -> None:
        conn = self._take_idle()
        if conn is not None:
            conn.send(req)
        elif self._connecting < MAX_CONNECTING and self._open + self._connecting < self.limit:
            self._connecting += 1
            task = self.loop.create_task(self._connect(req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            # A queued request can come back here from _kick (its connection went away first): count it once.
            if req.counted and not req.waited:
                self.counters.waited_for_connection += 1
            req.waited = True
            self._pending.append(req)

    def _take_idle(self) -> _Conn | None:
        idle = self._idle
        if not idle:
            return None
        stale_before = self.loop.time() - self.idle_s
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if conn.idle_since < stale_before:  # the server may be closing it right now: do not race it
                conn.closed = True
                conn.transport.close()
                continue
            return conn
        return None

    async def _connect(self, req: _Req) -> None:
        ep = self.endpoint
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Conn(self), ep.host, ep.port, ssl=self._ssl,
                server_hostname=ep.host if self._ssl else None,
            )
        except Exception as e:  # every failure is classified and reported through the callback
            self._connecting -= 1
            self.counters.connect_errors += 1
            if not req.done:
                self._fail(req, exception_kind(e), f"connect to {ep.host}:{ep.port}: {type(e).__name__}: {e}")
            self._kick()
            return
        self._connecting -= 1
        self._open += 1
        c = self.counters
        c.connections_opened += 1
        c.max_open = max(c.max_open, self._open)
        if self._closed:
            conn.transport.close()
            return
        if req.done:
            self._release(conn)
        else:
            conn.send(req)
        self._kick()

    def _release(self, conn: _Conn) -> None:
        pending = self._pending
        while pending:
            req = pending.popleft()
            if not req.done:
                conn.send(req)
                return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)

    def _finished(self, conn: _Conn, reusable: bool) -> None:
        self.counters.in_flight -= 1
        if reusable and not self._closed:
            self._release(conn)
        else:
            conn.closed = True
            conn.transport.close()

    def _fail(self, req: _Req, kind: str, detail: str) -> None:
        req.done = True
        req.conn = None
        self.counters.in_flight -= 1
        self.counters.note_error(kind, detail)
        req.callback(0, kind, self.loop.time())

    def _lost(self, conn: _Conn) -> None:
        self._open -= 1
        self._kick()

    def _kick(self) -> None:
        while self._pending and not self._closed:
            if not self._idle and (self._open + self._connecting >= self.limit
                                   or self._connecting >= MAX_CONNECTING):
                return
            req = self._pending.popleft()
            if not req.done:
                self._dispatch(req)

    def _arm_sweeper(self) -> None:
        self._sweeper = self.loop.call_later(min(0.05, self.timeout_s / 4), self._sweep)

    def _sweep(self) -> None:
        """Time out overdue requests; all share one timeout, so submit order is deadline order."""
        now = self.loop.time()
        dl = self._deadlines
        while dl and (dl[0].done or dl[0].deadline <= now):
            req = dl.popleft()
            if req.done:
                continue
            conn = req.conn
            if conn is not None:
                conn.req = None
                conn.closed = True
                conn.transport.abort()
            self._fail(req, ErrorKind.TIMEOUT.value, f"no complete response within {self.timeout_s:g} s")
        self._sweeper = None
        if dl and not self._closed:
            self._arm_sweeper()

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in self._idle:
            if not conn.closed:
                conn.transport.close()
        self._idle.clear()
        await asyncio.sleep(0)


class AiohttpClient:
    """The same interface on aiohttp: one task per request, aiohttp's pool and timeouts."""

    def __init__(self, endpoint: Endpoint, bodies: Sequence[bytes], *, limit: int, timeout_s: float,
                 headers: Sequence[Mapping[str, str] | None] | None = None) -> None:
        import aiohttp

        self.reply_cold: bool | None = None
        self._headers = list(headers) if headers is not None else [None] * len(bodies)
        self.endpoint = endpoint
        self.loop = asyncio.get_running_loop()
        self.counters = ClientCounters()
        self._bodies = list(bodies)
        self._connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=IDLE_S)
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json", "Accept": "application/json"},
        )
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        """Set between steps (nothing in flight): the semaphore is rebuilt at the new size."""
        self._limit = value
        self._sem = asyncio.Semaphore(value)

    def submit(self, index: int, callback: Callback, *, counted: bool = True) -> None:
        c = self.counters
        c.in_flight += 1
        c.max_in_flight = max(c.max_in_flight, c.in_flight)
        task = self.loop.create_task(self._one(index, callback, counted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _one(self, index: int, callback: Callback, counted: bool = True) -> None:
        status, kind, cold = 0, None, None
        if counted and self._sem.locked():
            self.counters.waited_for_connection += 1
        try:
            async with self._sem, self._session.post(self.endpoint.predict_url, data=self._bodies[index],
                                                     headers=self._headers[index]) as r:
                await r.read()
                status = r.status
                cold = r.headers.get(COLD_HEADER)
                kind = http_error_kind(status)
                if kind is not None:
                    self.counters.note_error(kind, f"HTTP {status} from {self.endpoint.predict_url}")
        except asyncio.CancelledError:
            self.counters.in_flight -= 1
            raise
        except Exception as e:  # every failure is classified and reported through the callback
            kind = exception_kind(e)
            self.counters.note_error(kind, f"{type(e).__name__}: {e}")
        self.counters.in_flight -= 1
        self.reply_cold = None if cold is None else cold.strip() == "1"
        callback(status, kind, self.loop.time())

    async def aclose(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await self._session.close()


class Engine(str, Enum):
    FAST = "fast"
    AIOHTTP = "aiohttp"


def open_client(
    engine: Engine, endpoint: Endpoint, bodies: Sequence[bytes], *, limit: int, timeout_s: float,
    headers: Sequence[Mapping[str, str] | None] | None = None,
) -> HttpClient:
    """A client on the running loop (call from inside a coroutine); ``headers`` (default none) adds request headers
    per body (a family's model id)."""
    if engine is Engine.AIOHTTP:
        return AiohttpClient(endpoint, bodies, limit=limit, timeout_s=timeout_s, headers=headers)
    return FastHttpClient(endpoint, bodies, limit=limit, timeout_s=timeout_s, headers=headers)


async def fetch_info(endpoint: Endpoint, *, timeout_s: float = 5.0) -> tuple[dict[str, Any] | None, str | None]:
    """``GET {url}/info`` for provenance: (document, None) or (None, why it is missing)."""
    import aiohttp

    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s,
            s.get(endpoint.info_url, headers={"User-Agent": USER_AGENT}) as r,
        ):
            text = await r.text()
            if r.status != 200:
                return None, f"GET {endpoint.info_url} answered HTTP {r.status}"
    except Exception as e:  # provenance is best effort; the reason is recorded instead
        return None, f"GET {endpoint.info_url} failed: {type(e).__name__}: {e}"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return None, f"GET {endpoint.info_url} did not answer JSON"
    return (doc if isinstance(doc, dict) else {"value": doc}), None
