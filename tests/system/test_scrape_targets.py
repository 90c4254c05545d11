"""What the managed scraper would read in a deploy of dev: its rendered configuration (as the Cluster template
carries it) applied, with Prometheus' relabeling (tests/system/relabel.py, prometheus model/relabel/relabel.go and
discovery/kubernetes/pod.go), to the pods KubeRay v1.7.0 builds from the synthesized RayServices
(tests/system/kuberay.py) and to the exporter DaemonSet's pods."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import yaml

from eks_inference.k8s.ray_service import RAY_PORTS
from eks_inference.observability.scrape import NEURON_MONITOR_PORT
from tests.conftest import Assembly
from tests.system import kuberay
from tests.system.cfn import MANIFEST_TYPE, manifest_objects
from tests.system.relabel import pod_targets, relabel, scrape_targets
from tests.system.synthesized import objects


def scrape_config(asm: Assembly) -> dict[str, Any]:
    (blob,) = [r["Properties"]["ScrapeConfiguration"]["ConfigurationBlob"]
               for r in asm.template("-Cluster")["Resources"].values() if r["Type"] == "AWS::APS::Scraper"]
    return dict(yaml.safe_load(blob))


def cluster_objects(asm: Assembly, kind: str) -> list[dict[str, Any]]:
    return [o for r in asm.template("-Cluster")["Resources"].values() if r["Type"] == MANIFEST_TYPE
            for o in manifest_objects(r) if o["kind"] == kind]


@pytest.fixture(scope="module")
def jobs(assemblies: dict[str, Assembly]) -> dict[str, dict[str, Any]]:
    return {j["job_name"]: j for j in scrape_config(assemblies["dev"])["scrape_configs"]}


def test_every_ray_pod_is_read_on_its_metrics_port_and_nothing_else(assemblies: dict[str, Assembly],
                                                                    jobs: dict[str, dict[str, Any]]) -> None:
    ips = (f"10.0.70.{i}" for i in itertools.count(10))
    found = []
    for rs in objects(assemblies["dev"], "RayService"):
        for pod in kuberay.build_pods(rs):
            ip = next(ips)
            targets = pod_targets(pod, ip, node=f"node-of-{ip}")
            assert len(targets) > 1  # gcs, dashboard, serve, metrics, ...: only one is for the scraper
            (t,) = scrape_targets(jobs["ray"], targets)
            labels = pod["metadata"]["labels"]
            assert t["instance"] == f"{ip}:{RAY_PORTS.metrics_export}"
            assert (t["model"], t["processor"], t["service"]) == (
                labels["eks-inference/model"], labels["eks-inference/processor"], labels["eks-inference/service"])
            assert t["node"] == f"node-of-{ip}" and t["namespace"] == "eks-inference"
            found.append((t["service"], t["ray_role"]))
    assert sorted(found) == [("minilm-graviton", "head"), ("minilm-graviton", "worker"),
                             ("minilm-inferentia", "head"), ("minilm-inferentia", "worker")]


def test_pods_that_are_not_ours_or_not_running_are_not_read(assemblies: dict[str, Assembly],
                                                            jobs: dict[str, dict[str, Any]]) -> None:
    rs = objects(assemblies["dev"], "RayService")[0]
    head = kuberay.build_pods(rs)[0]
    assert scrape_targets(jobs["ray"], pod_targets(head, "10.0.70.97", "n", phase="Pending")) == []
    stranger = {"metadata": {"name": "curl", "namespace": "eks-inference", "labels": {"app": "curl"}},
                "spec": {"containers": [{"name": "c", "ports": [{"name": "metrics", "containerPort": 8080}]}]}}
    assert scrape_targets(jobs["ray"], pod_targets(stranger, "10.0.70.98", "n")) == []
    elsewhere = {**head, "metadata": {**head["metadata"], "namespace": "default"}}
    assert jobs["ray"]["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["eks-inference"]}}]
    assert elsewhere["metadata"]["namespace"] not in jobs["ray"]["kubernetes_sd_configs"][0]["namespaces"]["names"]


def test_neuron_monitor_on_each_inferentia_node_is_read(assemblies: dict[str, Assembly],
                                                        jobs: dict[str, dict[str, Any]]) -> None:
    (ds,) = [d for d in cluster_objects(assemblies["dev"], "DaemonSet") if d["metadata"]["name"] == "neuron-monitor"]
    pod = {"metadata": {"name": "neuron-monitor-x", "namespace": ds["metadata"]["namespace"],
                        "labels": ds["spec"]["template"]["metadata"]["labels"]}, "spec": ds["spec"]["template"]["spec"]}
    (t,) = scrape_targets(jobs["neuron-monitor"], pod_targets(pod, "10.0.71.5", "ip-10-0-71-5"))
    assert t["instance"] == f"10.0.71.5:{NEURON_MONITOR_PORT}" and t["node"] == "ip-10-0-71-5"
    assert t["processor"] == "inferentia"
    assert scrape_targets(jobs["ray"], pod_targets(pod, "10.0.71.5", "n")) == []  # other namespace


def test_each_node_is_read_through_the_api_server_proxy_for_its_group(jobs: dict[str, dict[str, Any]]) -> None:
    node = {"__address__": "10.0.64.7:10250", "__meta_kubernetes_node_name": "ip-10-0-64-7",
            "__meta_kubernetes_node_label_eks_inference_processor": "graviton",
            "__meta_kubernetes_node_label_node_kubernetes_io_instance_type": "c7g.2xlarge"}
    lbls = relabel(node, jobs["kubelet"]["relabel_configs"])
    assert lbls is not None
    assert (lbls["__address__"], lbls["__metrics_path__"]) == ("kubernetes.default.svc:443",
                                                               "/api/v1/nodes/ip-10-0-64-7/proxy/metrics")
    assert (lbls["processor"], lbls["instance_type"], lbls["node"]) == ("graviton", "c7g.2xlarge", "ip-10-0-64-7")
    assert jobs["kubelet"]["scheme"] == "https"
