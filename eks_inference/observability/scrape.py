"""The scrape configuration the AWS managed scraper runs: what it reads in the cluster, and how series are
labelled so that dashboards and alerts can group them by model, processor and node.

The managed scraper accepts a subset of Prometheus' configuration (Amazon Managed Service for Prometheus user
guide, "Scraper configuration"): ``global``, ``scrape_configs`` with ``kubernetes_sd_configs`` (its only service
discovery), ``relabel_configs`` and ``metric_relabel_configs``; bearer authorization only from the service
account token file. Every job here discovers pods (or nodes) through the API server, so the scraper needs the
read access EKS grants it when it creates the scraper's access entry (the cluster authenticates with access
entries: ``AuthenticationMode: API``).

Jobs:

* ``ray``: every Ray pod of the serving namespace, on its container port named ``metrics`` (KubeRay adds it;
  the RayService pins it to 8080). Only Serve's, our replicas' and Ray's node metrics are kept.
* ``neuron-monitor`` and, with a GPU group, ``dcgm-exporter``: the exporters' pods in the monitoring namespace,
  on their ``metrics`` ports.
* ``kubelet``: each node through the API server's node proxy, keeping only ``kubelet_node_name`` (one series per
  node, labelled with the node's processor group): the "nodes per group" panel.
"""

from __future__ import annotations

from typing import Any

import yaml

TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
METRICS_PORT_NAME = "metrics"
NEURON_MONITOR_PORT = 9010
DCGM_EXPORTER_PORT = 9400
MONITORING_NAMESPACE = "monitoring"
PROCESSOR_LABEL = "eks-inference/processor"

RAY_KEEP = r"ray_(serve|eks_inference|node)_.+"
"""Serve's metrics, our replicas' and Ray's per-node resource metrics; the rest of Ray's several hundred series
per process (gRPC, tasks, object store internals) are dropped before they are stored and billed."""


def _meta_label(k8s_label: str, *, node: bool = False) -> str:
    """Prometheus' sanitised meta label for a Kubernetes pod (or node) label."""
    clean = "".join(c if c.isalnum() else "_" for c in k8s_label)
    return f"__meta_kubernetes_{'node' if node else 'pod'}_label_{clean}"


def _pod_labels(extra: dict[str, str]) -> list[dict[str, Any]]:
    """Relabel rules that copy where a pod runs (namespace, pod, node) and ``extra`` pod labels to targets."""
    rules: list[dict[str, Any]] = [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
    ]
    for target, k8s_label in extra.items():
        rules.append({"source_labels": [_meta_label(k8s_label)], "target_label": target})
    return rules


def _pod_job(name: str, namespace: str, *, keep_labels: dict[str, str], labels: dict[str, str],
             keep_metrics: str | None = None) -> dict[str, Any]:
    relabel: list[dict[str, Any]] = [
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": METRICS_PORT_NAME,
         "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep"},
    ]
    for k8s_label, value in keep_labels.items():
        relabel.append({"source_labels": [_meta_label(k8s_label)], "regex": value, "action": "keep"})
    relabel += _pod_labels(labels)
    job: dict[str, Any] = {
        "job_name": name,
        "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [namespace]}}],
        "relabel_configs": relabel,
    }
    metric_relabel: list[dict[str, Any]] = []
    if keep_metrics:
        metric_relabel.append({"source_labels": ["__name__"], "regex": keep_metrics, "action": "keep"})
    metric_relabel.append({"regex": "otel_scope_.+|SessionName", "action": "labeldrop"})
    job["metric_relabel_configs"] = metric_relabel
    return job


def render_scrape_config(*, serving_namespace: str, interval_s: int = 30, neuron: bool = True,
                         gpu: bool = False) -> dict[str, Any]:
    """The scraper's configuration as a document (see the module docstring for the jobs)."""
    jobs = [_pod_job("ray", serving_namespace, keep_labels={"app.kubernetes.io/part-of": "eks-inference"},
                     labels={"model": "eks-inference/model", "processor": PROCESSOR_LABEL,
                             "service": "eks-inference/service", "ray_role": "eks-inference/ray-role"},
                     keep_metrics=RAY_KEEP)]
    if neuron:
        jobs.append(_pod_job("neuron-monitor", MONITORING_NAMESPACE,
                             keep_labels={"app.kubernetes.io/name": "neuron-monitor"},
                             labels={"processor": "eks-inference/processor"}))
    if gpu:
        jobs.append(_pod_job("dcgm-exporter", MONITORING_NAMESPACE,
                             keep_labels={"app.kubernetes.io/name": "dcgm-exporter"},
                             labels={"processor": "eks-inference/processor"}))
    jobs.append({
        "job_name": "kubelet",
        "scheme": "https",
        "authorization": {"type": "Bearer", "credentials_file": TOKEN_FILE},
        "tls_config": {"ca_file": CA_FILE, "insecure_skip_verify": False},
        "kubernetes_sd_configs": [{"role": "node"}],
        "relabel_configs": [
            {"target_label": "__address__", "replacement": "kubernetes.default.svc:443"},
            {"source_labels": ["__meta_kubernetes_node_name"], "regex": "(.+)",
             "target_label": "__metrics_path__", "replacement": "/api/v1/nodes/$1/proxy/metrics"},
            {"source_labels": ["__meta_kubernetes_node_name"], "target_label": "node"},
            {"source_labels": [_meta_label(PROCESSOR_LABEL, node=True)], "target_label": "processor"},
            {"source_labels": [_meta_label("node.kubernetes.io/instance-type", node=True)],
             "target_label": "instance_type"},
            {"source_labels": [_meta_label("eks.amazonaws.com/nodegroup", node=True)],
             "target_label": "nodegroup"},
        ],
        "metric_relabel_configs": [{"source_labels": ["__name__"], "regex": "kubelet_node_name", "action": "keep"}],
    })
    return {
        "global": {"scrape_interval": f"{interval_s}s", "scrape_timeout": f"{min(10, interval_s)}s"},
        "scrape_configs": jobs,
    }


def scrape_config_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
