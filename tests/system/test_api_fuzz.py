"""Fuzz the HTTP API of the real Ray Serve application from its own OpenAPI document (hypothesis, pinned in
requirements-dev.txt), on 127.0.0.1 only, with a bounded, derandomized set of examples so the run is short and
repeatable. Valid bodies are drawn from the request schema the endpoint publishes (:func:`from_schema` covers
the JSON Schema subset the API uses; hypothesis-jsonschema 0.23.1 does not run on current hypothesis).

The contract: every request — any body, header or path — gets a 2xx, or a 4xx whose body is the API's JSON
error, or a JSON 503 when overloaded; never another 5xx, never a plain-text error, and the replica stays the
same healthy process afterwards. Bodies valid against the published request schema must be answered 200.
Malformed HTTP itself (e.g. a negative Content-Length) is refused by the ingress (HAProxy) before any
application sees it and is out of scope here.

The explicit battery of bad inputs that the fuzzing and a deliberate hunt turned up is in
``tests/integration/serving/test_http.py`` (``BAD``).
"""

from __future__ import annotations

import http.client
import json
import string
from typing import Any
from urllib.parse import quote, urlsplit

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import get

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def send(base: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
         ) -> tuple[int, str, bytes]:
    u = urlsplit(base)
    assert u.hostname == "127.0.0.1"
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
        r = conn.getresponse()
        return r.status, r.getheader("content-type") or "", r.read()
    finally:
        conn.close()


def assert_contract(status: int, content_type: str, data: bytes, what: object) -> dict[str, Any] | None:
    """2xx, JSON 4xx with an error object, or JSON 503; returns the parsed body (None for HEAD/docs)."""
    assert status < 500 or status == 503, (status, data[:300], what)
    if 200 <= status < 300 and not content_type.startswith("application/json"):
        return None  # the docs page and its assets
    if not data:
        return None  # HEAD
    assert content_type.startswith("application/json"), (status, content_type, data[:300], what)
    body = json.loads(data)
    if status >= 400:
        assert isinstance(body.get("error"), dict) and body["error"].get("code") and body["error"].get("message"), (
            status, body, what)
    return body  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def spec(minilm: str) -> dict[str, Any]:
    status, doc = get(f"{minilm}/openapi.json")
    assert status == 200
    return doc  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def before(minilm: str) -> dict[str, Any]:
    return get(f"{minilm}/info")[1]  # type: ignore[no-any-return]


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against ``schema``: the subset of JSON Schema the API's OpenAPI uses (a small, complete
    reader of it, so a schema change that it does not understand fails loudly)."""
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        return st.text(max_size=schema.get("maxLength", 200))
    if kind == "array":
        return st.lists(from_schema(schema["items"]), min_size=schema.get("minItems", 0),
                        max_size=schema.get("maxItems", 8))
    if kind == "object":
        assert schema.get("additionalProperties") is False, schema
        required = set(schema.get("required", ()))
        props = schema["properties"]
        return st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                     optional={k: from_schema(v) for k, v in props.items() if k not in required})
    raise AssertionError(f"schema construct not covered by the fuzzer: {schema}")


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any] | None]]:
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            schema = (op.get("requestBody") or {}).get("content", {}).get("application/json", {}).get("schema")
            out.append((method.upper(), path, schema))
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def acceptable(body: bytes, schema: dict[str, Any]) -> bool:
    """The oracle: strict UTF-8, strict JSON (no NaN/Infinity, no repeated keys), valid against the published
    schema, every text encodable as UTF-8 (no lone surrogates) and within max_input_chars (5000 here)."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError("repeated key")
        return dict(pairs)

    def no_constant(name: str) -> Any:
        raise ValueError(name)

    try:
        value = json.loads(body.decode("utf-8"), parse_constant=no_constant, object_pairs_hook=unique)
    except (ValueError, RecursionError):
        return False
    if not jsonschema.Draft202012Validator(schema).is_valid(value):
        return False
    try:
        return all(len(x) <= 5000 and bool(x.encode("utf-8") or True) for x in value["inputs"])
    except UnicodeEncodeError:
        return False


extremes = st.one_of(  # what random JSON rarely reaches: parser limits and non-standard literals
    st.integers(1, 3000).map(lambda n: b'{"inputs": ' + b"[" * n + b"]" * n + b"}"),
    st.integers(1, 3000).map(lambda n: b'{"inputs": [' + b'{"a":' * n + b"1" + b"}" * n + b"]}"),
    st.integers(4000, 6000).map(lambda n: b'{"inputs": [' + b"9" * n + b"]}"),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b'"\\ud800"', b'"\\udfff"',
                     b'"a\\u0000b"']).map(lambda v: b'{"inputs": [' + v + b"]}"),
    st.sampled_from([b'{"inputs": ["a"], "inputs": ["b"]}', b"\xef\xbb\xbf{\"inputs\": [\"a\"]}",
                     '{"inputs": ["a"]}'.encode("utf-16"), b'{"inputs": ["a\x00b"]}']),
)


def test_schema_valid_bodies_are_answered(minilm: str, spec: dict[str, Any], before: dict[str, Any]) -> None:
    schemas = {(m, p): s for m, p, s in operations(spec) if s is not None}
    assert ("POST", "/predict") in schemas
    schema = schemas[("POST", "/predict")]
    assert schema["properties"]["inputs"]["maxItems"] == 16

    @FUZZ
    @given(body=from_schema(schema))
    def check(body: dict[str, Any]) -> None:
        status, ct, data = send(minilm, "POST", urlsplit(minilm).path + "/predict", json.dumps(body).encode())
        answer = assert_contract(status, ct, data, body)
        assert status == 200, (status, answer, body)  # valid by the published schema: served
        assert answer is not None and len(answer["outputs"]) == len(body["inputs"])

    check()


def test_any_body_gets_a_json_answer(minilm: str, spec: dict[str, Any]) -> None:
    schema = {(m, p): s for m, p, s in operations(spec)}[("POST", "/predict")]
    assert schema is not None
    path = urlsplit(minilm).path + "/predict"
    bodies = (json_values.map(lambda v: json.dumps(v).encode())
              | st.fixed_dictionaries({"inputs": json_values}).map(lambda v: json.dumps(v).encode())
              | st.binary(max_size=64)
              | extremes
              | from_schema(schema).flatmap(lambda v: st.tuples(st.just(json.dumps(v).encode()),
                                                                st.integers(0, 60), st.binary(min_size=1, max_size=3))
                                            ).map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:]))

    @FUZZ
    @given(body=bodies)
    def check(body: bytes) -> None:
        status, ct, data = send(minilm, "POST", path, body)
        answer = assert_contract(status, ct, data, body)
        if acceptable(body, schema):
            assert status == 200, (answer, body)
        else:
            assert 400 <= status < 500, (status, answer, body)

    check()


header_names = st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=12).filter(
    lambda h: h.lower() not in {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade",
                                "te", "trailer", "keep-alive", "proxy-connection"})
header_values = st.text(string.printable.strip() + " ", max_size=40).map(str.strip)


def test_any_header_gets_a_json_answer(minilm: str) -> None:
    path = urlsplit(minilm).path + "/predict"

    @FUZZ
    @given(headers=st.dictionaries(header_names, header_values, max_size=4),
           content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                         "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                                         "", "*/*", "application/xml"]))
    def check(headers: dict[str, str], content_type: str) -> None:
        status, ct, data = send(minilm, "POST", path, b'{"inputs": ["headers do not matter"]}',
                                {**headers, "content-type": content_type})
        assert_contract(status, ct, data, headers)
        assert status == 200, (status, data[:200], headers)

    check()


segments = st.text(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@", max_size=12)


def test_any_path_and_method_gets_a_json_answer(minilm: str, local_serve: str) -> None:
    model = urlsplit(minilm).path  # /minilm

    @FUZZ
    @given(prefix=st.sampled_from([model, "", "/minilm-nope", "/-x", "/_index"]),
           parts=st.lists(segments, max_size=3), query=st.sampled_from(["", "?a=1", "?%ff", "?x=%00&y"]),
           method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]))
    def check(prefix: str, parts: list[str], query: str, method: str) -> None:
        path = quote(prefix + "/" + "/".join(parts), safe="/%!$&'()*+,;=:@-._~") + query
        status, ct, data = send(local_serve, method, path, b'{"inputs": ["x"]}' if method == "POST" else b"")
        assert_contract(status, ct, data, (method, path))

    check()


def test_the_replica_is_still_the_same_healthy_process(minilm: str, before: dict[str, Any]) -> None:
    status, health = get(f"{minilm}/healthz")
    assert (status, health) == (200, {"status": "ok", "model": "minilm"})
    _, after = get(f"{minilm}/info")
    assert after["replica"] == before["replica"]
