"""Trials on local serving: each candidate shape served by a local Ray Serve, verified, then measured under load.

One private Ray serves every trial of a tune (started once: ~20 s). A candidate is rendered from the environment's
model with the candidate's serving fields, exactly as ``eks-inference local --env`` renders it, and deployed over
the previous one: a change of batching, threads or dtype reaches the running replicas through ``reconfigure``, a
change of replica count or Ray CPUs restarts them. The trial starts once Serve runs the candidate's replica count
and a replica reports the candidate's settings; then ``verify`` compares its answers with the fp32 reference, and a
candidate that passes is measured with ``eks-inference loadtest run --search`` (the capacity search with its
interval; the load client runs as its own process, as it does for every local measurement).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eks_inference.config import CpuTuning, DType, ModelSpec, Processor
from eks_inference.measure.capacity import capacity_at_slo
from eks_inference.measure.repeats import summarize_repeats
from eks_inference.measure.results import parse_result
from eks_inference.serving.local import LocalRay, http_get_json
from eks_inference.serving.serve_config import DEPLOYMENT_NAME, render_serve_config
from eks_inference.tables.prices import usd_per_million
from eks_inference.tune.search import Rung
from eks_inference.tune.space import Candidate

SCREEN = Rung("screen", expected_s=75.0, settings={"repeats": 1, "duration_s": 4.0, "warmup_s": 1.0,
                                                     "search_budget_s": 45.0})
"""The first rung: one short measurement per probe rate."""
CONFIRM = Rung("confirm", expected_s=150.0, settings={"repeats": 2, "duration_s": 6.0, "warmup_s": 2.0,
                                                       "search_budget_s": 110.0})
"""The last rung: every probe measured twice, so each carries an interval across repeats."""
RUNGS = (SCREEN, CONFIRM)
READY_TIMEOUT_S = 600.0


def candidate_model(model: ModelSpec, c: Candidate) -> ModelSpec:
    """``model`` served with ``c``'s shape, on this machine's CPU, at a fixed replica count (a capacity measurement
    needs the replicas pinned)."""
    serving = dataclasses.replace(
        model.serving, max_batch_size=c.max_batch_size, batch_wait_timeout_s=c.batch_wait_ms / 1000.0,
        num_threads=c.threads, cpus_per_replica=float(c.threads), dtype=DType(c.dtype), num_replicas=c.replicas,
        min_replicas=c.replicas, max_replicas=c.replicas, batch_buckets=(), target_ongoing_requests=None,
        cpu_tuning=CpuTuning(**c.tuning()))
    return dataclasses.replace(model, processors=(Processor.CPU,), serving=serving)


def _replicas_running(name: str) -> int:
    from ray import serve

    app = serve.status().applications.get(name)
    if app is None:
        return 0
    dep = app.deployments.get(DEPLOYMENT_NAME)
    if dep is None:
        return 0
    states = {str(getattr(k, "value", k)): v for k, v in (dep.replica_states or {}).items()}
    return int(states.get("RUNNING", 0)) if set(states) == {"RUNNING"} else -1


class LocalTrials:
    """The measurement function of a local tune (:data:`eks_inference.tune.search.Measure`)."""

    def __init__(self, ray: LocalRay, model: ModelSpec, *, source: str, work_dir: Path, slo_ms: float,
                 percentile: str, usd_per_hour: float | None, timeout_s: float = 10.0,
                 artifact_uri: str | None = None, say: Callable[[str], None] = lambda _m: None) -> None:
        self.ray, self.model, self.source, self.work = ray, model, source, work_dir
        self.artifact_uri = artifact_uri or str(work_dir / "artifacts")
        self.slo_ms, self.percentile, self.usd_per_hour, self.timeout_s, self.say = (
            slo_ms, percentile, usd_per_hour, timeout_s, say)
        self.name = model.name
        self.running: Candidate | None = None

    @property
    def url(self) -> str:
        return f"{self.ray.url}/{self.name}"

    def config(self, c: Candidate) -> dict[str, Any]:
        return render_serve_config(candidate_model(self.model, c), Processor.CPU, model_uri=self.source,
                                   artifact_uri=self.artifact_uri, cache_dir=str(self.work / "cache"),
                                   http_host="127.0.0.1", http_port=self.ray.http_port)

    def serve(self, c: Candidate) -> dict[str, Any]:
        """Deploy ``c`` and wait until Serve runs its replicas with its settings; returns the replica's ``/info``.

        A shape with other replicas or Ray CPUs replaces the running one instead of rolling over it: a rolling update
        starts the new replicas beside the old ones, which on a machine sized for one shape leaves them no CPU."""
        with _quiet():
            # the CPU settings live in the replicas' environment (or, torch.compile, the args): new replicas too
            if self.running is not None and (self.running.replicas, self.running.threads, self.running.tuning()) != (
                    c.replicas, c.threads, c.tuning()):
                self.ray.remove(self.name, wait=True)
            self.running = c
            self.ray.deploy(self.config(c))
            self.ray.wait_ready(self.name, timeout_s=READY_TIMEOUT_S)
        env = CpuTuning(**c.tuning()).env()
        want = (c.max_batch_size, round(c.batch_wait_ms / 1000.0, 9), c.threads, c.dtype, c.torch_compile, env)
        deadline = time.monotonic() + READY_TIMEOUT_S
        agree = 0
        while time.monotonic() < deadline:
            with _quiet():
                running = _replicas_running(self.name)
            code, info = http_get_json(f"{self.url}/info", timeout=10)
            got = (info.get("max_batch_size"), info.get("batch_wait_timeout_s"), info.get("num_threads"),
                   info.get("requested_dtype"), info.get("torch_compile"), info.get("cpu_env"))
            agree = agree + 1 if code == 200 and running == c.replicas and got == want else 0
            if agree >= 3:  # a few answers in a row: requests land on each replica in turn
                return info
            time.sleep(0.5)
        raise TimeoutError(f"{c.key}: not serving with its settings after {READY_TIMEOUT_S:.0f} s")

    def __call__(self, c: Candidate, rung: Rung) -> dict[str, Any]:
        try:
            info = self.serve(c)
        except Exception as e:  # a shape that cannot start is a result of the trial, not an end of the tune
            return {"status": "failed", "note": f"did not start: {str(e).splitlines()[0][:300]}", "verify": None}
        if info.get("dtype") != c.dtype:
            return {"status": "failed", "verify": None, "served_dtype": info.get("dtype"),
                    "note": f"asked for {c.dtype}, served {info.get('dtype')}: {info.get('dtype_note')}"}
        verdict = self.verify()
        if verdict.get("status") != "passed":
            return {"status": "failed-verify", "verify": verdict, "note": verdict.get("summary")}
        try:
            cap, at = self.measure(rung)
        except RuntimeError as e:
            return {"status": "failed", "verify": verdict, "note": str(e)[:300]}
        rps = cap.get("rps")
        return {"status": "measured", "verify": verdict, "capacity": _compact_capacity(cap),
                "throughput_rps": (at or {}).get("throughput_rps"),
                "p99_ms": ((at or {}).get("latency_ms") or {}).get(self.percentile),
                "usd_per_million": None if not rps else usd_per_million(self.usd_per_hour, float(rps)),
                "mean_batch": _mean_batch(info, self.url), "served_dtype": info.get("dtype"),
                "note": "; ".join(cap.get("notes") or []) or None}

    def verify(self) -> dict[str, Any]:
        from eks_inference.verify.check import VerifyError, verify_target

        try:
            v = verify_target(self.url, source=self.source, cache_dir=self.work / "verify-cache", timeout_s=120)
        except VerifyError as e:
            return {"status": "error", "summary": f"verify could not run: {e}"}
        d = v.to_dict()
        return {k: d[k] for k in ("status", "summary", "criteria", "probes", "reference")}

    def measure(self, rung: Rung) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The capacity at the SLO by ``loadtest run --search`` and the step at its estimate."""
        s = rung.settings
        with tempfile.TemporaryDirectory(dir=self.work) as tmp:
            out = Path(tmp) / "result.json"
            cmd = [sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", self.url, "--search",
                   "--capacity-fractions", "0.6", "--repeats", str(s["repeats"]), "--duration", str(s["duration_s"]),
                   "--warmup", str(s["warmup_s"]), "--budget", str(s["search_budget_s"]), "--arrival", "poisson",
                   "--timeout", str(self.timeout_s), "--slo-p99-ms", str(self.slo_ms), "--slo-percentile",
                   self.percentile, "--max-lag-ms", "20", "--target-name", self.name, "--no-progress",
                   "--no-server-metrics", "--out", str(out)]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=float(s["search_budget_s"]) + 300)
            if r.returncode != 0 or not out.exists():
                tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"loadtest run exited {r.returncode}: {tail[0]}")
            parsed = parse_result(str(out), json.loads(out.read_text()))
        by_index: dict[int, list[Any]] = {}
        for st in parsed.steps:
            by_index.setdefault(st.spec.index, []).append([st])
        steps = [summarize_repeats(v, percentile=self.percentile) for v in by_index.values()]
        cap = capacity_at_slo(steps, slo_ms=self.slo_ms, max_error_rate=0.01, percentile=self.percentile)
        at = next((x for x in steps if cap["rps"] is not None and x.get("requested_rate") == cap["rps"]
                   and x.get("mode") == "open"), None)
        return cap, at


def _compact_capacity(cap: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("percentile", "slo_ms", "rps", "rps_lo", "rps_hi", "relative_width", "throughput_rps_at", "replicas",
            "probes", "notes")
    return {k: cap.get(k) for k in keep}


def _mean_batch(before: Mapping[str, Any], url: str) -> float | None:
    """Mean batch one replica formed over the trial (verify and measurement), from its ``/info`` counters."""
    code, after = http_get_json(f"{url}/info", timeout=10)
    s0, s1 = before.get("stats") or {}, after.get("stats") or {}
    if code != 200:
        return None
    if after.get("replica") != before.get("replica"):
        return s1.get("mean_batch_size")
    batches = (s1.get("batches") or 0) - (s0.get("batches") or 0)
    return round(((s1.get("inputs") or 0) - (s0.get("inputs") or 0)) / batches, 2) if batches > 0 else None


class _quiet:
    """Serve's controller logs each deploy to the driver's stderr; a tune prints its own lines."""

    def __enter__(self) -> None:
        import logging

        self._logger = logging.getLogger("ray.serve")
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self._logger.setLevel(self._level)


def cluster_effect(model: ModelSpec, processor: Processor, patch: Mapping[str, Any]) -> tuple[str, str]:
    """What applying ``patch`` to ``model`` does to a running RayService on ``processor``: ``("in place", why)`` when
    only the Serve ``user_config`` changes (KubeRay resubmits ``serveConfigV2`` to the running cluster and Serve hands
    it to each replica's ``reconfigure``), ``("serve restart", why)`` when the application's ``args`` or deployment
    options change too, ``("needs a deploy", why)`` when the worker pods change size (a new Ray cluster). The rules
    are :mod:`eks_inference.ops.effects`' (KubeRay ``rayservice_controller.go`` ``shouldPrepareNewCluster`` and
    ``checkIfNeedSubmitServeApplications``; Ray Serve ``deploy_utils.py`` ``get_app_code_version``)."""
    from eks_inference.config import worker_pod_requests

    fields: dict[str, Any] = {k: (DType(v) if k == "dtype" else v) for k, v in patch.items()}
    if "batch_buckets" in fields:
        fields["batch_buckets"] = tuple(fields["batch_buckets"])
    else:
        fields["batch_buckets"] = () if _default_buckets(model) else model.serving.batch_buckets
    new = dataclasses.replace(model, serving=dataclasses.replace(model.serving, **fields))
    if worker_pod_requests(model.serving, processor) != worker_pod_requests(new.serving, processor):
        before, after = worker_pod_requests(model.serving, processor), worker_pod_requests(new.serving, processor)
        return "needs a deploy", (f"worker pods change from {before.describe()} to {after.describe()}: the "
                                  "RayService's cluster spec changes, so KubeRay starts a new Ray cluster "
                                  "(`cdk deploy`)")
    kw: dict[str, Any] = {"model_uri": "s3://b/m", "artifact_uri": "s3://b/a"}
    a, b = render_serve_config(model, processor, **kw), render_serve_config(new, processor, **kw)
    app_a, app_b = a["applications"][0], b["applications"][0]
    if app_a == app_b:
        return "in place", "nothing changes"
    dep_a, dep_b = dict(app_a["deployments"][0]), dict(app_b["deployments"][0])
    moved = sorted(k for k in set(dep_a) | set(dep_b) if k != "user_config" and dep_a.get(k) != dep_b.get(k))
    if app_a["args"] != app_b["args"] or "ray_actor_options" in moved:
        what = [*(["args"] if app_a["args"] != app_b["args"] else []), *moved]
        return "serve restart", f"{', '.join(what)} change: Serve restarts the replicas one by one (`cdk deploy`)"
    tail = f" (and {', '.join(moved)}, which Serve applies without a restart)" if moved else ""
    return "in place", ("only the Serve user_config changes" + tail + ": `cdk deploy` updates the RayService, KubeRay "
                        "sends the new serveConfigV2 to the running Ray cluster and each replica's reconfigure() "
                        "applies it, no pod restarts")


def _default_buckets(model: ModelSpec) -> bool:
    from eks_inference.config import batch_buckets_up_to

    return model.serving.batch_buckets == batch_buckets_up_to(model.serving.max_batch_size)
