"""The Ray Serve application: one FastAPI ingress deployment per model, mounted at ``/{model}``.

Start-up (``__init__`` then the first ``reconfigure``): resolve the weights (download + verify), resolve the
compiled artifact for this processor/dtype/buckets (verified cache hit, or compile and publish), load it on
the backend, warm every sequence bucket, and only then report healthy. A corrupt object raises
:class:`~eks_inference.artifacts.resolve.ArtifactIntegrityError` naming it and its expected hash, so the
replica never serves.

Weights not published yet (the first deploy of a fresh repository): the constructor returns at once and a
background thread waits for them (:mod:`eks_inference.serving.weights`); ``user_config`` values that arrive
meanwhile are kept and applied, latest last, once the weights load. Until then ``/healthz`` and ``/predict``
answer a 503 JSON naming the missing object and the publish command, and ``check_health`` passes so Serve
keeps the replica; weights that turn out corrupt make ``check_health`` fail with the integrity error instead.

Batching: requests are split into chunks of at most ``max_batch_size`` inputs and queued on a
``@serve.batch`` method whose size is counted in inputs (``batch_size_fn``), not requests. The forward runs
on one dedicated thread so the event loop keeps accepting requests meanwhile. ``batch_wait_timeout_s``
from ``user_config`` is the wait when the processor is idle; while a forward is running the wait is
stretched to that forward's expected end (measured per batch bucket), so the next batch takes everything
that queued during it. Stock ``@serve.batch`` would form the next batch as soon as its wait expires and
leave it queued behind the running forward, which yields batches of one or two under load.

A stuck forward (a wedged device or library) would hold the forward thread and every request behind it while the
event loop, and so the health check, stayed fine. The replica notes when the running forward began; once it has
run past its bound (``forward_timeout_s``, or ten times its measured time if longer) ``check_health`` fails and
Serve replaces the replica, and ``/healthz`` and ``/predict`` answer 503 ``forward_stuck`` meanwhile. Bodies are
read whole under a deadline before Serve admits a request (:mod:`eks_inference.serving.ingress_guard`).

API, limits and errors: see :mod:`eks_inference.serving.api`. OpenAPI at ``/{model}/openapi.json``,
interactive docs at ``/{model}/docs``: a page whose Swagger UI assets are served by the replica itself from
the pinned ``swagger-ui-bundle-v2`` package, so it works without internet access.
"""

import asyncio
import contextlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from eks_inference.config import Task
from eks_inference.runtime.bucketing import split_sizes
from eks_inference.serving.access_log import AccessLog, sample_from_env
from eks_inference.serving.api import (
    ERROR_SCHEMA,
    PREDICT_RESPONSE_SCHEMA,
    ApiError,
    check_content_length,
    parse_predict_body,
    predict_request_schema,
)
from eks_inference.serving.ingress_guard import set_limits
from eks_inference.serving.serve_config import (
    DEPLOYMENT_NAME,
    UserConfig,
    forward_bound_s,
    parse_app_args,
    parse_user_config,
)

log = logging.getLogger("ray.serve")

METRICS_URLS_TTL_S = 10.0
"""How long ``/info`` reuses the metrics addresses it got from the GCS."""
TEST_HANG_ENV = "EKS_INFERENCE_TEST_HANG_INPUT"
"""Tests only: a replica whose environment sets this makes any forward holding exactly that input hang until the
replica stops, standing in for a wedged device. Nothing this project deploys sets it; it is read from the replica's
own environment, which only whoever deploys the replica controls."""

_QA_ITEM = {"type": "object", "properties": {"question": {"type": "string"}, "context": {"type": "string"}},
            "required": ["question", "context"]}
_PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["inputs"], "additionalProperties": False,
            "properties": {"inputs": {
                "type": "array", "minItems": 1,
                "description": "strings (embedding, classification) or {question, context} objects (QA)",
                "items": {"anyOf": [{"type": "string"}, _QA_ITEM]}}},
        }}},
    },
}
_ERROR_CASES = ((400, "invalid JSON or UTF-8"), (408, "the body did not arrive within body_timeout_s"),
                (413, "body, input count or input length over the limit"),
                (422, "wrong structure or types"), (503, "overloaded or not ready"))
_ERRORS: dict[int | str, dict[str, Any]] = {
    str(code): {"description": desc, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for code, desc in _ERROR_CASES
}

api = FastAPI(
    title="eks-inference model endpoint",
    description="Encoder models (embedding, classification, extractive QA) served with Ray Serve. "
                "Inputs longer than the model's max_seq_length tokens are truncated and flagged in "
                "`truncated`; inputs over max_input_chars characters get 413.",
    version="1",
    docs_url=None,
    redoc_url=None,
    redirect_slashes=False,  # a 307 to the slash-less path is not an answer a JSON client expects
)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    msg = (f"no route {request.method} {request.url.path}; see openapi.json under the model's prefix"
           if exc.status_code in (404, 405) else str(exc.detail))
    return JSONResponse({"error": {"code": code, "message": msg}}, status_code=exc.status_code)


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json")


_DOCS_ASSETS = {"swagger-ui.css": "text/css; charset=utf-8",
                "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
                "favicon-32x32.png": "image/png", "favicon-16x16.png": "image/png"}


def docs_page(title: str) -> str:
    """Swagger UI for the model's OpenAPI, every URL relative to ``/{model}/docs`` (no CDN, no validator)."""
    from html import escape

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<link rel="stylesheet" href="docs-assets/swagger-ui.css">
<link rel="icon" type="image/png" href="docs-assets/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="docs-assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({{url: "openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"}});
</script></body></html>
"""


def docs_asset(name: str) -> tuple[bytes, str] | None:
    """A Swagger UI file from the pinned swagger-ui-bundle-v2 package, or None if it is not one we serve."""
    if name not in _DOCS_ASSETS:
        return None
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return (swagger_ui_path / name).read_bytes(), _DOCS_ASSETS[name]


def _count_inputs(chunks: list[list[Any]]) -> int:
    return sum(len(c) for c in chunks)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("ray", "torch", "transformers", "torch-neuronx"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    return out


def _walk_routes(routes: list[Any], depth: int = 0) -> Iterator[Any]:
    """Every route, including those FastAPI keeps inside included routers (Serve re-mounts class routes)."""
    for route in routes:
        yield route
        sub = getattr(route, "routes", None) or getattr(getattr(route, "original_router", None), "routes", None)
        if sub and depth < 8:
            yield from _walk_routes(list(sub), depth + 1)


REPLICAS_TTL_S = 1.0
"""How long a replica reuses its last answer from the Serve controller for ``/info``'s replica count: a load
tester sampling once a second costs the controller about one call a second, whatever the number of replicas."""


def live_replicas(app_name: str, deployment: str) -> dict[str, Any]:
    """The deployment's replicas as the Serve controller sees them now: RUNNING ones, the autoscaler's target and
    the bounds it scales between (from the deployment's live config, not from any file). Blocking: one call to
    the controller (``get_serve_details``, what ``serve.status()`` reads)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("no Serve controller is running")
    details = client.get_serve_details()
    dep = details["applications"][app_name]["deployments"][deployment]
    states = [str(getattr(r.get("state"), "value", r.get("state"))) for r in dep.get("replicas", [])]
    cfg = dep.get("deployment_config") or {}
    scaling = cfg.get("autoscaling_config") or {}
    fixed = cfg.get("num_replicas")
    return {"running": states.count("RUNNING"), "starting": states.count("STARTING"),
            "target": dep.get("target_num_replicas"),
            "min": scaling.get("min_replicas", fixed), "max": scaling.get("max_replicas", fixed)}


def _replica_id() -> str | None:
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return None


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class InferenceModel:
    def __init__(self, args: dict[str, Any]) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from eks_inference.artifacts.resolve import ArtifactNotFound, resolve_model

        self.args = parse_app_args(args)
        set_limits(body_timeout_s=self.args.body_timeout_s, max_body_bytes=self.args.max_body_bytes)
        self._hang_input = os.environ.get(TEST_HANG_ENV) or None
        # CPU replicas keep every core for the forward; a GPU replica tokenizes big batches in parallel
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if self.args.backend == "cuda" else "false")
        self.cfg: UserConfig | None = None
        self.engine: Any = None
        self.artifact: Any = None
        self.model: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._busy_since: float | None = None
        self._busy_rows = 0
        self.handler_ema_ms = 0.0
        self.requests = 0
        self.shed = 0
        self.access_log = AccessLog(sample_from_env())
        self._admitted = 0
        from eks_inference.serving.metrics import replica_metrics

        self.metrics = replica_metrics(self.args.model, _replica_id(), warn=log.warning)
        self._metrics_where: dict[str, Any] | None = None
        self.bf16_native: bool | None = None
        self.dtype_note: str | None = None
        # While the weights thread owns start-up, reconfigure only records the config it gets (latest wins).
        self._state = threading.Condition()
        self._background = False
        self._pending: UserConfig | None = None
        self._failure: str | None = None
        self._watch: Any = None
        self._stop = threading.Event()
        self._replicas: tuple[float, dict[str, Any]] | None = None
        self._replicas_lock: asyncio.Lock | None = None
        t0 = time.perf_counter()
        try:
            self.model = resolve_model(self.args.model_uri, cache_dir=self.args.cache_dir,
                                       endpoint_url=self.args.s3_endpoint_url,
                                       expected_digest=self.args.weights_sha256)
        except ArtifactNotFound as e:
            if e.missing is None:
                raise
            self._start_waiting(e)
        self.model_seconds = time.perf_counter() - t0

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    # -- unpublished weights -----------------------------------------------------------------------
    def _start_waiting(self, missing: Any) -> None:
        from eks_inference.serving.weights import WeightsWatch

        self._watch = WeightsWatch(model=self.args.model, missing=missing.missing, command=missing.command,
                                   reason=str(missing))
        self._background = True
        first, largest = self.args.weights_poll_s
        log.warning("%s. This replica waits for them (checking every %.0f s, growing to %.0f s) and serves "
                    "once they appear.", missing, first, largest)
        threading.Thread(target=self._wait_then_load, name="weights-wait", daemon=True).start()

    def _wait_for_artifact(self, missing: Any, cfg: UserConfig) -> None:
        """A replica that may not compile found no artifact for ``cfg``: keep ``cfg``, answer 503 naming the
        absent manifest and who writes it, and load from a background thread once it appears."""
        from eks_inference.serving.weights import ArtifactWatch

        with self._state:
            self._pending = self._pending or cfg
            self._background = True
            self._watch = ArtifactWatch(model=self.args.model, missing=missing.missing, command=missing.command,
                                        reason=str(missing))
        log.warning("%s. This replica never compiles; it waits for the artifact and serves once it appears.",
                    missing)
        threading.Thread(target=self._wait_then_load, name="artifact-wait", daemon=True).start()

    def _wait_then_load(self) -> None:
        from eks_inference.artifacts.resolve import ArtifactNotFound
        from eks_inference.serving.weights import ArtifactWatch, Backoff, wait_for_weights

        watch = self._watch
        first, largest = self.args.weights_poll_s
        try:
            if self.model is None:
                model = wait_for_weights(self.args.model_uri, cache_dir=self.args.cache_dir,
                                         endpoint_url=self.args.s3_endpoint_url, watch=watch, stop=self._stop,
                                         backoff=Backoff(initial_s=first, max_s=largest),
                                         expected_digest=self.args.weights_sha256)
                if model is None:
                    return
                self.model = model
                log.info("weights published at %s after %.0f s of waiting; loading the model", watch.missing,
                         time.time() - watch.since)
            artifact_delays = Backoff(initial_s=first, max_s=largest).delays()
            applied: UserConfig | None = None
            while True:
                with self._state:
                    while self._pending is None and not self._stop.is_set():
                        self._state.wait(1.0)
                    if self._stop.is_set():
                        return
                    cfg = self._pending
                    if cfg is applied:  # nothing newer arrived while loading: hand over to reconfigure
                        self._background = False
                        self._watch = None
                        return
                assert cfg is not None
                try:
                    self._apply(cfg)
                except ArtifactNotFound as e:  # the compile step has not published it yet: look again later
                    if e.missing is None:
                        raise
                    if not isinstance(self._watch, ArtifactWatch) or self._watch.missing != e.missing:
                        self._watch = ArtifactWatch(model=self.args.model, missing=e.missing, command=e.command,
                                                    reason=str(e))
                    delay = next(artifact_delays)
                    self._watch.next_check_at = time.time() + delay
                    if self._stop.wait(delay):
                        return
                    self._watch.checks += 1
                    continue
                if isinstance(self._watch, ArtifactWatch) and self._watch.waiting:
                    self._watch.found_at = time.time()
                    log.info("artifact published at %s after %.0f s of waiting", self._watch.missing,
                             self._watch.found_at - self._watch.since)
                applied = cfg
                log.info("applied user_config %s", cfg)
        except Exception as e:
            message = f"{type(e).__name__}: {e}"
            with self._state:
                self._failure = message
            log.error("model %r cannot be served: %s", self.args.model, message)

    def _not_ready(self) -> tuple[int, dict[str, Any]] | None:
        """Why this replica cannot answer yet (status, JSON body), or None when it can."""
        failure, watch = self._failure, self._watch
        model = self.args.model
        if failure is not None:
            return 503, {"status": "failed", "model": model,
                         "error": {"code": "model_unavailable", "message": failure}}
        stuck = self._stuck()
        if stuck is not None:
            return 503, {"status": "stuck", "model": model, "error": {"code": "forward_stuck", "message": stuck}}
        if watch is not None and watch.waiting:
            return 503, watch.body()
        if self.engine is None or self.cfg is None:
            return 503, {"status": "loading", "model": model, "error": {
                "code": "not_ready", "message": "the model is loading (weights, then the compiled artifact, "
                                                "then a warm-up); retry shortly"}}
        return None

    # -- configuration -----------------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = parse_user_config(user_config, batch_buckets=self.args.batch_buckets)
        with self._state:
            if self._background:
                self._pending = cfg
                self._state.notify_all()
                log.info("user_config %s kept; it applies once the model's weights are loaded", user_config)
                return
        from eks_inference.artifacts.resolve import ArtifactNotFound

        try:
            self._apply(cfg)
        except ArtifactNotFound as e:
            if e.missing is None:
                raise
            self._wait_for_artifact(e, cfg)
            return
        log.info("applied user_config %s", user_config)

    def _apply(self, cfg: UserConfig) -> None:
        prev = self.cfg
        if self.engine is None or prev is None or (prev.dtype, prev.max_seq_length) != (cfg.dtype, cfg.max_seq_length):
            self._load(cfg)
        self._executor.submit(self.engine.backend.set_num_threads, cfg.num_threads).result()
        self.engine.max_batch_size = cfg.max_batch_size
        self._batcher.set_max_batch_size(cfg.max_batch_size)
        self._batcher.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.cfg = cfg
        self._describe_api()

    def _load(self, cfg: UserConfig) -> None:
        """Load the artifact for ``cfg``; in the cluster (``compile_on_miss`` false) a missing one raises
        ArtifactNotFound, which the callers turn into waiting for the compile step."""
        from eks_inference.artifacts.resolve import resolve_artifact
        from eks_inference.runtime.backends import load_backend
        from eks_inference.runtime.engine import Engine
        from eks_inference.serving.artifact import replica_artifact

        a = self.args
        wanted = replica_artifact(a, cfg)
        req, seq_buckets = wanted.request, wanted.request.seq_buckets
        self.bf16_native, self.dtype_note = wanted.bf16_native, wanted.dtype_note
        if self.dtype_note:
            log.warning("user_config dtype %s: serving %s because %s", cfg.dtype.value, req.dtype, self.dtype_note)
        compile_fn: Any = None
        if a.compile_on_miss:
            from eks_inference.compile.trace import compile_artifact as compile_fn
        artifact = resolve_artifact(req, self.model, cache_dir=a.cache_dir, artifact_uri=a.artifact_uri,
                                    endpoint_url=a.s3_endpoint_url, compile_fn=compile_fn,
                                    compile_hint=a.compile_hint)
        log.info("artifact %s (%s) ready in %.1f s", artifact.key, artifact.source, artifact.seconds)

        def build() -> Any:
            backend = load_backend(artifact.path, artifact.manifest, num_threads=cfg.num_threads)
            if a.torch_compile and backend.name == "cpu":
                from eks_inference.runtime.backends import compile_cpu_backend

                backend = compile_cpu_backend(backend, self.model.path, a.task)
            engine = Engine(model_dir=self.model.path, task=a.task, backend=backend,
                            batch_buckets=a.batch_buckets, seq_buckets=seq_buckets,
                            max_seq_length=cfg.max_seq_length, max_batch_size=cfg.max_batch_size)
            engine.warmup()
            return engine

        self.engine = self._executor.submit(build).result()
        self.engine.on_forward = self.metrics.forward
        self.artifact = artifact

    def _describe_api(self) -> None:
        """Per-model OpenAPI: title, task-specific input schema and this deployment's input limit."""
        app = getattr(self, "_asgi_app", None)  # the replica's copy of `api`, set by @serve.ingress
        if not isinstance(app, FastAPI):
            return
        a = self.args
        app.title = f"{a.model}: {a.task.value} on {a.processor.value}"
        for route in _walk_routes(app.routes):
            if isinstance(route, APIRoute) and route.path == "/predict":
                route.openapi_extra = {"requestBody": {"required": True, "content": {"application/json": {
                    "schema": predict_request_schema(a.task, a.max_inputs)}}}}
        app.openapi_schema = None

    def _stuck(self) -> str | None:
        """Why the running forward counts as stuck (run past :func:`forward_bound_s`), or None."""
        since, engine = self._busy_since, self.engine
        if since is None or engine is None:
            return None
        running = time.perf_counter() - since
        bound = forward_bound_s(self.args.forward_timeout_s, engine.estimate_forward_s(self._busy_rows))
        if running <= bound:
            return None
        return (f"a forward of {self._busy_rows} inputs has run {running:.0f} s, past its bound of {bound:.0f} s "
                f"(forward_timeout_s {self.args.forward_timeout_s:g}); the replica is being replaced")

    def check_health(self) -> None:
        """Healthy while waiting for weights or loading them (Serve must not replace a waiting replica);
        failing with the reason once weights turned out corrupt, or once a forward has run past its bound (a hung
        device or library holds the forward thread, and every request behind it), so Serve replaces the replica."""
        if self._failure is not None:
            raise RuntimeError(self._failure)
        stuck = self._stuck()
        if stuck is not None:
            log.error("health check fails: %s", stuck)
            raise RuntimeError(stuck)
        if self.engine is None and not self._background:
            raise RuntimeError("model not loaded yet")

    # -- batching ----------------------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0, batch_size_fn=_count_inputs)
    async def _predict_batch(self, chunks: list[list[Any]]) -> list[tuple[list[Any], list[bool], float, float]]:
        """Each chunk's outputs and truncation flags, with the forward's start and end (``perf_counter``)."""
        flat = [x for c in chunks for x in c]
        run = self._hang if self._hang_input is not None and self._hang_input in flat else self.engine.run
        self._busy_rows = len(flat)
        self._busy_since = began = time.perf_counter()
        try:
            outputs, truncated = await asyncio.get_running_loop().run_in_executor(self._executor, run, flat)
        finally:
            self._busy_since = None
        ended = time.perf_counter()
        results, start = [], 0
        for c in chunks:
            results.append((outputs[start:start + len(c)], truncated[start:start + len(c)], began, ended))
            start += len(c)
        return results

    def _hang(self, items: list[Any]) -> tuple[list[Any], list[bool]]:
        """:data:`TEST_HANG_ENV`: hold the forward thread, as a wedged device would, until the replica stops."""
        self._stop.wait()
        raise RuntimeError("forward abandoned: the replica is stopping")

    @property
    def _batcher(self) -> Any:
        """The ``@serve.batch`` handle, whose setters change the batch size and wait at run time."""
        return self._predict_batch

    def _stretch_wait(self) -> None:
        """Wait for the running forward to end before closing the next batch (see module docstring)."""
        assert self.cfg is not None
        wait = self.cfg.batch_wait_timeout_s
        since = self._busy_since
        if since is not None:
            est = self.engine.estimate_forward_s(self._busy_rows)
            remaining = since + est - time.perf_counter()
            wait = min(1.0, max(wait, remaining, 0.1 * est))
        self._batcher.set_batch_wait_timeout_s(wait)

    # -- routes ------------------------------------------------------------------------------------
    @api.post("/predict", openapi_extra=_PREDICT_OPENAPI, responses={
        200: {"description": "one output per input", "content": {"application/json": {
            "schema": PREDICT_RESPONSE_SCHEMA}}}, **_ERRORS})
    async def predict(self, request: Request) -> Response:
        t0 = time.perf_counter()
        resp = await self._admit(request)
        self.access_log.record(model=self.args.model, route="/predict", status=resp.status_code,
                               ms=(time.perf_counter() - t0) * 1000)
        return resp

    async def _admit(self, request: Request) -> Response:
        a = self.args
        not_ready = self._not_ready()
        if not_ready is not None:
            return _json(not_ready[1], not_ready[0])
        limit = a.max_requests_per_replica
        if limit is not None and self._admitted >= limit:
            self.shed += 1
            return Response(json.dumps({"error": {"code": "overloaded", "message": (
                f"this replica already holds {limit} requests (max_ongoing_requests + max_queued_requests); "
                "retry shortly or add replicas")}}).encode(), status_code=503, media_type="application/json",
                headers={"retry-after": "1"})
        self._admitted += 1
        try:
            return await self._predict(request)
        finally:
            self._admitted -= 1

    async def _predict(self, request: Request) -> Response:
        a = self.args
        try:
            check_content_length(request.headers.get("content-length"), a.max_body_bytes)
            body = await self._read_body(request)
            items = parse_predict_body(body, task=a.task, max_inputs=a.max_inputs,
                                       max_input_chars=a.max_input_chars, max_body_bytes=a.max_body_bytes)
        except ApiError as e:
            return _json(e.body(), e.status)
        assert self.cfg is not None
        self.requests += 1
        self._stretch_wait()
        chunks, start = [], 0
        for n in split_sizes(len(items), self.cfg.max_batch_size):
            chunks.append(items[start:start + n])
            start += n
        t0 = time.perf_counter()
        try:
            parts = await asyncio.gather(*(self._predict_batch(c) for c in chunks))
        except Exception as e:  # a bug must not take the replica down; the client gets a JSON 500
            log.exception("prediction failed")
            return _json({"error": {"code": "internal", "message": f"prediction failed: {type(e).__name__}"}}, 500)
        dt_ms = (time.perf_counter() - t0) * 1000
        began = min(p[2] for p in parts)
        self.metrics.request(began - t0, max(p[3] for p in parts) - began)
        self.handler_ema_ms = dt_ms if self.requests == 1 else 0.9 * self.handler_ema_ms + 0.1 * dt_ms
        outputs = [o for p in parts for o in p[0]]
        truncated = [t for p in parts for t in p[1]]
        return _json({"model": a.model, "outputs": outputs, "truncated": truncated})

    async def _read_body(self, request: Request) -> bytes:
        limit = self.args.max_body_bytes
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @api.get("/healthz", responses={"503": _ERRORS["503"]})
    async def healthz(self) -> Response:
        not_ready = self._not_ready()
        if not_ready is not None:
            return _json(not_ready[1], not_ready[0])
        return _json({"status": "ok", "model": self.args.model})

    @api.get("/docs", include_in_schema=False)
    async def docs(self) -> Response:
        return HTMLResponse(docs_page(f"{self.args.model} - eks-inference"))

    @api.get("/docs-assets/{name}", include_in_schema=False)
    async def docs_assets(self, name: str) -> Response:
        found = docs_asset(name)
        if found is None:
            return _json({"error": {"code": "not_found", "message": f"no docs asset {name!r}"}}, 404)
        data, media_type = found
        return Response(data, media_type=media_type, headers={"cache-control": "public, max-age=3600"})

    async def _replica_counts(self) -> dict[str, Any]:
        """:func:`live_replicas`, cached for :data:`REPLICAS_TTL_S`; concurrent callers share one controller call,
        which runs off the event loop. On failure the reason is reported instead of counts."""
        cached = self._replicas
        if cached is not None and time.monotonic() - cached[0] < REPLICAS_TTL_S:
            return cached[1]
        if self._replicas_lock is None:
            self._replicas_lock = asyncio.Lock()
        async with self._replicas_lock:
            cached = self._replicas
            if cached is not None and time.monotonic() - cached[0] < REPLICAS_TTL_S:
                return cached[1]
            try:
                ctx = serve.get_replica_context()
                counts = await asyncio.to_thread(live_replicas, ctx.app_name, ctx.deployment)
            except Exception as e:  # the count is informative; /info must answer anyway
                counts = {"running": None, "error": f"{type(e).__name__}: {e}"}
            self._replicas = (time.monotonic(), counts)
            return counts

    async def _metrics_endpoints(self) -> dict[str, Any]:
        """Where the metrics of this replica and of every node of its Ray cluster are read (see
        :mod:`eks_inference.serving.metrics`): asked of the GCS at most every :data:`METRICS_URLS_TTL_S`, since
        nodes come and go with autoscaling."""
        cached = self._metrics_where
        if cached is not None and time.monotonic() - cached["at"] < METRICS_URLS_TTL_S:
            return cached["doc"]  # type: ignore[no-any-return]
        from eks_inference.serving.metrics import metrics_urls

        try:
            mine, every, interval = await asyncio.to_thread(metrics_urls)
        except Exception as e:  # /info must answer anyway; say why the address is missing
            return {"metrics_url": None, "metrics_urls": [], "metrics_error": f"{type(e).__name__}: {e}"}
        doc = {"metrics_url": mine, "metrics_urls": every, "metrics_report_interval_s": interval}
        self._metrics_where = {"at": time.monotonic(), "doc": doc}
        return doc

    @api.get("/info")
    async def info(self) -> Response:
        a, cfg, eng, art, model = self.args, self.cfg, self.engine, self.artifact, self.model
        not_ready = self._not_ready()
        metrics = await self._metrics_endpoints()
        data: dict[str, Any] = {
            "model": a.model, "revision": a.revision, "task": a.task.value,
            "status": "ok" if not_ready is None else not_ready[1]["status"],
            "processor": a.processor.value, "backend": a.backend,
            "model_uri": a.model_uri, "weights_digest": model.digest if model is not None else None,
            "limits": {"max_inputs": a.max_inputs, "max_input_chars": a.max_input_chars,
                       "max_body_bytes": a.max_body_bytes, "body_timeout_s": a.body_timeout_s,
                       "forward_timeout_s": a.forward_timeout_s},
            "versions": _versions(),
            **metrics,
        }
        if cfg is not None and eng is not None and art is not None:
            data |= {
                "dtype": art.manifest["dtype"],
                "requested_dtype": cfg.dtype.value,
                "dtype_note": self.dtype_note,
                "bf16_native": self.bf16_native,
                "max_batch_size": cfg.max_batch_size,
                "batch_wait_timeout_s": cfg.batch_wait_timeout_s,
                "max_seq_length": cfg.max_seq_length,
                "num_threads": cfg.num_threads,
                "batch_buckets": list(eng.batch_buckets),
                "seq_buckets": list(eng.seq_buckets),
                # what the replica's process runs with: the compiled head, and the CPU settings from its environment
                "torch_compile": bool(getattr(eng.backend, "compiled", False)),
                "cpu_env": {k: os.environ[k] for k in ("DNNL_DEFAULT_FPMATH_MODE", "THP_MEM_ALLOC_ENABLE")
                            if k in os.environ},
                "artifact": {"key": art.key, "source": art.source, "uri": art.uri,
                             "seconds": round(art.seconds, 3), "checks": art.manifest.get("checks"),
                             "compile_seconds": art.manifest.get("compile_seconds")},
                "stats": {"requests": self.requests, "shed": self.shed, "batches": eng.batches, "inputs": eng.items,
                          "mean_batch_size": round(eng.items / eng.batches, 2) if eng.batches else None,
                          "forward_ms": {str(b): round(t * 1000, 2) for b, t in sorted(eng.forward_ema_s.items())},
                          "engine_run_ms": round(eng.run_ema_s * 1000, 2),
                          "batch_and_run_ms": round(self.handler_ema_ms, 2)},
            }
        else:
            data["error"] = not_ready[1]["error"] if not_ready else None
        data["replica"] = _replica_id()
        data["pid"] = os.getpid()  # with the replica id: a reconfigure keeps both, a restart changes them
        data["replicas"] = await self._replica_counts()
        return _json(data)


def build_app(args: dict[str, Any]) -> Any:
    """Ray Serve application builder (``import_path: eks_inference.serving.app:build_app``)."""
    import ray

    from eks_inference.config import RAY_VERSION

    parse_app_args(args)  # fail at deploy time, in the controller, on malformed args
    if ray.__version__ != RAY_VERSION:
        log.warning("Ray %s runs this application, but the project pins %s (images, RayService rayVersion)",
                    ray.__version__, RAY_VERSION)
    deployment: Any = InferenceModel
    return deployment.bind(args)


__all__ = ["DEPLOYMENT_NAME", "InferenceModel", "Task", "api", "build_app"]
