"""Model family benchmark on local serving: the price of multiplexing, as ratios measured in one run.

    .venv/bin/python bench/family.py                 # N = 50 members of the bundled model, room for 8 per replica
    .venv/bin/python bench/family.py --members 4 --room 2 --requests 60 --base tiny --concurrency 2   # smoke
    make demo-family       # the same with fewer requests, then `eks-inference verify` on a sample of members

Publishes ``--members`` derived members (the base model's weights plus seeded noise: deterministic, each different) to
a family repository in a local directory, serves the family with one replica whose memory budget holds about
``--room`` of them (measured: the members' parameter bytes), and drives the same closed-loop load twice with
``eks-inference loadtest run``: over all members with a Zipf(``--zipf``) mix, then over one member. Before measuring,
every member is asked once, so each has its compiled artifact in the local cache: a cold request then costs what it
costs in the cluster, where members are compiled when they are published (fetch, digest check, load, one warm-up
forward), never a compile. Prints throughput, p99, the hit ratio, the cold-request p99 (client side) and the
replica's own member-load p99, and the ratios mixed / one model.

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
from eks_inference.config import FamilySpec, ModelSpec, Processor, ServingSpec, Task  # noqa: E402
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
    a = p.parse_args()
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
          f"replica budget {budget / 1e6:.1f} MB (room for {a.room:g})", flush=True)

    ray = LocalRay(http_host="127.0.0.1", http_port=free_port()).start()
    try:
        spec = ModelSpec(name=NAME, task=Task.EMBEDDING, processors=(Processor.CPU,),
                         family=FamilySpec(memory_budget=max(budget, 16 << 20)),
                         serving=ServingSpec(max_batch_size=16, max_inputs=16, max_seq_length=128, num_threads=2,
                                             batch_wait_timeout_s=0.002, num_replicas=1))
        cfg = render_serve_config(spec, Processor.CPU, model_uri=family_uri(repo, NAME),
                                  artifact_uri=str(work / "artifacts"), cache_dir=str(work / "replica-cache"),
                                  http_host="127.0.0.1", http_port=ray.http_port)
        cfg["applications"][0]["args"]["family"]["memory_budget_bytes"] = budget
        if a.no_shared_graphs:
            cfg["applications"][0]["args"]["family"]["share_graphs"] = False
        ray.deploy(cfg)
        ray.wait_ready(NAME, timeout_s=900)
        url = f"{ray.url}/{NAME}"
        t0 = time.perf_counter()
        for mid in ids:  # every member compiled once, as publishing would have
            ask(url, mid)
        print(f"compiled every member once in {time.perf_counter() - t0:.0f} s (not measured)", flush=True)
        before = info(url)["stats"]
        mixed = load(url, ids, a, work / "mixed")
        after = info(url)["stats"]
        during = sorted(after["load_ms_recent"][-(after["loads"] - before["loads"]):]) if after["loads"] > before[
            "loads"] else []
        single = load(url, ids[:1], a, work / "single")
        if a.verify:
            r = subprocess.run([sys.executable, "-m", "eks_inference.cli", "verify", "--url", url, "--sample",
                                str(a.verify), "--seed", str(a.seed), "--cache-dir", str(work / "verify")],
                               capture_output=True, text=True, cwd=ROOT, timeout=3600)
            print(r.stdout.strip() or r.stderr.strip()[-2000:], flush=True)
            if r.returncode != 0:
                raise SystemExit(f"verify failed: {r.stderr.strip()[-500:]}")
    finally:
        ray.shutdown()

    def row(label: str, s: dict[str, Any]) -> None:
        m = s.get("models") or {}
        cold = (m.get("cold_ms") or {}).get("p99")
        print(f"{label:<28} {s['throughput_rps']:>9.1f} req/s  p99 {s['latency_ms']['p99']:>8.1f} ms  "
              f"hit ratio {m.get('hit_ratio', 0):>6.1%}  loads/s {m.get('load_rate_per_s', 0):>6.2f}  "
              f"cold p99 {cold if cold is not None else float('nan'):>8.1f} ms", flush=True)

    print(f"\nfamily of {a.members}, room for {a.room:g} per replica, {a.requests} requests at concurrency "
          f"{a.concurrency} each:")
    row(f"zipf:{a.zipf:g} over {a.members}", mixed)
    row("one model", single)
    loads = after["loads"] - before["loads"]
    p99 = during[min(len(during) - 1, int(0.99 * len(during)))] if during else float("nan")
    p50 = during[len(during) // 2] if during else float("nan")
    print(f"replica: {loads} loads, {after['evictions'] - before['evictions']} evictions during the mixed load; "
          f"member-load p50 {p50} ms, p99 {p99} ms (the replica's own, loads during the mixed load; "
          f"{after['shared_graph_loads']} loads into the family's shared graph so far)")
    print(f"ratio mixed / one model: throughput {mixed['throughput_rps'] / single['throughput_rps']:.2f}, "
          f"p99 {mixed['latency_ms']['p99'] / single['latency_ms']['p99']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
