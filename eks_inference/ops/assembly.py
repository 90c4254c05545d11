"""Read a synthesized cloud assembly (``cdk.out``) or the templates of the deployed stacks.

A cloud assembly is a directory with ``manifest.json``: its ``aws:cloudformation:stack`` artifacts name a
``templateFile`` each, and its ``cdk:asset-manifest`` artifacts list the file and image assets by content
hash. Only JSON is read; nothing here synthesizes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eks_inference.ops.errors import OpsError

STACK_SUFFIXES = ("Network", "Cluster", "Inference")
DEFAULT_BOOTSTRAP_PARAMETER = "/cdk-bootstrap/hnb659fds/version"


def stack_names(env_name: str) -> list[str]:
    """The stacks ``app_builder.build_app`` creates for one environment, in deploy order."""
    return [f"EksInference-{env_name}-{s}" for s in STACK_SUFFIXES]


@dataclass(frozen=True)
class Asset:
    """One asset of an assembly: an image built by ``cdk deploy`` or a file (Lambda code, layer) it uploads."""

    kind: str  # "image" or "file"
    name: str


@dataclass
class Assembly:
    """Templates by stack name, assets by content hash, and the bootstrap version the stacks need."""

    source: str
    templates: dict[str, dict[str, Any]]
    assets: dict[str, Asset] = field(default_factory=dict)
    required_bootstrap: int | None = None
    bootstrap_parameter: str = DEFAULT_BOOTSTRAP_PARAMETER


def load_assembly(path: Path) -> Assembly:
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise OpsError(f"{path}: not a cloud assembly (no manifest.json); synthesize one with `make synth ENV=NAME` "
                       "or `npx cdk synth -c env=NAME -o DIR`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise OpsError(f"{manifest_path}: not valid JSON ({e}); synthesize the assembly again") from None
    templates: dict[str, dict[str, Any]] = {}
    assets: dict[str, Asset] = {}
    required: list[int] = []
    parameter = DEFAULT_BOOTSTRAP_PARAMETER
    for name, art in sorted(manifest.get("artifacts", {}).items()):
        props = art.get("properties", {})
        parameter = props.get("bootstrapStackVersionSsmParameter", parameter)
        if isinstance(props.get("requiresBootstrapStackVersion"), int):
            required.append(props["requiresBootstrapStackVersion"])
        if art.get("type") == "aws:cloudformation:stack":
            tfile = path / props["templateFile"]
            try:
                templates[name] = json.loads(tfile.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise OpsError(f"{tfile}: cannot read the template ({e}); synthesize the assembly again") from None
            rule = bootstrap_version_from_rules(templates[name])
            if rule is not None:
                required.append(rule)
        elif art.get("type") == "cdk:asset-manifest":
            afile = path / props.get("file", "")
            if afile.is_file():
                assets.update(_assets(json.loads(afile.read_text())))
    if not templates:
        raise OpsError(f"{path}: the cloud assembly holds no stacks; synthesize the app first")
    return Assembly(source=str(path), templates=templates, assets=assets,
                    required_bootstrap=max(required) if required else None, bootstrap_parameter=parameter)


def _assets(doc: Mapping[str, Any]) -> dict[str, Asset]:
    out: dict[str, Asset] = {}
    for h, a in doc.get("dockerImages", {}).items():
        src = a.get("source", {})
        name = a.get("displayName") or src.get("dockerFile") or src.get("directory") or h[:12]
        out[h] = Asset("image", str(name))
    for h, a in doc.get("files", {}).items():
        src = a.get("source", {})
        name = a.get("displayName") or src.get("path") or h[:12]
        out[h] = Asset("file", str(name))
    return out


def bootstrap_version_from_rules(template: Mapping[str, Any]) -> int | None:
    """CDK's ``CheckBootstrapVersion`` rule rejects a list of versions; the stack needs one above the largest."""
    rule = template.get("Rules", {}).get("CheckBootstrapVersion", {})
    rejected: list[int] = []
    for assertion in rule.get("Assertions", []):
        for m in re.finditer(r'"Fn::Contains": \[\[([^\]]*)\]', json.dumps(assertion.get("Assert", {}))):
            rejected += [int(v) for v in re.findall(r'"(\d+)"', m.group(1))]
    return max(rejected) + 1 if rejected else None


def deployed_templates(names: Iterable[str], cloudformation: Any) -> dict[str, dict[str, Any] | None]:
    """``GetTemplate`` for each stack; ``None`` where the stack does not exist yet."""
    from botocore.exceptions import ClientError

    out: dict[str, dict[str, Any] | None] = {}
    for name in names:
        try:
            body = cloudformation.get_template(StackName=name, TemplateStage="Original")["TemplateBody"]
        except ClientError as e:
            msg = e.response.get("Error", {}).get("Message", "")
            if e.response.get("Error", {}).get("Code") == "ValidationError" and "does not exist" in msg:
                out[name] = None
                continue
            raise
        out[name] = body if isinstance(body, dict) else json.loads(body)
    return out
