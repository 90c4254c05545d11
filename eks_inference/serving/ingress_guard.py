"""Read each request's whole body under a deadline before Ray Serve admits the request.

Serve 2.60 admits an HTTP request (one of the replica's ``max_ongoing_requests``, or a place in its queue) as soon
as the headers arrive, and the application reads the body afterwards (``ray/serve/_private/replica.py``,
``_direct_ingress_asgi``). A client that sends its headers and then a byte a second held a slot for as long as it
liked; a couple of hundred such uploads filled a replica, and everyone else got 503.

Every HTTP server Serve starts (each replica's own, behind HAProxy, and the fallback proxy) wraps its application in
the middlewares that ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` names (``ray/serve/_private/http_util.py``,
``configure_http_middlewares``); :data:`~eks_inference.serving.serve_config.RAY_CLUSTER_ENV` names
:func:`middlewares`. :class:`BodyDeadline` sits outside Serve's admission, so a request reaches Serve only with its
whole body in hand. A body that is not complete within the deadline gets a JSON 408 ``body_timeout``, one over
the size limit a JSON 413 ``body_too_large``; neither ever took a slot. Requests without a body pass straight through.

It also drops the ``x-request-timeout-seconds`` header, with which a client could lift Serve's ``request_timeout_s``
for its own request (``ray/serve/_private/http_util.py``, ``parse_request_timeout_header``).

The limits belong to the process: a replica sets its application's (:func:`set_limits`, from its ``args``) before
its HTTP server starts; elsewhere (the fallback proxy, the route index) the defaults apply.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from eks_inference.serving.api import ApiError, check_content_length
from eks_inference.serving.serve_config import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BODY_BYTES

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]

TIMEOUT_OVERRIDE_HEADER = b"x-request-timeout-seconds"


@dataclass(frozen=True)
class BodyLimits:
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


_limits = BodyLimits()


def set_limits(*, body_timeout_s: float, max_body_bytes: int) -> None:
    """This process's limits: the replica's own, set from its application ``args``."""
    global _limits
    _limits = BodyLimits(body_timeout_s=body_timeout_s, max_body_bytes=max_body_bytes)


def limits() -> BodyLimits:
    return _limits


def middlewares() -> list[Any]:
    """What Serve's HTTP servers wrap their application in (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)."""
    from starlette.middleware import Middleware

    return [Middleware(BodyDeadline)]


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        key = name.lower()
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _send_error(send: Send, error: ApiError) -> None:
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    # the rest of an unread body is never read: the connection cannot carry another request
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, max_body_bytes: int) -> bytes | None:
    """The whole body, or None when the client went away first; over ``max_body_bytes`` raises a 413."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            raise ApiError(413, "body_too_large", f"request body exceeds the limit of {max_body_bytes} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyDeadline:
    """ASGI middleware: the whole body within :attr:`BodyLimits.body_timeout_s`, before the wrapped application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != TIMEOUT_OVERRIDE_HEADER]
        scope = {**scope, "headers": headers}
        if not _has_body(headers):
            await self.app(scope, receive, send)
            return
        lim = _limits
        try:
            check_content_length(next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-length"),
                                      None), lim.max_body_bytes)
            async with asyncio.timeout(lim.body_timeout_s):
                body = await read_body(receive, lim.max_body_bytes)
        except ApiError as e:
            await _send_error(send, e)
            return
        except TimeoutError:
            await _send_error(send, ApiError(
                408, "body_timeout", f"the request body did not arrive within {lim.body_timeout_s:g} s; "
                                     "send the whole body at once"))
            return
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
