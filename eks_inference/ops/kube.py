"""Kubernetes objects inside ``Custom::AWSCDK-EKS-KubernetesResource`` and values of Helm chart resources.

CDK stores a chart's objects as one JSON string (``Manifest``) with deploy-time tokens spliced in, and a
RayService carries its Serve config as YAML inside that JSON (``spec.serveConfigV2``). Both are parsed
here so a diff compares fields, not escaped strings.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from eks_inference.ops.intrinsics import render

ObjectKey = tuple[str, str, str]  # kind, namespace, name


def parse_json_document(value: Any) -> Any | None:
    """A JSON string property (``Manifest``, ``Values``), tokens rendered; ``None`` when it does not parse."""
    text = render(value)
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def expand_embedded(obj: dict[str, Any]) -> dict[str, Any]:
    """Replace documents-in-strings with their parsed form (a RayService's ``serveConfigV2``)."""
    spec = obj.get("spec")
    if obj.get("kind") == "RayService" and isinstance(spec, dict) and isinstance(spec.get("serveConfigV2"), str):
        try:
            parsed = yaml.safe_load(spec["serveConfigV2"])
        except yaml.YAMLError:
            return obj
        return {**obj, "spec": {**spec, "serveConfigV2": parsed}}
    return obj


def manifest_objects(manifest: Any) -> dict[ObjectKey, dict[str, Any]] | None:
    """Objects of a manifest by (kind, namespace, name); ``None`` when the manifest is not a JSON list."""
    docs = parse_json_document(manifest)
    if not isinstance(docs, list):
        return None
    out: dict[ObjectKey, dict[str, Any]] = {}
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        meta = doc.get("metadata") or {}
        key = (str(doc.get("kind", "?")), str(meta.get("namespace", "")), str(meta.get("name", "?")))
        out[key] = expand_embedded(doc)
    return out


def object_label(key: ObjectKey) -> str:
    kind, ns, name = key
    return f"{kind} {ns}/{name}" if ns else f"{kind} {name}"
