"""Timeouts on real local Ray Serve (HAProxy in front of the replicas' own HTTP servers, as in the cluster): slow
uploads do not crowd out ordinary requests, and a forward that hangs gets its replica replaced.

Upstream behaviour this relies on (Ray 2.60):

* ``python/ray/serve/_private/replica.py`` (``_direct_ingress_asgi``): a request is admitted (queue place, then one of
  ``max_ongoing_requests``) on its headers, before the application reads its body; the HTTP server wraps that in the
  middlewares named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` (``http_util.py``), which now read the body
  first.
* ``python/ray/serve/_private/deployment_state.py`` (``ActorReplicaWrapper.check_health``): a replica whose
  ``check_health`` fails ``REPLICA_HEALTH_CHECK_UNHEALTHY_THRESHOLD`` (3) times in a row is stopped and replaced.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.compile.synthetic import write_synthetic_model
from eks_inference.config import ModelSpec, Processor, ServingSpec, Task
from eks_inference.serving.app import TEST_HANG_ENV
from eks_inference.serving.local import LocalRay
from eks_inference.serving.serve_config import (
    HAPROXY_CLIENT_TIMEOUT_S,
    HAPROXY_SERVER_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    render_serve_config,
)

from .conftest import get, post

pytestmark = pytest.mark.integration

WORDS = ["the", "cat", "sat", "on", "a", "mat", "slow", "uploads", "wait", "their", "turn"]
BODY_TIMEOUT_S = 3.0
DRIPS = 24
"""Slow uploads at once: six times what the replica holds (4), and past Serve's own admission (12 + 16 queued)."""
HANG = "hang here"


@pytest.fixture(scope="module")
def apps(local_ray: LocalRay, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("timeouts")
    tiny = write_synthetic_model(root / "tiny", task=Task.EMBEDDING, words=WORDS)

    def config(name: str, **kw: Any) -> dict[str, Any]:
        spec = ModelSpec(name=name, task=Task.EMBEDDING, processors=(Processor.CPU,), serving=ServingSpec(
            max_batch_size=4, max_seq_length=32, cpus_per_replica=0.5, max_ongoing_requests=2, max_queued_requests=2))
        return render_serve_config(spec, Processor.CPU, model_uri=str(tiny), artifact_uri=str(root / "repo"),
                                   cache_dir=str(root / "cache"), http_host="127.0.0.1",
                                   http_port=local_ray.http_port, **kw)

    local_ray.deploy(config("slow-drip", body_timeout_s=BODY_TIMEOUT_S))
    hang = config("hang", forward_timeout_s=1.0)
    dep = hang["applications"][0]["deployments"][0]
    dep.update(health_check_period_s=1, health_check_timeout_s=5, graceful_shutdown_timeout_s=1)
    dep["ray_actor_options"]["runtime_env"] = {"env_vars": {TEST_HANG_ENV: HANG}}
    local_ray.deploy(hang)
    for name in ("slow-drip", "hang"):
        local_ray.wait_ready(name, timeout_s=300)
    yield {"slow-drip": f"{local_ray.url}/slow-drip", "hang": f"{local_ray.url}/hang"}
    for name in ("slow-drip", "hang"):
        local_ray.remove(name)


def start_drip(local_ray: LocalRay, path: str) -> socket.socket:
    """Headers and the first byte of a 200-byte JSON body; the rest comes a byte a second (:func:`drip`)."""
    s = socket.create_connection(("127.0.0.1", local_ray.http_port), timeout=10)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              "Content-Length: 200\r\n\r\n{".encode())
    return s


def drip(socks: list[socket.socket], stop: threading.Event) -> None:
    while not stop.wait(1.0):  # the client's pace, not a wait for the server
        for s in socks:
            with contextlib.suppress(OSError):  # answered and closed
                s.send(b" ")


def read_answer(s: socket.socket) -> tuple[int, Any]:
    """Status and JSON body of the one response on ``s`` (read up to its Content-Length: the server may keep the
    connection open for the rest of the body)."""
    s.settimeout(5)
    raw = b""
    while b"\r\n\r\n" not in raw and (chunk := s.recv(65536)):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.lower() == "content-length"), 0)
    while len(body) < length and (chunk := s.recv(65536)):
        body += chunk
    try:
        return int(lines[0].split()[1]), json.loads(body)
    except ValueError:
        return int(lines[0].split()[1]), body.decode(errors="replace")


def test_slow_drip_uploads_do_not_make_ordinary_requests_fail(local_ray: LocalRay, apps: dict[str, str]) -> None:
    """GIVEN a replica that holds at most 4 requests and wants whole bodies within 3 s
    WHEN 24 clients send their headers and then a byte a second, while ordinary requests go on
    THEN every ordinary request is answered 200, and every slow upload gets a JSON 408 within the deadline."""
    url = apps["slow-drip"]
    socks = [start_drip(local_ray, "/slow-drip/predict") for _ in range(DRIPS)]
    stop = threading.Event()
    dripper = threading.Thread(target=drip, args=(socks, stop), daemon=True)
    dripper.start()
    started = time.monotonic()
    answered: dict[int, float] = {}
    ordinary: list[tuple[int, Any]] = []
    try:
        while len(answered) < DRIPS and time.monotonic() - started < BODY_TIMEOUT_S + 30:
            ordinary.append(post(f"{url}/predict", {"inputs": ["the cat sat on a mat"]}, timeout=30))
            pending = [s for i, s in enumerate(socks) if i not in answered]
            for s in select.select(pending, [], [], 0.05)[0]:
                answered[socks.index(s)] = time.monotonic() - started
        answers = [read_answer(socks[i]) for i in sorted(answered)]
    finally:
        stop.set()
        dripper.join(5)
        for s in socks:
            s.close()
    assert len(ordinary) >= 5, "too few ordinary requests ran while the uploads dripped"
    assert [st for st, _ in ordinary] == [200] * len(ordinary), [o for o in ordinary if o[0] != 200][:3]
    assert len(answered) == DRIPS, f"{DRIPS - len(answered)} slow uploads still unanswered"
    assert max(answered.values()) < BODY_TIMEOUT_S + 10
    assert {(st, body["error"]["code"] if isinstance(body, dict) else body) for st, body in answers} == {
        (408, "body_timeout")}


def test_serve_and_haproxy_run_with_the_rendered_timeouts(local_ray: LocalRay, apps: dict[str, str]) -> None:
    """GIVEN the local Serve started as a RayService's is WHEN its live settings are read THEN requests are bounded
    end to end, and the HAProxy in front of the replicas was written with the client and server timeouts."""
    import ray

    assert local_ray._client.get_serve_details()["http_options"]["request_timeout_s"] == REQUEST_TIMEOUT_S
    node = ray.get_runtime_context().get_node_id()
    haproxy_cfg = Path(f"/tmp/haproxy-serve/{node}/haproxy.cfg").read_text()
    assert f"timeout client {HAPROXY_CLIENT_TIMEOUT_S}s" in haproxy_cfg
    assert f"timeout server {HAPROXY_SERVER_TIMEOUT_S}s" in haproxy_cfg


def test_a_forward_that_hangs_past_its_bound_gets_the_replica_replaced(apps: dict[str, str]) -> None:
    """GIVEN a replica with forward_timeout_s 1 s, health-checked every second
    WHEN a request makes its forward hang (as a wedged device would)
    THEN the replica reports the stuck forward, Serve replaces it, and the new replica serves."""
    url = apps["hang"]
    status, info = get(f"{url}/info")
    assert status == 200 and info["status"] == "ok" and info["limits"]["forward_timeout_s"] == 1.0
    first = info["replica"]
    hung: dict[str, Any] = {}

    def send_hang() -> None:
        try:
            hung["answer"] = post(f"{url}/predict", {"inputs": [HANG]}, timeout=120)
        except OSError as e:  # the replica went away with the request
            hung["answer"] = (0, str(e))

    client = threading.Thread(target=send_hang, daemon=True)
    client.start()
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    replaced: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status, body = get(f"{url}/info", timeout=10)
        except OSError as e:  # while the replica is replaced a call may find no one to answer it
            seen.add(type(e).__name__)
            continue
        if status in (200, 503) and isinstance(body, dict):
            seen.add(f"{body.get('replica')}:{body.get('status')}")
            if body.get("replica") not in (None, first) and body.get("status") == "ok":
                replaced = body
                break
        time.sleep(0.3)
    assert replaced, f"no new replica within 240 s; seen {sorted(seen)}"
    assert f"{first}:stuck" in seen
    status, out = post(f"{url}/predict", {"inputs": ["the cat sat"]})
    assert status == 200 and isinstance(out, dict) and len(out["outputs"]) == 1
    client.join(60)
    assert not client.is_alive(), "the hung request was never answered"
