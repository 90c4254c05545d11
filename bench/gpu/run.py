"""GPU serving benchmark, one call, same ratios as bench/serving.py — for a machine without Ray.

The GPU machine has torch, transformers and aiohttp but no Ray, FastAPI, uvicorn or pydantic, so "served"
here is the project's Ray-free batching core (:class:`eks_inference.serving.batcher.GreedyBatcher`) behind
plain aiohttp servers (one or more processes on one port, like replicas sharing a GPU), running the same
engine and compiled artifact the Ray Serve replicas run. Model: BERT-base built from a config (random
weights, fp16 or bf16), so no hub access is needed.

    python bench/gpu/run.py                 # on the GPU machine: ~5 minutes
    python bench/gpu/run.py --tiny          # CPU smoke check: tiny BERT, short phases

Prints raw (engine: text in → vector out, no HTTP, best batch), served (closed loop at saturation, best
server-process count), naive (aiohttp, one forward per request), p50 at concurrency 1 minus the raw batch-1
time, and the ratios served/raw (goal >= 0.8), served/naive (goal >= 20), overhead.
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

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # one process per server: let Rust tokenize in parallel

from bench.gpu.common import (  # noqa: E402
    LoadResult,
    aiohttp_app,
    closed_loop,
    corpus,
    median_latency_s,
    raw_throughput,
    wait_http,
)

MODEL = "bert-base"
WORK = ROOT / ".eks-inference" / "gpu-bench"


def settings(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available() and not args.tiny
    max_batch = 256 if cuda else 32
    b, buckets = 1, []
    while b < max_batch:
        buckets.append(b)
        b *= 2
    buckets.append(max_batch)
    return {"cuda": cuda, "processor": "gpu" if cuda else "cpu", "backend": "cuda" if cuda else "cpu",
            "dtype": args.dtype if cuda else "fp32", "size": "tiny" if args.tiny else "base",
            "batch_buckets": tuple(buckets), "seq_buckets": (16, 32, 64, 128), "max_seq_length": 128}


def build_engine(args: argparse.Namespace) -> Any:
    """Synthetic BERT → compiled artifact (cached under .eks-inference/gpu-bench) → engine."""
    from eks_inference.artifacts.resolve import ArtifactRequest, resolve_artifact, resolve_model, sdk_versions
    from eks_inference.compile.synthetic import write_synthetic_model
    from eks_inference.config import Task
    from eks_inference.runtime.backends import load_backend
    from eks_inference.runtime.engine import Engine

    st = settings(args)
    model_dir = WORK / f"model-{st['size']}"
    if not (model_dir / "config.json").is_file():
        words = " ".join(corpus(1024)).replace(".", " ").split()
        write_synthetic_model(model_dir, task=Task.EMBEDDING, size=st["size"], words=words)
    model = resolve_model(str(model_dir), cache_dir=WORK / "cache")
    req = ArtifactRequest(model=MODEL, revision=st["size"], task="embedding", processor=st["processor"],
                          backend=st["backend"], dtype=st["dtype"], batch_buckets=st["batch_buckets"],
                          seq_buckets=st["seq_buckets"], versions=sdk_versions(st["backend"]))
    art = resolve_artifact(req, model, cache_dir=WORK / "cache", artifact_uri=None)
    backend = load_backend(art.path, art.manifest, num_threads=max(1, (os.cpu_count() or 2) // 2))
    engine = Engine(model_dir=model_dir, task=Task.EMBEDDING, backend=backend, batch_buckets=st["batch_buckets"],
                    seq_buckets=st["seq_buckets"], max_seq_length=st["max_seq_length"])
    engine.warmup()
    return engine, art


def serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    engine, _ = build_engine(args)
    app = aiohttp_app(engine, model=MODEL, greedy=args.mode == "greedy", max_batch_size=engine.max_batch_size)
    web.run_app(app, host="127.0.0.1", port=args.serve, reuse_port=True, print=None, access_log=None)
    return 0


def client(args: argparse.Namespace) -> int:
    res = asyncio.run(closed_loop(args.client, corpus(), concurrency=args.concurrency, seconds=args.seconds,
                                  warmup_s=args.warmup))
    print(json.dumps({"ok": res.ok, "errors": res.errors, "latencies": res.latencies[:200_000]}))
    return 0


def load(url: str, concurrency: int, seconds: float, procs: int, warmup: float = 2.0) -> LoadResult:
    """Closed loop from several client processes (one Python client tops out near a few thousand req/s)."""
    procs = max(1, min(procs, concurrency))
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    ps = [subprocess.Popen([sys.executable, __file__, "--client", url, "--concurrency", str(c), "--seconds",
                            str(seconds), "--warmup", str(warmup)], stdout=subprocess.PIPE, text=True) for c in per]
    res = LoadResult(concurrency, seconds)
    for p in ps:
        out = json.loads(p.communicate()[0].strip().splitlines()[-1])
        res.ok += out["ok"]
        res.latencies += out["latencies"]
        for k, v in out["errors"].items():
            res.errors[int(k)] = res.errors.get(int(k), 0) + v
    return res


def start_servers(args: argparse.Namespace, port: int, n: int, mode: str) -> list[subprocess.Popen[bytes]]:
    extra = ["--tiny"] if args.tiny else []
    return [subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--mode", mode, "--dtype", args.dtype,
                              *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]


def stop_all(ps: list[subprocess.Popen[bytes]]) -> None:
    for p in ps:
        p.terminate()
    for p in ps:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def fmt(r: LoadResult) -> str:
    err = f" errors {r.errors}" if r.errors else ""
    return (f"{r.throughput:9.1f} req/s at concurrency {r.concurrency:4d} (p50 {r.pct(50) * 1000:7.2f} ms, "
            f"p99 {r.pct(99) * 1000:7.2f} ms){err}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny BERT on CPU, short phases (smoke check)")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--server-procs", default=None, help="server process counts to try, e.g. 1,2,4")
    ap.add_argument("--levels", default=None, help="total concurrencies to try, e.g. 256,512,1024")
    ap.add_argument("--client-procs", type=int, default=None)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="greedy", help=argparse.SUPPRESS)
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=float, default=2.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        return serve(args)
    if args.client is not None:
        return client(args)

    import torch

    t_start = time.time()
    st = settings(args)
    secs = args.seconds or (3.0 if args.tiny else 10.0)
    server_procs = [int(x) for x in (args.server_procs or ("1,2" if args.tiny else "1,2,4")).split(",")]
    levels = [int(x) for x in (args.levels or ("16,64" if args.tiny else "256,1024")).split(",")]
    client_procs = args.client_procs or (2 if args.tiny else max(2, min(8, (os.cpu_count() or 4) // 2)))
    device = torch.cuda.get_device_name() if st["cuda"] else "CPU"
    print(f"bench/gpu/run.py: BERT-{st['size']} (random weights, from a config) {st['dtype']} on {device}; "
          f"torch {torch.__version__}")
    texts = corpus()
    engine, art = build_engine(args)
    print(f"artifact {art.key} ({art.source}); {st['dtype']} vs fp32 min cosine "
          f"{art.manifest['checks']['min_cosine_vs_fp32']:.5f}")
    raw_best = (0.0, 0)
    for b in st["batch_buckets"]:
        if b < 8 and b != 1:
            continue
        tp = raw_throughput(lambda t: engine.run(t), texts, b, 1.0 if args.tiny else 3.0)
        print(f"  raw batch {b:4d}: {tp:9.1f} inputs/s")
        raw_best = max(raw_best, (tp, b))
    raw_b1_ms = median_latency_s(lambda t: engine.run(t), texts, repeats=100) * 1000
    print(f"raw (best): {raw_best[0]:.1f} inputs/s at batch {raw_best[1]}; batch-1 {raw_b1_ms:.2f} ms")
    engine.backend = None  # free the GPU copy before the servers load theirs
    if st["cuda"]:
        torch.cuda.empty_cache()

    results: dict[str, Any] = {"raw": raw_best[0], "raw_batch": raw_best[1], "raw_b1_ms": raw_b1_ms}
    best_served: tuple[float, str] = (0.0, "")
    for n in server_procs:
        port = free_port()
        ps = start_servers(args, port, n, "greedy")
        try:
            url = f"http://127.0.0.1:{port}/{MODEL}"
            asyncio.run(wait_http(f"{url}/healthz", 600))
            time.sleep(2.0 * n)  # every process on the port must have loaded before the load starts
            for c in levels:
                r = load(f"{url}/predict", c, secs, client_procs)
                print(f"  served, {n} server process(es): {fmt(r)}")
                best_served = max(best_served, (r.throughput, f"{n} process(es), concurrency {c}"))
            if n == server_procs[0]:
                c1 = load(f"{url}/predict", 1, secs, 1)
                results["p50_c1_ms"] = c1.pct(50) * 1000
                print(f"  served at concurrency 1: {fmt(c1)}")
        finally:
            stop_all(ps)
    results["served"] = best_served[0]
    print(f"served (best): {best_served[0]:.1f} req/s with {best_served[1]}")

    port = free_port()
    ps = start_servers(args, port, 1, "naive")
    try:
        url = f"http://127.0.0.1:{port}/{MODEL}"
        asyncio.run(wait_http(f"{url}/healthz", 600))
        naive = max((load(f"{url}/predict", c, secs, client_procs) for c in sorted({min(levels), 32})),
                    key=lambda r: r.throughput)
        results["naive"] = naive.throughput
        print(f"naive (aiohttp, one forward per request): {fmt(naive)}")
    finally:
        stop_all(ps)

    print("\n== summary ==")
    print(f"served / raw   = {results['served']:.1f} / {results['raw']:.1f} = "
          f"{results['served'] / results['raw']:.2f}   (goal >= 0.8)")
    print(f"served / naive = {results['served']:.1f} / {results['naive']:.1f} = "
          f"{results['served'] / max(results['naive'], 1e-9):.1f}   (goal >= 20)")
    overhead = results["p50_c1_ms"] - results["raw_b1_ms"]
    print(f"overhead       = p50 {results['p50_c1_ms']:.2f} ms - batch-1 {results['raw_b1_ms']:.2f} ms = "
          f"{overhead:.2f} ms   (goal <= 3 ms)")
    results |= {"overhead_ms": overhead, "seconds": round(time.time() - t_start), "device": device,
                "dtype": st["dtype"]}
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
