"""Grafana dashboards as code: built here, written to ``observability/dashboards/*.json`` by
``python -m eks_inference.observability``, and imported into Grafana from those files (docs/observability.md).

Each dashboard takes its Prometheus data source as a variable (``datasource``), so one import works against any
Grafana connected to the workspace (Amazon Managed Grafana, or a Grafana with SigV4 auth to the workspace's
query endpoint). Means come from our exact counters, percentiles from histograms
(:mod:`eks_inference.metric_names`).
"""

from __future__ import annotations

from typing import Any

from eks_inference import metric_names as names

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
APP = 'application=~"$model", processor=~"$processor"'


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def _panel(pid: int, title: str, targets: list[tuple[str, str]], *, unit: str, x: int, y: int, w: int = 12,
           h: int = 8, description: str = "", stack: bool = False) -> dict[str, Any]:
    return {
        "id": pid, "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "custom": {"stacking": {"mode": "normal" if stack else "none"},
                                                              "fillOpacity": 20 if stack else 0}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi"}},
        "targets": [_target(e, legend, chr(ord("A") + i)) for i, (e, legend) in enumerate(targets)],
    }


def _var(name: str, query: str, label: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": {"query": query,
            "refId": name}, "definition": query, "includeAll": True, "multi": True, "allValue": ".*",
            "current": {"selected": True, "text": "All", "value": "$__all"}, "refresh": 2, "sort": 1}


def _dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]],
               variables: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["eks-inference"],
        "editable": True, "schemaVersion": 39, "version": 1, "timezone": "browser", "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            *variables,
        ]},
        "panels": panels,
    }


def _rate(metric: str, by: str, selector: str = APP) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{RATE}]))"


def serving() -> dict[str, Any]:
    """Requests, latency, errors, the time split inside the replica, batching and replicas, per model."""
    by = "application, processor"
    posts = f'{APP}, method="POST"'
    lat = f"{names.SERVE_HTTP_LATENCY}_bucket"
    timed = names.exported(names.TIMED_REQUESTS)
    forwards = names.exported(names.FORWARDS)
    dep = f'{APP}, deployment="{names.DEPLOYMENT}"'
    panels = [
        _panel(1, "Requests/s", [(_rate(names.SERVE_HTTP_REQUESTS, by, posts), "{{application}} {{processor}}")],
               unit="reqps", x=0, y=0, description="Predict requests answered at the Serve ingress, any status."),
        _panel(2, "Latency p50 / p99 (ingress)", [
            (f"histogram_quantile(0.5, sum by ({by}, le) (rate({lat}{{{posts}}}[{RATE}])))",
             "p50 {{application}} {{processor}}"),
            (f"histogram_quantile(0.99, sum by ({by}, le) (rate({lat}{{{posts}}}[{RATE}])))",
             "p99 {{application}} {{processor}}"),
        ], unit="ms", x=12, y=0, description="From Serve's latency histogram (its bucket resolution)."),
        _panel(3, "Responses by class: 4xx, 5xx and 503 (shed)", [
            (_rate(names.SERVE_HTTP_REQUESTS, by, f'{posts}, status_code=~"4.."'), "4xx {{application}}"),
            (_rate(names.SERVE_HTTP_REQUESTS, by, f'{posts}, status_code=~"5..", status_code!="503"'),
             "5xx {{application}}"),
            (_rate(names.SERVE_HTTP_REQUESTS, by, f'{posts}, status_code="503"'), "503 {{application}}"),
        ], unit="reqps", x=0, y=8, stack=True),
        _panel(4, "Where a request's time goes inside the replica (mean)", [
            (f"{_rate(names.exported(names.QUEUE_TIME_MS), by)} / {_rate(timed, by)}", "queue {{application}}"),
            (f"{_rate(names.exported(names.MODEL_TIME_MS), by)} / {_rate(timed, by)}", "model {{application}}"),
        ], unit="ms", x=12, y=8, stack=True,
            description="Queue: admission to the start of the forward that carries the request; model: that "
                        "forward. The rest of the client's latency is network, proxy and HTTP handling."),
        _panel(5, "Queue time p99", [
            (f"histogram_quantile(0.99, sum by ({by}, le) (rate({names.exported(names.REQUEST_QUEUE_MS)}_bucket"
             f"{{{APP}}}[{RATE}])))", "{{application}} {{processor}}"),
        ], unit="ms", x=0, y=16),
        _panel(6, "Batch size formed (mean inputs per forward) and padding", [
            (f"{_rate(names.exported(names.BATCH_INPUTS), by)} / {_rate(forwards, by)}",
             "inputs/forward {{application}}"),
            (f"{_rate(names.exported(names.PADDING_SLOTS), by)} / {_rate(names.exported(names.TOKEN_SLOTS), by)}",
             "padding share {{application}}"),
        ], unit="short", x=12, y=16),
        _panel(7, "Forward time per compiled shape (mean)", [
            (f"{_rate(names.exported(names.FORWARD_TIME_MS), by + ', bucket')} / {_rate(forwards, by + ', bucket')}",
             "{{application}} {{bucket}}"),
        ], unit="ms", x=0, y=24),
        _panel(8, "Replicas: healthy, autoscaler target, requests in them", [
            (f"sum by ({by}) ({names.SERVE_REPLICA_HEALTHY}{{{dep}}})", "healthy {{application}} {{processor}}"),
            (f"max by ({by}) ({names.SERVE_TARGET_REPLICAS}{{{dep}}})", "target {{application}} {{processor}}"),
            (f"sum by ({by}) ({names.SERVE_ONGOING}{{{dep}}})", "in replicas {{application}} {{processor}}"),
        ], unit="short", x=12, y=24),
    ]
    variables = [_var("model", f'label_values({names.SERVE_HTTP_REQUESTS}, application)', "Model"),
                 _var("processor", f'label_values({names.SERVE_HTTP_REQUESTS}, processor)', "Processor")]
    return _dashboard("eks-inference-serving", "eks-inference: serving",
                      "Per model and processor: load, latency, errors, the replica's queue and model time, "
                      "batching and replicas.", panels, variables)


def accelerators() -> dict[str, Any]:
    """NeuronCore and GPU utilisation and memory per node, and nodes per group."""
    panels = [
        _panel(1, "NeuronCore utilisation (mean per node)",
               [("avg by (node) (neuroncore_utilization_ratio)", "{{node}}")], unit="percentunit", x=0, y=0),
        _panel(2, "Neuron device memory used (per node)",
               [('sum by (node) (neuron_runtime_memory_used_bytes{memory_location="neuron_device"})', "{{node}}")],
               unit="bytes", x=12, y=0),
        _panel(3, "GPU utilisation (per GPU)",
               [("avg by (node, gpu) (DCGM_FI_DEV_GPU_UTIL)", "{{node}} gpu {{gpu}}")], unit="percent", x=0, y=8),
        _panel(4, "GPU memory used (per GPU)", [
            ("sum by (node, gpu) (DCGM_FI_DEV_FB_USED) / (sum by (node, gpu) (DCGM_FI_DEV_FB_USED) "
             "+ sum by (node, gpu) (DCGM_FI_DEV_FB_FREE))", "{{node}} gpu {{gpu}}"),
        ], unit="percentunit", x=12, y=8),
        _panel(5, "Nodes per group", [("count by (processor) (kubelet_node_name)", "{{processor}}")],
               unit="short", x=0, y=16, w=24, stack=True,
               description="One series per node from the kubelet, labelled with the node's processor group."),
    ]
    return _dashboard("eks-inference-accelerators", "eks-inference: accelerators and nodes",
                      "NeuronCore and GPU utilisation and memory per node (neuron-monitor, dcgm-exporter), and the "
                      "nodes of each group.", panels, [])


DASHBOARDS = {"serving.json": serving, "accelerators.json": accelerators}


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in a dashboard: panel targets and variable queries."""
    out = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for v in dashboard.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict) and q.get("query", "").startswith("label_values("):
            out.append(q["query"][len("label_values("):].split(",")[0].strip(" )"))
    return out
