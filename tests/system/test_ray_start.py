"""Every Ray pod's container command, run through real bash and parsed by Ray 2.60's own ``ray start``.

KubeRay v1.7.0 writes all rayStartParams as ``--key=value`` into one ``bash -c`` line
(ray-operator/controllers/ray/common/pod.go, reproduced in tests/system/kuberay.py). Whatever bash makes
of that line is what ``ray start`` receives; a value bash mangles crash-loops the pod.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from eks_inference.config import Processor
from eks_inference.k8s.ray_service import RAY_PORTS, quoted_resources
from eks_inference.serving.serve_config import INDEX_APP_NAME
from tests.conftest import Assembly
from tests.system import kuberay
from tests.system.synthesized import objects
from tests.unit.k8s_support import config, render

NODE_ALLOCATABLE_MEMORY = 1 << 40  # larger than any pod limit: the pod's own limits decide


def bash_argv(command: list[str], args: list[str], tmp: Path) -> list[str]:
    """Run the container's command with ``ray`` replaced by a shim that records the argv it receives."""
    shim_dir = tmp / "bin"
    shim_dir.mkdir(exist_ok=True)
    shim = shim_dir / "ray"
    shim.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "json.dump(sys.argv[1:], open(os.environ['ARGV_OUT'], 'w'))\n")
    shim.chmod(0o755)
    out = tmp / "argv.json"
    env = {"PATH": f"{shim_dir}:/usr/bin:/bin", "ARGV_OUT": str(out)}
    proc = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(out.read_text()))


def parse_ray_start(argv: list[str]) -> dict[str, Any]:
    """Ray 2.60's click parser for ``ray start`` (ray.scripts.scripts.start), and its --resources check."""
    from ray._private.utils import parse_resources_json
    from ray.autoscaler._private.cli_logger import cf, cli_logger
    from ray.scripts.scripts import start

    assert argv[0] == "start"
    params = dict(start.make_context("start", argv[1:]).params)
    params["resources"] = parse_resources_json(params["resources"], cli_logger, cf)
    return params


def ray_services(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == "RayService"}


def serve_deployments(ray_service: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the model deployment, the route index's deployments) of a RayService's serveConfigV2."""
    serve = yaml.safe_load(ray_service["spec"]["serveConfigV2"])
    apps = {a["name"]: a for a in serve["applications"]}
    index = apps.pop(INDEX_APP_NAME)
    ((_, model_app),) = apps.items()
    (model,) = model_app["deployments"]
    return model, list(index["deployments"])


def asks(deployment: dict[str, Any], replicas: int = 1) -> dict[str, float]:
    """Ray resources ``replicas`` replicas of a deployment hold (ray_actor_options; Serve's default is 1 CPU)."""
    opts = deployment.get("ray_actor_options") or {}
    need = {"CPU": opts.get("num_cpus", 1), "GPU": opts.get("num_gpus", 0), **opts.get("resources", {})}
    return {k: v * replicas for k, v in need.items()}


def offers(params: dict[str, Any]) -> dict[str, float]:
    """Ray resources a node started with these ``ray start`` options advertises."""
    return {"CPU": params["num_cpus"], "GPU": params["num_gpus"] or 0, **params["resources"]}


def fits(offer: dict[str, float], *held: dict[str, float]) -> bool:
    return all(sum(h.get(k, 0) for h in held) <= offer.get(k, 0) for k in {k for h in held for k in h})


def tmpfs_bytes(pod: dict[str, Any]) -> int:
    """Size of the /dev/shm tmpfs the kubelet mounts: the least of node allocatable, the pod's memory limit and
    the volume's sizeLimit (kubernetes pkg/volume/emptydir/empty_dir.go, calculateEmptyDirMemorySize)."""
    (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert vol["emptyDir"]["medium"] == "Memory"
    pod_limit = sum(kuberay.quantity_value(c["resources"]["limits"]["memory"]) for c in pod["spec"]["containers"])
    return min(NODE_ALLOCATABLE_MEMORY, pod_limit, kuberay.quantity_value(vol["emptyDir"]["sizeLimit"]))


def plasma_directory(pod: dict[str, Any], object_store_memory: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where Ray 2.60 puts the object store in this pod (ray._private.services.determine_plasma_store_config)."""
    import ray._common.utils
    import ray._private.utils
    from ray._private.services import determine_plasma_store_config

    limit = kuberay.quantity_value(pod["spec"]["containers"][0]["resources"]["limits"]["memory"])
    monkeypatch.setattr(ray._private.utils, "get_shared_memory_bytes", lambda: tmpfs_bytes(pod))
    monkeypatch.setattr(ray._common.utils, "get_system_memory", lambda: limit)
    plasma_dir, _, _ = determine_plasma_store_config(object_store_memory, temp_dir="/tmp")
    return str(plasma_dir)


def check_pods(ray_service: dict[str, Any], tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pod starts, and every replica fits wherever Serve may place it.

    Serve places replicas on any node that has room for their ray_actor_options (Ray 2.60
    ray/serve/_private/deployment_scheduler.py: the SPREAD strategy over feasible nodes unless
    RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY is set; ray-core's actor scheduling: explicit resources, a num_cpus of 0
    included, are all a node must offer). The model deployment asks for CPUs (and neuron_cores or GPUs), which the
    head (num-cpus 0) does not offer: one replica per worker pod. The route index asks for nothing, so it may land
    on the head or on any worker: the head must hold it, and every worker must hold it next to its model replica.
    """
    model, index = serve_deployments(ray_service)
    wants = dict(model["ray_actor_options"])
    index_asks = [asks(d, d.get("num_replicas", 1)) for d in index]
    for pod in kuberay.build_pods(ray_service):
        c = pod["spec"]["containers"][0]
        argv = bash_argv(c["command"], c["args"], tmp)
        p = parse_ray_start(argv)
        where = f"{ray_service['metadata']['name']}/{pod['group']}"
        assert p["block"] is True and p["head"] is pod["head"], where
        assert (p["node_manager_port"], p["object_manager_port"], p["runtime_env_agent_port"],
                p["dashboard_agent_grpc_port"], p["dashboard_agent_listen_port"], p["metrics_export_port"],
                p["min_worker_port"], p["max_worker_port"]) == (
            RAY_PORTS.node_manager, RAY_PORTS.object_manager, RAY_PORTS.runtime_env_agent,
            RAY_PORTS.dashboard_agent_grpc, RAY_PORTS.dashboard_agent_listen, RAY_PORTS.metrics_export,
            RAY_PORTS.min_worker, RAY_PORTS.max_worker), where
        assert plasma_directory(pod, p["object_store_memory"], monkeypatch) == "/dev/shm", where
        if pod["head"]:
            assert p["num_cpus"] == 0 and p["port"] == RAY_PORTS.gcs, where  # no model replicas on the head
            assert not fits(offers(p), asks(model)), where
            assert fits(offers(p), *index_asks), f"{where}: the route index {index_asks} does not fit the head {p}"
            continue
        assert p["address"].endswith(f"-head-svc.{pod['metadata']['namespace']}.svc.cluster.local:{RAY_PORTS.gcs}")
        # A replica fits its worker: every resource it asks for, the node advertises, with room left for the index.
        assert fits(offers(p), asks(model)), f"{where}: a replica needs {asks(model)}, node has {offers(p)}"
        assert fits(offers(p), asks(model), *index_asks), f"{where}: no room for the route index {index_asks}"
        extended = {k for k in c["resources"]["limits"] if "/" in k}
        assert bool(extended) == bool(set(wants) & {"resources", "num_gpus"}), where


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_synthesized_ray_pods_start(env_name: str, assemblies: dict[str, Assembly], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Each head and worker group of the synthesized charts: bash keeps every value intact, ray start parses
    it, the workers offer what the model deployment asks (neuron_cores on inf2), every node what the route index
    asks, and the object store lands in /dev/shm."""
    services = ray_services(objects(assemblies[env_name], "RayService"))
    assert sorted(services) == ["minilm-graviton", "minilm-inferentia"]
    for rs in services.values():
        check_pods(rs, tmp_path, monkeypatch)


def test_optional_processors_ray_pods_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gpu and cpu groups ship disabled; their RayServices (rendered by the same code) must start too."""
    from tests.conftest import cdk_context

    groups = [dict(g, enabled=True) for g in cdk_context()["eks-inference:environments"]["dev"]["node_groups"]]
    models = [{"name": "bert", "processors": [p.value for p in Processor]}]
    _, manifests, _ = render(config("dev", node_groups=groups, models=models))
    services = ray_services(manifests)
    assert sorted(services) == ["bert-cpu", "bert-gpu", "bert-graviton", "bert-inferentia"]
    for rs in services.values():
        check_pods(rs, tmp_path, monkeypatch)
    gpu_worker = kuberay.build_pods(services["bert-gpu"])[1]["spec"]["containers"][0]
    assert parse_ray_start(bash_argv(gpu_worker["command"], gpu_worker["args"], tmp_path))["num_gpus"] == 1


def test_bare_json_resources_do_not_survive_bash(tmp_path: Path) -> None:
    """What the charts used to write: KubeRay passes the value verbatim, bash eats the quotes, ray start aborts.
    The quoted form KubeRay itself writes survives."""
    from click import ClickException

    base = {"num-cpus": "1", "address": "head:6379", "block": "true"}
    for value, ok in (('{"neuron_cores":1}', False), (quoted_resources({"neuron_cores": 1}), True)):
        cmd = kuberay.ray_start_command({**base, "resources": value}, {}, head=False)
        argv = bash_argv(["/bin/bash", "-c", "--"], [cmd], tmp_path)
        if ok:
            assert parse_ray_start(argv)["resources"] == {"neuron_cores": 1}
        else:
            assert "--resources={neuron_cores:1}" in argv
            with pytest.raises(ClickException):
                parse_ray_start(argv)


def test_default_object_store_would_not_fit_the_shm_of_a_worker(assemblies: dict[str, Assembly],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Why object-store-memory is explicit: Ray's default (30 % of the container's memory) outgrows /dev/shm,
    and Ray then quietly puts the object store on disk (/tmp)."""
    from ray._private.ray_constants import DEFAULT_OBJECT_STORE_MEMORY_PROPORTION

    rs = ray_services(objects(assemblies["dev"], "RayService"))["minilm-graviton"]
    worker = kuberay.build_pods(rs)[1]
    limit = kuberay.quantity_value(worker["spec"]["containers"][0]["resources"]["limits"]["memory"])
    default = int(limit * DEFAULT_OBJECT_STORE_MEMORY_PROPORTION)
    assert plasma_directory(worker, default, monkeypatch) == "/tmp"


def test_kuberay_derives_accelerators_the_way_the_shim_sees() -> None:
    """Self-check of the reproduction: a neuroncore limit becomes single-quoted neuron_cores, a GPU limit num-gpus."""
    cmd = kuberay.ray_start_command({}, {"cpu": "3", "memory": "8Gi", "aws.amazon.com/neuroncore": 2}, head=False)
    assert " --resources='{\"neuron_cores\":2}' " in cmd and " --num-cpus=3 " in cmd
    assert f" --memory={8 << 30} " in cmd
    assert " --num-gpus=1 " in kuberay.ray_start_command({}, {"nvidia.com/gpu": 1}, head=False)
