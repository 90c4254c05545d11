"""Request parsing and limits shared by every server (Ray Serve app, benchmark servers)."""

from __future__ import annotations

import json

import pytest

from eks_inference.config import Task
from eks_inference.serving.api import ApiError, check_content_length, parse_predict_body, predict_request_schema

LIMITS = {"max_inputs": 4, "max_input_chars": 50, "max_body_bytes": 8192}


def parse(body: bytes | str, task: Task = Task.EMBEDDING) -> list:
    raw = body.encode() if isinstance(body, str) else body
    return parse_predict_body(raw, task=task, **LIMITS)


def err(body: bytes | str, task: Task = Task.EMBEDDING) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse(body, task)
    return e.value


def test_valid_bodies() -> None:
    assert parse('{"inputs": ["a", "b"]}') == ["a", "b"]
    assert parse('{"inputs": [{"question": "q?", "context": "c"}]}', Task.QUESTION_ANSWERING) == [("q?", "c")]
    assert parse(json.dumps({"inputs": ["é ü 中文 🙂"]})) == ["é ü 中文 🙂"]


@pytest.mark.parametrize(("body", "status", "code", "says"), [
    ("{bad", 400, "invalid_json", "not JSON"),
    (b'{"inputs": ["\xff\xfe"]}', 400, "invalid_utf8", "not valid UTF-8"),
    ('{"inputs": ["\\ud800"]}', 400, "invalid_utf8", "unpaired surrogate"),
    ('["a"]', 422, "invalid_request", "JSON list"),
    ('{"input": ["a"]}', 422, "invalid_request", "unknown field"),
    ("{}", 422, "invalid_request", "missing"),
    ('{"inputs": "a"}', 422, "invalid_request", "expected a list"),
    ('{"inputs": []}', 422, "empty_inputs", "empty"),
    ('{"inputs": ["a", 1]}', 422, "invalid_input", "inputs[1] is int"),
    ('{"inputs": [null]}', 422, "invalid_input", "inputs[0] is NoneType"),
    ('{"inputs": ["a", "b", "c", "d", "e"]}', 413, "too_many_inputs", "limit is 4"),
    (json.dumps({"inputs": ["x" * 51]}), 413, "input_too_long", "51 characters; the limit is 50"),
    ("x" * 8193, 413, "body_too_large", "8193 bytes"),
    # used to escape as RecursionError / ValueError, i.e. a plain-text 500 from Serve
    ('{"inputs": ' + "[" * 1500 + "]" * 1500 + "}", 400, "invalid_json", "nests arrays or objects too deeply"),
    ('{"inputs": [' + "9" * 4400 + "]}", 400, "invalid_json", "cannot be read"),
    ('{"inputs": [NaN]}', 400, "invalid_json", "NaN is not a JSON number"),
    ('{"inputs": [-Infinity]}', 400, "invalid_json", "-Infinity is not a JSON number"),
    ('{"inputs": ["a"], "inputs": ["b"]}', 422, "invalid_request", "'inputs' appears twice"),
    (b'\xef\xbb\xbf{"inputs": ["a"]}', 400, "invalid_json", "BOM"),
])
def test_bad_bodies_get_a_clear_status_code_and_message(body: str | bytes, status: int, code: str, says: str) -> None:
    e = err(body)
    assert (e.status, e.code) == (status, code)
    assert says in e.message
    assert e.body() == {"error": {"code": code, "message": e.message}}


def test_question_answering_inputs_must_be_question_context_objects() -> None:
    e = err('{"inputs": ["just text"]}', Task.QUESTION_ANSWERING)
    assert (e.status, e.code) == (422, "invalid_input")
    e = err('{"inputs": [{"question": "q", "context": 3}]}', Task.QUESTION_ANSWERING)
    assert "inputs[0].context is int" in e.message


def test_content_length_is_checked_before_reading() -> None:
    check_content_length(None, 10)
    check_content_length("10", 10)
    with pytest.raises(ApiError, match="11 bytes; the limit is 10"):
        check_content_length("11", 10)
    with pytest.raises(ApiError, match="not a number"):
        check_content_length("ten", 10)


def test_openapi_request_schema_states_the_limits() -> None:
    s = predict_request_schema(Task.EMBEDDING, 64)
    assert s["properties"]["inputs"]["maxItems"] == 64
    assert s["properties"]["inputs"]["minItems"] == 1
    assert predict_request_schema(Task.QUESTION_ANSWERING, 8)["properties"]["inputs"]["items"]["required"] == [
        "question", "context"]
