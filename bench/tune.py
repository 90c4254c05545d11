"""Does `eks-inference tune` find a better shape than the one dev is configured with, on this machine?

Runs ``eks-inference tune`` within a budget (default 10 minutes) on local serving of the bundled model, for dev's
model on Graviton under dev's SLO, in a throw-away copy of the project's ``cdk.json`` where a ``tune`` environment is
dev's block marked as a tune target with its front door off. Then, in one run on one local Ray, it measures the
winner and dev's configured shape (as ``eks-inference local --env dev`` serves it here) side by side, each with the
capacity search at the SLO and every probe repeated, alternating the two twice (configured, winner, winner,
configured) so that a drift of the machine weighs on both. Prints each capacity with its 95 % interval, the ratio of
the estimates and whether the intervals separate. Not a timed test: figures are ratios measured in this one run.

    .venv/bin/python bench/tune.py                                   # ~10 min tune + ~6 min side by side
    .venv/bin/python bench/tune.py --budget-minutes 4 --candidates 2 --rounds 1   # a smoke run
    .venv/bin/python bench/tune.py --tuned r2-t1-b16-w0-fp32 --rounds 1           # side by side only
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eks_inference.config import CDK_JSON, ENVIRONMENTS_KEY, load_environment  # noqa: E402
from eks_inference.tune.report import capacity_words, separate  # noqa: E402
from eks_inference.tune.search import TrialsFile, eligible  # noqa: E402
from eks_inference.tune.space import Candidate, configured  # noqa: E402

EI = [sys.executable, "-m", "eks_inference.cli"]


def tune_project(tmp: Path) -> Path:
    doc = json.loads((ROOT / CDK_JSON).read_text())
    envs = doc["context"][ENVIRONMENTS_KEY]
    tune = copy.deepcopy(envs["dev"])
    tune.update(tune_target=True, front_door={"enabled": False})
    envs["tune"] = tune
    path = tmp / CDK_JSON
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def winner_of(trials: Path) -> dict[str, Any] | None:
    recs = list(TrialsFile(trials).load().values())
    for rung in ("confirm", "screen"):
        ok = sorted((r for r in recs if r["rung"] == rung and eligible(r)),
                    key=lambda r: (r.get("usd_per_million") or float("inf"), -r["capacity"]["rps"]))
        if ok:
            return ok[0]
    return None


def side_by_side(shapes: dict[str, Candidate], *, slo_ms: float, percentile: str, rounds: int,
                 work: Path) -> dict[str, list[dict[str, Any]]]:
    from eks_inference.ops.tune import CONFIRM, LocalTrials
    from eks_inference.serving.local import LocalRay, free_port, ray_environment, serving_cores

    model = load_environment("dev", cdk_json=ROOT / CDK_JSON).models[0]
    ray_environment()
    ray = LocalRay(http_host="127.0.0.1", http_port=free_port(), num_cpus=serving_cores()).start()
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in shapes}
    try:
        trials = LocalTrials(ray, model, source="bundled:all-minilm-l6-v2", work_dir=work, slo_ms=slo_ms,
                             percentile=percentile, usd_per_hour=None)
        names = list(shapes)
        order = [n for i in range(rounds) for n in (names if i % 2 == 0 else names[::-1])]
        for name in order:
            t0 = time.monotonic()
            rec = trials(shapes[name], CONFIRM)
            out[name].append(rec)
            print(f"  {name:<11} {shapes[name].describe()}: {rec['status']}, capacity "
                  f"{capacity_words(rec.get('capacity'))}, mean batch {rec.get('mean_batch')} "
                  f"({time.monotonic() - t0:.0f} s, load average {os.getloadavg()[0]:.1f})", flush=True)
            for probe in (rec.get("capacity") or {}).get("probes") or []:
                print(f"      {probe['requested_rate']:>8g} req/s  {probe['verdict']:<9}  {probe['why']}")
    finally:
        ray.shutdown()
    return out


def pooled(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The rounds of one shape as one figure: the median estimate, and the hull of the rounds' intervals."""
    caps = [r["capacity"] for r in recs if r.get("status") == "measured" and (r.get("capacity") or {}).get("rps")]
    if not caps:
        return None
    est = sorted(c["rps"] for c in caps)[len(caps) // 2]
    los = [c["rps_lo"] for c in caps if c.get("rps_lo") is not None]
    his = [c.get("rps_hi") for c in caps]
    return {"rps": est, "rps_lo": min(los) if los else None,
            "rps_hi": None if any(h is None for h in his) else max(h for h in his if h is not None)}


def parse_key(key: str) -> Candidate:
    """``r2-t1-b16-w0-fp32`` (``-thp-tc`` with CPU settings) → the candidate it names."""
    try:
        return Candidate.from_key(key)
    except ValueError:
        raise SystemExit(f"--tuned: {key!r} is not a trial key like r2-t1-b16-w0-fp32 or "
                         "r2-t1-b16-w0-fp32-thp-tc") from None


def compare(a: argparse.Namespace, model: Any, slo: float, tmp: Path, winner: Candidate) -> int:
    """The winner and the configured shape side by side on one local Ray, alternating; both figures, the ratio and
    whether the intervals separate."""
    from eks_inference.runtime.backends import cpu_has_native_bf16
    from eks_inference.serving.local import serving_cores

    shapes = {"configured": configured(model.serving, cores=serving_cores(), bf16_here=cpu_has_native_bf16()),
              "tuned": winner}
    if shapes["configured"] == shapes["tuned"]:
        print("the tune's winner is dev's configured shape: nothing to compare")
        return 0
    print(f"side by side, {a.rounds} round(s) each, alternating:", flush=True)
    got = side_by_side(shapes, slo_ms=slo, percentile="p99", rounds=a.rounds, work=tmp / "side")
    conf, tuned = pooled(got["configured"]), pooled(got["tuned"])
    print(f"configured: {shapes['configured'].describe()}: {capacity_words(conf)}")
    print(f"tuned:      {shapes['tuned'].describe()}: {capacity_words(tuned)}")
    if conf and tuned:
        apart = separate(tuned, conf)
        print(f"tuned / configured: {tuned['rps'] / conf['rps']:.2f}x at p99 <= {slo:g} ms; intervals "
              f"{'separate' if apart else 'overlap' if apart is False else 'cannot be compared (an open bound)'}")
    else:
        print("no ratio: a shape showed no capacity at the SLO in this run (see each measurement above)")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-minutes", type=float, default=10.0, help="the tune's budget")
    p.add_argument("--slo-ms", type=float, help="p99 target (default: dev's loadtest SLO)")
    p.add_argument("--candidates", type=int, help="shapes screened (default: what the budget holds, x2)")
    p.add_argument("--rounds", type=int, default=2, help="side-by-side measurements of each shape, alternating")
    p.add_argument("--trials-file", help="resume the tune from (and keep its trials in) this file")
    p.add_argument("--tuned", metavar="KEY", help="skip the tune and compare this shape (a trial key such as "
                                                  "r2-t1-b16-w0-fp32) with the configured one")
    a = p.parse_args()
    dev = load_environment("dev", cdk_json=ROOT / CDK_JSON)
    model = dev.models[0]
    slo = a.slo_ms or dev.slo_p99_ms(model)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {model.name!r} for graviton, p99 <= "
          f"{slo:g} ms", flush=True)
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp_s:
        tmp = Path(tmp_s)
        if a.tuned:
            return compare(a, model, slo, tmp, parse_key(a.tuned))
        project = tune_project(tmp)
        trials = Path(a.trials_file).resolve() if a.trials_file else tmp / "trials.jsonl"
        cmd = [*EI, "tune", "--env", "tune", "--processor", "graviton", "--slo-p99-ms", str(slo), "--budget-minutes",
               str(a.budget_minutes), "--cdk-json", str(project), "--out", str(tmp / "out"), "--trials-file",
               str(trials)]
        if a.candidates:
            cmd += ["--candidates", str(a.candidates)]
        t0 = time.monotonic()
        r = subprocess.run(cmd, cwd=ROOT, text=True)
        print(f"tune took {(time.monotonic() - t0) / 60:.1f} min (exit {r.returncode})", flush=True)
        win = winner_of(trials)
        if win is None:
            print("tune found no shape that meets the SLO with a passing verify: nothing to compare")
            return 1
        return compare(a, model, slo, tmp, Candidate.from_dict(win["config"]))


if __name__ == "__main__":
    raise SystemExit(main())
