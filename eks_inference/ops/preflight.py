"""``eks-inference preflight``: read-only checks of the target account and region before a first deploy.

A first ``cdk deploy`` fails late, after the VPC and the cluster (~15 minutes), on facts that read in
seconds: the wrong account, no CDK bootstrap, an Inf vCPU quota of 0, an instance type a zone does not
offer, an add-on version EKS does not offer for the cluster's Kubernetes version, a stack stuck in
ROLLBACK_COMPLETE, or no Docker to build the arm64 image. Every AWS call here is a read (Get, Describe,
List); the endpoint follows ``AWS_ENDPOINT_URL`` like any boto3 client.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from eks_inference.config import (
    KUBERNETES_VERSION,
    CapacityType,
    NodeGroupSpec,
    PlatformConfig,
    Processor,
    instance_family,
    unpinned_neuron_groups,
)
from eks_inference.k8s.load_test_nodes import load_test_node_group
from eks_inference.ops.assembly import DEFAULT_BOOTSTRAP_PARAMETER, Assembly, stack_names
from eks_inference.ops.neuron_artifacts import deployed_repository, missing_artifacts, neuron_models
from eks_inference.tables.neuron import NEURON_AMI_RELEASE, NEURON_AMIS, NEURON_SDK, driver_gap

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
TOOLKIT_STACK = "CDKToolkit"


@dataclass(frozen=True)
class Check:
    """One row of the report; a ``fail`` blocks the deploy, a ``warn`` does not."""

    check: str
    status: str
    found: str
    fix: str = ""


@dataclass(frozen=True)
class Quota:
    code: str
    name: str


# EC2 vCPU quotas per instance class (Service Quotas, service code ec2), On-Demand and Spot.
QUOTAS: dict[str, dict[CapacityType, Quota]] = {
    "standard": {
        CapacityType.ON_DEMAND: Quota("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
        CapacityType.SPOT: Quota("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
    },
    "g": {
        CapacityType.ON_DEMAND: Quota("L-DB2E81BA", "Running On-Demand G and VT instances"),
        CapacityType.SPOT: Quota("L-3819A6DF", "All G and VT Spot Instance Requests"),
    },
    "inf": {
        CapacityType.ON_DEMAND: Quota("L-1945791B", "Running On-Demand Inf instances"),
        CapacityType.SPOT: Quota("L-B5D1601B", "All Inf Spot Instance Requests"),
    },
    "p": {
        CapacityType.ON_DEMAND: Quota("L-417A185B", "Running On-Demand P instances"),
        CapacityType.SPOT: Quota("L-7212CCBC", "All P Spot Instance Requests"),
    },
}


def quota_class(family: str) -> str | None:
    """``inf2`` → inf, ``g5``/``vt1`` → g, ``p4d`` → p, ``c7g``/``m7i`` → standard (A, C, D, H, I, M, R, T, Z)."""
    if family.startswith("inf"):
        return "inf"
    if re.match(r"^(g\d|vt\d)", family):
        return "g"
    if re.match(r"^p\d", family):
        return "p"
    if family[0] in "acdhimrtz":
        return "standard"
    return None


@dataclass
class Context:
    """What the checks compare the account against."""

    config: PlatformConfig
    assembly: Assembly | None
    zones: list[str] | None
    problems: list[str] = field(default_factory=list)  # why the assembly or zones are missing

    @property
    def kubernetes_version(self) -> str:
        for template in self._templates():
            for res in template.get("Resources", {}).values():
                if res.get("Type") == "AWS::EKS::Cluster" and isinstance(res["Properties"].get("Version"), str):
                    return str(res["Properties"]["Version"])
        return KUBERNETES_VERSION

    def addons(self) -> list[tuple[str, str]]:
        """Pinned EKS add-ons: from the synthesized templates when there are some, else from the config (the
        add-ons :class:`~eks_inference.constructs.inference_cluster.InferenceCluster` installs, and the log agent
        the cluster stack adds)."""
        found = [(str(r["Properties"]["AddonName"]), str(r["Properties"].get("AddonVersion", "")))
                 for t in self._templates() for r in t.get("Resources", {}).values()
                 if r.get("Type") == "AWS::EKS::Addon"]
        return found or [("amazon-cloudwatch-observability", self.config.addons.cloudwatch_observability),
                         ("eks-pod-identity-agent", self.config.addons.pod_identity_agent),
                         ("vpc-cni", self.config.addons.vpc_cni)]

    def cluster_name(self) -> str | None:
        for t in self._templates():
            for r in t.get("Resources", {}).values():
                if r.get("Type") == "AWS::EKS::Cluster" and isinstance(r["Properties"].get("Name"), str):
                    return str(r["Properties"]["Name"])
        return None

    def images_to_build(self) -> dict[str, str]:
        """Image name → Docker platform, for every image ``cdk deploy`` builds (no ``image_uris`` entry).

        One image per processor that serves a model, for its nodes' architecture, and the load-test image
        (amd64) only while a run is configured: without ``loadtest.run_id`` the app has no load-test image.
        """
        wanted = {p for m in self.config.models for p in m.processors}
        names = {p.value: f"linux/{p.architecture}" for p in wanted}
        if self.config.loadtest.run_id:
            names["loadtest"] = "linux/amd64"
        return {n: plat for n, plat in sorted(names.items()) if n not in self.config.image_uris}

    def _templates(self) -> list[dict[str, Any]]:
        return list(self.assembly.templates.values()) if self.assembly else []


class Clients:
    """boto3 clients for the config's region, created on first use; tests hand in stubbed ones by name."""

    def __init__(self, region: str, overrides: Mapping[str, Any] | None = None) -> None:
        import boto3

        self._session = boto3.session.Session(region_name=region)
        self._clients: dict[str, Any] = dict(overrides or {})

    def __call__(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service)
        return self._clients[service]


def _short(text: str, limit: int = 120) -> str:
    """One line of an error: HTML bodies of proxies and emulators reduced to their text, then cut."""
    text = " ".join(re.sub(r"<[^>]+>", " ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error(e: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        return _short(f"{err.get('Code', 'Error')}: {err.get('Message', '')}".strip())
    return _short(f"{type(e).__name__}: {e}")


def check_credentials(ctx: Context, aws: Clients) -> Check:
    ident = aws("sts").get_caller_identity()
    account, arn = ident["Account"], ident.get("Arn", "")
    if account != ctx.config.account:
        return Check("credentials", FAIL, f"account {account} ({arn}); environment {ctx.config.env_name!r} "
                     f"deploys to {ctx.config.account}",
                     f"use credentials for account {ctx.config.account} (AWS_PROFILE), or set 'account' of "
                     f"{ctx.config.env_name!r} in cdk.json")
    return Check("credentials", PASS, f"account {account} ({arn}), region {ctx.config.region}")


def check_bootstrap(ctx: Context, aws: Clients) -> Check:
    from botocore.exceptions import ClientError

    fix = f"npx cdk bootstrap aws://{ctx.config.account}/{ctx.config.region}"
    parameter = ctx.assembly.bootstrap_parameter if ctx.assembly else DEFAULT_BOOTSTRAP_PARAMETER
    try:
        version = int(aws("ssm").get_parameter(Name=parameter)["Parameter"]["Value"])
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ParameterNotFound":
            return Check("cdk bootstrap", WARN, f"cannot read {parameter}: {_error(e)}",
                         "grant ssm:GetParameter, or check the CDKToolkit stack by hand")
        version = None
    try:
        stacks = aws("cloudformation").describe_stacks(StackName=TOOLKIT_STACK)["Stacks"]
        toolkit = stacks[0]["StackStatus"] if stacks else None
    except ClientError as e:
        if "does not exist" not in str(e):
            return Check("cdk bootstrap", WARN, f"cannot read stack {TOOLKIT_STACK}: {_error(e)}",
                         "grant cloudformation:DescribeStacks")
        toolkit = None
    if version is None or toolkit is None:
        missing = " and ".join(x for x, gone in ((f"SSM parameter {parameter}", version is None),
                                                (f"stack {TOOLKIT_STACK}", toolkit is None)) if gone)
        return Check("cdk bootstrap", FAIL, f"not bootstrapped: no {missing}", fix)
    if toolkit.endswith(("_FAILED", "ROLLBACK_COMPLETE")) and not toolkit.startswith("UPDATE_ROLLBACK_COMPLETE"):
        return Check("cdk bootstrap", FAIL, f"stack {TOOLKIT_STACK} is {toolkit}", fix)
    need = ctx.assembly.required_bootstrap if ctx.assembly else None
    if need is None:
        return Check("cdk bootstrap", WARN, f"version {version}; the version the templates need is unknown "
                     f"({'; '.join(ctx.problems) or 'no cloud assembly'})",
                     f"run `make synth ENV={ctx.config.env_name}` and preflight again")
    if version < need:
        return Check("cdk bootstrap", FAIL, f"version {version}, the templates need {need}",
                     f"{fix} (with the CDK CLI of this project) to upgrade the bootstrap stack")
    return Check("cdk bootstrap", PASS, f"version {version} (templates need {need}), stack {TOOLKIT_STACK} {toolkit}")


def _groups(config: PlatformConfig) -> list[NodeGroupSpec]:
    """Every node group the stacks create: the configured ones and the load-test clients' (zero nodes between runs,
    but a run needs its quota and its instance type in every zone)."""
    targets = sum(len(m.processors) for m in config.models)
    return [*config.enabled_node_groups, load_test_node_group(config.loadtest, targets)]


def _vcpus(ctx: Context, aws: Clients) -> dict[str, int]:
    types = sorted({t for g in _groups(ctx.config) for t in g.instance_types})
    found = aws("ec2").describe_instance_types(InstanceTypes=types)["InstanceTypes"]
    return {t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"]) for t in found}


def check_quotas(ctx: Context, aws: Clients) -> list[Check]:
    """The vCPUs every node group reaches at ``max_size`` (largest instance type), against the account's quota."""
    from botocore.exceptions import ClientError

    try:
        vcpus = _vcpus(ctx, aws)
    except ClientError as e:
        return [Check("vCPU quotas", FAIL, f"cannot describe the instance types: {_error(e)}",
                      "check the instance types in cdk.json exist in this region")]
    need: dict[tuple[str, CapacityType], list[tuple[str, int]]] = {}
    for g in _groups(ctx.config):
        cls = quota_class(instance_family(g.instance_types[0]))
        if cls is None:
            continue
        per_node = max(vcpus.get(t, 0) for t in g.instance_types)
        need.setdefault((cls, g.capacity_type), []).append((f"{g.name} {g.max_size}×{per_node}", g.max_size * per_node))
    out: list[Check] = []
    sq = aws("service-quotas")
    for (cls, capacity), groups in sorted(need.items(), key=lambda kv: (kv[0][0], kv[0][1].value)):
        quota = QUOTAS[cls][capacity]
        total = sum(n for _, n in groups)
        detail = f"need {total} vCPUs ({', '.join(label for label, _ in groups)})"
        name = f"quota {quota.code}"
        try:
            try:
                value = sq.get_service_quota(ServiceCode="ec2", QuotaCode=quota.code)["Quota"]["Value"]
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "NoSuchResourceException":
                    raise
                value = sq.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=quota.code)["Quota"]["Value"]
        except ClientError as e:
            out.append(Check(name, WARN, f"{quota.name}: cannot read ({_error(e)}); {detail}",
                             "grant servicequotas:GetServiceQuota, or compare in Service Quotas → EC2 by hand"))
            continue
        if value < total:
            out.append(Check(name, FAIL, f"{quota.name}: {value:g} vCPUs; {detail}",
                             f"request {total} in Service Quotas → Amazon EC2 → \"{quota.name}\" "
                             f"({ctx.config.region}), or lower max_size"))
        else:
            out.append(Check(name, PASS, f"{quota.name}: {value:g} vCPUs; {detail}"))
    return out


def check_offerings(ctx: Context, aws: Clients) -> Check:
    zones = ctx.zones
    ec2 = aws("ec2")
    if zones is None:
        listed = ec2.describe_availability_zones(Filters=[{"Name": "zone-type", "Values": ["availability-zone"]},
                                                          {"Name": "state", "Values": ["available"]}])
        zones = sorted(z["ZoneName"] for z in listed["AvailabilityZones"])[: ctx.config.max_azs]
    types = sorted({t for g in _groups(ctx.config) for t in g.instance_types})
    offered: set[tuple[str, str]] = set()
    paginator = ec2.get_paginator("describe_instance_type_offerings")
    for page in paginator.paginate(LocationType="availability-zone",
                                   Filters=[{"Name": "instance-type", "Values": types},
                                            {"Name": "location", "Values": zones}]):
        offered |= {(o["InstanceType"], o["Location"]) for o in page["InstanceTypeOfferings"]}
    missing = [(t, z) for t in types for z in zones if (t, z) not in offered]
    where = ", ".join(zones)
    if missing:
        gaps = "; ".join(f"{t} not in {z}" for t, z in missing)
        return Check("instance offerings", FAIL, f"{gaps} (zones {where})",
                     "pick instance types offered in every zone, or other zones: the first max_azs zones of the "
                     "availability-zones lookup in cdk.context.json")
    return Check("instance offerings", PASS, f"{', '.join(types)} offered in {where}")


def check_addons(ctx: Context, aws: Clients) -> list[Check]:
    from botocore.exceptions import ClientError

    k8s = ctx.kubernetes_version
    out: list[Check] = []
    for name, pinned in ctx.addons():
        label = f"add-on {name}"
        try:
            addons = aws("eks").describe_addon_versions(addonName=name, kubernetesVersion=k8s)["addons"]
        except ClientError as e:
            out.append(Check(label, WARN, f"cannot list versions for Kubernetes {k8s}: {_error(e)}",
                             "grant eks:DescribeAddonVersions, or run `aws eks describe-addon-versions` by hand"))
            continue
        offered = [v["addonVersion"] for a in addons if a.get("addonName") == name for v in a.get("addonVersions", [])]
        if pinned in offered:
            out.append(Check(label, PASS, f"{pinned} offered for Kubernetes {k8s}"))
        else:
            choice = f"one of {', '.join(offered[:3])}" if offered else "another Kubernetes version"
            out.append(Check(label, FAIL, f"{pinned} is not offered for Kubernetes {k8s}"
                             + (f" (offered: {', '.join(offered[:5])})" if offered else " (none offered)"),
                             f"pin {choice} under addons in cdk.json"))
    return out


_STUCK = {"ROLLBACK_COMPLETE": "delete the stack (it cannot be updated), then deploy",
          "ROLLBACK_FAILED": "delete the stack, then deploy",
          "UPDATE_ROLLBACK_FAILED": "run `aws cloudformation continue-update-rollback`, then deploy",
          "DELETE_FAILED": "delete the stack again (retain what blocks it), then deploy"}


def check_stacks(ctx: Context, aws: Clients) -> list[Check]:
    """The three stacks: absent (created), healthy (updated), or stuck in a state a deploy cannot leave."""
    from botocore.exceptions import ClientError

    cfn = aws("cloudformation")
    out: list[Check] = []
    existing: dict[str, str] = {}
    for name in stack_names(ctx.config.env_name):
        try:
            existing[name] = cfn.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"]
        except ClientError as e:
            if "does not exist" not in str(e):
                out.append(Check(f"stack {name}", WARN, f"cannot read: {_error(e)}",
                                 "grant cloudformation:DescribeStacks"))
    for name, status in existing.items():
        if status in _STUCK:
            out.append(Check(f"stack {name}", FAIL, status, _STUCK[status]))
        elif status.endswith("_IN_PROGRESS"):
            out.append(Check(f"stack {name}", FAIL, status, "wait for the operation in progress to finish"))
    cluster_stack = stack_names(ctx.config.env_name)[1]
    cluster = ctx.cluster_name()
    if cluster is None:
        found = "name generated by CloudFormation" + (f"; stack {cluster_stack} exists ({existing[cluster_stack]})"
                                                     if cluster_stack in existing else "")
        out.append(Check("EKS cluster name", PASS, found))
        return out
    try:
        aws("eks").describe_cluster(name=cluster)
        taken = True
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            out.append(Check("EKS cluster name", WARN, f"cannot read cluster {cluster}: {_error(e)}",
                             "grant eks:DescribeCluster"))
            return out
        taken = False
    if taken and cluster_stack not in existing:
        out.append(Check("EKS cluster name", FAIL, f"a cluster named {cluster} exists outside stack {cluster_stack}",
                         "choose another cluster name, or delete or import the existing cluster"))
    else:
        owner = f"managed by {cluster_stack}" if taken else "free"
        out.append(Check("EKS cluster name", PASS, f"{cluster}: {owner}"))
    return out


def check_neuron_ami(ctx: Context, aws: Clients | None = None) -> list[Check]:
    """Each inf2 group's AMI release: pinned (outside dev the config already refuses it unpinned), recorded in
    ``eks_inference/tables/neuron.py``, and with a Neuron driver no older than the pinned SDK's."""
    out: list[Check] = []
    for g in unpinned_neuron_groups(ctx.config.node_groups):
        out.append(Check(f"AMI release {g.name}", WARN, "not pinned: EKS picks the Neuron AMI, and with it the "
                         "Neuron driver, on the day the group is created",
                         f'add "ami_release_version": "{NEURON_AMI_RELEASE}" to the group in cdk.json'))
    for g in ctx.config.enabled_node_groups:
        release = g.ami_release_version
        if g.processor is not Processor.INFERENTIA or release is None:
            continue
        ami = NEURON_AMIS.get(release)
        if ami is None:
            out.append(Check(f"AMI release {g.name}", WARN, f"{release}: its Neuron driver is not recorded next to "
                             f"Neuron SDK {NEURON_SDK.version}",
                             "add the release and its aws-neuronx-dkms version (amazon-eks-ami CHANGELOG.md) to "
                             "NEURON_AMIS in eks_inference/tables/neuron.py"))
            continue
        gap = driver_gap(ami)
        if gap:
            out.append(Check(f"AMI release {g.name}", FAIL, gap,
                             "pin a newer AMI release, or an SDK whose driver it ships"))
        else:
            out.append(Check(f"AMI release {g.name}", PASS, f"{release}: Neuron driver {ami.driver} for Neuron SDK "
                             f"{NEURON_SDK.version} (released with driver {NEURON_SDK.driver})"))
    return out


def repository_uri(ctx: Context, aws: Clients) -> str | None:
    """The deployed Inference stack's ``ModelRepositoryUri``; None when that stack does not exist."""
    return deployed_repository(aws("cloudformation"), ctx.config.env_name)


def check_neuron_artifacts(ctx: Context, aws: Clients) -> list[Check]:
    """A deploy that updates a running environment needs the pinned SDK's compiled artifact for every model an inf2
    group serves already published: one failing row per model without one. A first deploy needs none (the compile
    Jobs write them before any replica can serve)."""
    from eks_inference.storage import S3Store

    models = neuron_models(ctx.config)
    if not models:
        return []
    label = "neuron artifacts"
    uri = repository_uri(ctx, aws)
    if uri is None:
        return [Check(label, PASS, f"first deploy (no stack {stack_names(ctx.config.env_name)[-1]}): the compile "
                      f"Jobs compile for Neuron SDK {NEURON_SDK.version} before any replica serves")]
    if not uri.startswith("s3://"):
        return [Check(label, WARN, f"stack {stack_names(ctx.config.env_name)[-1]} has no ModelRepositoryUri output",
                      "deploy once with this version of the app, or check the artifacts by hand")]
    missing = missing_artifacts(ctx.config, uri, store=S3Store(uri, client=aws("s3")))
    if not missing:
        return [Check(label, PASS, f"{uri}: {', '.join(m.name for m in models)} compiled by neuronx-cc "
                      f"{NEURON_SDK.neuronx_cc} (Neuron SDK {NEURON_SDK.version})")]
    return [Check(f"{label} {m.model}", FAIL, m.line(), m.command) for m in missing]


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)


def parse_buildx_platforms(inspect_output: str) -> set[str]:
    """Platforms from ``docker buildx inspect`` (``Platforms: linux/amd64*, linux/arm64``); variants folded."""
    found: set[str] = set()
    for line in inspect_output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Platforms":
            for p in value.split(","):
                p = p.strip().rstrip("*").strip()
                if p:
                    found.add("/".join(p.split("/")[:2]))
    return found


def check_docker(ctx: Context, run: Runner = _run, which: Callable[[str], str | None] = shutil.which) -> Check:
    """Docker with buildx and every platform the images need; only a warning when no image is built here."""
    need = ctx.images_to_build()
    severity = FAIL if need else WARN
    why = (f"images built by cdk deploy: {', '.join(f'{n} ({p})' for n, p in need.items())}" if need
           else "image_uris cover every image, so cdk deploy builds none")
    if which("docker") is None:
        return Check("docker buildx", severity, f"docker not found; {why}",
                     "install Docker with the buildx plugin" + ("" if need else ", or keep using image_uris"))
    version = run(["docker", "buildx", "version"])
    if version.returncode != 0:
        return Check("docker buildx", severity, f"buildx missing ({_short(version.stderr or version.stdout, 60)}); "
                     f"{why}", "install the buildx plugin (Debian: apt-get install docker-buildx)")
    inspect = run(["docker", "buildx", "inspect"])
    if inspect.returncode != 0:
        return Check("docker buildx", severity, f"no builder ({_short(inspect.stderr or inspect.stdout, 100)}); "
                     f"{why}", "start the Docker daemon (docker info must answer)")
    platforms = parse_buildx_platforms(inspect.stdout)
    lacking = sorted(set(need.values()) - platforms)
    if lacking:
        return Check("docker buildx", severity, f"builder platforms {', '.join(sorted(platforms)) or 'none'}; "
                     f"lacks {', '.join(lacking)}; {why}",
                     "enable emulation once: docker run --privileged --rm tonistiigi/binfmt --install "
                     + ",".join(p.split("/")[1] for p in lacking) + ", or set image_uris to images built elsewhere")
    return Check("docker buildx", PASS, f"builder platforms include {', '.join(sorted(set(need.values()))) or 'all'}"
                 f"; {why}")


def run_checks(ctx: Context, aws: Clients, *, run: Runner = _run,
               which: Callable[[str], str | None] = shutil.which) -> list[Check]:
    """All checks; each AWS check that errors becomes a warning row, never an exception."""
    from botocore.exceptions import ClientError

    checks: list[Check] = [check_credentials(ctx, aws)]
    checks += check_neuron_ami(ctx)
    for fn in (check_bootstrap, check_quotas, check_offerings, check_addons, check_stacks, check_neuron_artifacts):
        try:
            result = fn(ctx, aws)
        except ClientError as e:
            result = Check(fn.__name__.removeprefix("check_"), WARN, f"could not check: {_error(e)}",
                           "grant the read-only permission named in the error, or check by hand")
        checks += result if isinstance(result, list) else [result]
    checks.append(check_docker(ctx, run=run, which=which))
    return checks


def artifact_checks(ctx: Context, aws: Clients) -> list[Check]:
    """The account, then the compiled Neuron artifacts only (``preflight --artifacts-only``, run after a compile)."""
    from botocore.exceptions import ClientError

    checks = [check_credentials(ctx, aws)]
    try:
        checks += check_neuron_artifacts(ctx, aws)
    except ClientError as e:
        checks.append(Check("neuron artifacts", FAIL, f"could not check: {_error(e)}",
                            "grant the read-only permission named in the error (s3:ListBucket, s3:GetObject, "
                            "cloudformation:DescribeStacks)"))
    return checks


def blocking(checks: Sequence[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def render_table(checks: Sequence[Check], *, width: int = 44) -> str:
    """Four columns (check, status, found, fix); long cells wrap inside their column."""
    import textwrap

    rows = [("CHECK", "STATUS", "FOUND", "FIX"), *((c.check, c.status.upper(), c.found, c.fix or "-") for c in checks)]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines: list[str] = []
    for r in rows:
        found = textwrap.wrap(r[2], width) or [""]
        fix = textwrap.wrap(r[3], width) or [""]
        for i in range(max(len(found), len(fix))):
            cells = (r[0] if i == 0 else "", r[1] if i == 0 else "", found[i] if i < len(found) else "",
                     fix[i] if i < len(fix) else "")
            lines.append(f"{cells[0]:<{w0}}  {cells[1]:<{w1}}  {cells[2]:<{width}}  {cells[3]}".rstrip())
    fails = sum(c.status == FAIL for c in checks)
    warns = sum(c.status == WARN for c in checks)
    lines.append(f"{fails} blocking, {warns} warning{'s' if warns != 1 else ''}, "
                 f"{sum(c.status == PASS for c in checks)} passed")
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check]) -> str:
    return json.dumps({"ok": not blocking(checks), "checks": [asdict(c) for c in checks]}, indent=2) + "\n"
