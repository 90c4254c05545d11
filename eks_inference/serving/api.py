"""The HTTP contract of a model endpoint: request parsing, limits, errors, and the OpenAPI fragments.

Pure Python (no FastAPI, pydantic or Ray), so the Ray Serve replica, the benchmark servers and the GPU
benchmark's plain aiohttp server apply exactly the same rules.

``POST /{model}/predict``

* body ``{"inputs": [...]}`` — strings for ``embedding`` and ``classification``; objects
  ``{"question": str, "context": str}`` for ``question-answering``. No other top-level fields.
* reply ``{"model": str, "outputs": [...], "truncated": [bool, ...]}``: one output per input, in order.
  ``embedding`` → list of floats (L2-normalised, rounded to 7 decimals: float32 precision);
  ``classification`` → ``{"label", "score", "scores"}``;
  ``question-answering`` → ``{"answer", "score", "start", "end"}`` (character offsets in the context).

Long inputs: an input longer than ``max_seq_length`` *tokens* is truncated to fit and flagged in
``truncated`` (the answer is still given); an input longer than ``max_input_chars`` *characters* is
refused with 413, because tokenizing megabytes only to throw them away is a denial-of-service vector.

Errors are JSON ``{"error": {"code": str, "message": str}}``:

=====  ========================  ===========================================================
400    ``invalid_json``           body is not strict JSON (also: NaN/Infinity, nesting deeper than
                                  the parser's limit, integers over 4300 digits)
400    ``invalid_utf8``           body (or a text) is not valid UTF-8
404    ``not_found``              unknown route under the model's prefix
405    ``method_not_allowed``     e.g. GET /predict
408    ``body_timeout``           the whole body did not arrive within ``body_timeout_s`` (answered before
                                  the request is admitted, :mod:`eks_inference.serving.ingress_guard`)
413    ``body_too_large``         body over ``max_body_bytes``
413    ``too_many_inputs``        more than ``max_inputs`` inputs
413    ``input_too_long``         one input over ``max_input_chars`` characters
422    ``invalid_request``        not an object, missing/unknown/repeated fields, ``inputs`` not a list
422    ``empty_inputs``           ``inputs`` is ``[]``
422    ``invalid_input``          an input of the wrong type (message names its index)
503    ``weights_not_published``  the model's weights are not in the repository yet (body names the
                                  missing object and the publish command; the replica loads them later)
503    ``not_ready``              loading, compiling or warming up
503    ``model_unavailable``      the weights turned out corrupt; the replica is being replaced
503    ``forward_stuck``          a forward has run past its bound (``forward_timeout_s``); the replica is
                                  being replaced
503    ``overloaded``             the replica already holds ``max_ongoing_requests + max_queued_requests``
                                  requests (``Retry-After: 1``); Serve's own limits sit above it
=====  ========================  ===========================================================

The body's ``content-type`` is not checked (JSON is parsed whatever it says), so ``curl -d`` works as is.
"""

from __future__ import annotations

import json
from typing import Any

from eks_inference.config import Task


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def check_content_length(header: str | None, max_body_bytes: int) -> None:
    if header is None:
        return
    try:
        n = int(header)
    except ValueError:
        raise ApiError(400, "invalid_request", f"Content-Length {header!r} is not a number") from None
    if n > max_body_bytes:
        raise ApiError(413, "body_too_large", f"request body is {n} bytes; the limit is {max_body_bytes}")


def _check_text(value: Any, where: str, max_input_chars: int) -> str:
    if not isinstance(value, str):
        raise ApiError(422, "invalid_input", f"{where} is {type(value).__name__}, expected a string")
    if len(value) > max_input_chars:
        raise ApiError(413, "input_too_long",
                       f"{where} has {len(value)} characters; the limit is {max_input_chars} "
                       "(inputs over the model's token limit but under this are truncated and flagged)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_utf8", f"{where} contains an unpaired surrogate (not valid UTF-8)") from None
    return value


def _reject_constant(name: str) -> Any:
    raise ApiError(400, "invalid_json", f"request body is not JSON: {name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ApiError(422, "invalid_request", f"field {k!r} appears twice in one object; send it once")
        out[k] = v
    return out


def _loads(text: str) -> Any:
    """Strict JSON: no NaN/Infinity, no repeated keys; too deep or too long numbers are client errors."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ApiError(400, "invalid_json", f"request body is not JSON: {e.msg} at line {e.lineno} "
                                            f"column {e.colno}") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "request body nests arrays or objects too deeply; "
                                            "send {\"inputs\": [...]} with strings") from None
    except ValueError as e:  # e.g. an integer literal over Python's 4300-digit conversion limit
        raise ApiError(400, "invalid_json", f"request body has a value that cannot be read: {e}") from None


def parse_predict_body(body: bytes, *, task: Task, max_inputs: int, max_input_chars: int,
                       max_body_bytes: int) -> list[Any]:
    """Validate a predict body and return its inputs (str, or (question, context) for QA)."""
    if len(body) > max_body_bytes:
        raise ApiError(413, "body_too_large", f"request body is {len(body)} bytes; the limit is {max_body_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(400, "invalid_utf8", f"request body is not valid UTF-8 (byte {e.start})") from None
    data = _loads(text)
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", f"body is a JSON {type(data).__name__}; send {{\"inputs\": [...]}}")
    unknown = sorted(set(data) - {"inputs"})
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown field(s) {unknown}; the body has only \"inputs\"")
    if "inputs" not in data:
        raise ApiError(422, "invalid_request", "field \"inputs\" is missing; send {\"inputs\": [...]}")
    inputs = data["inputs"]
    if not isinstance(inputs, list):
        raise ApiError(422, "invalid_request", f"\"inputs\" is {type(inputs).__name__}, expected a list")
    if not inputs:
        raise ApiError(422, "empty_inputs", "\"inputs\" is empty; send at least one input")
    if len(inputs) > max_inputs:
        raise ApiError(413, "too_many_inputs", f"{len(inputs)} inputs; the limit is {max_inputs} per request")
    if task is not Task.QUESTION_ANSWERING:
        return [_check_text(x, f"inputs[{i}]", max_input_chars) for i, x in enumerate(inputs)]
    out: list[Any] = []
    for i, x in enumerate(inputs):
        if not isinstance(x, dict) or set(x) != {"question", "context"}:
            raise ApiError(422, "invalid_input",
                           f"inputs[{i}] must be an object with exactly \"question\" and \"context\"")
        out.append((_check_text(x["question"], f"inputs[{i}].question", max_input_chars),
                    _check_text(x["context"], f"inputs[{i}].context", max_input_chars)))
    return out


def predict_request_schema(task: Task, max_inputs: int) -> dict[str, Any]:
    item: dict[str, Any] = (
        {"type": "object", "required": ["question", "context"], "additionalProperties": False,
         "properties": {"question": {"type": "string"}, "context": {"type": "string"}}}
        if task is Task.QUESTION_ANSWERING else {"type": "string"}
    )
    return {"type": "object", "required": ["inputs"], "additionalProperties": False,
            "properties": {"inputs": {"type": "array", "minItems": 1, "maxItems": max_inputs, "items": item}}}


PREDICT_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["model", "outputs", "truncated"],
    "properties": {
        "model": {"type": "string"},
        "outputs": {"type": "array", "description": "one per input: a float vector (embedding), "
                    "{label, score, scores} (classification) or {answer, score, start, end} (QA)"},
        "truncated": {"type": "array", "items": {"type": "boolean"},
                      "description": "true where the input was cut to max_seq_length tokens"},
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"},
                                                              "message": {"type": "string"}}}},
}
