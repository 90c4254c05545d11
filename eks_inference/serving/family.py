"""A model family's Ray Serve application: many members behind one deployment, chosen per request by model id.

The model id travels in Serve's own header, ``serve_multiplexed_model_id`` (Ray 2.60: the Python proxy reads it in
``ray/serve/_private/proxy.py`` and routes with it; a replica's direct ingress reads it in
``ray/serve/_private/replica.py``, ``_direct_ingress_asgi``; the handler gets it from
``serve.get_multiplexed_model_id()``). With the Python proxy, Serve's request router prefers replicas that report
holding the model (``ray/serve/_private/request_router/request_router.py``, multiplexed-model matching, and each
replica's report from ``ray/serve/multiplex.py``, ``_push_model_ids_info``). HAProxy ingress picks a replica without
reading the header, so behind it a member lands on any replica; a family with ``routing: model-aware`` runs the
Python proxy instead (docs/families.md, "Routing").

Per request: the id must be a member of the family's index (:mod:`eks_inference.artifacts.family_index`), read from
the repository and re-read on an unknown id (at most every :data:`MISS_REFRESH_S`), so a member published a moment
ago is served by its first request, with no deploy; an id the index does not name gets a JSON 404 naming it. On a
miss the replica fetches the member's weights, checks their digest against the index's (the same check as a model's
pinned ``weights_sha256``), resolves its compiled artifact for this processor as a model's replica does, loads it and
runs one warm-up forward. Held members are bounded by bytes (:mod:`eks_inference.serving.model_cache`), and so is what
the replica keeps on disk of members it loaded (:mod:`eks_inference.artifacts.disk_cache`: least recently used first,
never a member held or loading); requests are batched per member (Serve's ``@serve.batch`` splits batches by model
id, ``ray/serve/batching.py``). Each request keeps the member it resolved until it is answered, so an eviction
meanwhile cannot hand it another member's weights.

The response names the member and its digest; ``x-eks-inference-cold: 1`` marks a request that waited for its member
to load on this replica (the load tester splits latency on it). ``/info`` lists held members and the counters.
"""

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from eks_inference import metric_names as names
from eks_inference.artifacts.disk_cache import DiskCache
from eks_inference.artifacts.family_index import COLD_HEADER, MODEL_ID_HEADER
from eks_inference.runtime.bucketing import split_sizes
from eks_inference.runtime.shared_graphs import MAX_SKELETONS, GraphPool
from eks_inference.serving.access_log import AccessLog, sample_from_env
from eks_inference.serving.api import ApiError, check_content_length, parse_predict_body
from eks_inference.serving.app import _json, _replica_id, _versions, live_replicas
from eks_inference.serving.ingress_guard import set_limits
from eks_inference.serving.model_cache import TooLarge, evictions, graph_bytes, over_budget
from eks_inference.serving.serve_config import (
    DEPLOYMENT_NAME,
    AppArgs,
    UserConfig,
    parse_app_args,
    parse_user_config,
)

log = logging.getLogger("ray.serve")

INDEX_TTL_S = 30.0
"""How long a replica trusts its copy of the index for ids it knows (a re-published member's new revision is seen
within this); an unknown id re-reads it at once."""
HELD_GAUGE_PERIOD_S = 2.0
"""How often the held-bytes gauge is set again: Ray exports a gauge only while it keeps being set (its recorder drops
values older than a TTL, ``ray/_private/telemetry/open_telemetry_metric_recorder.py``)."""
MISS_REFRESH_S = 0.25
"""The least time between two index reads caused by unknown ids: a flood of bad ids costs S3 at most four listings a
second per replica."""
_MULTIPLEX_ATTR = "__serve_multiplex_wrapper"
"""Where ``@serve.multiplexed`` keeps its LRU on the instance (ray/serve/api.py, ``multiplexed``)."""

family_api = FastAPI(title="eks-inference model family endpoint", docs_url=None, redoc_url=None,
                     redirect_slashes=False)


@family_api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": {"code": code, "message": f"no route {request.method} {request.url.path}; "
                                   "POST predict with the header serve_multiplexed_model_id, GET info, healthz or "
                                   "models"}}, status_code=exc.status_code)


@dataclass
class LoadedMember:
    model_id: str
    digest: str
    revision: str
    engine: Any
    bytes: int
    load_s: float
    loaded_at: float = field(default_factory=time.time)
    hits: int = 0
    files: tuple[Path, ...] = ()
    """Its entries in the replica's disk cache (weights, artifact): kept while it is held."""
    used_at: float = field(default_factory=time.time)


def _job_inputs(jobs: list[tuple[LoadedMember, list[Any]]]) -> int:
    return sum(len(j[1]) for j in jobs)


class FamilyMetrics:
    """:data:`eks_inference.metric_names.FAMILY`, through ``ray.util.metrics`` (exported as ``ray_...``)."""

    def __init__(self, *, application: str, replica: str, processor: str) -> None:
        from ray.util import metrics as m

        tags = {"application": application, "replica": replica, "processor": processor}
        keys = tuple(tags)

        def counter(name: str, doc: str) -> Any:
            return m.Counter(name, doc, tag_keys=keys).set_default_tags(tags)

        from eks_inference.serving.metrics import MS_BOUNDARIES

        self.loads = counter(names.FAMILY_LOADS, "Members loaded on a miss")
        self.evictions = counter(names.FAMILY_EVICTIONS, "Members evicted to stay within the memory budget")
        self.hits = counter(names.FAMILY_HITS, "Predict requests whose member was held")
        self.cold = counter(names.FAMILY_COLD, "Predict requests that waited for their member to load")
        self.load_total = counter(names.FAMILY_LOAD_TIME_MS, "Sum of member load times, ms")
        self.load_ms = m.Histogram(names.FAMILY_LOAD_MS, "Per member load: ms", boundaries=MS_BOUNDARIES,
                                   tag_keys=keys).set_default_tags(tags)
        self.held = m.Gauge(names.FAMILY_HELD_BYTES, "Bytes of held members", tag_keys=keys).set_default_tags(tags)


class _NoMetrics:
    def __getattr__(self, _name: str) -> Any:
        return self

    def inc(self, *_a: Any, **_k: Any) -> None:
        pass

    def observe(self, *_a: Any, **_k: Any) -> None:
        pass

    def set(self, *_a: Any, **_k: Any) -> None:
        pass


def parse_family_args(args: dict[str, Any]) -> tuple[AppArgs, int]:
    """The model args plus the family's memory budget in bytes. (``family.share_graphs``, default true, is read by
    the replica: false loads each member's graph on its own, the way bench/family.py measures what sharing saves.)"""
    from eks_inference.config import ConfigError

    app_args = parse_app_args(args)
    fam = args.get("family")
    budget = fam.get("memory_budget_bytes") if isinstance(fam, dict) else None
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"application args family: {fam!r} has no positive memory_budget_bytes; render the config "
                          "with render_serve_config from a model entry with a family")
    return app_args, budget


def family_disk_budget(args: dict[str, Any]) -> int | None:
    """Bytes the replica's disk cache of members may hold (``family.disk_budget_bytes``); None, in a serve config
    rendered before the bound existed: no bound."""
    from eks_inference.config import ConfigError

    fam = args.get("family")
    budget = fam.get("disk_budget_bytes") if isinstance(fam, dict) else None
    if budget is None:
        return None
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"application args family disk_budget_bytes: {budget!r} is not a positive number of bytes; "
                          "render the config with render_serve_config from a model entry with a family")
    return budget


def member_app_args(family_args: AppArgs, entry: Any) -> AppArgs:
    """A member's args as a replica of the family loads it (and the compile step compiles it): its own name, revision,
    weights prefix and pinned digest from the index entry, so its artifact has the cache key replicas request."""
    from eks_inference.storage import join

    return replace(family_args, model=f"{family_args.model}/{entry.model_id}", revision=entry.revision,
                   model_uri=join(family_args.model_uri, entry.prefix), weights_sha256=entry.digest)


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(family_api)
class FamilyModel:
    def __init__(self, args: dict[str, Any]) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.args, self.budget = parse_family_args(args)
        self._disk = DiskCache(self.args.cache_dir, family_disk_budget(args))
        set_limits(body_timeout_s=self.args.body_timeout_s, max_body_bytes=self.args.max_body_bytes)
        self.family = self.args.model
        self.cfg: UserConfig | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._index: Any = None
        self._index_at = 0.0
        self._index_lock: asyncio.Lock | None = None
        self._measured: dict[str, int] = {}
        fam = args.get("family") or {}
        self.routing = str(fam.get("routing") or "model-blind")
        self._graphs = GraphPool(max_skeletons=0 if fam.get("share_graphs") is False else MAX_SKELETONS)
        self.stats = {"requests": 0, "hits": 0, "cold": 0, "loads": 0, "evictions": 0, "unknown": 0,
                      "load_ms_total": 0.0}
        self._load_ms: list[float] = []
        self.access_log = AccessLog(sample_from_env())
        self._lock = threading.Lock()
        replica = _replica_id() or "unknown"
        try:
            self.metrics: Any = FamilyMetrics(application=self.family, replica=replica,
                                              processor=self.args.processor.value)
        except Exception as e:  # serving must not fail for want of metrics
            log.warning("family metrics are off: %s: %s", type(e).__name__, e)
            self.metrics = _NoMetrics()
        self._stop = threading.Event()
        threading.Thread(target=self._report_held, name="family-held-bytes", daemon=True).start()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()

    def _report_held(self) -> None:
        while not self._stop.wait(HELD_GAUGE_PERIOD_S):
            try:
                self.metrics.held.set(self._held_bytes())
            except Exception as e:  # a dict resized under us: the next period reports it
                log.debug("held-bytes gauge skipped: %s", e)

    # -- configuration -----------------------------------------------------------------------------
    def reconfigure(self, user_config: dict[str, Any]) -> None:
        cfg = parse_user_config(user_config, batch_buckets=self.args.batch_buckets)
        prev, self.cfg = self.cfg, cfg
        batcher: Any = self._batch  # the @serve.batch handle, whose setters change size and wait at run time
        batcher.set_max_batch_size(cfg.max_batch_size)
        batcher.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        if prev is not None and (prev.dtype, prev.max_seq_length) != (cfg.dtype, cfg.max_seq_length):
            held = self._held()
            if held is not None:
                held.clear()  # members load again, in the new shape, on their next request
        log.info("family %s applied user_config %s", self.family, user_config)

    def check_health(self) -> None:
        if self.cfg is None:
            raise RuntimeError("not configured yet")

    # -- the index ---------------------------------------------------------------------------------
    def _read_index(self) -> Any:
        from eks_inference.artifacts.family_index import read_index
        from eks_inference.storage import open_store

        return read_index(open_store(self.args.model_uri, endpoint_url=self.args.s3_endpoint_url), self.family)

    async def _lookup(self, model_id: str) -> Any:
        """The member's index entry, or None when the family's current index does not name it."""
        now = time.monotonic()
        index = self._index
        if index is not None and now - self._index_at < INDEX_TTL_S and model_id in index.members:
            return index.members[model_id]
        if self._index_lock is None:
            self._index_lock = asyncio.Lock()
        async with self._index_lock:
            stale = self._index is None or time.monotonic() - self._index_at >= INDEX_TTL_S
            missing = self._index is not None and model_id not in self._index.members
            if stale or (missing and time.monotonic() - self._index_at >= MISS_REFRESH_S):
                self._index = await asyncio.to_thread(self._read_index)
                self._index_at = time.monotonic()
        return self._index.members.get(model_id)

    # -- members -----------------------------------------------------------------------------------
    def _held(self) -> "OrderedDict[str, LoadedMember] | None":
        wrapper = getattr(self, _MULTIPLEX_ATTR, None)
        return None if wrapper is None else wrapper.models

    def _held_bytes(self) -> int:
        held = self._held()
        return sum(m.bytes for m in held.values()) if held else 0

    @serve.multiplexed(max_num_models_per_replica=-1)  # bounded by bytes below, not by a count
    async def _member(self, model_id: str) -> LoadedMember:
        entry = self._index.members[model_id]  # _lookup ran first
        wrapper = getattr(self, _MULTIPLEX_ATTR)
        estimate = self._measured.get(model_id, entry.bytes)
        held = [(k, m.bytes) for k, m in wrapper.models.items()]
        for _ in range(evictions(held, estimate, self.budget)):
            await self._evict(wrapper)
        in_use = [p for m in wrapper.models.values() for p in m.files]
        t0 = time.perf_counter()
        member = await asyncio.to_thread(self._load, entry, in_use)
        load_ms = (time.perf_counter() - t0) * 1000
        member.load_s = load_ms / 1000
        self._measured[model_id] = member.bytes
        with self._lock:
            self.stats["loads"] += 1
            self.stats["load_ms_total"] += load_ms
            self._load_ms.append(load_ms)
            del self._load_ms[:-1000]
        self.metrics.loads.inc()
        self.metrics.load_ms.observe(load_ms)
        self.metrics.load_total.inc(load_ms)
        log.info("family %s loaded %s (%d bytes) in %.0f ms", self.family, model_id, member.bytes, load_ms)
        await asyncio.to_thread(self._trim_disk, [*in_use, *member.files])
        return member

    def _trim_disk(self, in_use: list[Path]) -> None:
        """After a load (the only time the disk cache grows), within Serve's model lock: no other load runs here."""
        self._disk.in_use(in_use)
        done = self._disk.trim()
        if done is None:
            return
        if done.removed:
            log.info("family %s removed %d least recently used entries (%d bytes) from its disk cache",
                     self.family, len(done.removed), sum(e.bytes for e in done.removed))
        if done.over:
            log.warning("family %s: the disk cache holds %d bytes of members in use, over its disk budget of %d; "
                        "raise the family's disk_budget or lower its memory_budget", self.family, done.bytes,
                        self._disk.budget)

    async def _evict(self, wrapper: Any) -> None:
        gone = next(iter(wrapper.models))
        member = wrapper.models[gone]
        await wrapper.unload_model_lru()  # Serve's own LRU: it stops advertising the id to the router
        self._disk.touch(member.files, member.used_at)  # its files' place in the disk cache's LRU: its last use
        with self._lock:
            self.stats["evictions"] += 1
        self.metrics.evictions.inc()
        log.info("family %s evicted %s", self.family, gone)

    async def _trim(self) -> None:
        """After a load that measured larger than its estimate: drop the least recently used until within budget."""
        wrapper = getattr(self, _MULTIPLEX_ATTR, None)
        if wrapper is None:
            return
        async with wrapper._model_cache_lock:  # the lock Serve holds while it loads or unloads
            for _ in range(over_budget([(k, m.bytes) for k, m in wrapper.models.items()], self.budget)):
                await self._evict(wrapper)
        self.metrics.held.set(self._held_bytes())

    def _load(self, entry: Any, in_use: list[Path]) -> LoadedMember:
        """Fetch, verify against the index's digest, resolve the artifact, load and warm one member (blocking).
        ``in_use``: the held members' disk-cache entries, declared in use with this member's before any fetch."""
        from eks_inference.artifacts.resolve import (
            cached_artifact_dir,
            cached_model_dir,
            resolve_artifact,
            resolve_model,
        )
        from eks_inference.runtime.backends import load_backend
        from eks_inference.runtime.engine import Engine
        from eks_inference.serving.artifact import replica_artifact

        a = self.args
        cfg = self.cfg
        assert cfg is not None
        member_args = member_app_args(a, entry)
        wanted = replica_artifact(member_args, cfg)
        self._disk.in_use([*in_use, cached_model_dir(a.cache_dir, entry.digest),
                           cached_artifact_dir(a.cache_dir, wanted.request, entry.digest)])
        model = resolve_model(member_args.model_uri, cache_dir=a.cache_dir, endpoint_url=a.s3_endpoint_url,
                              expected_digest=entry.digest)
        compile_fn: Any = None
        if a.compile_on_miss:
            from eks_inference.compile.trace import compile_artifact as compile_fn
        artifact = resolve_artifact(wanted.request, model, cache_dir=a.cache_dir, artifact_uri=a.artifact_uri,
                                    endpoint_url=a.s3_endpoint_url, compile_fn=compile_fn,
                                    compile_hint=a.compile_hint)

        def build() -> Any:
            backend = load_backend(artifact.path, artifact.manifest, num_threads=cfg.num_threads)
            fresh = []
            # the family's warmed graph with this member's weights; never a Neuron graph (it holds its own weights)
            shares = backend.name in ("cpu", "cuda")
            for key, graph in list(backend.graphs.items()) if shares else ():
                backend.graphs[key], shared = self._graphs.share(graph)
                if not shared:
                    fresh.append(backend.graphs[key])
            engine = Engine(model_dir=model.path, task=a.task, backend=backend, batch_buckets=a.batch_buckets,
                            seq_buckets=wanted.request.seq_buckets, max_seq_length=cfg.max_seq_length,
                            max_batch_size=cfg.max_batch_size)
            engine.run(["warm up"] if a.task.value != "question-answering" else [("warm up?", "warm up")])
            engine.batches = engine.items = 0
            for graph in fresh:  # warmed by the forward above: later members of its architecture copy it
                self._graphs.adopt(graph)
            return engine

        engine = self._executor.submit(build).result()  # torch runs on the forward thread only
        size = graph_bytes(engine.backend.graphs.values()) or sum(
            int(f["size"]) for f in artifact.manifest.get("files", {}).values())
        return LoadedMember(entry.model_id, model.digest, entry.revision, engine, size, 0.0,
                            files=(model.path, artifact.path))

    # -- batching ----------------------------------------------------------------------------------
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, batch_size_fn=_job_inputs)
    async def _batch(self, jobs: list[tuple[LoadedMember, list[Any]]]) -> list[tuple[list[Any], list[bool]]]:
        """One forward per member in the batch (Serve already splits batches by model id; grouping again here keeps
        each input with the member its request resolved, whatever Serve does)."""
        groups: dict[int, list[int]] = {}
        for i, (member, _) in enumerate(jobs):
            groups.setdefault(id(member), []).append(i)
        results: list[tuple[list[Any], list[bool]]] = [([], [])] * len(jobs)
        loop = asyncio.get_running_loop()
        for idx in groups.values():
            member = jobs[idx[0]][0]
            flat = [x for i in idx for x in jobs[i][1]]
            outputs, truncated = await loop.run_in_executor(self._executor, member.engine.run, flat)
            start = 0
            for i in idx:
                n = len(jobs[i][1])
                results[i] = (outputs[start:start + n], truncated[start:start + n])
                start += n
        return results

    # -- routes ------------------------------------------------------------------------------------
    @family_api.post("/predict")
    async def predict(self, request: Request) -> Response:
        t0 = time.perf_counter()
        resp = await self._predict(request)
        self.access_log.record(model=self.family, route="/predict", status=resp.status_code,
                               ms=(time.perf_counter() - t0) * 1000)
        return resp

    async def _predict(self, request: Request) -> Response:
        a = self.args
        model_id = serve.get_multiplexed_model_id()
        if not model_id:
            return _json({"error": {"code": "model_id_missing", "message": (
                f"family {self.family!r} serves many models: name one in the header {MODEL_ID_HEADER}")}}, 400)
        try:
            check_content_length(request.headers.get("content-length"), a.max_body_bytes)
            body = await request.body()
            items = parse_predict_body(body, task=a.task, max_inputs=a.max_inputs,
                                       max_input_chars=a.max_input_chars, max_body_bytes=a.max_body_bytes)
        except ApiError as e:
            return _json(e.body(), e.status)
        if self.cfg is None:
            return _json({"status": "loading", "error": {"code": "not_ready", "message": "not configured yet"}}, 503)
        try:
            entry = await self._lookup(model_id)
        except Exception as e:
            log.exception("reading the index of family %s failed", self.family)
            return _json({"error": {"code": "index_unavailable", "message": (
                f"the index of family {self.family!r} cannot be read: {type(e).__name__}: {e}")}}, 503)
        if entry is None:
            with self._lock:
                self.stats["unknown"] += 1
            gen = self._index.generation if self._index is not None else 0
            return _json({"model": self.family, "model_id": model_id, "error": {"code": "model_not_found", "message": (
                f"model {model_id!r} is not a member of family {self.family!r} (index generation {gen}); publish it "
                f"with: eks-inference publish MODEL_DIR --to REPOSITORY --family {self.family} --model-id "
                f"{model_id}")}}, 404)
        held = self._held()
        cold = held is None or model_id not in held
        try:
            member = await self._member(model_id)
        except TooLarge as e:
            return _json({"model_id": model_id, "error": {"code": "model_too_large", "message": (
                f"model {model_id!r} {e}; raise the family's memory_budget")}}, 507)
        except Exception as e:
            log.exception("loading %s of family %s failed", model_id, self.family)
            return _json({"model_id": model_id, "error": {"code": "model_unavailable", "message": (
                f"model {model_id!r} of family {self.family!r} cannot be loaded: {type(e).__name__}: {e}")}}, 503)
        if cold:
            await self._trim()
        member.hits += 1
        member.used_at = time.time()
        with self._lock:
            self.stats["requests"] += 1
            self.stats["cold" if cold else "hits"] += 1
        (self.metrics.cold if cold else self.metrics.hits).inc()
        chunks, start = [], 0
        for n in split_sizes(len(items), self.cfg.max_batch_size):
            chunks.append(items[start:start + n])
            start += n
        try:
            parts = await asyncio.gather(*(self._batch((member, c)) for c in chunks))
        except Exception as e:  # a bug must not take the replica down; the client gets a JSON 500
            log.exception("prediction failed")
            return _json({"error": {"code": "internal", "message": f"prediction failed: {type(e).__name__}"}}, 500)
        outputs = [o for p in parts for o in p[0]]
        truncated = [t for p in parts for t in p[1]]
        resp = _json({"model": self.family, "model_id": model_id, "digest": member.digest, "outputs": outputs,
                      "truncated": truncated, "cold": cold})
        resp.headers[COLD_HEADER] = "1" if cold else "0"
        return resp

    @family_api.get("/healthz")
    async def healthz(self) -> Response:
        if self.cfg is None:
            return _json({"status": "loading", "model": self.family}, 503)
        return _json({"status": "ok", "model": self.family, "family": True})

    @family_api.get("/models")
    async def models(self) -> Response:
        """The family's members as this replica's index names them (re-read when older than its TTL)."""
        if self._index is None or time.monotonic() - self._index_at >= INDEX_TTL_S:
            self._index = await asyncio.to_thread(self._read_index)
            self._index_at = time.monotonic()
        idx = self._index
        return _json({"family": self.family, "generation": idx.generation, "task": idx.task,
                      "members": {k: {"revision": m.revision, "digest": m.digest, "bytes": m.bytes}
                                  for k, m in sorted(idx.members.items())}})

    @family_api.get("/info")
    async def info(self) -> Response:
        a, cfg = self.args, self.cfg
        held = self._held() or OrderedDict()
        with self._lock:
            stats = dict(self.stats)
            loads = sorted(self._load_ms)
            recent = [round(x, 1) for x in self._load_ms]
        lookups = stats["hits"] + stats["cold"]
        data: dict[str, Any] = {
            "model": self.family, "family": True, "task": a.task.value, "processor": a.processor.value,
            "backend": a.backend, "model_uri": a.model_uri, "status": "ok" if cfg is not None else "loading",
            "routing": self.routing, "memory_budget_bytes": self.budget,
            "held_bytes": sum(m.bytes for m in held.values()),
            "disk_budget_bytes": self._disk.budget,
            "disk_bytes": self._disk.last.bytes if self._disk.last is not None else None,
            "held": [{"model_id": k, "digest": m.digest, "revision": m.revision, "bytes": m.bytes,
                      "load_ms": round(m.load_s * 1000, 1), "hits": m.hits} for k, m in held.items()],
            "index_generation": self._index.generation if self._index is not None else None,
            "stats": {**{k: (round(v, 1) if isinstance(v, float) else v) for k, v in stats.items()},
                      "hit_ratio": round(stats["hits"] / lookups, 4) if lookups else None,
                      "load_ms_p99": round(loads[min(len(loads) - 1, int(0.99 * len(loads)))], 1) if loads else None,
                      "load_ms_recent": recent, "shared_graph_loads": self._graphs.shared,
                      "disk_removals": self._disk.removed, "disk_removed_bytes": self._disk.removed_bytes},
            "versions": _versions(), "replica": _replica_id(), "pid": os.getpid(),
        }
        if cfg is not None:
            data |= {"max_batch_size": cfg.max_batch_size, "batch_wait_timeout_s": cfg.batch_wait_timeout_s,
                     "max_seq_length": cfg.max_seq_length, "num_threads": cfg.num_threads,
                     "requested_dtype": cfg.dtype.value}
        try:
            ctx = serve.get_replica_context()
            data["replicas"] = await asyncio.to_thread(live_replicas, ctx.app_name, ctx.deployment)
        except Exception as e:  # informative only
            data["replicas"] = {"running": None, "error": f"{type(e).__name__}: {e}"}
        return _json(data)


def build_app(args: dict[str, Any]) -> Any:
    """Ray Serve application builder (``import_path: eks_inference.serving.family:build_app``)."""
    parse_family_args(args)  # fail at deploy time, in the controller, on malformed args
    family_disk_budget(args)
    deployment: Any = FamilyModel
    return deployment.bind(args)


__all__ = ["COLD_HEADER", "MODEL_ID_HEADER", "FamilyModel", "build_app", "family_api", "family_disk_budget",
           "member_app_args"]
