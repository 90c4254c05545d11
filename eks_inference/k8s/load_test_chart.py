"""In-cluster load tests: per target, an Indexed Job of N client pods, then one Job that merges the report.

Each client pod writes its own result file (HDR histograms inside) under ``results/{run_id}/{target}/``;
the report Job waits for all of them and merges the histograms exactly.

A run is a deliberate act: nothing runs unless ``loadtest.run_id`` is set, and a run's results are written
once. Two mechanisms keep it so across later deploys:

- A Job's pod template is immutable (kubernetes pkg/apis/batch/validation ValidateJobSpecUpdate), and the
  load-test image tag is the hash of its code, so a Job name that depended only on the run id would make
  the next deploy's ``kubectl apply`` fail and roll the stack back. Job names end in a short hash of the
  Job's spec instead: a changed spec is a new Job, and ``kubectl apply --prune`` removes the old one.
- Clients run with ``--skip-if-exists``: a Job re-created for a run that already has results (a new image
  after the run, or a Job deleted by hand) exits at once instead of overwriting them. A new measurement
  needs a new ``run_id``.

Finished Jobs are kept (no TTL): a TTL would delete them and let the next ``apply`` of an unchanged
manifest re-create them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdk8s import Chart
from constructs import Construct

from eks_inference.config import ConfigError, FrontDoorSpec, LoadTestSpec
from eks_inference.k8s.front_door_chart import front_door_url
from eks_inference.k8s.load_test_nodes import CLIENT_RESOURCES, LOADTEST_NODES, LOADTEST_TAINT_KEY, REPORT_RESOURCES
from eks_inference.k8s.objects import PART_OF, emit
from eks_inference.k8s.pod import (
    Resources,
    env_list,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from eks_inference.k8s.serving_chart import (
    LOADTEST_NAMESPACE,
    LOADTEST_SERVICE_ACCOUNT,
    PROCESSOR_LABEL,
    ROLE_LABEL,
    ServingTarget,
)

NOT_EVICTABLE = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
"""A running client is never evicted to consolidate nodes (a retried client would send its schedule twice); once
its pod has Succeeded or Failed, the Cluster Autoscaler no longer counts it and removes the empty node."""
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
DNS_LABEL_MAX = 63

# checkov reads these per object; each says why the check does not apply here.
CHECKOV_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_15=Image tags are CDK asset hashes of the build context and never move; "
                        "IfNotPresent cannot run a stale image and saves a registry round trip per pod",
    "checkov.io/skip2": "CKV_K8S_43=Images are pushed by cdk deploy and referenced by their content-hash tag; "
                        "the digest exists only after the push, not at synth",
}


def front_door_target(model: str) -> str:
    """The name a model's front-door measurement goes by in results and reports."""
    return f"{model}-front-door"


def _fmt(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True, kw_only=True)
class LoadTestPlan:
    """Everything a run needs; the client and report Jobs are rendered from it."""

    spec: LoadTestSpec
    image: str
    results_uri: str
    region: str
    namespace: str = LOADTEST_NAMESPACE
    front_door: FrontDoorSpec = field(default_factory=FrontDoorSpec)
    """The environment's front door, which ``spec.via: front-door`` sends every request through."""
    token_ids: Mapping[str, str] = field(default_factory=dict)
    """Stable stand-ins for deploy-time tokens in the spec (image URI, bucket), read by the Job-name hash.

    A token's text (``${Token[...]}``) stays the same when the image behind it changes; the name must not.
    """

    @property
    def run_uri(self) -> str:
        return f"{self.results_uri.rstrip('/')}/{self.spec.run_id}"

    @property
    def deadline_s(self) -> int:
        """activeDeadlineSeconds: the wait for the target, every step with slack, and ten minutes to spare."""
        steps = len(self.spec.rates) if self.spec.mode == "open" else len(self.spec.concurrencies)
        return self.spec.ready_timeout_s + steps * (self.spec.duration_s + self.spec.warmup_s + 30) + 600

    def client_args(self, target: ServingTarget) -> list[str]:
        """Rates and concurrencies are run totals: each of ``--clients`` pods sends its share."""
        return self._client_args(target.url, target.name, "service", [
            "--processor", target.processor.value, "--instance-type", target.instance_type,
            "--nodes", str(target.nodes), *(["--placement", target.placement] if target.placement else [])])

    def front_door_args(self, model: str, targets: Sequence[ServingTarget]) -> list[str]:
        """A model's route at the front door: its throughput is served by every target the route spreads over, so it
        is priced as all of their pods (their placements together)."""
        url = front_door_url(self.front_door, model)
        if url is None:
            raise ConfigError("loadtest.via: front-door needs front_door.hostname; set it, or use via: service")
        placement = ",".join(t.placement for t in targets if t.placement)
        return self._client_args(url, front_door_target(model), "front-door",
                                 ["--placement", placement] if placement else [])

    def _client_args(self, url: str, name: str, via: str, target_args: list[str]) -> list[str]:
        s = self.spec
        args = ["loadtest", "run", "--url", url, "--via", via, "--mode", s.mode]
        if s.mode == "open":
            args += ["--rates", ",".join(_fmt(r) for r in s.rates)]
        else:
            args += ["--concurrencies", ",".join(str(c) for c in s.concurrencies)]
        args += [
            "--duration", str(s.duration_s), "--warmup", str(s.warmup_s),
            "--inputs-per-request", str(s.inputs_per_request), "--slo-p99-ms", _fmt(s.slo_p99_ms),
            "--clients", str(s.clients), "--client-index", "$(CLIENT_INDEX)", "--seed", "$(CLIENT_INDEX)",
            "--run-id", s.run_id,
            "--wait-ready", str(s.ready_timeout_s), "--skip-if-exists", "--verify",
            "--target-name", name, *target_args, "--region", self.region,
            "--no-progress",
            "--out", f"{self.run_uri}/{name}/",
        ]
        return args

    def measured(self, targets: Sequence[ServingTarget]) -> list[str]:
        """What the run's client Jobs are named after: each target, or through the front door each model."""
        if self.spec.via == "front-door":
            return [front_door_target(m) for m in dict.fromkeys(t.model.name for t in targets)]
        return [t.name for t in targets]

    def report_args(self, targets: Sequence[ServingTarget]) -> list[str]:
        names = self.measured(targets)
        return ["loadtest", "report",
                *[f"{self.run_uri}/{n}/" for n in names],
                "--wait-for", str(self.spec.clients * len(names)), "--wait-timeout", str(self.deadline_s),
                "--slo-p99-ms", _fmt(self.spec.slo_p99_ms),
                "--out", f"{self.run_uri}/report/"]

    def _pod(self, name: str, args: list[str], component: str, extra_env: list[dict[str, Any]],
             resources: Resources) -> dict[str, Any]:
        return {
            "metadata": {"labels": {**PART_OF, ROLE_LABEL: "loadtest", "app.kubernetes.io/component": component,
                                    "eks-inference/run-id": self.spec.run_id},
                         "annotations": dict(NOT_EVICTABLE)},
            "spec": {
                "serviceAccountName": LOADTEST_SERVICE_ACCOUNT,
                "automountServiceAccountToken": False,
                "restartPolicy": "Never",
                # Nodes of their own (the load-test node group, at zero between runs), away from the operators,
                # the Ray heads and the targets they measure.
                "nodeSelector": {PROCESSOR_LABEL: LOADTEST_NODES},
                "tolerations": [{"key": LOADTEST_TAINT_KEY, "operator": "Equal", "value": "true",
                                 "effect": "NoSchedule"}],
                "securityContext": restricted_pod_security_context(),
                "containers": [{
                    "name": name,
                    "image": self.image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["eks-inference"],
                    "args": args,
                    "env": env_list({"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
                                     "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}) + extra_env,
                    "resources": resources.to_dict(),
                    "securityContext": restricted_container_security_context(),
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
            },
        }

    def client_job(self, target: ServingTarget) -> dict[str, Any]:
        return self._client_job(target.name, self.client_args(target))

    def front_door_job(self, model: str, targets: Sequence[ServingTarget]) -> dict[str, Any]:
        return self._client_job(front_door_target(model), self.front_door_args(model, targets))

    def _client_job(self, name: str, args: list[str]) -> dict[str, Any]:
        index_env = [{"name": "CLIENT_INDEX",
                      "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}]
        return self._job(f"loadtest-{self.spec.run_id}-{name}", name, {
            "completionMode": "Indexed",
            "completions": self.spec.clients,
            "parallelism": self.spec.clients,
            # A retried client would send its schedule twice; a failed one keeps its partial result instead.
            "backoffLimit": 0,
            "template": self._pod("client", args, "loadtest-client", index_env, CLIENT_RESOURCES),
        })

    def report_job(self, targets: Sequence[ServingTarget]) -> dict[str, Any]:
        return self._job(f"loadtest-{self.spec.run_id}-report", "report", {
            "completions": 1, "parallelism": 1, "backoffLimit": 2,
            "template": self._pod("report", self.report_args(targets), "loadtest-report", [], REPORT_RESOURCES),
        })

    def _job(self, stem: str, target: str, spec: dict[str, Any]) -> dict[str, Any]:
        spec = {"activeDeadlineSeconds": self.deadline_s, **spec}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job_name(stem, spec, self.token_ids), "namespace": self.namespace,
                         "annotations": dict(CHECKOV_SKIPS),
                         "labels": {**PART_OF, ROLE_LABEL: "loadtest", "eks-inference/run-id": self.spec.run_id,
                                    "eks-inference/target": target}},
            "spec": spec,
        }


def job_name(stem: str, spec: dict[str, Any], token_ids: Mapping[str, str] | None = None) -> str:
    """``{stem}-{hash of the spec}``, cut to fit a DNS label.

    The hash covers the whole spec, so any change to it (image, arguments, completions) is a new Job rather
    than an update the API server must reject. Indexed Jobs name their pods' hostnames ``{job}-{index}``
    (kubernetes pkg/apis/batch/validation ValidateJob), so the budget leaves room for the largest index.
    """
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    for token, stable in (token_ids or {}).items():
        text = text.replace(token, stable)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    budget = DNS_LABEL_MAX
    if spec.get("completionMode") == "Indexed":
        budget -= 1 + len(str(int(spec["completions"]) - 1))
    head = stem[:budget - len(digest) - 1].rstrip("-")
    return f"{head}-{digest}"


class LoadTestChart(Chart):
    """The client Jobs of every target and the report Job of one run (nothing when ``run_id`` is empty)."""

    def __init__(self, scope: Construct, construct_id: str, *, plan: LoadTestPlan,
                 targets: Sequence[ServingTarget]) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.plan = plan
        self.jobs: list[dict[str, Any]] = []
        if not plan.spec.run_id:
            return
        if plan.spec.via == "front-door":
            by_model: dict[str, list[ServingTarget]] = {}
            for t in targets:
                by_model.setdefault(t.model.name, []).append(t)
            self.jobs.extend(plan.front_door_job(m, ts) for m, ts in by_model.items())
        else:
            for t in targets:
                job = plan.client_job(t)
                job["metadata"]["labels"][PROCESSOR_LABEL] = t.processor.value
                self.jobs.append(job)
        self.jobs.append(plan.report_job(targets))
        # Nothing may connect to the clients, and they reach only DNS, S3 and the models: the load-test namespace's
        # own policies (ServingChart), which exist whether or not a run does.
        for i, job in enumerate(self.jobs):
            emit(self, f"Job{i}", job)

