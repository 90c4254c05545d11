"""Serving benchmark on this machine, one run, figures as ratios of quantities measured in that run.

    .venv/bin/python bench/serving.py            # ~4 minutes on 2 cores
    .venv/bin/python bench/serving.py --quick    # shorter phases, for a smoke check

Prints:
* raw    — the engine (tokenize → forward → pooled vectors) called back to back, no HTTP, at its best batch
           size; best of one process using every core and one single-thread process per core;
* served — Ray Serve over HTTP (the config ``eks-inference local`` renders), closed loop at saturation;
* naive  — FastAPI + uvicorn, one forward per request (the pattern older samples use), same engine;
* greedy — plain aiohttp with the Ray-free greedy batcher (reference for the batching core);
* overhead — p50 through Ray Serve at concurrency 1 minus the engine's batch-1 time with the replica's threads.

Load comes from an aiohttp client in this process, on the same cores as the servers: every server pays it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu.common import (  # noqa: E402
    LoadResult,
    aiohttp_app,
    closed_loop,
    corpus,
    median_latency_s,
    raw_throughput,
    wait_http,
)

MODEL = "bench-minilm"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
CACHE = ROOT / ".eks-inference" / "bench"


def build_engine(threads: int, dtype: str = "fp32", max_batch_size: int = 64) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from eks_inference.config import Task
    from eks_inference.serving.artifacts import ArtifactRequest, resolve_artifact, resolve_model, sdk_versions
    from eks_inference.serving.backends import load_backend
    from eks_inference.serving.bucketing import seq_buckets_for
    from eks_inference.serving.engine import Engine

    model = resolve_model("bundled:all-minilm-l6-v2", cache_dir=CACHE)
    seq = seq_buckets_for("cpu", 128)
    req = ArtifactRequest(model=MODEL, revision="v1", task="embedding", processor="cpu", backend="cpu", dtype=dtype,
                          batch_buckets=BATCH_BUCKETS, seq_buckets=seq, versions=sdk_versions("cpu"))
    art = resolve_artifact(req, model, cache_dir=CACHE, artifact_uri=None)
    backend = load_backend(art.path, art.manifest, num_threads=threads)
    engine = Engine(model_dir=model.path, task=Task.EMBEDDING, backend=backend, batch_buckets=BATCH_BUCKETS,
                    seq_buckets=seq, max_seq_length=128, max_batch_size=max_batch_size)
    engine.warmup()
    return engine


def run_raw_workers(n: int, batch: int, seconds: float, dtype: str) -> float:
    """n single-thread processes at once; total inputs/s."""
    procs = [subprocess.Popen([sys.executable, __file__, "--raw-worker", str(batch), "--seconds", str(seconds),
                               "--dtype", dtype], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return sum(float(json.loads(p.communicate()[0].strip().splitlines()[-1])["throughput"]) for p in procs)


def free_port() -> int:
    from eks_inference.serving.local import free_port as fp

    return fp()


def start_server(kind: str, port: int, threads: int, dtype: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, f"--{kind}-server", str(port), "--threads", str(threads),
                             "--dtype", dtype], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def saturate(url: str, texts: list[str], levels: list[int], seconds: float) -> tuple[LoadResult, list[LoadResult]]:
    results = [asyncio.run(closed_loop(url, texts, concurrency=c, seconds=seconds)) for c in levels]
    return max(results, key=lambda r: r.throughput), results


def fmt(r: LoadResult) -> str:
    err = f" errors {r.errors}" if r.errors else ""
    return (f"{r.throughput:7.1f} req/s at concurrency {r.concurrency:3d} (p50 {r.pct(50) * 1000:6.1f} ms, "
            f"p99 {r.pct(99) * 1000:6.1f} ms){err}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--replicas", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=0.0)
    ap.add_argument("--levels", default="16,32,64")
    ap.add_argument("--parts", default="raw,served,naive,greedy")
    ap.add_argument("--raw-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--naive-server", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--naive-async-server", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--greedy-server", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=None)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    texts = corpus()

    if args.raw_worker is not None:
        eng = build_engine(1, args.dtype)
        print(json.dumps({"throughput": raw_throughput(lambda t: eng.run(t), texts, args.raw_worker,
                                                       args.seconds or 5)}))
        return 0
    if args.naive_server is not None or args.naive_async_server is not None:
        return naive_server(args.naive_server or args.naive_async_server, args.threads, args.dtype,
                            sync=args.naive_server is not None)
    if args.greedy_server is not None:
        from aiohttp import web

        eng = build_engine(args.threads, args.dtype)
        web.run_app(aiohttp_app(eng, model=MODEL, greedy=True, max_batch_size=args.max_batch_size),
                    host="127.0.0.1", port=args.greedy_server, print=None)
        return 0

    secs = args.seconds or (4.0 if args.quick else 10.0)
    raw_secs = 2.0 if args.quick else 4.0
    levels = [int(x) for x in args.levels.split(",")]
    parts = set(args.parts.split(","))
    replicas = args.replicas or max(1, cores // args.threads)
    out: dict[str, Any] = {"cores": cores, "dtype": args.dtype, "replicas": replicas, "threads": args.threads}
    t_start = time.time()
    print(f"bench/serving.py: all-MiniLM-L6-v2 {args.dtype}, {cores} cores, corpus of {len(texts)} sentences")

    if "raw" in parts or "served" in parts:
        eng = build_engine(cores, args.dtype)
        best_one = (0.0, 0)
        for b in BATCH_BUCKETS:
            tp = raw_throughput(lambda t: eng.run(t), texts, b, raw_secs)
            print(f"  raw 1 process × {cores} threads, batch {b:3d}: {tp:7.1f} inputs/s")
            best_one = max(best_one, (tp, b))
        eng.backend.set_num_threads(1)
        out["raw_b1_1thread_ms"] = median_latency_s(lambda t: eng.run(t), texts) * 1000
        eng.backend.set_num_threads(args.threads)
        out["raw_b1_replica_threads_ms"] = median_latency_s(lambda t: eng.run(t), texts) * 1000
        del eng
        multi = run_raw_workers(cores, best_one[1], raw_secs * 2, args.dtype) if cores > 1 else 0.0
        print(f"  raw {cores} processes × 1 thread, batch {best_one[1]}: {multi:7.1f} inputs/s")
        out["raw"] = max(best_one[0], multi)
        out["raw_best"] = (f"1 process × {cores} threads, batch {best_one[1]}" if best_one[0] >= multi
                           else f"{cores} processes × 1 thread, batch {best_one[1]}")
        print(f"raw (best): {out['raw']:.1f} inputs/s ({out['raw_best']}); batch-1 latency "
              f"{out['raw_b1_replica_threads_ms']:.1f} ms with {args.threads} thread(s)")

    if "served" in parts:
        served, c1, mean_batch = run_served(args, replicas, texts, levels, secs)
        out |= {"served": served.throughput, "served_p50_c1_ms": c1.pct(50) * 1000, "served_mean_batch": mean_batch}
        print(f"served (Ray Serve, {replicas} replicas × {args.threads} thread): {fmt(served)}; "
              f"mean batch {mean_batch}")
        print(f"served at concurrency 1: {fmt(c1)}")

    for kind in ("naive", "naive-async", "greedy"):
        if kind.split("-")[0] not in parts:
            continue
        port = free_port()
        threads = cores if kind != "greedy" else args.threads
        proc = start_server(kind, port, threads, args.dtype)
        try:
            url = f"http://127.0.0.1:{port}/{MODEL}"
            asyncio.run(wait_http(f"{url}/healthz", 300))
            best, _ = saturate(f"{url}/predict", texts, levels, secs)
            out[kind] = best.throughput
            print(f"{kind:12s} (one process, {threads} threads): {fmt(best)}")
        finally:
            stop(proc)

    print("\n== summary ==")
    if "raw" in out and "served" in out:
        out["overhead_ms"] = out["served_p50_c1_ms"] - out["raw_b1_replica_threads_ms"]
        print(f"served / raw      = {out['served']:.1f} / {out['raw']:.1f} = {out['served'] / out['raw']:.2f}"
              "   (goal >= 0.8)")
    naive = max(out.get("naive", 0.0), out.get("naive-async", 0.0))
    if naive and "served" in out:
        print(f"served / naive    = {out['served']:.1f} / {naive:.1f} = {out['served'] / naive:.2f}"
              "   (goal >= 1.5; naive = the better of its sync and async variants)")
    if "overhead_ms" in out:
        print(f"overhead          = p50 {out['served_p50_c1_ms']:.1f} ms - batch-1 "
              f"{out['raw_b1_replica_threads_ms']:.1f} ms = {out['overhead_ms']:.1f} ms   (goal <= 3 ms)")
    if "greedy" in out and "raw" in out:
        print(f"greedy / raw      = {out['greedy'] / out['raw']:.2f}   (plain aiohttp + greedy batcher, reference)")
    print(f"({time.time() - t_start:.0f} s)  " + json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                                        for k, v in out.items()}))
    return 0


def run_served(args: argparse.Namespace, replicas: int, texts: list[str], levels: list[int],
               secs: float) -> tuple[LoadResult, LoadResult, Any]:
    from eks_inference.config import DType, ModelSpec, Processor, ServingSpec
    from eks_inference.serving.local import LocalRay, free_port, http_get
    from eks_inference.serving.serve_config import render_serve_config

    port = free_port()
    spec = ModelSpec(name=MODEL, processors=(Processor.CPU,), serving=ServingSpec(
        max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1000,
        num_replicas=replicas, num_threads=args.threads, cpus_per_replica=float(args.threads),
        batch_buckets=(*(b for b in BATCH_BUCKETS if b < args.max_batch_size), args.max_batch_size),
        max_ongoing_requests=max(levels), max_queued_requests=4 * max(levels), dtype=DType(args.dtype)))
    cfg = render_serve_config(spec, Processor.CPU, model_uri="bundled:all-minilm-l6-v2",
                              artifact_uri=str(CACHE / "repo"), cache_dir=str(CACHE), http_host="127.0.0.1",
                              http_port=port)
    ray = LocalRay(http_port=port).start()
    try:
        ray.deploy(cfg)
        ray.wait_ready(MODEL, timeout_s=600)
        url = f"{ray.url}/{MODEL}"
        asyncio.run(closed_loop(f"{url}/predict", texts, concurrency=max(levels), seconds=2))
        best, all_levels = saturate(f"{url}/predict", texts, levels, secs)
        for r in all_levels:
            print(f"  served {fmt(r)}")
        batches = []
        for _ in range(4 * replicas):
            info = json.loads(http_get(f"{url}/info")[1] or b"{}")
            batches.append((info.get("replica"), info.get("stats", {}).get("mean_batch_size")))
        c1 = asyncio.run(closed_loop(f"{url}/predict", texts, concurrency=1, seconds=secs))
        return best, c1, sorted(set(batches), key=str)
    finally:
        ray.shutdown()


def naive_server(port: int, threads: int, dtype: str, *, sync: bool) -> int:
    import torch
    import uvicorn
    from fastapi import FastAPI

    eng = build_engine(threads, dtype)
    torch.set_num_threads(threads)
    app = FastAPI()

    if sync:  # sync endpoint: FastAPI runs it on its thread pool, forwards overlap and compete for cores
        @app.post(f"/{MODEL}/predict")
        def predict(body: dict[str, Any]) -> dict[str, Any]:
            outputs, truncated = eng.run(body["inputs"])
            return {"model": MODEL, "outputs": outputs, "truncated": truncated}
    else:  # async endpoint: forwards run one at a time on the event loop
        @app.post(f"/{MODEL}/predict")
        async def predict_async(body: dict[str, Any]) -> dict[str, Any]:
            outputs, truncated = eng.run(body["inputs"])
            return {"model": MODEL, "outputs": outputs, "truncated": truncated}

    @app.get(f"/{MODEL}/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
