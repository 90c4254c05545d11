"""Model family benchmark on local serving: the price of multiplexing, as ratios measured in one run.

    .venv/bin/python bench/family.py                 # N = 50 members of the bundled model, room for 8 per replica
    .venv/bin/python bench/family.py --members 4 --room 2 --requests 60 --base tiny --concurrency 2   # smoke
    .venv/bin/python bench/family.py --members 16 --room 4 --replicas 2 --routing both --base tiny   # routing
    make demo-family       # the same with fewer requests, then `eks-inference verify` on a sample of members

Publishes ``--members`` derived members (the base model's weights plus seeded noise: deterministic, each different) to
a family repository in a local directory, serves the family with one replica whose memory budget holds about
``--room`` of them (measured: the members' parameter bytes), and drives the same closed-loop load twice with
``eks-inference loadtest run``: over all members with a Zipf(``--zipf``) mix, then over one member. Before measuring,
every member is asked once, so each has its compiled artifact in the local cache: a cold request then costs what it
costs in the cluster, where members are compiled when they are published (fetch, digest check, load, one warm-up
forward), never a compile. Prints throughput, p99, the hit ratio, the cold-request p99 (client side) and the
replica's own member-load p99, and the ratios mixed / one model.

``--replicas K`` serves the family with K replicas, each with the budget of ``--room`` members. ``--routing`` picks
the path the mixed load takes: ``model-blind`` (HAProxy, the project's ingress: a replica is picked without reading
the model id), ``model-aware`` (Serve's Python proxy, whose request router prefers a replica that holds the member),
or ``both``: on one local Ray, the family is deployed afresh for each path in turn (the compiled artifacts kept),
warmed through that path, and driven with the same seeded mix; then the ratios model-aware / model-blind. The
Python-proxy path of a local Ray whose ingress is HAProxy is HAProxy's fallback proxy on the head
(``LocalRay.python_proxy_url``): the same proxy and request router a model-aware family's RayService runs on every
node. Routing matters where the hot set outgrows one replica's budget but fits the replicas' budgets together.

Figures depend on the machine; compare only the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from eks_inference.artifacts.family_index import MODEL_ID_HEADER  # noqa: E402
from eks_inference.compile.family import derive_member, family_uri, publish_member  # noqa: E402
from eks_inference.config import FamilyRouting, FamilySpec, ModelSpec, Processor, ServingSpec, Task  # noqa: E402
from eks_inference.loadgen.model_mix import default_ids  # noqa: E402
from eks_inference.serving.local import LocalRay, free_port  # noqa: E402
from eks_inference.serving.model_cache import graph_bytes  # noqa: E402
from eks_inference.serving.serve_config import render_serve_config  # noqa: E402

NAME = "bench-family"
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "models", "serve", "fast"]


def member_bytes(model_dir: Path) -> int:
    import transformers

    return int(graph_bytes([transformers.AutoModel.from_pretrained(model_dir)]))


def ask(url: str, model_id: str) -> None:
    req = urllib.request.Request(f"{url}/predict", data=b'{"inputs": ["warm up"]}',
                                 headers={"content-type": "application/json", MODEL_ID_HEADER: model_id})
    with urllib.request.urlopen(req, timeout=900) as r:
        r.read()


def info(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/info", timeout=60) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def healthy(url: str, timeout_s: float = 120) -> None:
    """Wait until ``url``'s healthz answers 200 on this path (a proxy learns a new route a moment after Serve)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=10) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}/healthz did not answer 200 within {timeout_s:.0f} s")
        time.sleep(0.5)


def replica_infos(url: str, k: int, tries: int = 60) -> dict[str, dict[str, Any]]:
    """Every replica's ``/info``, by replica id: asked until ``k`` distinct replicas answered (HAProxy spreads a
    request without a model id over the replicas)."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(tries):
        i = info(url)
        seen[str(i.get("replica"))] = i
        if len(seen) >= k:
            break
    if len(seen) < k:
        raise SystemExit(f"/info reached {len(seen)} of {k} replicas in {tries} tries")
    return seen


def load(url: str, ids: list[str], a: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", url, "--mode", "closed",
           "--concurrency", str(a.concurrency), "--requests", str(a.requests), "--warmup", "0",
           "--model-ids", ",".join(ids), "--model-mix", f"zipf:{a.zipf}" if len(ids) > 1 else "uniform",
           "--seed", str(a.seed), "--no-progress", "--sample-replicas", "off", "--out", f"{out}/", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"loadtest failed: {r.stderr[-2000:]}")
    (summary,) = json.loads(r.stdout)
    return summary  # type: ignore[no-any-return]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=50)
    p.add_argument("--room", type=float, default=8, help="members the replica's memory budget holds")
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--requests", type=int, default=2000, help="measured requests per load")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--base", default="bundled:all-minilm-l6-v2",
                   help="the model members derive from: bundled:NAME, a model directory, or tiny (a random 2-layer "
                        "BERT, for a smoke run)")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="after the loads, check N sampled members each against its own fp32 reference (default 0)")
    p.add_argument("--no-shared-graphs", action="store_true",
                   help="load each member's graph on its own instead of into the family's warmed graph (the baseline "
                        "of what sharing saves)")
    p.add_argument("--replicas", type=int, default=1, metavar="K",
                   help="replicas of the family, each with the budget of --room members (default 1)")
    p.add_argument("--routing", default=FamilyRouting.MODEL_BLIND.value,
                   choices=[*(r.value for r in FamilyRouting), "both"],
                   help="the path of the mixed load: model-blind (HAProxy), model-aware (Serve's Python proxy) or "
                        "both, one after the other on one local Ray (default model-blind)")
    a = p.parse_args()
    if a.replicas < 1 or a.members < 1 or a.room <= 0:
        p.error(f"--replicas {a.replicas}, --members {a.members}, --room {a.room:g}: give positive numbers")
    routings = [r.value for r in FamilyRouting] if a.routing == "both" else [a.routing]
    work = Path(tempfile.mkdtemp(prefix="bench-family-"))
    base: str | Path = a.base
    if a.base == "tiny":
        from eks_inference.compile.synthetic import write_synthetic_model

        base = write_synthetic_model(work / "base", task=Task.EMBEDDING, words=WORDS)
    repo = str(work / "repo")
    ids = default_ids(a.members)
    t0 = time.perf_counter()
    for i, mid in enumerate(ids):
        d = derive_member(base, work / "members" / mid, seed=i)
        publish_member(d, repo, family=NAME, model_id=mid, task="embedding")
    one = member_bytes(work / "members" / ids[0])
    budget = int(a.room * one * 1.02)
    print(f"published {a.members} members of {one / 1e6:.1f} MB each in {time.perf_counter() - t0:.0f} s; "
          f"replica budget {budget / 1e6:.1f} MB (room for {a.room:g}), {a.replicas} replica(s)", flush=True)

    cores = os.cpu_count() or 2
    threads = max(1, min(2, cores // a.replicas))
    ray = LocalRay(http_host="127.0.0.1", http_port=free_port(), num_cpus=max(cores, a.replicas)).start()
    results: dict[str, dict[str, Any]] = {}
    single: dict[str, Any] | None = None
    try:
        for routing in routings:
            spec = ModelSpec(name=NAME, task=Task.EMBEDDING, processors=(Processor.CPU,),
                             family=FamilySpec(memory_budget=max(budget, 16 << 20), routing=FamilyRouting(routing)),
                             serving=ServingSpec(max_batch_size=16, max_inputs=16, max_seq_length=128,
                                                 num_threads=threads, batch_wait_timeout_s=0.002,
                                                 num_replicas=a.replicas))
            cfg = render_serve_config(spec, Processor.CPU, model_uri=family_uri(repo, NAME),
                                      artifact_uri=str(work / "artifacts"), cache_dir=str(work / "replica-cache"),
                                      http_host="127.0.0.1", http_port=ray.http_port)
            cfg["applications"][0]["args"]["family"]["memory_budget_bytes"] = budget
            if a.no_shared_graphs:
                cfg["applications"][0]["args"]["family"]["share_graphs"] = False
            ray.deploy(cfg)
            ray.wait_ready(NAME, timeout_s=900)
            aware = routing == FamilyRouting.MODEL_AWARE.value
            url = f"{ray.python_proxy_url if aware else ray.url}/{NAME}"
            healthy(url)
            t0 = time.perf_counter()
            for mid in ids:  # each member asked once on this path (the first pass compiles it, as publishing would)
                ask(url, mid)
            print(f"{routing}: {url}; every member asked once in {time.perf_counter() - t0:.0f} s (not measured)",
                  flush=True)
            # replica counters through HAProxy either way: Serve's router sends a request without a model id to
            # a replica holding the fewest members, every time while their counts differ
            before = replica_infos(f"{ray.url}/{NAME}", a.replicas)
            mixed = load(url, ids, a, work / f"mixed-{routing}")
            after = replica_infos(f"{ray.url}/{NAME}", a.replicas)
            results[routing] = {"mixed": mixed, **replica_side(before, after)}
            if single is None:
                single = load(f"{ray.url}/{NAME}", ids[:1], a, work / "single")
            if a.verify:
                r = subprocess.run([sys.executable, "-m", "eks_inference.cli", "verify", "--url", url, "--sample",
                                    str(a.verify), "--seed", str(a.seed), "--cache-dir", str(work / "verify")],
                                   capture_output=True, text=True, cwd=ROOT, timeout=3600)
                print(r.stdout.strip() or r.stderr.strip()[-2000:], flush=True)
                if r.returncode != 0:
                    raise SystemExit(f"verify failed: {r.stderr.strip()[-500:]}")
            ray.remove(NAME, wait=True, timeout_s=300)
    finally:
        ray.shutdown()
    assert single is not None

    def row(label: str, s: dict[str, Any]) -> None:
        m = s.get("models") or {}
        cold = (m.get("cold_ms") or {}).get("p99")
        print(f"{label:<28} {s['throughput_rps']:>9.1f} req/s  p99 {s['latency_ms']['p99']:>8.1f} ms  "
              f"hit ratio {m.get('hit_ratio', 0):>6.1%}  loads/s {m.get('load_rate_per_s', 0):>6.2f}  "
              f"cold p99 {cold if cold is not None else float('nan'):>8.1f} ms", flush=True)

    print(f"\nfamily of {a.members}, room for {a.room:g} per replica, {a.replicas} replica(s), {a.requests} requests "
          f"at concurrency {a.concurrency} each:")
    for routing, r in results.items():
        row(f"zipf:{a.zipf:g} over {a.members}, {routing}", r["mixed"])
    row("one model", single)
    for routing, r in results.items():
        print(f"{routing} replicas: {r['loads']} loads, {r['evictions']} evictions during the mixed load; member-load "
              f"p50 {r['load_p50']} ms, p99 {r['load_p99']} ms (the replicas' own); members held at the end: "
              f"{r['held']} ({r['distinct']} distinct); {r['shared']} loads into the family's shared graph so far")
    for routing, r in results.items():
        m = r["mixed"]
        print(f"ratio mixed ({routing}) / one model: throughput {m['throughput_rps'] / single['throughput_rps']:.2f}, "
              f"p99 {m['latency_ms']['p99'] / single['latency_ms']['p99']:.2f}")
    if len(results) == 2:
        blind, aware = (results[r.value]["mixed"] for r in FamilyRouting)
        mb, ma = blind.get("models") or {}, aware.get("models") or {}

        def ratio(x: float | None, y: float | None) -> str:
            return f"{x / y:.2f}" if x is not None and y else "n/a"

        print("ratio model-aware / model-blind: "
              f"throughput {ratio(aware['throughput_rps'], blind['throughput_rps'])}, "
              f"p99 {ratio(aware['latency_ms']['p99'], blind['latency_ms']['p99'])}, "
              f"hit ratio {ratio(ma.get('hit_ratio'), mb.get('hit_ratio'))}, "
              f"loads/s {ratio(ma.get('load_rate_per_s'), mb.get('load_rate_per_s'))}, "
              f"cold p99 {ratio((ma.get('cold_ms') or {}).get('p99'), (mb.get('cold_ms') or {}).get('p99'))}")
    return 0


def replica_side(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The replicas' own figures over the mixed load: loads, evictions, member-load p50/p99, what each holds."""
    loads = evictions = 0
    during: list[float] = []
    for rid, a in after.items():
        s, b = a["stats"], before.get(rid, {}).get("stats", {"loads": 0, "evictions": 0})
        n = s["loads"] - b["loads"]
        loads += n
        evictions += s["evictions"] - b["evictions"]
        during += s["load_ms_recent"][-n:] if n > 0 else []
    during.sort()
    held = [m["model_id"] for a in after.values() for m in a["held"]]
    return {"loads": loads, "evictions": evictions, "held": len(held), "distinct": len(set(held)),
            "load_p50": during[len(during) // 2] if during else float("nan"),
            "load_p99": during[min(len(during) - 1, int(0.99 * len(during)))] if during else float("nan"),
            "shared": sum(a["stats"]["shared_graph_loads"] for a in after.values())}


if __name__ == "__main__":
    raise SystemExit(main())
