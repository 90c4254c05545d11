"""Load-generator ceiling: our client next to wrk, against one trivial local endpoint, in one run.

A load tester that cannot outrun the server it measures reports its own limit as the server's. This
benchmark starts ``eks_inference.loadgen.stub_server`` (a few microseconds per request) pinned to one
core, then drives it from the other core with:

1. ``eks-inference loadtest run`` closed loop (fast engine): the client's ceiling in requests/s;
2. the same with ``--http-client aiohttp``, the general-purpose engine;
3. ``wrk`` (C, one thread) with the same body and connection count: the reference;
4. ``eks-inference loadtest run`` open loop at ``--rate`` (default 5,000 req/s): the schedule must be
   kept (no ``behind_schedule`` flag, achieved rate = requested);
5. open loop at 3 × the measured ceiling: the client must *say* it fell behind, not silently under-send.

Every figure is printed with the client's CPU use, and req/s per CPU-second, because on a shared
2-core machine the server can be the bottleneck: then req/s ties and per-CPU cost tells the engines apart.

    .venv/bin/python bench/loadgen.py [--seconds 5] [--rate 5000] [--connections 64] [--strict]

``wrk`` comes from Debian's package; when missing and running as root the script installs it with
apt-get, otherwise it says how and skips the wrk row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BODY = '{"inputs":["the quick brown fox jumps over the lazy dog"]}'


def ensure_wrk() -> str | None:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk not found; installing the Debian package (apt-get install -y wrk) ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
        return shutil.which("wrk")
    print("wrk not found: install it with `sudo apt-get install -y wrk` (Debian/Ubuntu); skipping the wrk row")
    return None


def pin(core: int | None) -> list[str]:
    """``taskset -c N`` prefix when the machine has that core and taskset exists."""
    if core is None or not shutil.which("taskset") or core >= (os.cpu_count() or 1):
        return []
    return ["taskset", "-c", str(core)]


def start_server(core: int | None) -> tuple[subprocess.Popen[str], int]:
    args = [*pin(core), sys.executable, "-m", "eks_inference.loadgen.stub_server", "--port", "0", "--no-validate"]
    try:
        import uvloop  # noqa: F401  (optional: a faster server leaves more headroom to measure the client)

        args.append("--uvloop")
    except ImportError:
        pass
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise SystemExit(f"stub server did not start: {line!r}")
    return proc, int(line.split()[1])


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_client(url: str, core: int | None, extra: list[str], seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [*pin(core), sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", url,
               "--duration", str(seconds), "--warmup", "1", "--timeout", "10", "--text-length", "fixed:9",
               "--no-progress", "--json", "--out", f"{tmp}/r.json", *extra]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=seconds * 4 + 60)
        if p.returncode != 0:
            raise SystemExit(f"client run failed ({p.returncode}): {p.stderr[-2000:]}")
        (s,) = json.loads(p.stdout)
        return s


def run_wrk(wrk: str, url: str, core: int | None, connections: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(f"wrk.method = 'POST'\nwrk.body = '{BODY}'\n"
                          "wrk.headers['Content-Type'] = 'application/json'\n")
        cpu0, t0 = child_cpu(), time.monotonic()
        p = subprocess.run([*pin(core), wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script),
                            url + "/predict"], capture_output=True, text=True, timeout=seconds + 60)
        wall, cpu = time.monotonic() - t0, child_cpu() - cpu0
    m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
    if p.returncode != 0 or not m:
        raise SystemExit(f"wrk failed: {p.stdout}\n{p.stderr}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
    return {"rps": float(m.group(1)), "cpu": cpu / wall, "errors": float(errors.group(1)) if errors else 0.0}


def row(name: str, rps: float, cpu: float, note: str = "") -> str:
    per_cpu = rps / cpu if cpu > 0 else float("nan")
    return f"{name:<38} {rps:>10,.0f} {cpu:>8.2f} {per_cpu:>14,.0f}  {note}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row (default 5)")
    ap.add_argument("--rate", type=float, default=5000.0, help="open-loop rate that must be kept (default 5000)")
    ap.add_argument("--connections", type=int, default=64, help="connections / concurrency (default 64)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the goal is not met")
    a = ap.parse_args()

    cores = os.cpu_count() or 1
    server_core, client_core = (1, 0) if cores >= 2 else (None, None)
    wrk = ensure_wrk()
    server, port = start_server(server_core)
    url = f"http://127.0.0.1:{port}/stub"
    print(f"stub server on 127.0.0.1:{port} (core {server_core}); clients on core {client_core}; "
          f"{a.seconds:g} s per row, {a.connections} connections\n")
    try:
        fast = run_client(url, client_core, ["--mode", "closed", "--concurrency", str(a.connections)], a.seconds)
        aio = run_client(url, client_core, ["--mode", "closed", "--concurrency", str(a.connections),
                                            "--http-client", "aiohttp"], a.seconds)
        ref = run_wrk(wrk, url, client_core, a.connections, a.seconds) if wrk else None
        kept = run_client(url, client_core, ["--rate", f"{a.rate:g}"], a.seconds)
        over_rate = 3 * max(fast["throughput_rps"], a.rate)
        over = run_client(url, client_core, ["--rate", f"{over_rate:.0f}", "--connections", str(a.connections)],
                          a.seconds)
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"{'row':<38} {'req/s':>10} {'cpu':>8} {'req/CPU-s':>14}")
    print(row("eks-inference closed loop (fast)", fast["throughput_rps"], fast["client_cpu_max"],
              f"p99 {fast['latency_ms']['p99']:.2f} ms, errors {fast['errors']}"))
    print(row("eks-inference closed loop (aiohttp)", aio["throughput_rps"], aio["client_cpu_max"],
              f"p99 {aio['latency_ms']['p99']:.2f} ms, errors {aio['errors']}"))
    if ref:
        print(row("wrk -t1", ref["rps"], ref["cpu"], f"non-2xx {ref['errors']:.0f}"))
    print(row(f"eks-inference open loop @ {a.rate:,.0f}/s", kept["throughput_rps"], kept["client_cpu_max"],
              f"lag p99 {kept['schedule_lag_ms']['p99']:.2f} ms, behind_schedule={kept['behind_schedule']}"))
    print(row(f"eks-inference open loop @ {over_rate:,.0f}/s", over["throughput_rps"], over["client_cpu_max"],
              f"lag p99 {over['schedule_lag_ms']['p99']:.1f} ms, behind_schedule={over['behind_schedule']}"))
    print()
    fast_per_cpu = fast["throughput_rps"] / max(fast["client_cpu_max"], 1e-9)
    if ref:
        print(f"client/wrk req/s ratio: {fast['throughput_rps'] / ref['rps']:.2f} (fast), "
              f"{aio['throughput_rps'] / ref['rps']:.2f} (aiohttp); per CPU-second: "
              f"{fast_per_cpu / (ref['rps'] / max(ref['cpu'], 1e-9)):.2f} (fast)")
    print(f"client ceiling: {fast_per_cpu:,.0f} req per CPU-second closed loop (fast engine), "
          f"{kept['throughput_rps'] / max(kept['client_cpu_max'], 1e-9):,.0f} open loop")
    goal_ok = kept["throughput_rps"] >= 0.98 * a.rate and not kept["behind_schedule"]
    print(f"goal >= {a.rate:,.0f} req/s open loop from one core, on schedule: {'met' if goal_ok else 'NOT met'}")
    if not goal_ok and kept["client_cpu_max"] < 0.85:
        print(f"  the client got only {kept['client_cpu_max']:.0%} of its core while behind (other processes on "
              "this machine); rerun on a quiet machine")
    print(f"saturation reported at {over_rate:,.0f}/s: {'yes' if over['behind_schedule'] else 'NO'} "
          f"(achieved {over['throughput_rps']:,.0f} req/s, lag p99 {over['schedule_lag_ms']['p99']:.0f} ms)")
    return 1 if a.strict and not (goal_ok and over["behind_schedule"]) else 0


if __name__ == "__main__":
    sys.exit(main())
