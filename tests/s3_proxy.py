"""An S3 endpoint on 127.0.0.1 that answers as S3 does on a bad day: a loopback proxy in front of the moto server.

moto answers every request as S3 answers a caller with every permission on a healthy day. Two of S3's other answers
matter to the model repository, and this proxy gives them, forwarding everything else to moto unchanged:

* **403 for a missing object.** S3 API Reference, GetObject / HeadObject, "Permissions": "If the object that you
  request doesn't exist, the error that Amazon S3 returns depends on whether you also have the s3:ListBucket
  permission. If you have the s3:ListBucket permission on the bucket, Amazon S3 returns an HTTP status code 404 (Not
  Found) error. If you don't have the s3:ListBucket permission, Amazon S3 returns an HTTP status code 403 ("access
  denied") error." ``missing_is_403(key)`` decides, per key, which answer a 404 from moto becomes (tests decide it
  with the synthesized role's policy, or pin either answer).
* **Passing server faults.** S3 answers ``503 SlowDown`` or ``500 InternalError`` and expects the caller to retry
  (S3 User Guide, "Best practices design patterns: optimizing Amazon S3 performance"; error codes in the S3 API
  Reference, "Error responses"). ``fail_writes(n)`` answers the next ``n`` object writes (PUT, and the POST that
  completes a multipart upload) with 503 SlowDown, without forwarding them.

Every request is recorded (method, path, status) so a test can say what reached S3: e.g. that no DELETE ever did.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_ERROR = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
          "<Key>{key}</Key><RequestId>proxy</RequestId></Error>")
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class S3Faults:
    """What the proxy does to the requests it forwards; changed by tests while it runs."""

    missing_is_403: Callable[[str], bool] = field(default=lambda key: False)
    denied: Callable[[str], bool] = field(default=lambda key: False)
    """Keys whose GET is refused outright (403), present or not: a caller without s3:GetObject on them."""
    writes_to_fail: int = 0
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_writes(self, n: int) -> None:
        with self.lock:
            self.writes_to_fail = n

    def _take_write_failure(self) -> bool:
        with self.lock:
            if self.writes_to_fail > 0:
                self.writes_to_fail -= 1
                return True
            return False

    def record(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.requests.append((method, path, status))

    def seen(self, method: str) -> list[tuple[str, str, int]]:
        with self.lock:
            return [r for r in self.requests if r[0] == method]


def _object_write(method: str, query: str) -> bool:
    if method == "PUT":
        return "partNumber=" not in query  # a part creates no object; PutObject and the lease/manifest writes do
    return method == "POST" and "uploadId=" in query  # CompleteMultipartUpload


@contextmanager
def s3_proxy(upstream: str) -> Iterator[tuple[str, S3Faults]]:
    """Serve ``(endpoint URL, faults)`` for the moto server at ``upstream`` until the block ends."""
    target = urlsplit(upstream)
    faults = S3Faults()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in _HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, key: str) -> None:
            body = _ERROR.format(code=code, message=message, key=key).encode()
            self._answer(status, [("Content-Type", "application/xml")], body)

        def _forward(self) -> None:
            body = self._body()
            path, _, query = self.path.partition("?")
            key = unquote(path.lstrip("/").partition("/")[2])
            if _object_write(self.command, query) and faults._take_write_failure():
                faults.record(self.command, self.path, 503)
                self._error(503, "SlowDown", "Please reduce your request rate.", key)
                return
            if key and self.command in ("GET", "HEAD") and not query.startswith("list-type") and faults.denied(key):
                faults.record(self.command, self.path, 403)
                self._error(403, "AccessDenied", "Access Denied", key)
                return
            conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                r = conn.getresponse()
                data = r.read()
                status, resp_headers = r.status, r.getheaders()
            finally:
                conn.close()
            if status == 404 and key and self.command in ("GET", "HEAD") and faults.missing_is_403(key):
                faults.record(self.command, self.path, 403)
                self._error(403, "AccessDenied", "Access Denied", key)
                return
            faults.record(self.command, self.path, status)
            self._answer(status, resp_headers, data)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", faults
    finally:
        server.shutdown()
        server.server_close()
