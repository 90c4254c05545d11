"""The compile step: per serving target, a Job that compiles the artifact its replicas load, under a role of its own.

Replicas never write what replicas load. Their serve config says ``compile_on_miss: false`` and their role may only
read the model repository, so a request that takes over a replica can plant nothing another replica would run. The
artifact is written here instead, by pods that no request reaches:

- **What it compiles.** ``eks-inference compile --serve-app`` with the target's own serve-config application (its
  ``args`` and ``user_config``): the weights must carry the pinned digest (``weights_sha256``), exactly as for a
  replica, and the request, hence the cache key, is derived from the same application by the same function
  (:func:`eks_inference.serving.artifact.replica_artifact`). Weights not published yet are waited for, up to
  :data:`WAIT_FOR_WEIGHTS_S`, as the replicas wait for them.
- **Where.** The target's image on the target's node group: the cache key holds the CPU architecture and the SDK
  versions of the image, and on CPUs the dtype served depends on the instruction set. Compiled graphs are run
  against the fp32 model before they are published, which needs the accelerator: one NeuronCore on Inferentia
  (the Neuron compiler itself needs none), one GPU on GPU nodes, nothing on CPU nodes.
- **Who.** Service account ``compile`` (created with the others by the serving chart), bound by EKS Pod Identity to
  the only role that may write under ``artifacts/``; every write is create-only, which the bucket enforces as well,
  so what one Job published no later writer can replace.
- **Reachable by nobody.** The serving namespace denies every connection by default and no policy admits any to
  the compile pods; like the replicas they may reach DNS, the node's Pod Identity agent and HTTPS (S3, STS).

Like the load-test Jobs (:mod:`eks_inference.k8s.load_test_chart`), a Job's name ends in a hash of its spec: a new
image, new weights or a new serving shape is a new Job, and an unchanged one is left alone by the next
``kubectl apply``. Finished Jobs are kept (no TTL) for the same reason. A replica waiting for the artifact names the
Job to look at (:func:`~eks_inference.k8s.serving_chart.compile_hint`).

A model family's members are published after the deploy, one by one, with no synth: its target gets a **CronJob**
instead (:func:`member_compile_cron_job`), the same pod on the same node group under the same service account, that
runs ``eks-inference compile --serve-app APP --missing`` on the family's ``compile_schedule``: it reads the family's
index and compiles, create-only, every member whose artifact is missing, so a member is compiled when it is
published, never on the request path. ``concurrencyPolicy: Forbid`` keeps one run at a time (a long Neuron compile
is not joined by the next schedule); a run started by hand (``publish`` prints the command) may overlap one, which is
safe: writes are create-only behind a lease (:func:`~eks_inference.artifacts.resolve.publish_once`). Its name is
stable, so a new image or shape updates the CronJob in place and the next run compiles for it. The CronJob and its
pods carry the target's :data:`~eks_inference.k8s.serving_chart.COMPILE_TARGET_LABEL`, so a waiting replica's hint
finds their logs too, and :data:`~eks_inference.compile.family.COMPILE_FAMILY_LABEL`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cdk8s import Chart
from constructs import Construct

from eks_inference.compile.family import COMPILE_FAMILY_LABEL
from eks_inference.config import Processor
from eks_inference.k8s.load_test_chart import CHECKOV_SKIPS, job_name
from eks_inference.k8s.objects import PART_OF, emit
from eks_inference.k8s.pod import (
    Resources,
    env_list,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from eks_inference.k8s.serving_chart import (
    COMPILE_SERVICE_ACCOUNT,
    COMPILE_TARGET_LABEL,
    PROCESSOR_LABEL,
    ROLE_LABEL,
    SERVICE_ACCOUNT_NAMESPACES,
    ServingTarget,
)

COMPILE_NAMESPACE = SERVICE_ACCOUNT_NAMESPACES[COMPILE_SERVICE_ACCOUNT]
"""The compile Jobs run beside the replicas they compile for (their service account's namespace)."""
COMPILE_ROLE = "compile"
"""The pods' ``eks-inference/role`` label."""
WAIT_FOR_WEIGHTS_S = 6 * 3600
"""How long a Job waits for weights that are not published yet (a first deploy creates the bucket they go to)."""
COMPILE_S = 2 * 3600
"""How long compiling may take once the weights are there (Neuron compiles one graph per batch × sequence bucket)."""
BACKOFF_LIMIT = 2
SCRATCH = "20Gi"
"""``/tmp``: downloaded weights, the compiler's work and cache directories, the artifact before upload."""
_ACCELERATOR = {Processor.INFERENTIA: "aws.amazon.com/neuroncore", Processor.GPU: "nvidia.com/gpu"}
CRON_JOB_NAME_MAX = 52
"""The API server refuses a longer CronJob name: its Jobs append 11 characters and must stay a DNS label
(kubernetes ``pkg/apis/batch/validation/validation.go``, ``ValidateCronJobCreate``)."""
STARTING_DEADLINE_S = 600
"""A run the controller could not start within this (the controller was down, or the previous run still ran) is
skipped, not queued: the next one compiles the same members."""


def serve_app(target: ServingTarget) -> dict[str, Any]:
    """The target's model application as the compile command takes it: its ``args`` and its ``user_config``."""
    (app,) = [a for a in target.serve_config["applications"] if a["name"] == target.model.name]
    return {"args": app["args"], "user_config": app["deployments"][0]["user_config"]}


def compile_resources(target: ServingTarget) -> Resources:
    """A worker pod's CPU and memory (sized for the node group's instances), and one accelerator to check graphs on."""
    worker = target.ray_service.workers[0].pod.resources
    accelerator = _ACCELERATOR.get(target.processor)
    return Resources(cpu=worker.cpu, memory=worker.memory, extended={accelerator: 1} if accelerator else {})


def _compile_pod(target: ServingTarget, *, region: str, args: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """(labels, pod spec) of a pod that runs ``eks-inference`` with ``args`` where ``target``'s replicas run."""
    worker = target.ray_service.workers[0].pod
    labels = {**PART_OF, ROLE_LABEL: COMPILE_ROLE, COMPILE_TARGET_LABEL: target.name,
              PROCESSOR_LABEL: target.processor.value, "app.kubernetes.io/component": "compile"}
    env = {"AWS_REGION": region, "AWS_DEFAULT_REGION": region, "HOME": "/tmp", "TMPDIR": "/tmp",
           "HF_HUB_OFFLINE": "1"}
    if target.processor is Processor.INFERENTIA:
        env |= {"NEURON_RT_NUM_CORES": "1", "NEURON_COMPILE_CACHE_URL": "/tmp/neuron-compile-cache"}
    pod: dict[str, Any] = {
        "serviceAccountName": COMPILE_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "nodeSelector": dict(worker.node_selector),
        "securityContext": restricted_pod_security_context(),
        "containers": [{
            "name": "compile",
            "image": worker.image,
            "imagePullPolicy": "IfNotPresent",
            "workingDir": "/tmp",
            "command": ["eks-inference"],
            "args": args,
            "env": env_list(env),
            "resources": compile_resources(target).to_dict(),
            "securityContext": restricted_container_security_context(),
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": SCRATCH}}],
    }
    if worker.tolerations:
        pod["tolerations"] = [t.to_dict() for t in worker.tolerations]
    return labels, pod


def _app_json(target: ServingTarget) -> str:
    return json.dumps(serve_app(target), sort_keys=True, separators=(",", ":"))


def compile_job(target: ServingTarget, *, region: str, namespace_: str = COMPILE_NAMESPACE,
                token_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Job that compiles and publishes ``target``'s artifact."""
    labels, pod = _compile_pod(target, region=region, args=[
        "compile", "--serve-app", _app_json(target), "--out", "/tmp/compile",
        "--wait-for-weights", str(WAIT_FOR_WEIGHTS_S)])
    spec = {"activeDeadlineSeconds": WAIT_FOR_WEIGHTS_S + COMPILE_S, "backoffLimit": BACKOFF_LIMIT,
            "completions": 1, "parallelism": 1,
            "template": {"metadata": {"labels": labels}, "spec": pod}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(f"compile-{target.name}", spec, token_ids), "namespace": namespace_,
                     "annotations": dict(CHECKOV_SKIPS), "labels": labels},
        "spec": spec,
    }


def cron_job_name(target: ServingTarget) -> str:
    """``compile-{target}``, or, past :data:`CRON_JOB_NAME_MAX`, its head and a hash of the whole name."""
    name = f"compile-{target.name}"
    if len(name) <= CRON_JOB_NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:CRON_JOB_NAME_MAX - len(digest) - 1].rstrip('-')}-{digest}"


def member_compile_cron_job(target: ServingTarget, *, region: str,
                            namespace_: str = COMPILE_NAMESPACE) -> dict[str, Any]:
    """The CronJob that compiles a family target's members whose artifacts are missing (see the module docstring)."""
    family = target.model.family
    assert family is not None, f"{target.name} is not a family's target"
    labels, pod = _compile_pod(target, region=region, args=[
        "compile", "--serve-app", _app_json(target), "--missing", "--out", "/tmp/compile"])
    labels[COMPILE_FAMILY_LABEL] = target.model.name
    job = {"activeDeadlineSeconds": COMPILE_S, "backoffLimit": 0,
           "template": {"metadata": {"labels": labels}, "spec": pod}}
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cron_job_name(target), "namespace": namespace_,
                     "annotations": dict(CHECKOV_SKIPS), "labels": labels},
        "spec": {"schedule": family.compile_schedule, "concurrencyPolicy": "Forbid",
                 "startingDeadlineSeconds": STARTING_DEADLINE_S,
                 "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 3,
                 "jobTemplate": {"metadata": {"labels": labels}, "spec": job}},
    }


class CompileChart(Chart):
    """The compile Job of every target, and the member-compile CronJob of every family's target.

    :param targets: the serving targets (each gets one Job; a family's target a CronJob instead, which compiles its
        members as they are published).
    :param region: the AWS region the pods call.
    :param namespace_: default :data:`COMPILE_NAMESPACE`, where the ``compile`` service account lives.
    :param token_ids: stable stand-ins for deploy-time tokens in the Jobs' specs (image URIs, bucket), read by the
        Job-name hash; default none (see :class:`~eks_inference.k8s.load_test_chart.LoadTestPlan`).
    """

    def __init__(self, scope: Construct, construct_id: str, *, targets: Sequence[ServingTarget], region: str,
                 namespace_: str = COMPILE_NAMESPACE, token_ids: Mapping[str, str] | None = None) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.jobs = [compile_job(t, region=region, namespace_=namespace_, token_ids=token_ids) for t in targets
                     if t.model.family is None]
        self.cron_jobs = [member_compile_cron_job(t, region=region, namespace_=namespace_) for t in targets
                          if t.model.family is not None]
        for i, job in enumerate(self.jobs):
            emit(self, f"Job{i}", job)
        for t, cron in zip([t for t in targets if t.model.family is not None], self.cron_jobs, strict=True):
            emit(self, f"MembersCronJob{''.join(p.capitalize() for p in t.name.split('-'))}", cron)
