"""The cluster's :class:`~eks_inference.ops.rollout.RolloutBackend`: ``kubectl`` with the operator's kubeconfig.

- the canary: each target's deployed compile Job, RayService and TargetGroupConfiguration, read back (``kubectl get
  -o json``), turned into ``<target>-canary`` objects by :mod:`eks_inference.k8s.rollout` and applied; ready when
  its compile Job completed and KubeRay set the RayService's ``Ready`` condition (``rayservice_controller.go``);
- ``verify``: through ``kubectl port-forward`` to each canary serve Service, against the reference of the weights
  the canary names in ``/info`` (the revision's published copy);
- the route: the model's HTTPRoute read back, re-weighted (:func:`~eks_inference.k8s.rollout.weighted_route`) and
  replaced; the load balancer controller turns the weights into the listener rule's target-group weights;
- alerts: the workspace's Prometheus-compatible ``/api/v1/alerts`` (Amazon Managed Service for Prometheus,
  SigV4-signed as service ``aps``), or any Prometheus URL.

The stacks own the stable objects; a deploy during a rollout applies the route as configured again (no canary).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eks_inference.config import ModelSpec
from eks_inference.k8s.front_door_chart import serve_service
from eks_inference.k8s.rollout import (
    COMPILE_TARGET_LABEL,
    canary_compile_job,
    canary_name,
    canary_ray_service,
    canary_target_group,
    stable_ray_service,
    weighted_route,
)
from eks_inference.k8s.serving_chart import NAMESPACE, service_name
from eks_inference.ops.rollout import StepFailed, VerifyOutcome, fetch_alerts, firing_for
from eks_inference.verify.check import VerifyError, verify_target

KUBECTL_TIMEOUT_S = 60


def amp_signer(region: str) -> Callable[[urllib.request.Request], urllib.request.Request]:
    """SigV4 for Amazon Managed Service for Prometheus (service ``aps``) with the operator's credentials."""
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = boto3.Session().get_credentials()

    def sign(req: urllib.request.Request) -> urllib.request.Request:
        aws = AWSRequest(method="GET", url=req.full_url, headers=dict(req.headers))
        SigV4Auth(credentials, "aps", region).add_auth(aws)
        return urllib.request.Request(req.full_url, headers=dict(aws.headers.items()))

    return sign


class KubeRolloutBackend:
    def __init__(self, model: ModelSpec, *, alerts_url: str, region: str, namespace_: str = NAMESPACE,
                 kubectl: Sequence[str] = ("kubectl",)) -> None:
        self.model, self.alerts_url, self.region, self.ns = model, alerts_url, region, namespace_
        self.kubectl = list(kubectl)
        self.targets = [service_name(model, p) for p in model.processors]
        self._sign = amp_signer(region) if ".amazonaws.com/" in alerts_url else None

    def _run(self, *args: str, stdin: str | None = None, timeout: float = KUBECTL_TIMEOUT_S) -> str:
        cmd = [*self.kubectl, "-n", self.ns, *args]
        try:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise StepFailed(f"{' '.join(cmd[:5])}: {e}") from None
        if proc.returncode != 0:
            raise StepFailed(f"{' '.join(cmd[:6])}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
        return proc.stdout

    def _get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self._run("get", kind, name, "-o", "json"))  # type: ignore[no-any-return]

    def _apply(self, obj: dict[str, Any]) -> None:
        self._run("apply", "--server-side", "--field-manager=eks-inference-rollout", "--force-conflicts", "-f", "-",
                  stdin=json.dumps(obj))

    def _compile_job(self, target: str) -> dict[str, Any]:
        """The target's newest compile Job (its name is a hash of its spec, so there may be older ones)."""
        items = json.loads(self._run("get", "job", "-l", f"{COMPILE_TARGET_LABEL}={target}", "-o", "json"))["items"]
        if not items:
            raise StepFailed(f"no compile Job of {target} in {self.ns}: deploy the environment first")
        return max(items, key=lambda j: str((j.get("metadata") or {}).get("creationTimestamp", "")))  # type: ignore[no-any-return]

    def deploy_canary(self, revision: str, weights_sha256: str | None, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        jobs = []
        for t in self.targets:  # replicas never compile: the canary's artifact comes from a Job, as the target's
            job = canary_compile_job(self._compile_job(t), model=self.model.name, revision=revision,
                                     weights_sha256=weights_sha256)
            self._apply(job)
            jobs.append(job["metadata"]["name"])
            self._apply(canary_ray_service(self._get("rayservice", t), model=self.model.name, revision=revision,
                                           weights_sha256=weights_sha256))
            self._apply(canary_target_group(self._get("targetgroupconfiguration", f"{t}-serve")))
        for name in jobs:
            left = max(1, int(deadline - time.monotonic()))
            self._run("wait", "--for=condition=complete", f"job/{name}", f"--timeout={left}s", timeout=left + 30)
        for t in self.targets:
            left = max(1, int(deadline - time.monotonic()))
            self._run("wait", "--for=condition=Ready", f"rayservice/{canary_name(t)}", f"--timeout={left}s",
                      timeout=left + 30)

    @contextmanager
    def _forward(self, service: str) -> Iterator[str]:
        """``kubectl port-forward`` to a serve Service on a free local port; yields the model's base URL."""
        cmd = [*self.kubectl, "-n", self.ns, "port-forward", f"svc/{service}", ":8000", "--address=127.0.0.1"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not m:
                raise StepFailed(f"kubectl port-forward svc/{service}: {line.strip() or 'no port'}")
            yield f"http://127.0.0.1:{m.group(1)}/{self.model.name}"
        finally:
            proc.terminate()
            proc.wait(10)

    def verify(self, revision: str) -> VerifyOutcome:
        for t in self.targets:
            with self._forward(serve_service(canary_name(t))) as url:
                try:
                    v = verify_target(url, cache_dir=".eks-inference/verify-cache", timeout_s=120)
                except VerifyError as e:
                    return VerifyOutcome(False, f"{canary_name(t)}: {e}")
                if not v.passed:
                    return VerifyOutcome(False, f"{canary_name(t)} disagrees with the fp32 reference of {revision}; "
                                                f"worst input {v.worst_text()}")
        return VerifyOutcome(True, f"{', '.join(canary_name(t) for t in self.targets)} agree with the fp32 reference")

    def set_canary_share(self, percent: float) -> None:
        route = self._get("httproute", self.model.name)
        for k in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            route.get("metadata", {}).pop(k, None)
        route.pop("status", None)
        self._run("replace", "-f", "-", stdin=json.dumps(weighted_route(route, percent)))

    def firing_alerts(self, names: Sequence[str]) -> list[str]:
        return firing_for(fetch_alerts(self.alerts_url, sign=self._sign), names, self.model.name)

    def update_stable(self, revision: str, weights_sha256: str | None, *, timeout_s: float) -> None:
        for t in self.targets:
            self._apply(stable_ray_service(self._get("rayservice", t), model=self.model.name, revision=revision,
                                           weights_sha256=weights_sha256))
        deadline = time.monotonic() + timeout_s
        for t in self.targets:  # Serve replaces the replicas in place; done when /info names the revision
            with self._forward(serve_service(t)) as url:
                while True:
                    try:
                        with urllib.request.urlopen(f"{url}/info", timeout=10) as r:
                            if json.loads(r.read()).get("revision") == revision:
                                break
                    except (OSError, ValueError):
                        pass
                    if time.monotonic() > deadline:
                        raise StepFailed(f"{t} did not serve {revision} within {timeout_s:g} s")
                    time.sleep(5)

    def remove_canary(self) -> None:
        for t in self.targets:
            self._run("delete", "rayservice", canary_name(t), "--ignore-not-found")
            self._run("delete", "targetgroupconfiguration", f"{canary_name(t)}-serve", "--ignore-not-found")
