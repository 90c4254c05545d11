"""Print what a synthesized cloud assembly (``cdk.out``) would deploy: stacks, node groups, add-ons.

Reads only the JSON that ``cdk synth`` wrote, so the summary shows what CloudFormation will receive.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StackSummary:
    name: str
    resources: int
    node_groups: list[dict[str, Any]] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)
    addons: list[dict[str, Any]] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)


def _literal(value: Any) -> Any:
    return value if isinstance(value, str | int | float | list) else "(resolved at deploy)"


def summarize(assembly_dir: Path) -> list[StackSummary]:
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    out: list[StackSummary] = []
    for name, art in sorted(manifest.get("artifacts", {}).items()):
        if art.get("type") != "aws:cloudformation:stack":
            continue
        template = json.loads((assembly_dir / art["properties"]["templateFile"]).read_text())
        resources = template.get("Resources", {})
        s = StackSummary(name=name, resources=len(resources))
        for res in resources.values():
            props = res.get("Properties", {})
            kind = res.get("Type")
            if kind == "AWS::EKS::Nodegroup":
                scaling = props.get("ScalingConfig", {})
                s.node_groups.append({
                    "processor": props.get("Labels", {}).get("eks-inference/processor", "?"),
                    "ami": props.get("AmiType"),
                    "instances": ", ".join(props.get("InstanceTypes", [])),
                    "size": f"{scaling.get('MinSize')}..{scaling.get('MaxSize')} "
                            f"(desired {scaling.get('DesiredSize')})",
                    "taints": ", ".join(f"{t['Key']}={t.get('Value', '')}:{t['Effect']}"
                                        for t in props.get("Taints", [])),
                })
            elif kind == "Custom::AWSCDK-EKS-HelmChart":
                s.charts.append({"chart": props.get("Chart"), "version": props.get("Version"),
                                 "namespace": props.get("Namespace"), "repository": _literal(props.get("Repository"))})
            elif kind == "AWS::EKS::Addon":
                s.addons.append({"addon": props.get("AddonName"), "version": props.get("AddonVersion")})
            elif kind == "Custom::AWSCDK-EKS-KubernetesResource":
                s.manifests.extend(_manifest_objects(props.get("Manifest")))
        out.append(s)
    return out


def _flatten(value: Any) -> str | None:
    """A CloudFormation string or ``Fn::Join`` of strings, with deploy-time tokens shown as ``${...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(p if isinstance(p, str) else "${" + next(iter(p), "token") + "}" for p in parts)
    return None


def _manifest_objects(manifest: Any) -> list[dict[str, Any]]:
    """Kubernetes objects of a manifest resource (tokens such as image URIs stay unresolved)."""
    manifest = _flatten(manifest)
    if manifest is None:
        return []
    try:
        docs = json.loads(manifest)
    except ValueError:
        return []
    objs = []
    for d in docs if isinstance(docs, list) else [docs]:
        if isinstance(d, dict):
            meta = d.get("metadata", {})
            objs.append({"kind": d.get("kind"), "name": meta.get("name"), "namespace": meta.get("namespace", ""),
                         "labels": meta.get("labels", {})})
    return objs


def render(summaries: list[StackSummary]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 150)
    stacks = Table(title="Stacks")
    for col in ("stack", "resources"):
        stacks.add_column(col)
    for s in summaries:
        stacks.add_row(s.name, str(s.resources))
    console.print(stacks)

    groups = Table(title="Node groups")
    for col in ("processor", "AMI type", "instance types", "nodes", "taints"):
        groups.add_column(col)
    for s in summaries:
        for g in s.node_groups:
            groups.add_row(g["processor"], g["ami"], g["instances"], g["size"], g["taints"] or "-")
    console.print(groups)

    addons = Table(title="Add-ons (pinned)")
    for col in ("add-on", "version", "namespace", "source"):
        addons.add_column(col)
    for s in summaries:
        for c in s.charts:
            addons.add_row(c["chart"], c["version"], c["namespace"], str(c["repository"]))
        for a in s.addons:
            addons.add_row(a["addon"], a["version"] or "(EKS default)", "kube-system", "EKS add-on")
    console.print(addons)

    objects = [o for s in summaries for o in s.manifests if o["kind"] in ("RayService", "Job")]
    if objects:
        k8s = Table(title="Serving and load tests")
        for col in ("kind", "name", "namespace", "processor"):
            k8s.add_column(col)
        for o in objects:
            k8s.add_row(o["kind"], o["name"], o["namespace"], o["labels"].get("eks-inference/processor", "-"))
        console.print(k8s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("assembly", nargs="?", default="cdk.out", help="cloud assembly directory (default cdk.out)")
    args = parser.parse_args(argv)
    path = Path(args.assembly)
    if not (path / "manifest.json").is_file():
        print(f"{path}: no manifest.json; run `cdk synth` first", file=sys.stderr)
        return 2
    render(summarize(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
