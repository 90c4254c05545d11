"""Synth cost of the full app against a bare aws_eks_v2 cluster app, measured side by side.

Prints, from one run: wall time and peak memory (the Python process plus its jsii Node.js child) of
each, interleaved over several rounds, and the ratios full / bare. Goal: time ratio <= 1.5.

    .venv/bin/python bench/synth.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FULL = """
import json, sys
from aws_cdk import App
from eks_inference.app_builder import build_app
ctx = json.load(open("cdk.json"))["context"]
app = App(context={**ctx, "env": "dev"}, outdir=sys.argv[1])
build_app(app)
app.synth()
"""

BARE = """
import sys
from aws_cdk import App, Stack
from aws_cdk import aws_eks_v2 as eks
from aws_cdk.lambda_layer_kubectl_v36 import KubectlV36Layer
app = App(outdir=sys.argv[1])
stack = Stack(app, "Bare")
eks.Cluster(stack, "Cluster", version=eks.KubernetesVersion.V1_36,
            kubectl_provider_options=eks.KubectlProviderOptions(kubectl_layer=KubectlV36Layer(stack, "Layer")))
app.synth()
"""


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def tree_rss(pid: int) -> int:
    """Summed resident memory (bytes) of ``pid`` and all its descendants, read from /proc."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/statm").read_text().split()
            total += int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
        stack += _children(p)
    return total


def measure(code: str) -> tuple[float, float]:
    """Wall seconds and peak summed RSS (MiB) of the process tree running ``code``."""
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "1"}
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, out], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"synth failed:\n{proc.stderr.read().decode() if proc.stderr else ''}")
    return elapsed, peak / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "full": []}
    for r in range(args.rounds):
        for name, code in (("bare", BARE), ("full", FULL)):
            t, m = measure(code)
            results[name].append((t, m))
            print(f"round {r + 1}: {name:4s} {t:6.2f} s  {m:7.0f} MiB", flush=True)
    med = {k: (statistics.median(t for t, _ in v), max(m for _, m in v)) for k, v in results.items()}
    print()
    print(f"bare aws_eks_v2 cluster app : {med['bare'][0]:6.2f} s median, {med['bare'][1]:6.0f} MiB peak")
    print(f"full eks-inference app (dev): {med['full'][0]:6.2f} s median, {med['full'][1]:6.0f} MiB peak")
    ratio_t = med["full"][0] / med["bare"][0]
    ratio_m = med["full"][1] / med["bare"][1]
    print(f"time ratio full/bare   : {ratio_t:.2f}x (goal <= 1.5x) {'OK' if ratio_t <= 1.5 else 'OVER'}")
    print(f"memory ratio full/bare : {ratio_m:.2f}x")
    print(json.dumps({"time_ratio": round(ratio_t, 3), "memory_ratio": round(ratio_m, 3),
                      "bare_s": round(med["bare"][0], 2), "full_s": round(med["full"][0], 2),
                      "bare_mib": round(med["bare"][1]), "full_mib": round(med["full"][1])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
