"""Alert rules, rendered per environment (each model's latency objective comes from config) and deployed to the
workspace as one rule-groups namespace (``AWS::APS::RuleGroupsNamespace``, whose ``Data`` is a Prometheus rules
file). Every alert has a ``promtool test rules`` unit test (``observability/tests/``).

Alerts (labels ``severity`` and, where it applies, ``application``/``processor``):

``ModelLatencyOverSlo``
    A model's p99 predict latency at the Serve ingress stayed above its ``slo_p99_ms`` for 5 minutes (one rule
    per model; p99 from Serve's latency histogram, so it has that histogram's bucket resolution).
``ModelShedding``
    More than ``max_shed_ratio`` of a model's predict requests were answered 503 over 5 minutes, for 5 minutes:
    the replicas are full (``max_ongoing_requests + max_queued_requests``) or not ready.
``ServeReplicaRestarts``
    Serve replaced replicas: its controller counted failed health checks of the model's deployment in the last
    15 minutes (a replica that dies fails its next check; three failed checks in a row replace a live one).
``NeuronCoreIdleWhileRequestsWait``
    On an Inferentia node, requests sat in the model's replicas while the node's NeuronCores were below 5 %
    busy, for 5 minutes: the model is not running on the device (stuck, or fallen back to the CPU).
``MetricsTargetDown``
    A target the scraper should read has not answered for 10 minutes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from eks_inference import metric_names as names

GROUP = "eks-inference"
NEURON_IDLE_RATIO = 0.05


@dataclass(frozen=True)
class ModelObjective:
    """One model's latency objective, from config."""

    application: str
    slo_p99_ms: float


def _p99(application: str) -> str:
    return (f'histogram_quantile(0.99, sum by (application, processor, le) '
            f'(rate({names.SERVE_HTTP_LATENCY}_bucket{{application="{application}", method="POST"}}[5m])))')


def render_rules(models: Sequence[ModelObjective], *, max_shed_ratio: float) -> dict[str, Any]:
    """The rules file: one group, the alerts of the module docstring."""
    dep = f'deployment="{names.DEPLOYMENT}"'
    rules: list[dict[str, Any]] = []
    for m in models:
        rules.append({
            "alert": "ModelLatencyOverSlo",
            "expr": f"{_p99(m.application)} > {m.slo_p99_ms:g}",
            "for": "5m",
            "labels": {"severity": "warning", "slo_p99_ms": f"{m.slo_p99_ms:g}"},
            "annotations": {
                "summary": f"{m.application}: p99 latency over its {m.slo_p99_ms:g} ms objective",
                "description": ("p99 of predict requests at the Serve ingress is {{ $value | humanize }} ms on "
                                "{{ $labels.processor }} (objective " + f"{m.slo_p99_ms:g} ms) for 5 minutes. "
                                "Check the replicas' queue and model time on the serving dashboard."),
            },
        })
    posts = f'{names.SERVE_HTTP_REQUESTS}{{method="POST"}}'
    shed = f'{names.SERVE_HTTP_REQUESTS}{{method="POST", status_code="503"}}'
    rules.append({
        "alert": "ModelShedding",
        "expr": (f"sum by (application, processor) (rate({shed}[5m]))\n  / sum by (application, processor) "
                 f"(rate({posts}[5m])) > {max_shed_ratio:g}"),
        "for": "5m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "{{ $labels.application }}: predict requests answered 503",
            "description": ("{{ $value | humanizePercentage }} of predict requests on {{ $labels.processor }} were "
                            f"shed with 503 (over {max_shed_ratio:.0%}) for 5 minutes: replicas are full or not "
                            "ready. Add replicas or lower the offered load."),
        },
    })
    failures = f"{names.SERVE_HEALTH_CHECK_FAILURES}{{{dep}}}"
    by = "sum by (application, processor)"
    rules.append({
        "alert": "ServeReplicaRestarts",
        # Failures counted in the last 15 minutes. A counter that did not exist 15 minutes ago (the first failure
        # creates it, which increase() never sees) counts from zero, but only where the deployment itself already
        # existed then, so that a scraper that starts, or a new deployment, raises nothing.
        "expr": (f"({by} ({failures}) - {by} ({failures} offset 15m) > 0)\n"
                 f"or\n({by} ({failures}) unless on (application, processor) {by} ({failures} offset 15m))\n"
                 f"  and on (application, processor) {by} ({names.SERVE_DEPLOYMENT_STATUS}{{{dep}}} offset 15m)"),
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "{{ $labels.application }}: Serve restarted replicas",
            "description": ("{{ $value }} failed health checks of the model's replicas on {{ $labels.processor }} "
                            "in the last 15 minutes; Serve replaces a replica that dies or keeps failing them. "
                            "Look at the replica logs (kubectl logs on the worker pods)."),
        },
    })
    waiting = f'{names.SERVE_ONGOING}{{{dep}, processor="inferentia"}}'
    rules.append({
        "alert": "NeuronCoreIdleWhileRequestsWait",
        "expr": (f"(sum by (node) ({waiting}) > 0)\n  and on (node)\n"
                 f"(max by (node) (neuroncore_utilization_ratio) < {NEURON_IDLE_RATIO:g})"),
        "for": "5m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "{{ $labels.node }}: requests wait while its NeuronCores are idle",
            "description": ("Replicas on {{ $labels.node }} hold requests but no NeuronCore there is over "
                            f"{NEURON_IDLE_RATIO:.0%} busy for 5 minutes: the model is not running on the device "
                            "(stuck in a compile, or fallen back to the CPU)."),
        },
    })
    rules.append({
        "alert": "MetricsTargetDown",
        "expr": 'up{job=~"ray|neuron-monitor|dcgm-exporter"} == 0',
        "for": "10m",
        "labels": {"severity": "info"},
        "annotations": {
            "summary": "{{ $labels.job }} target {{ $labels.pod }} unreachable",
            "description": ("The scraper could not read {{ $labels.instance }} for 10 minutes: the pod is down, or a "
                            "security group or NetworkPolicy blocks its metrics port."),
        },
    })
    return {"groups": [{"name": GROUP, "rules": rules}]}


def rules_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def rules_for(config: Any) -> dict[str, Any]:
    """The rules of one environment (a :class:`~eks_inference.config.PlatformConfig`)."""
    return render_rules([ModelObjective(m.name, config.slo_p99_ms(m)) for m in config.models],
                        max_shed_ratio=config.observability.max_shed_ratio)
