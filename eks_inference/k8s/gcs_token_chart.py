"""The Job that puts the GCS store's auth token where the Ray heads read it, with the least it needs to do so.

With ``ray.gcs_fault_tolerance`` every RayService reads the token from the Kubernetes Secret
:data:`~eks_inference.k8s.ray_service.GCS_STORE_SECRET` (``gcsFaultToleranceOptions.redisPassword``). The token is
generated into Secrets Manager and must not pass through a template, and CloudFormation will not resolve a
``{{resolve:secretsmanager:...}}`` reference inside a KubernetesManifest: dynamic references to secure values (Parameter
Store secure strings, Secrets Manager secrets) are not supported in custom resources (CloudFormation User Guide, "Get
values stored in other services using dynamic references", General considerations), and a KubernetesManifest is one.
So a Job copies it in the cluster (:mod:`eks_inference.serving.gcs_token`):

- **What.** ``python -m eks_inference.serving.gcs_token`` in the serving image of a head (its boto3, its CA bundle):
  read the secret, create or replace the Secret, print neither. Its name ends in a hash of its spec, like the
  compile and load-test Jobs: a deploy that changes what it syncs (the secret, the image, the code) runs a new Job,
  an unchanged one is left alone, and finished Jobs are kept (no TTL), or the next ``kubectl apply`` of the unchanged
  manifest would re-create them.
- **Again, by hand.** A suspended CronJob of the same pod: after a rotation, ``kubectl create job
  --from=cronjob/gcs-token-sync`` copies the new token (docs/operate.md, "Losing the Ray head").
- **Who.** Service account :data:`SERVICE_ACCOUNT`, bound by EKS Pod Identity to a role that may only read that
  secret (the InferenceStack), and by a Role that may get, update and patch only that Secret, and create Secrets:
  Kubernetes RBAC cannot limit a create by name, because the name is not part of the request's URL (Kubernetes
  docs, "Using RBAC Authorization", Referring to resources). No other pod mounts an API token for this account.
- **Where to.** Under the serving namespace's default deny: DNS, the Pod Identity agent and public HTTPS
  (Secrets Manager's endpoint, through the NAT gateway) come from the namespace's policies; this chart adds the API
  server. Nothing may connect to the pod.

Heads created before the Secret (or its key) exists wait in ``CreateContainerConfigError``: the kubelet fails the
container's config while a ``secretKeyRef`` is missing and retries it on every pod sync (kubernetes
pkg/kubelet/kubelet_pods.go, ``makeEnvironmentVariables``; pkg/kubelet/kuberuntime/kuberuntime_container.go,
``startContainer`` returning ``ErrCreateContainerConfig``), so they start once this Job has run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cdk8s import Chart
from constructs import Construct

from eks_inference.k8s.load_test_chart import CHECKOV_SKIPS, job_name
from eks_inference.k8s.objects import PART_OF, api_server_egress, emit, network_policy, service_account
from eks_inference.k8s.pod import (
    Resources,
    env_list,
    restricted_container_security_context,
    restricted_pod_security_context,
)
from eks_inference.k8s.ray_service import (
    API_ACCESS_VOLUME,
    GCS_STORE_SECRET,
    GCS_STORE_SECRET_KEY,
    SERVICE_ACCOUNT_DIR,
    api_access_volume,
)
from eks_inference.k8s.serving_chart import NAMESPACE, ROLE_LABEL

SERVICE_ACCOUNT = "gcs-token-sync"
ROLE = "gcs-token-sync"
"""The pods' ``eks-inference/role`` label, the Role's, the CronJob's and the Jobs' name stem."""
DEADLINE_S = 900
"""Long enough for a pod to wait for its node, its image and its first credentials; retries within it."""
RESOURCES = Resources(cpu="100m", memory="256Mi")
"""boto3 and one API call each way."""


@dataclass(frozen=True, kw_only=True)
class GcsTokenSync:
    """What the sync copies and where it runs.

    :param secret_arn: the Secrets Manager secret with the auth token (``GcsStore.auth_token``).
    :param image: a serving image (a head's: it runs where that head runs).
    :param region: the region the pod calls.
    :param node_selector: where its pods go; default none.
    :param namespace: default :data:`~eks_inference.k8s.serving_chart.NAMESPACE`, where the heads read the Secret.
    :param secret: the Kubernetes Secret, default :data:`~eks_inference.k8s.ray_service.GCS_STORE_SECRET`.
    :param secret_key: its key, default :data:`~eks_inference.k8s.ray_service.GCS_STORE_SECRET_KEY`.
    """

    secret_arn: str
    image: str
    region: str
    node_selector: Mapping[str, str] | None = None
    namespace: str = NAMESPACE
    secret: str = GCS_STORE_SECRET
    secret_key: str = GCS_STORE_SECRET_KEY

    @property
    def labels(self) -> dict[str, str]:
        return {**PART_OF, ROLE_LABEL: ROLE, "app.kubernetes.io/component": "gcs-token-sync"}

    def pod_spec(self) -> dict[str, Any]:
        env = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region, "HOME": "/tmp"}
        return {
            "serviceAccountName": SERVICE_ACCOUNT,
            # Only the container below mounts the token, through the same projected volume the heads' autoscaler uses.
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            **({"nodeSelector": dict(self.node_selector)} if self.node_selector else {}),
            "securityContext": restricted_pod_security_context(),
            "containers": [{
                "name": "sync",
                "image": self.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-m", "eks_inference.serving.gcs_token"],
                "args": ["--secret-id", self.secret_arn, "--namespace", self.namespace, "--name", self.secret,
                         "--key", self.secret_key, "--label", f"{ROLE_LABEL}={ROLE}"],
                "env": env_list(env),
                "resources": RESOURCES.to_dict(),
                "securityContext": restricted_container_security_context(),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                 {"name": API_ACCESS_VOLUME, "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}, api_access_volume()],
        }

    def job_spec(self) -> dict[str, Any]:
        return {"activeDeadlineSeconds": DEADLINE_S, "backoffLimit": 4, "completions": 1, "parallelism": 1,
                "template": {"metadata": {"labels": self.labels}, "spec": self.pod_spec()}}

    def job(self, token_ids: Mapping[str, str] | None = None) -> dict[str, Any]:
        spec = self.job_spec()
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": job_name(ROLE, spec, token_ids), "namespace": self.namespace,
                             "annotations": dict(CHECKOV_SKIPS), "labels": self.labels},
                "spec": spec}

    def cron_job(self) -> dict[str, Any]:
        """Suspended: it never runs on its own, it is the template of ``kubectl create job --from=cronjob/...``."""
        return {"apiVersion": "batch/v1", "kind": "CronJob",
                "metadata": {"name": ROLE, "namespace": self.namespace, "annotations": dict(CHECKOV_SKIPS),
                             "labels": self.labels},
                "spec": {"schedule": "0 0 1 1 *", "suspend": True, "concurrencyPolicy": "Forbid",
                         "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
                         "jobTemplate": {"metadata": {"labels": self.labels}, "spec": self.job_spec()}}}

    def role(self) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": ROLE, "namespace": self.namespace, "labels": self.labels},
                "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [self.secret],
                     "verbs": ["get", "update", "patch"]},
                    # A create request names no object in its URL, so RBAC cannot limit it by resourceNames.
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                ]}

    def role_binding(self) -> dict[str, Any]:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": ROLE, "namespace": self.namespace, "labels": self.labels},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": self.namespace}]}


class GcsTokenChart(Chart):
    """The sync's service account, Role and binding, its NetworkPolicy to the API server, its Job and CronJob.

    :param sync: what it copies and where it runs.
    :param api_server_cidrs: where the API server's network interfaces live (the cluster's subnets).
    :param token_ids: stable stand-ins for deploy-time tokens in the Job's spec (the image URI, the secret's ARN),
        read by the Job-name hash; default none.
    """

    def __init__(self, scope: Construct, construct_id: str, *, sync: GcsTokenSync, api_server_cidrs: Sequence[str],
                 token_ids: Mapping[str, str] | None = None) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        self.sync = sync
        emit(self, "ServiceAccount", service_account(SERVICE_ACCOUNT, sync.namespace,
                                                     labels={"app.kubernetes.io/component": "gcs-token-sync"}))
        emit(self, "Role", sync.role())
        emit(self, "RoleBinding", sync.role_binding())
        emit(self, "NetworkPolicy", network_policy(
            ROLE, sync.namespace, pod_labels={ROLE_LABEL: ROLE}, labels={ROLE_LABEL: ROLE},
            ingress=[], egress=[api_server_egress(api_server_cidrs)]))
        self.job = sync.job(token_ids)
        emit(self, "Job", self.job)
        emit(self, "CronJob", sync.cron_job())
