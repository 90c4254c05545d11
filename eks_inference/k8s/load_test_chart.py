"""In-cluster load tests: per target, an Indexed Job of N client pods, then one Job that merges the report.

Each client pod writes its own result file (HDR histograms inside) under
``results/{run_id}/{target}/client-{index}.json``; the report Job waits for all of them and merges the
histograms exactly. A new ``run_id`` in config renders new Job names, so a new run is a reviewable
``cdk diff`` and finished runs are never overwritten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdk8s import Chart
from constructs import Construct

from eks_inference.config import LoadTestSpec
from eks_inference.k8s.objects import PART_OF, emit, network_policy
from eks_inference.k8s.pod import (
    Resources,
    env_list,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from eks_inference.k8s.serving_chart import (
    LOADTEST_SERVICE_ACCOUNT,
    NAMESPACE,
    PROCESSOR_LABEL,
    ROLE_LABEL,
    ServingTarget,
)

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"

# checkov reads these per object; each says why the check does not apply here.
CHECKOV_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_15=Image tags are CDK asset hashes of the build context and never move; "
                        "IfNotPresent cannot run a stale image and saves a registry round trip per pod",
    "checkov.io/skip2": "CKV_K8S_43=Images are pushed by cdk deploy and referenced by their content-hash tag; "
                        "the digest exists only after the push, not at synth",
}


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True, kw_only=True)
class LoadTestPlan:
    """Everything a run needs; the client and report Jobs are rendered from it."""

    spec: LoadTestSpec
    image: str
    results_uri: str
    region: str
    namespace: str = NAMESPACE

    @property
    def run_uri(self) -> str:
        return f"{self.results_uri.rstrip('/')}/{self.spec.run_id}"

    @property
    def deadline_s(self) -> int:
        steps = len(self.spec.rates) if self.spec.mode == "open" else len(self.spec.concurrencies)
        return steps * (self.spec.duration_s + self.spec.warmup_s + 30) + 600

    def client_args(self, target: ServingTarget) -> list[str]:
        """Rates and concurrencies are run totals: each of ``--clients`` pods sends its share."""
        s = self.spec
        args = ["loadtest", "run", "--url", target.url, "--mode", s.mode]
        if s.mode == "open":
            args += ["--rates", ",".join(_fmt(r) for r in s.rates)]
        else:
            args += ["--concurrencies", ",".join(str(c) for c in s.concurrencies)]
        args += [
            "--duration", str(s.duration_s), "--warmup", str(s.warmup_s),
            "--inputs-per-request", str(s.inputs_per_request), "--slo-p99-ms", _fmt(s.slo_p99_ms),
            "--clients", str(s.clients), "--client-index", "$(CLIENT_INDEX)", "--seed", "$(CLIENT_INDEX)",
            "--run-id", s.run_id,
            "--target-name", target.name, "--processor", target.processor.value,
            "--instance-type", target.instance_type, "--nodes", str(target.nodes), "--region", self.region,
            "--no-progress",
            "--out", f"{self.run_uri}/{target.name}/",
        ]
        return args

    def report_args(self, targets: Sequence[ServingTarget]) -> list[str]:
        return ["loadtest", "report",
                *[f"{self.run_uri}/{t.name}/" for t in targets],
                "--wait-for", str(self.spec.clients * len(targets)), "--wait-timeout", str(self.deadline_s),
                "--slo-p99-ms", _fmt(self.spec.slo_p99_ms),
                "--out", f"{self.run_uri}/report/"]

    def _pod(self, name: str, args: list[str], component: str, extra_env: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "metadata": {"labels": {**PART_OF, ROLE_LABEL: "loadtest", "app.kubernetes.io/component": component,
                                    "eks-inference/run-id": self.spec.run_id}},
            "spec": {
                "serviceAccountName": LOADTEST_SERVICE_ACCOUNT,
                "automountServiceAccountToken": False,
                "restartPolicy": "Never",
                "nodeSelector": {PROCESSOR_LABEL: "system"},
                "securityContext": restricted_pod_security_context(),
                "containers": [{
                    "name": name,
                    "image": self.image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["eks-inference"],
                    "args": args,
                    "env": env_list({"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                                     "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}) + extra_env,
                    "resources": Resources(cpu="1", memory="1Gi").to_dict(),
                    "securityContext": restricted_container_security_context(),
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
            },
        }

    def client_job(self, target: ServingTarget) -> dict[str, Any]:
        index_env = [{"name": "CLIENT_INDEX",
                      "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}]
        return self._job(f"loadtest-{self.spec.run_id}-{target.name}", target.name, {
            "completionMode": "Indexed",
            "completions": self.spec.clients,
            "parallelism": self.spec.clients,
            # A retried client would send its schedule twice; a failed one keeps its partial result instead.
            "backoffLimit": 0,
            "template": self._pod("client", self.client_args(target), "loadtest-client", index_env),
        })

    def report_job(self, targets: Sequence[ServingTarget]) -> dict[str, Any]:
        return self._job(f"loadtest-{self.spec.run_id}-report", "report", {
            "completions": 1, "parallelism": 1, "backoffLimit": 2,
            "template": self._pod("report", self.report_args(targets), "loadtest-report", []),
        })

    def _job(self, name: str, target: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name[:63].rstrip("-"), "namespace": self.namespace,
                         "annotations": dict(CHECKOV_SKIPS),
                         "labels": {**PART_OF, ROLE_LABEL: "loadtest", "eks-inference/run-id": self.spec.run_id,
                                    "eks-inference/target": target}},
            "spec": {"activeDeadlineSeconds": self.deadline_s, "ttlSecondsAfterFinished": 7 * 24 * 3600, **spec},
        }


class LoadTestChart(Chart):
    """The client Jobs of every target and the report Job of one run (nothing when ``run_id`` is empty)."""

    def __init__(self, scope: Construct, construct_id: str, *, plan: LoadTestPlan,
                 targets: Sequence[ServingTarget]) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.plan = plan
        self.jobs: list[dict[str, Any]] = []
        if not plan.spec.run_id:
            return
        for t in targets:
            job = plan.client_job(t)
            job["metadata"]["labels"][PROCESSOR_LABEL] = t.processor.value
            self.jobs.append(job)
        self.jobs.append(plan.report_job(targets))
        # Clients only send; nothing may connect to them.
        emit(self, "NoIngress", network_policy(
            f"loadtest-{plan.spec.run_id}-no-ingress", plan.namespace, ingress=[],
            pod_labels={ROLE_LABEL: "loadtest", "eks-inference/run-id": plan.spec.run_id}))
        for i, job in enumerate(self.jobs):
            emit(self, f"Job{i}", job)
