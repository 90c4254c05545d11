"""BodyDeadline: the whole body under a deadline, before the wrapped application (Serve's admission) sees the request.

Driven as Serve's HTTP server drives it: uvicorn calls the ASGI application with ``receive``/``send``
(``ray/serve/_private/http_util.py``, ``start_asgi_http_server`` wraps Serve's application in the middlewares).
A slow client is a ``receive`` that never completes; the deadline, not a sleep, ends each test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from eks_inference.serving import ingress_guard
from eks_inference.serving.ingress_guard import BodyDeadline, middlewares, set_limits


class Inner:
    """The wrapped application (Serve's admission and the replica): records what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        messages = [await receive()]
        self.calls.append((scope, messages))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def http_scope(*headers: tuple[bytes, bytes], method: str = "POST") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": "/m/predict", "headers": list(headers)}


async def call(scope: dict[str, Any], messages: list[dict[str, Any]], *, then_hang: bool = True,
               ) -> tuple[Inner, list[dict[str, Any]]]:
    inner, sent = Inner(), []
    queue = list(messages)
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if then_hang:
            await never.wait()  # a client that sent its headers and stopped
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    await BodyDeadline(inner)(scope, receive, send)
    return inner, sent


def answer(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    start, body = sent[0], sent[1]
    return start["status"], json.loads(body["body"]), dict(start["headers"])


@pytest.fixture(autouse=True)
def short_deadline() -> Iterator[None]:
    before = ingress_guard.limits()
    set_limits(body_timeout_s=0.3, max_body_bytes=2048)
    yield
    set_limits(body_timeout_s=before.body_timeout_s, max_body_bytes=before.max_body_bytes)


def test_a_whole_body_reaches_the_application_once_and_complete() -> None:
    scope = http_scope((b"content-length", b"10"))
    inner, sent = asyncio.run(call(scope, [
        {"type": "http.request", "body": b"hello", "more_body": True},
        {"type": "http.request", "body": b"world", "more_body": False}]))
    (_, got), = inner.calls
    assert got == [{"type": "http.request", "body": b"helloworld", "more_body": False}]
    assert sent[0]["status"] == 200


def test_a_body_that_drips_past_the_deadline_gets_a_json_408_and_never_reaches_admission() -> None:
    scope = http_scope((b"content-length", b"1000"))
    inner, sent = asyncio.run(call(scope, [{"type": "http.request", "body": b"{", "more_body": True}]))
    assert inner.calls == []
    status, body, headers = answer(sent)
    assert status == 408 and body["error"]["code"] == "body_timeout"
    assert "within 0.3 s" in body["error"]["message"]
    assert headers[b"content-type"] == b"application/json" and headers[b"connection"] == b"close"


def test_a_chunked_body_without_length_is_held_to_the_same_deadline() -> None:
    scope = http_scope((b"transfer-encoding", b"chunked"))
    inner, sent = asyncio.run(call(scope, []))
    assert inner.calls == [] and answer(sent)[0] == 408


def test_an_oversized_body_is_refused_before_admission_declared_or_streamed() -> None:
    declared = http_scope((b"content-length", b"4096"))
    inner, sent = asyncio.run(call(declared, []))
    assert inner.calls == [] and answer(sent)[:2] == (413, {"error": {
        "code": "body_too_large", "message": "request body is 4096 bytes; the limit is 2048"}})
    streamed = http_scope((b"transfer-encoding", b"chunked"))
    inner, sent = asyncio.run(call(streamed, [{"type": "http.request", "body": b"x" * 1500, "more_body": True},
                                              {"type": "http.request", "body": b"x" * 1500, "more_body": True}]))
    assert inner.calls == [] and answer(sent)[1]["error"]["code"] == "body_too_large"


def test_a_client_that_leaves_mid_body_reaches_nothing() -> None:
    scope = http_scope((b"content-length", b"100"))
    inner, sent = asyncio.run(call(scope, [{"type": "http.request", "body": b"{", "more_body": True}],
                                   then_hang=False))
    assert inner.calls == [] and sent == []


def test_requests_without_a_body_pass_straight_through() -> None:
    inner, _ = asyncio.run(call(http_scope(method="GET"), [], then_hang=False))
    assert len(inner.calls) == 1 and inner.calls[0][1] == [{"type": "http.disconnect"}]
    inner, _ = asyncio.run(call(http_scope((b"content-length", b"0")), [
        {"type": "http.request", "body": b"", "more_body": False}]))
    assert inner.calls[0][1] == [{"type": "http.request", "body": b"", "more_body": False}]


def test_a_client_cannot_lift_the_request_timeout_with_serves_header() -> None:
    scope = http_scope((b"X-Request-Timeout-Seconds", b"0"), (b"content-length", b"2"), (b"x-other", b"1"))
    inner, _ = asyncio.run(call(scope, [{"type": "http.request", "body": b"{}", "more_body": False}]))
    seen = inner.calls[0][0]["headers"]
    assert seen == [(b"content-length", b"2"), (b"x-other", b"1")]


def test_ray_accepts_the_callback_it_is_named_by() -> None:
    from ray.serve._private.http_util import validate_http_proxy_callback_return

    (mw,) = validate_http_proxy_callback_return(middlewares())
    assert mw.cls is BodyDeadline
