"""A trivial predict endpoint on raw asyncio, to calibrate the load tester itself.

A load tester is only trustworthy once its own ceiling and its latency accounting are known. This
server costs a few microseconds per request (no framework), so a benchmark against it measures the
client, not the server; its optional periodic stall makes coordinated omission visible on purpose.

    python -m eks_inference.loadgen.stub_server --port 8000 [--stall-every 2 --stall-for 0.5]
    python -m eks_inference.loadgen.stub_server --forward 0.005    # one forward at a time, 5 ms each: 200 req/s

It speaks just enough HTTP/1.1 for keep-alive clients (Content-Length bodies, no chunked uploads):
``POST /<anything>/predict`` answers ``{"outputs": [...]}`` with one entry per input, ``GET
/<anything>/info`` answers a small JSON document, ``GET /<anything>/healthz`` answers 200 once ready (503
with a JSON reason before ``--ready-after`` seconds, like a replica still fetching its weights), ``GET
/_stats`` counts what arrived, anything else is a 404. It prints
``LISTENING <port>`` on stdout once bound, so a parent process can start it on port 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class StubBehaviour:
    """How the stub misbehaves, all off by default.

    :param delay_s: fixed service time added to every predict, default 0. Requests wait in parallel: a latency,
        not a capacity.
    :param forward_s: time of one "forward", run one at a time server-wide like a model on one device: the
        server's capacity is exactly ``1 / forward_s`` req/s. Each forward ends ``forward_s`` after the previous
        one ended or after its request arrived, whichever is later, on an ideal clock, so timer slack and a
        busy host delay replies without lowering that capacity. Default 0 (off).
    :param stall_every_s: period of a server-wide stall (a "GC pause"); 0 disables. Default 0.
    :param stall_for_s: length of each stall; requests that arrive during it are held until it ends.
    :param fail_every: answer every N-th predict with HTTP 500; 0 disables. Default 0.
    :param info: answer ``/info``; when False it is a 404, like a server without provenance. Default True.
    :param validate: parse the JSON body and answer one output per input (a 400 when it is not JSON);
        False answers a canned body, so a benchmark measures the client. Default True.
    :param response_style: how 200 bodies are delimited: ``length`` (Content-Length, default), ``chunked``
        or ``close`` (no length; the connection closes), to exercise every HTTP/1.1 framing a client meets.
    :param model: serve only ``/{model}/predict`` and ``/{model}/info`` (others 404), like a real server
        with one application; None accepts any prefix. Default None.
    :param record_arrivals: keep each predict's arrival time for ``GET /_stats``, so a test can check the
        rate the server actually saw. Default False.
    :param cpu_s: CPU seconds each predict burns before answering, one at a time on the event loop: a server
        with a capacity of ``1 / cpu_s`` requests/s, a knee, and a machine it shares with whatever else runs
        (a benchmark of the measurement itself needs all three). Default 0.
    :param ready_after_s: for this long after start, ``/healthz`` and predicts answer 503 with a JSON body
        naming what the server waits for. Default 0 (ready at once).
    """

    delay_s: float = 0.0
    forward_s: float = 0.0
    stall_every_s: float = 0.0
    stall_for_s: float = 0.0
    fail_every: int = 0
    info: bool = True
    validate: bool = True
    response_style: str = "length"
    record_arrivals: bool = False
    model: str | None = None
    ready_after_s: float = 0.0
    cpu_s: float = 0.0


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
            503: "Service Unavailable"}
NOT_READY = {"status": "loading", "waiting_for": "model weights s3://models/stub/v1/model.safetensors"}


def _response(status: int, body: bytes, keep_alive: bool, style: str = "length") -> tuple[bytes, bool]:
    """The response bytes, and whether the connection must close after them."""
    reason = _REASONS.get(status, "Status")
    if style == "chunked":
        half = len(body) // 2
        chunks = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (body[:half], body[half:]) if c)
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Transfer-Encoding: chunked\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        return head.encode("ascii") + chunks + b"0\r\n\r\n", not keep_alive
    if style == "close":
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
        return head.encode("ascii") + body, True
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("ascii") + body, not keep_alive


class _StubProtocol(asyncio.Protocol):
    """One connection; requests are answered in order, so pipelined requests stay correct."""

    def __init__(self, server: StubServer) -> None:
        self._server = server
        self._buf = bytearray()
        self._transport: Any = None
        self._queue: asyncio.Queue[tuple[str, str, bytes, bool]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._worker is not None:
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, path, version = lines[0].split(" ", 2)
            except ValueError:
                self._write(*_response(400, b'{"error":"bad request line"}', False))
                return
            length = 0
            keep_alive = version == "HTTP/1.1"
            for line in lines[1:]:
                name, _, value = line.partition(":")
                lname = name.strip().lower()
                if lname == "content-length":
                    length = int(value.strip() or 0)
                elif lname == "connection":
                    keep_alive = value.strip().lower() != "close"
            if len(self._buf) < end + 4 + length:
                return
            body = bytes(self._buf[end + 4 : end + 4 + length])
            del self._buf[: end + 4 + length]
            if self._server.needs_wait():
                self._queue.put_nowait((method, path, body, keep_alive))
                if self._worker is None or self._worker.done():
                    self._worker = asyncio.ensure_future(self._drain())
            elif self._worker is not None and not self._worker.done():
                self._queue.put_nowait((method, path, body, keep_alive))
            else:
                status, payload = self._server.handle(method, path, body)
                self._write(*self._server.respond(status, payload, keep_alive))

    async def _drain(self) -> None:
        while not self._queue.empty():
            method, path, body, keep_alive = self._queue.get_nowait()
            await self._server.wait()
            status, payload = self._server.handle(method, path, body)
            self._write(*self._server.respond(status, payload, keep_alive))

    def _write(self, data: bytes, close: bool) -> None:
        if self._transport is None:
            return
        self._transport.write(data)
        if close:
            self._transport.close()


class StubServer:
    """The shared state of all connections: request counter and the stall clock."""

    def __init__(self, behaviour: StubBehaviour) -> None:
        self.behaviour = behaviour
        self.t0 = time.monotonic()
        self.predicts = 0
        self.arrivals: list[float] = []
        self.busy_until = 0.0

    def needs_wait(self) -> bool:
        b = self.behaviour
        return b.delay_s > 0 or b.forward_s > 0 or self._stall_left() > 0

    def _stall_left(self) -> float:
        b = self.behaviour
        if b.stall_every_s <= 0 or b.stall_for_s <= 0:
            return 0.0
        phase = (time.monotonic() - self.t0) % b.stall_every_s
        return max(0.0, b.stall_for_s - phase)

    async def wait(self) -> None:
        left = self._stall_left()
        if left > 0:
            await asyncio.sleep(left)
        if self.behaviour.delay_s > 0:
            await asyncio.sleep(self.behaviour.delay_s)
        if self.behaviour.forward_s > 0:
            now = time.monotonic()
            self.busy_until = max(now, self.busy_until) + self.behaviour.forward_s
            await asyncio.sleep(self.busy_until - now)

    def respond(self, status: int, payload: bytes, keep_alive: bool) -> tuple[bytes, bool]:
        style = self.behaviour.response_style if status == 200 else "length"
        return _response(status, payload, keep_alive, style)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        path = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path == "/_stats":
            return 200, json.dumps({"predicts": self.predicts, "arrivals": self.arrivals}).encode()
        model = self.behaviour.model
        if model is not None and not path.startswith(f"/{model}/"):
            return 404, b'{"error":"no such model"}'
        not_ready = time.monotonic() - self.t0 < self.behaviour.ready_after_s
        if method == "GET" and path.endswith("/healthz"):
            if not_ready:
                return 503, json.dumps(NOT_READY).encode()
            return 200, b'{"status":"ok","model":"stub"}'
        if method == "POST" and path.endswith("/predict"):
            if not_ready:
                return 503, json.dumps({"error": {"code": "not_ready", "message": "model is loading"}}).encode()
            self.predicts += 1
            if self.behaviour.record_arrivals:
                self.arrivals.append(time.time())
            if self.behaviour.cpu_s > 0:
                busy_until = time.process_time() + self.behaviour.cpu_s
                while time.process_time() < busy_until:
                    pass
            if self.behaviour.fail_every and self.predicts % self.behaviour.fail_every == 0:
                return 500, b'{"error":"injected failure"}'
            if not self.behaviour.validate:
                return 200, b'{"outputs":[[0.0]]}'
            try:
                n = len(json.loads(body).get("inputs", [])) if body else 0
            except (ValueError, AttributeError):
                return 400, b'{"error":"body is not a JSON object with inputs"}'
            return 200, json.dumps({"outputs": [[0.0]] * n}).encode()
        if method == "GET" and path.endswith("/info") and self.behaviour.info:
            return 200, json.dumps({"model": "stub", "processor": "cpu", "server": "stub_server",
                                    "pid": os.getpid()}).encode()
        return 404, b'{"error":"not found"}'


async def serve(host: str, port: int, behaviour: StubBehaviour) -> None:
    """Serve until SIGTERM/SIGINT; prints ``LISTENING <port>`` once bound."""
    state = StubServer(behaviour)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _StubProtocol(state), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"LISTENING {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port, 0 picks a free one (default 0)")
    p.add_argument("--delay", type=float, default=0.0, help="service time per predict in s (default 0)")
    p.add_argument("--forward", type=float, default=0.0,
                   help="serial forward time per predict in s: capacity 1/FORWARD req/s (default 0, off)")
    p.add_argument("--stall-every", type=float, default=0.0, help="stall period in s, 0 = never (default)")
    p.add_argument("--stall-for", type=float, default=0.0, help="stall length in s (default 0)")
    p.add_argument("--fail-every", type=int, default=0, help="answer every N-th predict with 500 (default 0)")
    p.add_argument("--no-info", action="store_true", help="answer /info with 404")
    p.add_argument("--no-validate", action="store_true", help="skip JSON parsing, answer a canned body")
    p.add_argument("--response-style", choices=["length", "chunked", "close"], default="length",
                   help="how 200 bodies are delimited (default length)")
    p.add_argument("--model", help="serve only this model's routes (default: any prefix)")
    p.add_argument("--record-arrivals", action="store_true", help="keep arrival times for GET /_stats")
    p.add_argument("--ready-after", type=float, default=0.0,
                   help="answer /healthz and predicts with 503 for this many seconds after start (default 0)")
    p.add_argument("--uvloop", action="store_true", help="use uvloop when it is installed")
    p.add_argument("--cpu", type=float, default=0.0,
                   help="CPU seconds per predict, served one at a time: capacity 1/CPU requests/s (default 0)")
    a = p.parse_args(argv)
    behaviour = StubBehaviour(delay_s=a.delay, forward_s=a.forward, stall_every_s=a.stall_every,
                              stall_for_s=a.stall_for,
                              fail_every=a.fail_every, info=not a.no_info, validate=not a.no_validate,
                              response_style=a.response_style, record_arrivals=a.record_arrivals,
                              model=a.model, ready_after_s=a.ready_after, cpu_s=a.cpu)
    if a.uvloop:
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            print("uvloop is not installed; using the standard event loop", file=sys.stderr)
    asyncio.run(serve(a.host, a.port, behaviour))
    return 0


if __name__ == "__main__":
    sys.exit(main())
