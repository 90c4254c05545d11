"""The Kubernetes objects in a synthesized Inference stack, as the kubectl handler will apply them."""

from __future__ import annotations

from typing import Any

from tests.conftest import Assembly
from tests.system.cfn import MANIFEST_TYPE, manifest_objects


def manifests(asm: Assembly) -> dict[str, list[dict[str, Any]]]:
    """Objects per KubernetesManifest resource (logical id) of the Inference stack."""
    t = asm.template("-Inference")
    return {rid: manifest_objects(r) for rid, r in t["Resources"].items() if r["Type"] == MANIFEST_TYPE}


def objects(asm: Assembly, kind: str | None = None) -> list[dict[str, Any]]:
    return [o for objs in manifests(asm).values() for o in objs if kind is None or o["kind"] == kind]
