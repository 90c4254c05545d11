"""The bundled model through real Ray Serve over HTTP: answers, metadata, bad input and overload."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eks_inference.artifacts.resolve import bundled_model_path
from eks_inference.config import Task
from eks_inference.runtime.tasks import load_task_module
from eks_inference.serving.local import LocalRay

from .conftest import deploy_model, get, minilm_config, post

pytestmark = pytest.mark.integration

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve batches requests dynamically.",
    "Inferentia2 runs transformer models at low cost.",
    "short",
    "Embeddings map sentences with similar meaning to nearby vectors, so search can compare them quickly.",
]


def direct_embeddings(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 run directly with transformers (eager fp32, one text at a time, no padding)."""
    from transformers import AutoTokenizer

    path = bundled_model_path("all-minilm-l6-v2")
    tok = AutoTokenizer.from_pretrained(path)
    head = load_task_module(path, Task.EMBEDDING)
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt", truncation=True, max_length=128)
        with torch.inference_mode():
            out.append(head(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])[0][0].numpy())
    return np.array(out)


def test_predictions_equal_the_model_run_directly(minilm: str) -> None:
    status, body = post(f"{minilm}/predict", {"inputs": TEXTS})
    assert status == 200, body
    assert isinstance(body, dict)
    assert body["model"] == "minilm"
    assert body["truncated"] == [False] * len(TEXTS)
    got = np.array(body["outputs"])
    want = direct_embeddings(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    _, para = post(f"{minilm}/predict", {"inputs": ["A man is playing a guitar.", "Someone plays the guitar.",
                                                   "The stock market fell sharply today."]})
    assert isinstance(para, dict)
    v = np.array(para["outputs"])
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3  # a real sentence encoder, not noise


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(minilm: str) -> None:
    want = direct_embeddings(TEXTS)
    n = len(TEXTS) * 4
    _, before = get(f"{minilm}/info")
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda i: post(f"{minilm}/predict", {"inputs": [TEXTS[i % len(TEXTS)]]}), range(n)))
    for i, (status, body) in enumerate(results):
        assert status == 200, body
        assert isinstance(body, dict)
        np.testing.assert_allclose(body["outputs"][0], want[i % len(TEXTS)], atol=2e-5)
    _, after = get(f"{minilm}/info")
    batches = after["stats"]["batches"] - before["stats"]["batches"]
    inputs = after["stats"]["inputs"] - before["stats"]["inputs"]
    assert inputs == n
    assert batches < n / 2, (batches, n)  # requests that queued during a forward went into one batch


def test_info_healthz_and_openapi(minilm: str) -> None:
    status, info = get(f"{minilm}/info")
    assert status == 200
    assert (info["model"], info["task"], info["processor"], info["backend"], info["dtype"]) == (
        "minilm", "embedding", "cpu", "cpu", "fp32")
    assert (info["max_batch_size"], info["max_seq_length"], info["num_threads"]) == (8, 128, 1)
    # CPU replicas start with buckets up to the live ceiling, so max_batch_size 8 can move without a restart
    assert info["batch_buckets"] == [1, 2, 4, 8, 16, 32, 64] and info["seq_buckets"] == [16, 32, 64, 128]
    assert info["artifact"]["key"].startswith("cpu-fp32-b64-s128-")
    assert info["artifact"]["checks"]["min_cosine_vs_fp32"] >= 0.9999
    assert {"ray", "torch", "transformers", "python"} <= set(info["versions"])
    assert info["versions"]["ray"] == "2.60.0"
    assert get(f"{minilm}/healthz") == (200, {"status": "ok", "model": "minilm"})
    status, spec = get(f"{minilm}/openapi.json")
    assert status == 200 and spec["info"]["title"] == "minilm: embedding on cpu"
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["inputs"]["maxItems"] == 16
    assert {"400", "413", "422", "503"} <= set(spec["paths"]["/predict"]["post"]["responses"])
    assert get(f"{minilm}/docs")[0] == 200


def test_bf16_answers_stay_close_to_fp32(minilm: str, minilm_bf16: str) -> None:
    s32, fp32 = post(f"{minilm}/predict", {"inputs": TEXTS})
    s16, bf16 = post(f"{minilm_bf16}/predict", {"inputs": TEXTS})
    assert s32 == s16 == 200
    assert isinstance(fp32, dict) and isinstance(bf16, dict)
    a, b = np.array(fp32["outputs"]), np.array(bf16["outputs"])
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.99, cos
    assert not np.array_equal(a, b)  # really a different dtype path
    _, info = get(f"{minilm_bf16}/info")
    assert info["dtype"] == info["requested_dtype"] == "bf16" and isinstance(info["bf16_native"], bool)
    assert info["artifact"]["checks"]["min_cosine_vs_fp32"] >= 0.99


def _info(url: str) -> dict[str, Any]:
    status, body = get(f"{url}/info")
    return body if status == 200 and isinstance(body, dict) else {}


def test_user_config_changes_apply_in_place_through_reconfigure(minilm: str, local_ray: LocalRay,
                                                               serving_cache: Path) -> None:
    """An operator edits only the user_config of the deployed serveConfigV2: same replica, new settings."""
    _, before = get(f"{minilm}/info")
    cfg = minilm_config(local_ray, serving_cache)
    uc = cfg["applications"][0]["deployments"][0]["user_config"]
    original = dict(uc)
    uc.update(max_batch_size=4, batch_wait_timeout_s=0.005, num_threads=2)
    try:
        local_ray.deploy(cfg)
        deadline = time.monotonic() + 300  # ceilings: a busy machine reconfigures (and compiles) slowly
        while (info := _info(minilm)).get("max_batch_size") != 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (info["max_batch_size"], info["batch_wait_timeout_s"], info["num_threads"]) == (4, 0.005, 2)
        assert info["replica"] == before["replica"]  # same process: reconfigure, not a restart
        assert info["artifact"]["key"] == before["artifact"]["key"]  # within the compiled buckets: no recompile
        status, body = post(f"{minilm}/predict", {"inputs": TEXTS})  # 5 inputs > 4: split into two batches
        assert status == 200 and isinstance(body, dict) and len(body["outputs"]) == len(TEXTS)

        uc["dtype"] = "bf16"  # "bf16 where the CPU has it": elsewhere the replica keeps serving fp32
        local_ray.deploy(cfg)
        deadline = time.monotonic() + 300
        while (info := _info(minilm)).get("requested_dtype") != "bf16" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert info["replica"] == before["replica"]
        if info["bf16_native"]:
            assert info["dtype"] == "bf16" and info["artifact"]["key"] != before["artifact"]["key"]
        else:
            assert info["dtype"] == "fp32" and "no bf16 instructions" in info["dtype_note"]
            assert info["artifact"]["key"] == before["artifact"]["key"]
    finally:
        uc.update(original)
        local_ray.deploy(cfg)
        deadline = time.monotonic() + 300
        while _info(minilm).get("max_batch_size") != 8 and time.monotonic() < deadline:
            time.sleep(0.5)


BAD: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed JSON", b'{"inputs": [', {}, 400, "invalid_json"),
    ("invalid UTF-8", b'{"inputs": ["caf\xe9"]}', {}, 400, "invalid_utf8"),
    ("lone surrogate", b'{"inputs": ["\\udc80"]}', {}, 400, "invalid_utf8"),
    ("not an object", b'["a"]', {}, 422, "invalid_request"),
    ("wrong field", b'{"texts": ["a"]}', {}, 422, "invalid_request"),
    ("inputs not a list", b'{"inputs": "a"}', {}, 422, "invalid_request"),
    ("wrong item type", b'{"inputs": ["a", 3]}', {}, 422, "invalid_input"),
    ("empty list", b'{"inputs": []}', {}, 422, "empty_inputs"),
    ("too many items", json.dumps({"inputs": ["a"] * 17}).encode(), {}, 413, "too_many_inputs"),
    ("text over max_input_chars", json.dumps({"inputs": ["a" * 5001]}).encode(), {}, 413, "input_too_long"),
    ("oversized body", b'{"inputs": ["' + b"a" * (1 << 20) + b'"]}', {}, 413, "body_too_large"),
    # found by fuzzing and a deliberate hunt; the first two used to get a plain-text 500 Internal Server Error
    ("nesting deeper than the parser's limit", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}, 400,
     "invalid_json"),
    ("integer over 4300 digits", b'{"inputs": [' + b"9" * 5000 + b"]}", {}, 400, "invalid_json"),
    ("NaN literal", b'{"inputs": [NaN]}', {}, 400, "invalid_json"),
    ("Infinity literal", b'{"inputs": ["a"], "x": -Infinity}', {}, 400, "invalid_json"),
    ("repeated key", b'{"inputs": ["a"], "inputs": ["b"]}', {}, 422, "invalid_request"),
    ("objects for an embedding model", b'{"inputs": [{"question": "q", "context": "c"}]}', {}, 422, "invalid_input"),
    ("UTF-8 byte order mark", b'\xef\xbb\xbf{"inputs": ["a"]}', {}, 400, "invalid_json"),
    ("UTF-16 body", '{"inputs": ["a"]}'.encode("utf-16"), {}, 400, "invalid_utf8"),
    ("overlong UTF-8", b'{"inputs": ["\xc0\xaf"]}', {}, 400, "invalid_utf8"),
    ("lone low surrogate", b'{"inputs": ["\\udfff x"]}', {}, 400, "invalid_utf8"),
    ("raw null byte in a string", b'{"inputs": ["a\x00b"]}', {}, 400, "invalid_json"),
    ("empty body", b"", {}, 400, "invalid_json"),
    ("form-encoded", b"inputs=a", {"content-type": "application/x-www-form-urlencoded"}, 400, "invalid_json"),
]


def test_bad_input_gets_clear_json_errors_and_the_replica_keeps_serving(minilm: str, local_serve: str) -> None:
    _, before = get(f"{minilm}/info")
    for what, body, headers, status, code in BAD:
        got_status, got = post(f"{minilm}/predict", body, headers=headers)
        assert got_status == status, (what, got)
        assert isinstance(got, dict) and got["error"]["code"] == code, (what, got)
        assert got["error"]["message"], what
    status, err = get(f"{minilm}/nope")
    assert status == 404 and err["error"]["code"] == "not_found"
    status, err = get(f"{minilm}/predict")
    assert status == 405 and err["error"]["code"] == "method_not_allowed"
    status, err = post(f"{minilm}/predict/", {"inputs": ["a"]})  # no redirect to the slash-less path
    assert status == 404 and err["error"]["code"] == "not_found"
    # outside every model's prefix: the route index answers in JSON (Serve's ingress would say it in plain text)
    status, err = post(f"{local_serve}/no-such-model/predict", {"inputs": ["a"]})
    assert status == 404 and err["error"]["code"] == "not_found" and "/minilm" in err["error"]["message"]
    status, index = get(f"{local_serve}/")
    assert status == 200 and {"name": "minilm", "predict": "/minilm/predict", "health": "/minilm/healthz",
                              "info": "/minilm/info", "docs": "/minilm/docs",
                              "openapi": "/minilm/openapi.json"} in index["models"]

    # valid requests that are odd on the wire: chunked transfer, a content-type that is not JSON, null escapes
    conn = http.client.HTTPConnection("127.0.0.1", int(local_serve.rsplit(":", 1)[1]), timeout=60)
    conn.putrequest("POST", "/minilm/predict")
    conn.putheader("content-type", "text/plain")
    conn.putheader("transfer-encoding", "chunked")
    conn.endheaders()
    for part in (b'{"inputs": ["chunked', b' body", "a\\u0000b"]}'):
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    r = conn.getresponse()
    assert r.status == 200 and len(json.loads(r.read())["outputs"]) == 2
    conn.close()

    status, long = post(f"{minilm}/predict", {"inputs": ["word " * 400, "fine"]})
    assert status == 200 and isinstance(long, dict)
    assert long["truncated"] == [True, False]  # over max_seq_length tokens: truncated and said so
    _, after = get(f"{minilm}/info")
    assert after["replica"] == before["replica"]  # the same replica process, still serving
    assert post(f"{minilm}/predict", {"inputs": ["still here"]})[0] == 200


def test_overload_is_shed_fast_with_503_then_the_service_recovers(local_ray: LocalRay, serving_cache: Path) -> None:
    deploy_model(local_ray, serving_cache, name="minilm-tight", max_batch_size=8, max_ongoing_requests=2,
                 max_queued_requests=2, max_inputs=64)
    url = f"{local_ray.url}/minilm-tight/predict"
    heavy = {"inputs": [TEXTS[4] * 2] * 64}
    # All 24 leave together: on a busy machine a pool's threads start slowly, and requests trickling in one by one
    # would be served as they come instead of finding the replica full.
    start = threading.Barrier(24)
    try:
        def call(_: int) -> tuple[int, float, object]:
            start.wait(timeout=120)
            t0 = time.perf_counter()
            status, body = post(url, heavy, timeout=300)
            return status, time.perf_counter() - t0, body

        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(call, range(24)))
        statuses = [s for s, _, _ in results]
        assert statuses.count(503) >= 12, statuses
        assert statuses.count(200) >= 2, statuses
        assert set(statuses) <= {200, 503}
        shed = sorted(t for s, t, _ in results if s == 503)
        served = sorted(t for s, t, _ in results if s == 200)
        assert shed[len(shed) // 2] < served[-1] / 2, (shed, served)  # shedding is fast, not queued
        bodies = [b for s, _, b in results if s == 503]
        assert all(isinstance(b, dict) and b["error"]["code"] == "overloaded" for b in bodies), bodies  # JSON
        status, body = post(url, {"inputs": ["after the storm"]})
        assert status == 200 and isinstance(body, dict) and len(body["outputs"]) == 1
    finally:
        local_ray.remove("minilm-tight")
