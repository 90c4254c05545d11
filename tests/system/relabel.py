"""Prometheus target relabeling and Kubernetes pod discovery, to see which targets the managed scraper's rendered
configuration would scrape and how it labels them.

Relabeling, reproduced from prometheus/prometheus ``model/relabel/relabel.go`` (``Process`` / ``relabel``): rules
apply in order to the target's label set; ``source_labels`` are joined with ``separator`` (default ``;``); the
``regex`` (default ``(.*)``) is anchored at both ends; ``replace`` (the default action) writes ``replacement``
(default ``$1``) with the groups expanded into ``target_label`` when the regex matches, and deletes the label
when the result is empty; ``keep``/``drop`` keep or drop the target on a match; ``labeldrop`` removes the labels
whose names match. A target left with a ``__`` label loses it, ``__address__`` becomes ``instance``.

Pod discovery (``discovery/kubernetes/pod.go``, ``buildPod``): one target per container port of each pod, with
``__address__`` = pod IP:port, ``__meta_kubernetes_namespace``, ``..._pod_name``, ``..._pod_node_name``,
``..._pod_phase``, ``..._pod_container_port_name``, and each pod label as
``__meta_kubernetes_pod_label_<name>`` with characters outside ``[a-zA-Z0-9_]`` replaced by ``_``.
"""

from __future__ import annotations

import re
from typing import Any


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_targets(pod: dict[str, Any], ip: str, node: str, phase: str = "Running") -> list[dict[str, str]]:
    out = []
    meta = pod["metadata"]
    base = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
            "__meta_kubernetes_pod_node_name": node, "__meta_kubernetes_pod_phase": phase,
            **{f"__meta_kubernetes_pod_label_{_sanitize(k)}": v for k, v in (meta.get("labels") or {}).items()}}
    for c in pod["spec"]["containers"]:
        for p in c.get("ports", []):
            out.append({**base, "__address__": f"{ip}:{p['containerPort']}",
                        "__meta_kubernetes_pod_container_port_name": p.get("name", ""),
                        "__meta_kubernetes_pod_container_name": c["name"]})
    return out


def relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """The target's labels after ``rules``, or None when a rule drops it."""
    lbls = dict(labels)
    for r in rules:
        action = r.get("action", "replace")
        regex = re.compile(f"^(?:{r.get('regex', '(.*)')})$")
        if action == "labeldrop":
            lbls = {k: v for k, v in lbls.items() if not regex.match(k)}
            continue
        value = r.get("separator", ";").join(lbls.get(s, "") for s in r.get("source_labels", []))
        m = regex.match(value)
        if action == "keep" and not m:
            return None
        if action == "drop" and m:
            return None
        if action == "replace" and m:
            target = r["target_label"]
            groups = (m.group(0), *m.groups())
            res = re.sub(r"\$\{?(\d+)\}?", lambda g, gs=groups: gs[int(g.group(1))] or "",  # type: ignore[misc]
                         r.get("replacement", "$1"))
            if res:
                lbls[target] = res
            else:
                lbls.pop(target, None)
    return lbls


def scrape_targets(job: dict[str, Any], targets: list[dict[str, str]]) -> list[dict[str, str]]:
    """What a job scrapes of ``targets``: those its discovery watches (``namespaces.names``), surviving label
    sets, ``__`` labels dropped, ``instance`` set."""
    watched = {n for sd in job.get("kubernetes_sd_configs", []) for n in (sd.get("namespaces") or {}).get("names", [])}
    out = []
    for t in targets:
        if watched and t.get("__meta_kubernetes_namespace") not in watched:
            continue
        lbls = relabel(t, job.get("relabel_configs", []))
        if lbls is None:
            continue
        final = {k: v for k, v in lbls.items() if not k.startswith("__")}
        final.setdefault("instance", lbls["__address__"])
        final["job"] = job["job_name"]
        out.append(final)
    return out
