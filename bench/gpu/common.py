"""Shared benchmark pieces that need only torch, transformers and aiohttp (the GPU machine has no Ray,
FastAPI, uvicorn or pydantic): the text corpus, raw engine timing, a closed-loop HTTP load generator and
plain aiohttp servers (greedy batching, or one forward per request).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_SUBJECTS = ("The cluster", "A small model", "Our service", "The load balancer", "Each replica", "The new GPU node",
             "An Inferentia chip", "The Graviton instance", "This request", "The batch scheduler")
_VERBS = ("serves", "rejects", "batches", "routes", "caches", "compiles", "measures", "scales out", "answers",
          "retries")
_OBJECTS = ("thousands of short questions", "an embedding for every sentence", "requests from many clients",
            "the compiled artifact from S3", "traffic during the evening peak", "documents about pricing",
            "long reviews of noisy headphones", "the latest weather report", "search queries in many languages",
            "a burst of tiny classification jobs")
_TAILS = ("", " without dropping any of them", " while latency stays low", " at a fraction of the cost",
          " before the deadline", " and reports the result to the dashboard")


def corpus(n: int = 256, seed: int = 7) -> list[str]:
    """Deterministic English sentences of 6–20 words (12–30 word pieces): typical short embedding inputs."""
    rnd = random.Random(seed)
    return [f"{rnd.choice(_SUBJECTS)} {rnd.choice(_VERBS)} {rnd.choice(_OBJECTS)}{rnd.choice(_TAILS)}."
            for _ in range(n)]


def raw_throughput(run: Callable[[Sequence[str]], Any], texts: Sequence[str], batch: int, seconds: float) -> float:
    """Inputs per second of ``run`` called back to back on batches of ``batch`` texts."""
    run(texts[:batch])
    n, i, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
        run(chunk)
        n += batch
        i += batch
    return n / (time.perf_counter() - t0)


def median_latency_s(run: Callable[[Sequence[str]], Any], texts: Sequence[str], repeats: int = 60) -> float:
    run(texts[:1])
    samples = []
    for i in range(repeats):
        t0 = time.perf_counter()
        run([texts[i % len(texts)]])
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    ok: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def closed_loop(url: str, texts: Sequence[str], *, concurrency: int, seconds: float,
                      inputs_per_request: int = 1, warmup_s: float = 1.0) -> LoadResult:
    """``concurrency`` clients, each sending the next request as soon as the previous answer arrives."""
    import aiohttp

    res = LoadResult(concurrency, seconds)
    stop_at = time.perf_counter() + warmup_s + seconds
    measure_from = time.perf_counter() + warmup_s
    counter = iter(range(1 << 62))

    async def client(session: aiohttp.ClientSession) -> None:
        while True:
            i = next(counter)
            body = json.dumps({"inputs": [texts[(i * inputs_per_request + k) % len(texts)]
                                          for k in range(inputs_per_request)]})
            t0 = time.perf_counter()
            if t0 >= stop_at:
                return
            try:
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    status = r.status
            except aiohttp.ClientError:
                status = 0
            t1 = time.perf_counter()
            if t0 >= measure_from and t1 <= stop_at:
                if status == 200:
                    res.ok += 1
                    res.latencies.append(t1 - t0)
                else:
                    res.errors[status] = res.errors.get(status, 0) + 1

    conn = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return res


def aiohttp_app(engine: Any, *, model: str, greedy: bool, max_batch_size: int) -> Any:
    """A plain aiohttp server with the same API and limits: greedy batching, or one forward per request."""
    from aiohttp import web

    from eks_inference.serving.api import ApiError, parse_predict_body
    from eks_inference.serving.batcher import GreedyBatcher

    def run_pairs(items: Sequence[Any]) -> list[Any]:
        outputs, truncated = engine.run(items)
        return list(zip(outputs, truncated, strict=True))

    batcher = GreedyBatcher(run_pairs, max_batch_size=max_batch_size)

    async def predict(request: web.Request) -> web.Response:
        try:
            items = parse_predict_body(await request.read(), task=engine.task, max_inputs=64,
                                       max_input_chars=20_000, max_body_bytes=1 << 20)
        except ApiError as e:
            return web.json_response(e.body(), status=e.status)
        if greedy:
            pairs = await batcher.submit(items)
        else:
            pairs = run_pairs(items)  # blocks the loop: one forward per request, in arrival order
        return web.Response(body=json.dumps({"model": model, "outputs": [p[0] for p in pairs],
                                             "truncated": [p[1] for p in pairs]}).encode(),
                            content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post(f"/{model}/predict", predict)
    app.router.add_get(f"/{model}/healthz", healthz)
    app["batcher"] = batcher
    return app


async def wait_http(url: str, timeout_s: float = 120.0) -> None:
    import aiohttp

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout_s} s")
