"""A rollout on one local Ray: two revisions of a model as two Serve applications, a weighted router in front that
does what the model's HTTPRoute does at the front door, and a Prometheus-compatible alerts source.

- :class:`WeightedRouter`: ``/{model}/...`` on 127.0.0.1 forwarded to the stable or the canary application by the
  canary's share. The ALB picks a target group per request at random by weight; the router takes the smooth weighted
  round robin instead, so that a share is exact over a handful of requests and a test can count it.
- :class:`LocalAlerts`: ``GET /api/v1/alerts`` in Prometheus's answer shape, with alerts a caller makes fire.
- :class:`LocalRolloutBackend`: the :class:`~eks_inference.ops.rollout.RolloutBackend` over them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
from aiohttp import web

from eks_inference.ops.rollout import StepFailed, VerifyOutcome, fetch_alerts, firing_for
from eks_inference.serving.local import DeployFailed, LocalRay, free_port, http_get_json
from eks_inference.verify.check import VerifyError, verify_target

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


class WeightedRouter:
    """``http://127.0.0.1:PORT/{model}/...`` → ``{stable}/...`` or ``{canary}/...``, by the canary's share."""

    def __init__(self, model: str, stable_base: str, canary_base: str) -> None:
        self.model, self.stable_base, self.canary_base = model, stable_base.rstrip("/"), canary_base.rstrip("/")
        self.canary_percent = 0.0
        self.counts = {"stable": 0, "canary": 0}
        self._credit = {"stable": 0.0, "canary": 0.0}
        self._lock = threading.Lock()
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="weighted-router", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.model}"

    def pick(self) -> str:
        """Smooth weighted round robin over stable (100 − c) and canary (c)."""
        with self._lock:
            weights = {"stable": 100.0 - self.canary_percent, "canary": self.canary_percent}
            total = sum(weights.values())
            for k, w in weights.items():
                self._credit[k] += w
            track = max(self._credit, key=lambda k: (self._credit[k], k == "stable"))
            self._credit[track] -= total
            self.counts[track] += 1
            return track

    def set_share(self, percent: float) -> None:
        with self._lock:
            self.canary_percent = float(percent)
            self._credit = {"stable": 0.0, "canary": 0.0}

    async def _forward(self, request: web.Request) -> web.Response:
        track = self.pick()
        base = self.canary_base if track == "canary" else self.stable_base
        rest = request.match_info.get("rest", "")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            async with self._session.request(request.method, f"{base}/{rest}", params=request.query,
                                             data=await request.read(), headers=headers) as r:
                body = await r.read()
                out = {k: v for k, v in r.headers.items() if k.lower() not in _HOP_BY_HOP}
                out["x-eks-inference-track"] = track
                return web.Response(status=r.status, body=body, headers=out)
        except aiohttp.ClientError as e:  # as the ALB answers when its target does not
            return web.json_response({"error": {"code": "bad_gateway", "message": f"{track}: {e}"}}, status=502,
                                     headers={"x-eks-inference-track": track})

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", f"/{self.model}/{{rest:.*}}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def start(self) -> WeightedRouter:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class LocalAlerts:
    """A Prometheus-compatible ``/api/v1/alerts`` on 127.0.0.1 whose alerts fire when :meth:`fire` says so."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        self.reads = 0
        alerts = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/api/v1/alerts":
                    self.send_error(404)
                    return
                alerts.reads += 1
                body = json.dumps({"status": "success", "data": {"alerts": list(alerts.alerts)}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-alerts", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v1/alerts"

    def fire(self, alertname: str, labels: Mapping[str, str], summary: str = "", state: str = "firing") -> None:
        self.alerts.append({"labels": {"alertname": alertname, **labels}, "annotations": {"summary": summary},
                            "state": state, "activeAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            "value": "1e+00"})

    def clear(self) -> None:
        self.alerts = []

    def start(self) -> LocalAlerts:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class LocalRevision:
    """What a revision is locally: the weights it serves, and the weights its reference is computed from (the same,
    unless the test publishes one revision's weights with another's reference)."""

    model_uri: str
    reference_source: str


def as_application(config: Mapping[str, Any], model: str, app: str) -> dict[str, Any]:
    """``config`` with the model's application renamed ``app`` and routed at ``/{app}`` (the index is left)."""
    out = json.loads(json.dumps(config))
    for a in out["applications"]:
        if a["name"] == model:
            a["name"], a["route_prefix"] = app, f"/{app}"
    return out


class LocalRolloutBackend:
    """Stable and canary as two applications of one local Ray, the router as the route, ``alerts_url`` as the
    alert pipeline.

    :param render: the ``serveConfigV2`` document of the model at a revision (application named after the model).
    """

    def __init__(self, ray: LocalRay, *, model: str, render: Callable[[str, str | None], dict[str, Any]],
                 revisions: Mapping[str, LocalRevision], router: WeightedRouter, alerts_url: str,
                 stable_app: str, canary_app: str, verify_cache: str, timeout_s: float = 900.0) -> None:
        self.ray, self.model, self.render, self.revisions = ray, model, render, revisions
        self.router, self.alerts_url = router, alerts_url
        self.stable_app, self.canary_app, self.verify_cache = stable_app, canary_app, verify_cache
        self.timeout_s = timeout_s
        self.calls: list[str] = []

    def _revision(self, revision: str) -> LocalRevision:
        if revision not in self.revisions:
            raise StepFailed(f"revision {revision!r} is not published (known: {', '.join(sorted(self.revisions))})")
        return self.revisions[revision]

    def _deploy(self, app: str, revision: str, weights_sha256: str | None, timeout_s: float) -> None:
        self._revision(revision)
        self.ray.deploy(as_application(self.render(revision, weights_sha256), self.model, app))
        try:
            self.ray.wait_ready(app, timeout_s=min(timeout_s, self.timeout_s))
        except DeployFailed as e:
            raise StepFailed(e.summary) from None

    def deploy_canary(self, revision: str, weights_sha256: str | None, *, timeout_s: float) -> None:
        self.calls.append(f"deploy-canary {revision}")
        self._deploy(self.canary_app, revision, weights_sha256, timeout_s)

    def verify(self, revision: str) -> VerifyOutcome:
        self.calls.append(f"verify {revision}")
        try:
            v = verify_target(f"{self.ray.url}/{self.canary_app}", source=self._revision(revision).reference_source,
                              cache_dir=self.verify_cache, timeout_s=120)
        except VerifyError as e:
            return VerifyOutcome(False, str(e))
        if v.passed:
            return VerifyOutcome(True, f"{len(v.comparison.rows)} probes agree with the fp32 reference")
        return VerifyOutcome(False, f"disagrees with the fp32 reference of {revision}; worst input {v.worst_text()}")

    def set_canary_share(self, percent: float) -> None:
        self.calls.append(f"share {percent:g}")
        self.router.set_share(percent)

    def firing_alerts(self, names: Sequence[str]) -> list[str]:
        return firing_for(fetch_alerts(self.alerts_url), names, self.model)

    def update_stable(self, revision: str, weights_sha256: str | None, *, timeout_s: float) -> None:
        self.calls.append(f"update-stable {revision}")
        self._deploy(self.stable_app, revision, weights_sha256, timeout_s)
        deadline = time.monotonic() + min(timeout_s, self.timeout_s)
        while time.monotonic() < deadline:  # Serve replaces the replicas; done when the stable one says so
            code, info = http_get_json(f"{self.ray.url}/{self.stable_app}/info", timeout=10)
            if code == 200 and info.get("revision") == revision:
                return
            time.sleep(0.5)
        raise StepFailed(f"the stable application did not serve {revision} within {timeout_s:g} s")

    def remove_canary(self) -> None:
        self.calls.append("remove-canary")
        self.ray.remove(self.canary_app, wait=True, timeout_s=120)
