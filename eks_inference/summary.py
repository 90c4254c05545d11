"""Print what a synthesized cloud assembly (``cdk.out``) would deploy, as a reviewer reads it.

Reads only the JSON that ``cdk synth`` wrote (manifest, templates, asset manifests), so the summary shows what
CloudFormation will receive rather than what the config meant: account and region, the zones and NAT gateways,
who reaches the Kubernetes API, the model bucket, the images, the node groups, the add-ons, and every
RayService with its replicas and batch settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eks_inference.serving.serve_config import INDEX_APP_NAME

STACK = "aws:cloudformation:stack"


@dataclass
class RayServiceSummary:
    """One RayService. ``deployments`` are those of its model applications, each tagged with its application and
    the replica's own request limit (``replica_limit``: above it the replica answers 503 itself; Serve's
    ``max_ongoing_requests``/``max_queued_requests`` sit above it as a backstop). ``applications`` names every
    Serve application, the route index (``_index``, no replicas to size) included."""

    name: str
    namespace: str
    processor: str
    workers: int
    min_workers: int
    max_workers: int
    worker_requests: dict[str, Any]
    deployments: list[dict[str, Any]] = field(default_factory=list)
    applications: list[str] = field(default_factory=list)


@dataclass
class AssemblySummary:
    """The facts of one environment's synthesized stacks that a reviewer checks before ``cdk deploy``."""

    environment: str = "?"
    account: str = "?"
    region: str = "?"
    stacks: dict[str, int] = field(default_factory=dict)
    vpc_cidr: str = "?"
    zones: list[str] = field(default_factory=list)
    nat_gateways: int = 0
    s3_gateway_endpoint: bool = False
    flow_log_retention_days: int | None = None
    kubernetes_version: str = "?"
    endpoint_public: bool = False
    endpoint_private: bool = False
    public_access_cidrs: list[str] = field(default_factory=list)
    secrets_encrypted: bool = False
    control_plane_logs: list[str] = field(default_factory=list)
    buckets: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    node_groups: list[dict[str, Any]] = field(default_factory=list)
    addons: list[dict[str, Any]] = field(default_factory=list)
    ray_services: list[RayServiceSummary] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    """The load-test Jobs of a run."""
    compile_jobs: list[str] = field(default_factory=list)
    """One per model × processor: they compile what the replicas load."""


def _flatten(value: Any) -> str | None:
    """A CloudFormation string, ``Fn::Join`` or ``Fn::Sub``, with deploy-time tokens shown as ``${...}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(p if isinstance(p, str) else "${" + next(iter(p), "token") + "}" for p in parts)
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        return value["Fn::Sub"]
    return None


def _manifest_objects(manifest: Any) -> list[dict[str, Any]]:
    """Kubernetes objects of a manifest resource (tokens such as image URIs stay unresolved)."""
    text = _flatten(manifest)
    if text is None:
        return []
    try:
        docs = json.loads(text)
    except ValueError:
        return []
    return [d for d in (docs if isinstance(docs, list) else [docs]) if isinstance(d, dict)]


def _ray_service(obj: dict[str, Any]) -> RayServiceSummary:
    meta, spec = obj.get("metadata", {}), obj.get("spec", {})
    worker = (spec.get("rayClusterConfig", {}).get("workerGroupSpecs") or [{}])[0]
    container = (worker.get("template", {}).get("spec", {}).get("containers") or [{}])[0]
    try:
        serve = yaml.safe_load(spec.get("serveConfigV2") or "{}") or {}
    except yaml.YAMLError:
        serve = {}
    apps = serve.get("applications") or []
    deployments = [dict(d, application=app.get("name"),
                        replica_limit=(app.get("args") or {}).get("max_requests_per_replica"))
                   for app in apps if app.get("name") != INDEX_APP_NAME for d in app.get("deployments", [])]
    return RayServiceSummary(
        name=meta.get("name", "?"), namespace=meta.get("namespace", ""),
        processor=meta.get("labels", {}).get("eks-inference/processor", "-"),
        workers=worker.get("replicas", 0), min_workers=worker.get("minReplicas", 0),
        max_workers=worker.get("maxReplicas", 0),
        worker_requests=container.get("resources", {}).get("requests", {}), deployments=deployments,
        applications=[str(a.get("name", "?")) for a in apps],
    )


def _bucket(logical_id: str, props: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    rules = props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [{}])
    algorithm = rules[0].get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm", "none") if rules else "none"
    named_by = [name for name, out in outputs.items() if f'"Ref": "{logical_id}"' in json.dumps(out.get("Value"))]
    return {
        "id": logical_id,
        "name": props.get("BucketName") or "named at deploy",
        "output": ", ".join(named_by) or "-",
        "encryption": {"aws:kms": "KMS", "AES256": "S3-managed"}.get(algorithm, algorithm),
        "versioned": props.get("VersioningConfiguration", {}).get("Status") == "Enabled",
    }


def _images(stack_name: str, template: dict[str, Any], assembly_dir: Path) -> list[dict[str, Any]]:
    """Image outputs (``GravitonImageUri`` ...), each with the Dockerfile and platform it is built from."""
    assets_file = assembly_dir / f"{stack_name}.assets.json"
    docker = json.loads(assets_file.read_text()).get("dockerImages", {}) if assets_file.is_file() else {}
    images = []
    for name, out in sorted(template.get("Outputs", {}).items()):
        if not name.endswith("ImageUri"):
            continue
        uri = _flatten(out.get("Value")) or "?"
        source = next((a["source"] for h, a in docker.items() if h in uri), None)
        images.append({
            "image": name[: -len("ImageUri")].lower(),
            "uri": _short_uri(uri.replace("${AWS::URLSuffix}", "amazonaws.com")),
            "built_from": f"{source.get('dockerFile', '?')} ({source.get('platform', 'default platform')})"
                          if source else "given in image_uris (not built)",
        })
    return images


def _short_uri(uri: str) -> str:
    """Content-hash tags are 64 hex digits; 12 tell images apart in a summary."""
    repo, sep, tag = uri.rpartition(":")
    return f"{repo}:{tag[:12]}…" if sep and len(tag) == 64 else uri


def summarize(assembly_dir: Path) -> AssemblySummary:
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    s = AssemblySummary()
    for name, art in sorted(manifest.get("artifacts", {}).items()):
        if art.get("type") != STACK:
            continue
        env = art.get("environment", "")
        if env.startswith("aws://"):
            s.account, s.region = env[len("aws://"):].split("/", 1)
        parts = name.split("-")
        if len(parts) >= 3:
            s.environment = "-".join(parts[1:-1])
        template = json.loads((assembly_dir / art["properties"]["templateFile"]).read_text())
        resources = template.get("Resources", {})
        s.stacks[name] = len(resources)
        outputs = template.get("Outputs", {})
        s.images.extend(_images(name, template, assembly_dir))
        for logical_id, res in resources.items():
            _add_resource(s, logical_id, res.get("Type", ""), res.get("Properties", {}), outputs, resources)
    s.zones = sorted(set(s.zones))
    return s


def _add_resource(s: AssemblySummary, logical_id: str, kind: str, props: dict[str, Any],
                  outputs: dict[str, Any], resources: dict[str, Any]) -> None:
    if kind == "AWS::EC2::VPC":
        s.vpc_cidr = props.get("CidrBlock", "?")
    elif kind == "AWS::EC2::Subnet" and isinstance(props.get("AvailabilityZone"), str):
        s.zones.append(props["AvailabilityZone"])
    elif kind == "AWS::EC2::NatGateway":
        s.nat_gateways += 1
    elif kind == "AWS::EC2::VPCEndpoint" and ".s3" in json.dumps(props.get("ServiceName")):
        s.s3_gateway_endpoint = True
    elif kind == "AWS::EC2::FlowLog":
        group = resources.get(props.get("LogGroupName", {}).get("Ref", ""), {})
        s.flow_log_retention_days = group.get("Properties", {}).get("RetentionInDays")
    elif kind == "AWS::EKS::Cluster":
        vpc = props.get("ResourcesVpcConfig", {})
        s.kubernetes_version = props.get("Version", "?")
        s.endpoint_public = bool(vpc.get("EndpointPublicAccess", True))
        s.endpoint_private = bool(vpc.get("EndpointPrivateAccess", False))
        s.public_access_cidrs = list(vpc.get("PublicAccessCidrs", []))
        s.secrets_encrypted = any("secrets" in e.get("Resources", []) for e in props.get("EncryptionConfig", []))
        s.control_plane_logs = [t["Type"] for t in props.get("Logging", {}).get("ClusterLogging", {})
                                .get("EnabledTypes", [])]
    elif kind == "AWS::S3::Bucket":
        s.buckets.append(_bucket(logical_id, props, outputs))
    elif kind == "AWS::EKS::Nodegroup":
        scaling = dict(props.get("ScalingConfig", {}))
        desired = scaling.get("DesiredSize")
        if isinstance(desired, dict) and "Fn::GetAtt" in desired:  # a NodeCount: the running count once deployed
            count = resources.get(desired["Fn::GetAtt"][0], {}).get("Properties", {})
            scaling["DesiredSize"] = count.get("InitialSize", "?")
        s.node_groups.append({
            "processor": props.get("Labels", {}).get("eks-inference/processor", "?"),
            "ami": props.get("AmiType"), "capacity": props.get("CapacityType", "ON_DEMAND"),
            "instances": ", ".join(props.get("InstanceTypes", [])),
            "size": f"{scaling.get('MinSize')}..{scaling.get('MaxSize')} (desired {scaling.get('DesiredSize')})",
            "taints": ", ".join(f"{t['Key']}={t.get('Value', '')}:{t['Effect']}" for t in props.get("Taints", [])),
        })
    elif kind == "Custom::AWSCDK-EKS-HelmChart":
        repo = props.get("Repository")
        s.addons.append({"addon": props.get("Chart"), "version": props.get("Version"),
                         "namespace": props.get("Namespace"),
                         "source": repo if isinstance(repo, str) else "(chart asset)"})
    elif kind == "AWS::EKS::Addon":
        s.addons.append({"addon": props.get("AddonName"), "version": props.get("AddonVersion") or "(EKS default)",
                         "namespace": "kube-system", "source": "EKS add-on"})
    elif kind == "Custom::AWSCDK-EKS-KubernetesResource":
        for obj in _manifest_objects(props.get("Manifest")):
            if obj.get("kind") == "RayService":
                s.ray_services.append(_ray_service(obj))
            elif obj.get("kind") == "Job":
                meta = obj.get("metadata", {})
                role = meta.get("labels", {}).get("eks-inference/role")
                if role in ("compile", "loadtest"):  # not the GCS token sync, which measures nothing
                    (s.compile_jobs if role == "compile" else s.jobs).append(meta.get("name", "?"))


def _api_access(s: AssemblySummary) -> str:
    if s.endpoint_public and s.endpoint_private:
        return f"public from {', '.join(s.public_access_cidrs) or 'anywhere (!)'}, and private"
    return "private only (from the VPC)" if s.endpoint_private else "public only"


def render(s: AssemblySummary) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("Environment", f"{s.environment} · account {s.account} · region {s.region} · resources per stack: "
                 + ", ".join(f"{n.rsplit('-', 1)[-1]} {r}" for n, r in s.stacks.items()))
    head.add_row("Network", f"VPC {s.vpc_cidr} over {', '.join(s.zones) or '?'} · {s.nat_gateways} NAT gateway"
                 f"{'s' if s.nat_gateways != 1 else ''}"
                 + (" · S3 gateway endpoint" if s.s3_gateway_endpoint else "")
                 + (f" · flow logs kept {s.flow_log_retention_days} d" if s.flow_log_retention_days else ""))
    head.add_row("Cluster", f"EKS {s.kubernetes_version} · API endpoint {_api_access(s)} · secrets "
                 f"{'KMS-encrypted' if s.secrets_encrypted else 'NOT encrypted'} · control-plane logs: "
                 f"{', '.join(s.control_plane_logs) or 'none'}")
    for b in s.buckets:
        head.add_row("Bucket", f"{b['id']}: {b['name']}"
                     + (f" (stack output {b['output']})" if b["output"] != "-" else "")
                     + f" · {b['encryption']}" + (" · versioned" if b["versioned"] else ""))
    for im in s.images:
        head.add_row("Image", f"{im['image']}: {im['built_from']} → {im['uri']}")
    console.print(head)

    def table(title: str, *cols: str) -> Table:
        t = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False)
        for c in cols:
            t.add_column(c, overflow="fold")
        return t

    groups = table("Node groups", "processor", "instance types", "capacity", "nodes min..max", "AMI type", "taints")
    for g in s.node_groups:
        groups.add_row(g["processor"], g["instances"], g["capacity"], g["size"], g["ami"], g["taints"] or "-")
    console.print(groups)

    addons = table("Add-ons (pinned)", "add-on", "version", "namespace", "source")
    for a in s.addons:
        addons.add_row(a["addon"], a["version"], a["namespace"], a["source"])
    console.print(addons)

    if s.ray_services:
        serving = table("RayServices (one Serve replica per worker pod)", "name", "replicas", "worker pods min..max",
                        "worker pod requests", "batch max / wait / seq", "threads", "dtype",
                        "replica · Serve limits")
        for r in s.ray_services:
            req = ", ".join(f"{v} {k.rsplit('/', 1)[-1]}" for k, v in r.worker_requests.items())
            for d in r.deployments or [{}]:
                uc = d.get("user_config", {})
                wait = uc.get("batch_wait_timeout_s")
                scaling = d.get("autoscaling_config") or {}
                replicas = (f"{scaling.get('min_replicas', '?')}..{scaling.get('max_replicas', '?')}" if scaling
                            else str(d.get("num_replicas", "?")))
                serving.add_row(
                    r.name, replicas,
                    f"{r.min_workers}..{r.max_workers} (now {r.workers})", req,
                    f"{uc.get('max_batch_size', '?')} / {wait * 1000:g} ms / {uc.get('max_seq_length', '?')}"
                    if isinstance(wait, int | float) else "?",
                    str(uc.get("num_threads", "?")), str(uc.get("dtype", "?")),
                    f"{d.get('replica_limit') or '?'} · {d.get('max_ongoing_requests', '?')} / "
                    f"{d.get('max_queued_requests', '?')}")
        console.print(serving)
    if s.compile_jobs:
        console.print(f"[bold]Compile Jobs[/bold]  {', '.join(s.compile_jobs)}")
    if s.jobs:
        console.print(f"[bold]Load-test Jobs[/bold]  {', '.join(s.jobs)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
