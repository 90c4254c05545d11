"""What KubeRay v1.7.0 makes of a RayService's pod templates: labels, probes and the ``ray start`` command line.

Reproduced from ray-project/kuberay at tag v1.7.0, ray-operator/controllers/ray/common/pod.go:
``DefaultHeadPodTemplate`` / ``DefaultWorkerPodTemplate`` (labels through ``labelPod``, the worker's
``address``), ``setMissingRayStartParams`` (``dashboard-host``, ``metrics-export-port``, ``block``,
``dashboard-agent-listen-port``), ``generateRayStartCommand`` (``num-cpus`` and ``memory`` from the
container limits, then ``addWellKnownAcceleratorResources``: ``num-gpus`` from a GPU limit and the first
custom accelerator, e.g. ``aws.amazon.com/neuroncore`` → ``neuron_cores``, merged into ``resources`` as
single-quoted JSON), ``convertParamMap`` (sorted keys, ``--key=value``; ``true`` becomes a bare flag,
``false`` drops it), ``BuildPod`` (``ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}; ray start ...`` as the
only argument of ``/bin/bash -c --``, from utils.GetContainerCommand) and ``initLivenessAndReadinessProbe``
(an ``httpGet`` liveness probe on the dashboard agent's ``/api/healthz`` for Ray >= 2.53 when none is set).

With ``enableInTreeAutoscaling`` (``DefaultHeadPodTemplate``): ``no-monitor`` on the head's ray start, the head's
``serviceAccountName`` from utils.GetHeadGroupServiceAccountName (the template's, else the RayCluster's name),
the ``autoscaler`` container from ``BuildAutoscalerContainer`` (the head's image, ``ray kuberay-autoscaler``,
500m/512Mi) with ``mergeAutoscalerOverrides`` applied (resources and securityContext replaced, env and
volumeMounts appended), and for ``version: v2`` the head's ``RAY_ENABLE_AUTOSCALER_V2=true`` and
``restartPolicy: Never`` on head and workers (``setAutoscalerV2EnvVars``, ``DefaultWorkerPodTemplate``).

Workers get the ``wait-gcs-ready`` init container (``DefaultWorkerPodTemplate``, on unless the operator sets
``ENABLE_INIT_CONTAINER_INJECTION=false``): the Ray container's image, security context, environment and volume
mounts, ``ray health-check`` against the head in a loop, 200m/256Mi.

With ``gcsFaultToleranceOptions`` and a Redis store (``configureGCSFaultTolerance``, ``configureRedisFT``): the head
template's annotation ``ray.io/ft-enabled``; on the head's Ray container ``RAY_external_storage_namespace`` (the
RayCluster's UID unless set, also as the annotation ``ray.io/external-storage-namespace``), ``RAY_REDIS_ADDRESS``,
``REDIS_PASSWORD`` (the option's value or ``valueFrom``) and ``redis-password=$REDIS_PASSWORD`` in its rayStartParams;
on every worker ``RAY_gcs_rpc_server_reconnect_timeout_s=600`` (utils.DefaultWorkerRayGcsReconnectTimeoutS) unless
set. Deleting such a cluster runs the Redis cleanup Job (raycluster_controller.go ``buildRedisCleanupJob``): the head
pod with ``ray.io/node-type: redis-cleanup``, its Ray container alone, ``cleanup_redis_storage`` as the command,
200m/256Mi, no probes, ``restartPolicy: Never``.

With ``authOptions.mode: token`` (``configureTokenAuth`` and ``SetContainerTokenAuthEnvVars``; the Secret from
raycluster_controller.go ``createAuthSecret``): ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` from the Secret named
after the Ray cluster (key ``auth_token``), each unless the container already sets it, on the Ray container, the
autoscaler sidecar (before the user's overrides are merged) and ``wait-gcs-ready``.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
from typing import Any

NEURON_CORE = "aws.amazon.com/neuroncore"
CUSTOM_ACCELERATORS = {NEURON_CORE: "neuron_cores", "google.com/tpu": "TPU"}
DEFAULT_METRICS_PORT = 8080
DEFAULT_DASHBOARD_AGENT_LISTEN_PORT = 52365
DEFAULT_GCS_PORT = 6379
BOOLEAN_VALUED = ("log-color", "include-dashboard", "include-log-monitor")


def quantity_value(q: Any) -> int:
    """resource.Quantity.Value() for the forms our manifests use: integers, ``m``, ``Ki/Mi/Gi``."""
    s = str(q)
    for suffix, factor in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40)):
        if s.endswith(suffix):
            return int(float(s[:-2]) * factor)
    if s.endswith("m"):
        return -(-int(s[:-1]) // 1000)  # Value() rounds up
    return int(float(s))


def is_gpu_key(name: str) -> bool:
    """utils.IsGPUResourceKey: a resource whose name ends in ``gpu`` (``nvidia.com/gpu``, ``amd.com/gpu``)."""
    return name.endswith("gpu")


def _resources_map(params: dict[str, str]) -> dict[str, float]:
    if "resources" not in params:
        return {}
    return dict(json.loads(params["resources"].strip("'\"` ")))


def add_well_known_accelerator_resources(params: dict[str, str], limits: dict[str, Any]) -> None:
    if not limits:
        return
    resources = _resources_map(params)
    added = any(name in resources for name in CUSTOM_ACCELERATORS.values())
    for key in sorted(limits):
        value = quantity_value(limits[key])
        if "num-gpus" not in params and is_gpu_key(key) and value:
            params["num-gpus"] = str(value)
        if not added and key in CUSTOM_ACCELERATORS and value:
            if CUSTOM_ACCELERATORS[key] not in resources:
                resources[CUSTOM_ACCELERATORS[key]] = float(value)
                # Go's json.Marshal writes 1.0 as 1
                params["resources"] = "'" + json.dumps(
                    {k: int(v) if float(v).is_integer() else v for k, v in resources.items()},
                    separators=(",", ":"), sort_keys=True) + "'"
            added = True


def convert_param_map(params: dict[str, str]) -> str:
    out = []
    for key in sorted(params):
        value = params[key]
        if value.lower() in ("true", "false") and key not in BOOLEAN_VALUED:
            if value.lower() == "true":
                out.append(f" --{key} ")
        else:
            out.append(f" --{key}={value} ")
    return "".join(out)


def complete_params(params: dict[str, str], *, head: bool, head_address: str) -> dict[str, str]:
    """setMissingRayStartParams."""
    p = dict(params)
    if not head:
        p.setdefault("address", head_address)
    else:
        p.setdefault("dashboard-host", "0.0.0.0")
    p.setdefault("metrics-export-port", str(DEFAULT_METRICS_PORT))
    p["block"] = "true"
    p.setdefault("dashboard-agent-listen-port", str(DEFAULT_DASHBOARD_AGENT_LISTEN_PORT))
    return p


def ray_start_command(params: dict[str, str], limits: dict[str, Any], *, head: bool) -> str:
    """generateRayStartCommand."""
    p = dict(params)
    if "num-cpus" not in p and "cpu" in limits:
        p["num-cpus"] = str(quantity_value(limits["cpu"]))
    if "memory" not in p and "memory" in limits:
        p["memory"] = str(quantity_value(limits["memory"]))
    add_well_known_accelerator_resources(p, limits)
    return ("ray start --head" if head else "ray start") + convert_param_map(p)


def label_pod(labels: dict[str, str], *, cluster: str, head: bool, group: str) -> dict[str, str]:
    node_type = "head" if head else "worker"
    out = {"ray.io/is-ray-node": "yes", "ray.io/cluster": cluster, "ray.io/node-type": node_type,
           "ray.io/group": group, "ray.io/identifier": f"{cluster}-{node_type}",
           "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator"}
    for k, v in labels.items():
        if k not in ("ray.io/node-type", "ray.io/group", "ray.io/cluster"):
            out[k] = v
    return out


AUTH_TOKEN_KEY = "auth_token"


def auth_secret(cluster: str) -> dict[str, Any]:
    """The Secret KubeRay creates for a token-auth cluster: 32 random bytes, base64 (``generateRandomToken``)."""
    token = base64.b64encode(secrets.token_bytes(32)).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": cluster}, "stringData": {AUTH_TOKEN_KEY: token}}


def set_token_auth_env(container: dict[str, Any], cluster: str) -> None:
    """SetContainerTokenAuthEnvVars without Kubernetes-delegated auth (KubeRay refuses that for RayServices)."""
    env = container.setdefault("env", [])
    names = {e["name"] for e in env}
    if "RAY_AUTH_MODE" not in names:
        env.append({"name": "RAY_AUTH_MODE", "value": "token"})
    if "RAY_AUTH_TOKEN" not in names:
        env.append({"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": cluster, "key": AUTH_TOKEN_KEY}}})


def wait_gcs_ready(container: dict[str, Any], head_address: str) -> dict[str, Any]:
    host, port = head_address.rsplit(":", 1)
    return {
        "name": "wait-gcs-ready", "image": container["image"], "imagePullPolicy": container.get("imagePullPolicy"),
        "command": ["/bin/bash", "-c", "--"],
        "args": [f"until ray health-check --address {host}:{port} > /dev/null 2>&1; do sleep 5; done"],
        "securityContext": copy.deepcopy(container.get("securityContext")),
        "env": copy.deepcopy(container.get("env", [])),
        "volumeMounts": copy.deepcopy(container.get("volumeMounts", [])),
        "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}, "requests": {"cpu": "200m", "memory": "256Mi"}},
    }


AUTOSCALER_START = ("ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME) "
                    "--cluster-namespace $(RAY_CLUSTER_NAMESPACE)")


def autoscaler_container(image: str, options: dict[str, Any], *, cluster: str = "", token_auth: bool = False,
                         ) -> dict[str, Any]:
    """BuildAutoscalerContainer, the token's environment when auth is on, then mergeAutoscalerOverrides."""
    container: dict[str, Any] = {
        "name": "autoscaler", "image": image, "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "RAY_CLUSTER_NAME", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.labels['ray.io/cluster']"}}},
                {"name": "RAY_CLUSTER_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "RAY_HEAD_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "KUBERAY_CRD_VER", "value": "v1"},
                {"name": "KUBERAY_GEN_AUTOSCALER_START_CMD", "value": AUTOSCALER_START}],
        "command": ["/bin/bash", "-c", "--"], "args": [AUTOSCALER_START],
        "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "500m", "memory": "512Mi"}},
    }
    if token_auth:
        set_token_auth_env(container, cluster)
    for key in ("resources", "image", "imagePullPolicy", "securityContext", "command", "args"):
        if options.get(key):
            container[key] = copy.deepcopy(options[key])
    for key in ("env", "envFrom", "volumeMounts"):
        if options.get(key):
            container[key] = [*container.get(key, []), *copy.deepcopy(options[key])]
    return container


GCS_RECONNECT_TIMEOUT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
DEFAULT_WORKER_GCS_RECONNECT_TIMEOUT_S = "600"
FT_HEAD_ENV = ("RAY_external_storage_namespace", "RAY_REDIS_ADDRESS", "REDIS_PASSWORD")
"""What configureRedisFT adds to the head's Ray container, in its order."""


def configure_gcs_fault_tolerance(tpl: dict[str, Any], params: dict[str, str], options: dict[str, Any] | None,
                                  *, head: bool, cluster_uid: str) -> None:
    """configureGCSFaultTolerance for a Redis store (``options`` None: GCS fault tolerance off, nothing added)."""
    if options is None:
        if head:
            tpl["metadata"].setdefault("annotations", {})["ray.io/ft-enabled"] = "false"
        return
    container = tpl["spec"]["containers"][0]
    env = container.setdefault("env", [])
    names = {e["name"] for e in env}
    if not head:
        if GCS_RECONNECT_TIMEOUT_ENV not in names:
            env.append({"name": GCS_RECONNECT_TIMEOUT_ENV, "value": DEFAULT_WORKER_GCS_RECONNECT_TIMEOUT_S})
        return
    annotations = tpl["metadata"].setdefault("annotations", {})
    annotations["ray.io/ft-enabled"] = "true"
    storage_ns = options.get("externalStorageNamespace") or cluster_uid
    annotations["ray.io/external-storage-namespace"] = storage_ns
    if "RAY_external_storage_namespace" not in names:
        env.append({"name": "RAY_external_storage_namespace", "value": storage_ns})
    env.append({"name": "RAY_REDIS_ADDRESS", "value": options["redisAddress"]})
    if options.get("redisPassword") is not None:
        params["redis-password"] = "$REDIS_PASSWORD"
        env.append({"name": "REDIS_PASSWORD", **copy.deepcopy(options["redisPassword"])})


def redis_cleanup_job(head_pod: dict[str, Any], cluster: str) -> dict[str, Any]:
    """buildRedisCleanupJob: the Job KubeRay runs, behind its finalizer, when a GCS fault-tolerant cluster goes."""
    pod = copy.deepcopy(head_pod)
    labels = {**pod["metadata"]["labels"], "ray.io/node-type": "redis-cleanup"}
    spec = pod["spec"]
    container = spec["containers"][0]
    spec["containers"] = [container]
    container["command"] = ["/bin/bash", "-c", "--"]
    container["args"] = ["python -c \"from ray._private.gcs_utils import cleanup_redis_storage; ...\""]
    container.pop("livenessProbe", None)
    container.pop("readinessProbe", None)
    container.setdefault("env", []).extend([{"name": "RAY_redis_db_connect_retries", "value": "120"},
                                            {"name": "RAY_redis_db_connect_wait_milliseconds", "value": "500"}])
    container["resources"] = {"limits": {"cpu": "200m", "memory": "256Mi"},
                              "requests": {"cpu": "200m", "memory": "256Mi"}}
    spec["restartPolicy"] = "Never"
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": f"{cluster}-redis-cleanup", "namespace": pod["metadata"]["namespace"],
                         "labels": labels},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 300,
                     "template": {"metadata": {"labels": labels}, "spec": spec}}}


def build_pods(ray_service: dict[str, Any], *, cluster_suffix: str = "x7k2p") -> list[dict[str, Any]]:
    """The head pod and one pod per worker group that KubeRay creates for ``ray_service``."""
    name, ns = ray_service["metadata"]["name"], ray_service["metadata"]["namespace"]
    cluster = f"{name}-{cluster_suffix}"  # utils.GenerateRayClusterName
    spec = ray_service["spec"]["rayClusterConfig"]
    head_params = spec["headGroupSpec"]["rayStartParams"]
    head_address = f"{cluster}-head-svc.{ns}.svc.cluster.local:{head_params.get('port', DEFAULT_GCS_PORT)}"
    groups = [(True, "headgroup", spec["headGroupSpec"])] + [(False, w["groupName"], w)
                                                              for w in spec["workerGroupSpecs"]]
    token_auth = (spec.get("authOptions") or {}).get("mode") == "token"  # utils.IsAuthEnabled
    pods = []
    for head, group, g in groups:
        tpl = copy.deepcopy(g["template"])
        labels = label_pod(tpl["metadata"].get("labels", {}), cluster=cluster, head=head, group=group)
        labels["ray.io/serve"] = "false" if head else "true"  # BuildPod, RayService pods
        container = tpl["spec"]["containers"][0]
        if not head:
            tpl["spec"].setdefault("initContainers", []).append(wait_gcs_ready(container, head_address))
        params = complete_params(g["rayStartParams"], head=head, head_address=head_address)
        configure_gcs_fault_tolerance(tpl, params, spec.get("gcsFaultToleranceOptions"), head=head,
                                      cluster_uid=f"uid-of-{cluster}")
        autoscaling = bool(spec.get("enableInTreeAutoscaling"))
        options = spec.get("autoscalerOptions") or {}
        if autoscaling and head:
            params["no-monitor"] = "true"
            tpl["spec"]["serviceAccountName"] = tpl["spec"].get("serviceAccountName") or cluster
            sidecar = autoscaler_container(container["image"], options, cluster=cluster, token_auth=token_auth)
            if options.get("version") == "v2":
                container.setdefault("env", []).append({"name": "RAY_ENABLE_AUTOSCALER_V2", "value": "true"})
        if autoscaling and options.get("version") == "v2":
            tpl["spec"]["restartPolicy"] = "Never"
        limits = container.get("resources", {}).get("limits", {})
        cmd = f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {ray_start_command(params, limits, head=head)}"
        container["command"] = ["/bin/bash", "-c", "--"]
        container["args"] = [cmd]
        if "livenessProbe" not in container:
            container["livenessProbe"] = {"httpGet": {"path": "/api/healthz", "port": int(
                params["dashboard-agent-listen-port"])}}
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if "metrics" not in ports:
            container.setdefault("ports", []).append({"name": "metrics", "containerPort": DEFAULT_METRICS_PORT})
        if autoscaling and head:
            tpl["spec"]["containers"].append(sidecar)
        if token_auth:
            set_token_auth_env(container, cluster)
            for init in tpl["spec"].get("initContainers", []):
                if init["name"] == "wait-gcs-ready":
                    set_token_auth_env(init, cluster)
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": f"{cluster}-{group}", "namespace": ns, "labels": labels},
                     "spec": tpl["spec"], "group": group, "head": head})
    return pods
