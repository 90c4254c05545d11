"""Serving benchmark on this machine, one run, figures as ratios of quantities measured in that run.

    .venv/bin/python bench/serving.py            # ~7 minutes on 2 cores
    .venv/bin/python bench/serving.py --quick    # shorter phases, for a smoke check

Prints:
* raw    — the engine (tokenize → forward → pooled vectors) called back to back, no HTTP, at its best batch
           size; best of one process using every core and one single-thread process per core, measured
           before and after the servers (the higher figure is the one served is compared with);
* served — Ray Serve over HTTP (the config ``eks-inference local`` renders, HAProxy ingress), closed loop,
           best concurrency; with the mean batch the replicas actually formed at each level;
* naive  — FastAPI + uvicorn, one forward per request (the pattern older samples use), same engine; the
           better of a sync endpoint (thread pool) and an async one (forwards in turn);
* greedy — plain aiohttp with the Ray-free greedy batcher (reference for the batching core);
* overhead — p50 through Ray Serve at concurrency 1 minus the engine's batch-1 time with the replica's threads.

Load comes from an aiohttp client in this process, on the same cores as the servers: every server pays it.
Other people's processes may share the machine: every measurement prints the share of CPU they took
("others N%"), and a measurement disturbed by more than 25 % is repeated once, keeping the better figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
NOISY = 0.25
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------
# CPU taken by processes that are not ours (another user's tests, builds, ...)
# ---------------------------------------------------------------------------------------------------

def _proc_table() -> dict[int, tuple[int, int]]:
    """pid → (ppid, utime+stime jiffies)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _busy_jiffies() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]  # minus idle and iowait


class Watch:
    def __init__(self) -> None:
        self.foreign = 0.0


@contextmanager
def watch() -> Iterator[Watch]:
    """Share of all cores used by processes outside this process tree while the block ran."""
    w = Watch()
    me = os.getpid()
    tck = os.sysconf("SC_CLK_TCK")
    reaped0 = os.times().children_user + os.times().children_system  # our children that already exited
    busy0, procs0, t0 = _busy_jiffies(), _proc_table(), time.monotonic()
    yield w
    busy1, procs1, elapsed = _busy_jiffies(), _proc_table(), time.monotonic() - t0
    reaped = (os.times().children_user + os.times().children_system - reaped0) * tck
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs1.items():
        children.setdefault(ppid, []).append(pid)
    ours, stack = set(), [me]
    while stack:
        p = stack.pop()
        ours.add(p)
        stack.extend(children.get(p, []))
    ours_j = sum(procs1[p][1] - procs0.get(p, (0, 0))[1] for p in ours if p in procs1) + reaped
    total = elapsed * tck * (os.cpu_count() or 1)
    w.foreign = max(0.0, (busy1 - busy0 - ours_j) / total) if total else 0.0


def measured(label: str, fn: Callable[[], T], value: Callable[[T], float], show: Callable[[T], str]) -> T:
    """Run ``fn``; if others took more than NOISY of the CPU, run it once more and keep the better result."""
    best: T | None = None
    for attempt in (1, 2):
        with watch() as w:
            res = fn()
        print(f"  {label}: {show(res)}   [others {w.foreign:.0%}]" + (" (retry)" if attempt == 2 else ""))
        if best is None or value(res) > value(best):
            best = res
        if w.foreign <= NOISY:
            break
    assert best is not None
    return best


# ---------------------------------------------------------------------------------------------------
# The engine, servers and load
# ---------------------------------------------------------------------------------------------------

def build_engine(threads: int, dtype: str = "fp32") -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from eks_inference.artifacts.resolve import ArtifactRequest, resolve_artifact, resolve_model, sdk_versions
    from eks_inference.config import Task
    from eks_inference.runtime.backends import load_backend
    from eks_inference.runtime.bucketing import seq_buckets_for
    from eks_inference.runtime.engine import Engine

    model = resolve_model("bundled:all-minilm-l6-v2", cache_dir=CACHE)
    seq = seq_buckets_for("cpu", 128)
    req = ArtifactRequest(model=MODEL, revision="v1", task="embedding", processor="cpu", backend="cpu", dtype=dtype,
                          batch_buckets=BATCH_BUCKETS, seq_buckets=seq, versions=sdk_versions("cpu"))
    art = resolve_artifact(req, model, cache_dir=CACHE, artifact_uri=None)
    backend = load_backend(art.path, art.manifest, num_threads=threads)
    engine = Engine(model_dir=model.path, task=Task.EMBEDDING, backend=backend, batch_buckets=BATCH_BUCKETS,
                    seq_buckets=seq, max_seq_length=128, max_batch_size=BATCH_BUCKETS[-1])
    engine.warmup()
    return engine


def run_raw_workers(n: int, batch: int, seconds: float, dtype: str) -> float:
    """n single-thread processes at once; total inputs/s."""
    procs = [subprocess.Popen([sys.executable, __file__, "--raw-worker", str(batch), "--seconds", str(seconds),
                               "--dtype", dtype], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return sum(float(json.loads(p.communicate()[0].strip().splitlines()[-1])["throughput"]) for p in procs)


def measure_raw(cores: int, args: argparse.Namespace, texts: list[str], secs: float, *,
                batches: tuple[int, ...]) -> dict[str, Any]:
    """Best inputs/s of the engine alone: one process with every core, or one 1-thread process per core."""
    eng = build_engine(cores, args.dtype)
    best_one = (0.0, batches[0])
    for b in batches:
        tp = measured(f"raw 1 process × {cores} threads, batch {b:3d}",
                      lambda b=b: raw_throughput(lambda t: eng.run(t), texts, b, secs),  # type: ignore[misc]
                      float, lambda x: f"{x:7.1f} inputs/s")
        best_one = max(best_one, (tp, b))
    eng.backend.set_num_threads(args.threads)
    b1_ms = median_latency_s(lambda t: eng.run(t), texts, repeats=80) * 1000
    eng.backend = None  # release before the worker processes start
    multi = 0.0
    if cores > 1:
        multi = measured(f"raw {cores} processes × 1 thread, batch {best_one[1]:3d}",
                         lambda: run_raw_workers(cores, best_one[1], secs * 2, args.dtype), float,
                         lambda x: f"{x:7.1f} inputs/s")
    desc = (f"1 process × {cores} threads, batch {best_one[1]}" if best_one[0] >= multi
            else f"{cores} processes × 1 thread, batch {best_one[1]}")
    return {"raw": max(best_one[0], multi), "raw_batch": best_one[1], "raw_best": desc, "raw_b1_ms": b1_ms}


def free_port() -> int:
    from eks_inference.serving.local import free_port as fp

    return fp()


def start_server(kind: str, port: int, threads: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, f"--{kind}-server", str(port), "--threads", str(threads),
                             "--dtype", args.dtype, "--max-batch-size", str(args.max_batch_size)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def fmt(r: LoadResult) -> str:
    err = f" errors {r.errors}" if r.errors else ""
    return (f"{r.throughput:7.1f} req/s at concurrency {r.concurrency:3d} (p50 {r.pct(50) * 1000:6.1f} ms, "
            f"p99 {r.pct(99) * 1000:6.1f} ms){err}")


def load(url: str, texts: list[str], c: int, secs: float) -> LoadResult:
    return asyncio.run(closed_loop(url, texts, concurrency=c, seconds=secs))


def replica_stats(url: str, replicas: int) -> dict[str, tuple[int, int]]:
    """(batches, inputs) per replica, from /info (each call reaches one replica; ask until all answered)."""
    from eks_inference.serving.local import http_get

    seen: dict[str, tuple[int, int]] = {}
    for _ in range(20 * replicas):
        info = json.loads(http_get(f"{url}/info")[1] or b"{}")
        st = info.get("stats", {})
        seen[str(info.get("replica"))] = (int(st.get("batches", 0)), int(st.get("inputs", 0)))
        if len(seen) >= replicas:
            break
    return seen


def run_served(args: argparse.Namespace, replicas: int, texts: list[str], levels: list[int],
               secs: float) -> tuple[LoadResult, LoadResult, float | None]:
    from eks_inference.config import DType, ModelSpec, Processor, ServingSpec
    from eks_inference.serving.local import LocalRay
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
        load(f"{url}/predict", texts, max(levels), 3)
        results: list[tuple[LoadResult, float | None]] = []
        for c in levels:
            def one(c: int = c) -> tuple[LoadResult, float | None]:
                before = replica_stats(url, replicas)
                r = load(f"{url}/predict", texts, c, secs)
                after = replica_stats(url, replicas)
                batches = sum(after[k][0] - before.get(k, (0, 0))[0] for k in after)
                inputs = sum(after[k][1] - before.get(k, (0, 0))[1] for k in after)
                return r, (round(inputs / batches, 1) if batches else None)

            results.append(measured("served", one, lambda x: x[0].throughput,
                                    lambda x: f"{fmt(x[0])}; mean batch {x[1]}"))
        best, mean = max(results, key=lambda x: x[0].throughput)
        c1 = measured("served", lambda: load(f"{url}/predict", texts, 1, secs),
                      lambda r: -r.pct(50), fmt)
        return best, c1, mean
    finally:
        ray.shutdown()


def run_plain(kind: str, args: argparse.Namespace, threads: int, texts: list[str], levels: list[int],
              secs: float) -> LoadResult:
    port = free_port()
    proc = start_server(kind, port, threads, args)
    try:
        url = f"http://127.0.0.1:{port}/{MODEL}"
        asyncio.run(wait_http(f"{url}/healthz", 300))
        load(f"{url}/predict", texts, max(levels), 2)
        results = [measured(kind, lambda c=c: load(f"{url}/predict", texts, c, secs),  # type: ignore[misc]
                            lambda r: r.throughput, fmt) for c in levels]
        return max(results, key=lambda r: r.throughput)
    finally:
        stop(proc)


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--replicas", type=int, default=None, help="default: one per core divided by --threads")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=0.0)
    ap.add_argument("--levels", default="16,32,64")
    ap.add_argument("--parts", default="raw,served,naive,greedy")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--raw-worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--naive-server", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--naive-async-server", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--greedy-server", type=int, default=None, help=argparse.SUPPRESS)
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
                    host="127.0.0.1", port=args.greedy_server, print=None, access_log=None)
        return 0

    secs = args.seconds or (4.0 if args.quick else 8.0)
    raw_secs = 2.0 if args.quick else 3.0
    levels = [int(x) for x in args.levels.split(",")]
    parts = set(args.parts.split(","))
    replicas = args.replicas or max(1, cores // args.threads)
    out: dict[str, Any] = {"cores": cores, "dtype": args.dtype, "replicas": replicas, "threads": args.threads,
                           "max_batch_size": args.max_batch_size}
    t_start = time.time()
    print(f"bench/serving.py: all-MiniLM-L6-v2 {args.dtype}, {cores} cores, corpus of {len(texts)} sentences; "
          f"load average {os.getloadavg()[0]:.2f}")

    if "raw" in parts or "served" in parts:
        out |= measure_raw(cores, args, texts, raw_secs, batches=BATCH_BUCKETS)
        print(f"raw (best): {out['raw']:.1f} inputs/s ({out['raw_best']}); batch-1 latency "
              f"{out['raw_b1_ms']:.1f} ms with {args.threads} thread(s)")
    if "served" in parts:
        served, c1, mean_batch = run_served(args, replicas, texts, levels, secs)
        out |= {"served": served.throughput, "served_concurrency": served.concurrency,
                "served_p50_c1_ms": c1.pct(50) * 1000, "served_mean_batch": mean_batch}
        print(f"served (Ray Serve, {replicas} replicas × {args.threads} thread): {fmt(served)}; "
              f"mean batch {mean_batch}")
    for kind, threads in (("naive", cores), ("naive-async", cores), ("greedy", args.threads)):
        if kind.split("-")[0] in parts:
            best = run_plain(kind, args, threads, texts, levels if kind == "greedy" else levels[:2], secs)
            out[kind] = best.throughput
            print(f"{kind} (one process, {threads} threads): {fmt(best)}")
    if "raw" in out:  # again after the servers: the higher figure either time is the one to beat
        again = measure_raw(cores, args, texts, raw_secs, batches=(out["raw_batch"],))
        out["raw_first"], out["raw_again"] = out["raw"], again["raw"]
        if again["raw"] > out["raw"]:
            out["raw"], out["raw_best"] = again["raw"], again["raw_best"]
        print(f"raw again: {again['raw']:.1f} inputs/s; using {out['raw']:.1f} ({out['raw_best']})")

    print("\n== summary ==")
    if "raw" in out and "served" in out:
        out["served_over_raw"] = out["served"] / out["raw"]
        out["overhead_ms"] = out["served_p50_c1_ms"] - out["raw_b1_ms"]
        print(f"served / raw   = {out['served']:.1f} / {out['raw']:.1f} = {out['served_over_raw']:.2f}"
              "   (goal >= 0.8)")
    naive = max(out.get("naive", 0.0), out.get("naive-async", 0.0))
    if naive and "served" in out:
        out["served_over_naive"] = out["served"] / naive
        print(f"served / naive = {out['served']:.1f} / {naive:.1f} = {out['served_over_naive']:.2f}"
              "   (goal >= 1.5; naive = the better of its sync and async endpoints)")
    if "overhead_ms" in out:
        print(f"overhead       = p50 {out['served_p50_c1_ms']:.1f} ms - batch-1 {out['raw_b1_ms']:.1f} ms = "
              f"{out['overhead_ms']:.1f} ms   (goal <= 3 ms)")
    if "greedy" in out and "raw" in out:
        print(f"greedy / raw   = {out['greedy'] / out['raw']:.2f}   (plain aiohttp + greedy batcher, reference)")
    print(f"({time.time() - t_start:.0f} s)  " + json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                                        for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
