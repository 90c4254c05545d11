"""Metric names exported by software this project deploys but cannot run here (no Neuron device, no GPU, no
kubelet), each list copied from its upstream source and cited, so that a dashboard or rule that reads one of
them is checked against the list instead of a live endpoint. Names our own serving exports are checked against a
live local Ray instead (tests/integration/serving/test_metrics_emitted.py).
"""

from __future__ import annotations

NEURON_MONITOR = frozenset({
    "neuroncore_utilization_ratio",
    "neuroncore_memory_usage_constants",
    "neuroncore_memory_usage_model_code",
    "neuroncore_memory_usage_model_shared_scratchpad",
    "neuroncore_memory_usage_runtime_memory",
    "neuroncore_memory_usage_tensors",
    "neuron_runtime_memory_used_bytes",
    "neuron_runtime_vcpu_usage_ratio",
    "execution_status_total",
    "execution_errors_total",
    "execution_latency_seconds",
    "neurondevice_hw_ecc_events_total",
    "system_memory_total_bytes",
    "system_memory_used_bytes",
})
"""neuron-monitor's Prometheus exporter (image ``public.ecr.aws/neuron/neuron-monitor``): the names
open-telemetry/opentelemetry-collector-contrib reads from it
(``receiver/awscontainerinsightreceiver/internal/neuron/metric_name.go`` and the exporter output sample in
``neuron_monitor_scraper_test.go``), and the Neuron tools' ``neuron-monitor-prometheus.py`` (aws-neuron-sdk).
Labels: ``neuroncore`` (utilisation and per-core memory), ``memory_location`` (``host`` or ``neuron_device``),
``instance_id``, ``instance_type``, ``availability_zone``, ``region``, ``subnet_id``, ``runtime_tag``; per node,
not per pod."""

DCGM_EXPORTER = frozenset({
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_XID_ERRORS",
})
"""NVIDIA dcgm-exporter's default counters (NVIDIA/dcgm-exporter ``etc/default-counters.csv``, the file its Helm
chart passes with ``-f``): utilisation in %, framebuffer memory in MiB. Labels include ``gpu``, ``UUID``,
``Hostname`` and, when the GPU is allocated to a pod, ``pod``/``namespace``/``container``."""

KUBELET = frozenset({"kubelet_node_name"})
"""kubernetes/kubernetes ``pkg/kubelet/metrics/metrics.go``: ``NodeName`` (subsystem ``kubelet``, name
``node_name``, label ``node``), one series of value 1 per node; read through the API server's node proxy."""

PROMETHEUS = frozenset({"up"})
"""Written by the scraper itself for every target: 1 when the last scrape succeeded."""

EXTERNAL = NEURON_MONITOR | DCGM_EXPORTER | KUBELET | PROMETHEUS
