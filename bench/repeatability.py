"""Numbers a fleet can rest on: is the capacity at the SLO repeatable, and does a busy machine widen it?

Runs ``eks-inference loadtest run --search --repeats 2`` the way ``make demo`` does (a short closed loop first,
the search from a fraction of it, 8 s steps, an SLO on the p95) three times against one local server:

1. and 2. back to back on the machine as it is: both capacity intervals, whether they overlap, and how wide each
   is against its estimate (the aim: overlapping, each within 25 % on a quiet machine);
3. with a CPU hog (two busy processes, one per core, started by this script part-way through and stopped after
   ``--hog-seconds``): which measurements were flagged contended, and how the headline moved. The aim: the
   contended steps are flagged and left out, and the interval widens instead of the estimate silently falling.

The server is the project's stub (``eks_inference.loadgen.stub_server --cpu``): every request burns CPU one at a
time, so it has a real capacity and a knee, and it feels a busy machine as a model server does. ``--url`` measures
another server instead (the demo's: ``make demo`` leaves none running, start one with ``eks-inference local``).
Not a timed test: it prints what it measured, with the load average while it ran.

    .venv/bin/python bench/repeatability.py [--cpu-ms 8] [--slo-ms 100] [--duration 8] [--hog-after 25]
        [--hog-seconds 40]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eks_inference.measure.capacity import capacity_at_slo, capacity_text  # noqa: E402
from eks_inference.measure.repeats import summarize_repeats  # noqa: E402
from eks_inference.measure.results import parse_result  # noqa: E402

EI = [sys.executable, "-m", "eks_inference.cli"]


def start_stub(cpu_s: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "eks_inference.loadgen.stub_server", "--port", "0", "--cpu",
                             str(cpu_s)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise SystemExit(f"the stub server did not start: {line!r}")
    return proc, f"http://127.0.0.1:{int(line.split()[1])}/stub"


def _burn(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


HOG_TIMES: dict[str, float] = {}
"""Epoch seconds the hog started and stopped, to place each measurement against it."""


def hog(after_s: float, seconds: float, cores: int) -> threading.Thread:
    """After ``after_s``, ``cores`` busy processes for ``seconds`` (bounded: each stops itself)."""
    def run() -> None:
        time.sleep(after_s)
        HOG_TIMES["start"] = time.time()
        stop_at = time.time() + seconds
        procs = [multiprocessing.Process(target=_burn, args=(stop_at,), daemon=True) for _ in range(cores)]
        for p in procs:
            p.start()
        print(f"   hog: {cores} busy processes for {seconds:g} s", flush=True)
        for p in procs:
            p.join(seconds + 10)
            if p.is_alive():
                p.kill()
        HOG_TIMES["stop"] = time.time()
        print("   hog: stopped", flush=True)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def measure(url: str, out: Path, a: argparse.Namespace, label: str) -> dict[str, Any]:
    load0 = os.getloadavg()[0]
    cmd = [*EI, "loadtest", "run", "--url", url, "--search", "--capacity-fractions", str(a.start),
           "--repeats", "2", "--duration", str(a.duration), "--warmup", "2", "--budget", str(a.budget),
           "--arrival", "poisson", "--timeout", "10", "--slo-p99-ms", str(a.slo_ms), "--slo-percentile", "p95",
           "--max-lag-ms", "20", "--target-name", label, "--no-progress", "--no-server-metrics", "--out", str(out)]
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=a.budget + 240)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-2000:])
        raise SystemExit(f"{label}: loadtest run exited {r.returncode}")
    parsed = parse_result(str(out), json.loads(out.read_text()))
    by_index: dict[int, list[Any]] = {}
    for st in parsed.steps:
        by_index.setdefault(st.spec.index, []).append([st])
    steps = [summarize_repeats(v, percentile="p95") for v in by_index.values()]
    cap = capacity_at_slo(steps, slo_ms=a.slo_ms, max_error_rate=0.01, percentile="p95")
    contended = sorted({f"{st.spec.rate:g} req/s (repeat {st.spec.repeat})" for st in parsed.steps
                        if summarize_repeats([[st]])["contended"]})
    print(f"{label}: {capacity_text(cap)}")
    width = cap["relative_width"]
    print(f"   width {'n/a' if width is None else f'{width:.0%}'} of the estimate; {len(parsed.steps)} "
          f"measurements in {wall:.0f} s; load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"   measurements flagged contended: {', '.join(contended) or 'none'}")
    for p in cap["probes"]:
        print(f"   {p['requested_rate']:>8g} req/s  {p['verdict']:<9}  {p['why']}")
    cal = parsed.doc.get("calibration") or {}
    if cal:
        print(f"   capacity measurement: {cal.get('throughput_rps', 0):.1f} req/s closed loop, taken "
              f"{cal.get('measurements', 1)} time(s){' (contended every time)' if cal.get('contended') else ''}")
    if "start" in HOG_TIMES:
        t0, t1 = HOG_TIMES["start"], HOG_TIMES.get("stop", time.time())
        print(f"   each measurement against the hog ({t1 - t0:.0f} s):")
        for st in parsed.steps:
            start, end = st.window
            under = max(0.0, min(end, t1) - max(start, t0)) / max(end - start, 1e-9)
            host = st.client.get("host") or {}
            flag = "contended" if summarize_repeats([[st]])["contended"] else "clean"
            print(f"     {st.spec.rate:>8g} req/s repeat {st.spec.repeat}: {under:4.0%} under the hog; {flag:<9} "
                  f"(other programs {host.get('foreign_busy')}, pressure {host.get('psi_some')}, crowded windows "
                  f"{host.get('foreign_crowded_share')} of the step, client wait {host.get('client_wait')})")
        for note in parsed.doc.get("notes") or []:
            if "quieten" in note or "contended" in note:
                print(f"   note: {note}")
    return cap


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool | None:
    if None in (a["rps_lo"], b["rps_lo"]):
        return None
    hi_a = a["rps_hi"] if a["rps_hi"] is not None else float("inf")
    hi_b = b["rps_hi"] if b["rps_hi"] is not None else float("inf")
    return max(a["rps_lo"], b["rps_lo"]) <= min(hi_a, hi_b)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="measure this server instead of starting the stub")
    p.add_argument("--cpu-ms", type=float, default=8.0, help="stub CPU per request in ms (capacity ~1000/CPU_MS)")
    p.add_argument("--slo-ms", type=float, default=100.0, help="the p95 target")
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per step (the demo's 8)")
    p.add_argument("--start", type=float, default=0.6, help="search start, as a fraction of the measured capacity")
    p.add_argument("--budget", type=float, default=240.0, help="--budget of each run, in seconds")
    p.add_argument("--hog-after", type=float, default=25.0, help="seconds into the third run the hog starts")
    p.add_argument("--hog-seconds", type=float, default=40.0, help="how long the hog runs")
    a = p.parse_args()
    stub = None
    url = a.url
    if url is None:
        stub, url = start_stub(a.cpu_ms / 1000.0)
        print(f"stub server at {url}: {a.cpu_ms:g} ms of CPU per request, one at a time "
              f"(at most ~{1000 / a.cpu_ms:.0f} req/s)")
    print(f"{os.cpu_count()} CPUs; SLO p95 <= {a.slo_ms:g} ms; demo-style search, repeats 2, {a.duration:g} s steps")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            first = measure(url, Path(tmp) / "1.json", a, "run-1")
            second = measure(url, Path(tmp) / "2.json", a, "run-2")
            both = overlap(first, second)
            print(f"runs 1 and 2: intervals {'overlap' if both else 'do NOT overlap' if both is False else 'n/a'}; "
                  "widths " + ", ".join("n/a" if c["relative_width"] is None else f"{c['relative_width']:.0%}"
                                       for c in (first, second)) + " (aim: each <= 25 % on a quiet machine)")
            h = hog(a.hog_after, a.hog_seconds, os.cpu_count() or 2)
            third = measure(url, Path(tmp) / "3.json", a, "run-3-hog")
            h.join(a.hog_after + a.hog_seconds + 30)
            lo = [c["rps_lo"] for c in (first, second)]
            print(f"with the hog: capacity {third['rps']} req/s, interval {third['rps_lo']} to {third['rps_hi']}, "
                  f"width {'n/a' if third['relative_width'] is None else format(third['relative_width'], '.0%')}; "
                  f"quiet runs' lower bounds {lo}; steps left out: {len(third['excluded'])}")
            quiet_lo = min((x for x in lo if x is not None), default=None)
            fell = third["rps"] is not None and quiet_lo is not None and third["rps"] < quiet_lo
            widened = third["rps_hi"] is None or (third["relative_width"] or 0) > max(
                c["relative_width"] or 0 for c in (first, second))
            print("verdict: " + ("the estimate fell below the quiet runs' intervals" +
                                 (" and its interval widened (the hog is visible)" if widened and third["excluded"]
                                  else " SILENTLY (no step left out, no wider interval)") if fell else
                                 "the estimate held within the quiet runs' reach; "
                                 f"{len(third['excluded'])} probe(s) left out as contended or unsure"))
    finally:
        if stub is not None:
            stub.terminate()
            stub.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
