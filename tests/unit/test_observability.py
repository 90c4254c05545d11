"""Observability as code: the scraper's configuration and the rule groups as the synthesized Cluster stack carries
them (checked with promtool where it is installed), every alert's promtool unit test, the committed dashboards
and rules, and the CDK resources around them (workspace, key, scraper, subnets, security groups, roles)."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk.assertions import Match, Template

from eks_inference import metric_names as names
from eks_inference.config import ModelSpec, ObservabilitySpec, parse_platform
from eks_inference.constructs.observability import scraper_subnet_cidrs
from eks_inference.k8s.ray_service import RAY_PORTS
from eks_inference.observability import __main__ as generate
from eks_inference.observability.dashboards import DASHBOARDS, queries
from eks_inference.observability.promql import metric_names
from eks_inference.observability.rules import ModelObjective, render_rules, rules_for, rules_yaml
from eks_inference.observability.scrape import CA_FILE, TOKEN_FILE, render_scrape_config
from eks_inference.serving.serve_config import DEPLOYMENT_NAME
from tests.conftest import ROOT, Assembly, cdk_context

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is missing: run scripts/install-test-tools.sh "
                                    "(Debian: apt-get install --no-install-recommends prometheus)")
OBS = ROOT / "observability"


def resources(asm: Assembly, kind: str, stack: str = "-Cluster") -> dict[str, dict[str, Any]]:
    return {k: r for k, r in asm.template(stack)["Resources"].items() if r["Type"] == kind}


def the(asm: Assembly, kind: str) -> dict[str, Any]:
    (r,) = resources(asm, kind).values()
    return dict(r["Properties"])


def dev_config() -> Any:
    envs = cdk_context()["eks-inference:environments"]
    return parse_platform("dev", envs["dev"], account="123456789012", region="us-west-2")


# -- PromQL names ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "expected"), [
    ('histogram_quantile(0.99, sum by (application, le) (rate(a_bucket{method="POST"}[5m]))) > 100', {"a_bucket"}),
    ("sum(x_total) by (a) - (sum by (a) (x_total offset 15m) or sum by (a) (x_total) * 0) > 0", {"x_total"}),
    ('(sum by (node) (q{a="b"}) > 0) and on (node) (max by (node) (n_ratio) < 0.05)', {"q", "n_ratio"}),
    ("count by (processor) (up) / 1e3 + rate(a:b[$__rate_interval])", {"up", "a:b"}),
    ('sum without (le) (rate(h_sum{x=~"a|b"}[1m])) / ignoring (x) group_left sum(h_count)', {"h_sum", "h_count"}),
])
def test_metric_names_of_each_expression_shape(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


# -- the committed files --------------------------------------------------------------------------------------

def test_the_committed_dashboards_and_rules_are_current() -> None:
    stale = [str(p.relative_to(ROOT)) for p, text in generate.generated().items()
             if not p.exists() or p.read_text() != text]
    assert not stale, f"{stale} out of date; run `python -m eks_inference.observability`"


def test_dashboards_have_the_panels_the_operators_need() -> None:
    serving = json.loads((OBS / "dashboards" / "serving.json").read_text())
    titles = " | ".join(p["title"] for p in serving["panels"])
    for word in ("Requests/s", "p50 / p99", "4xx, 5xx and 503", "Queue time", "Batch size", "Replicas"):
        assert word in titles, word
    acc = json.loads((OBS / "dashboards" / "accelerators.json").read_text())
    assert [p["title"] for p in acc["panels"]] == [
        "NeuronCore utilisation (mean per node)", "Neuron device memory used (per node)", "GPU utilisation (per GPU)",
        "GPU memory used (per GPU)", "Nodes per group"]
    for d in (serving, acc):  # importable anywhere: the data source is a variable
        assert d["templating"]["list"][0] == {"name": "datasource", "label": "Prometheus", "type": "datasource",
                                              "query": "prometheus", "current": {}, "hide": 0}
        assert all(p["datasource"]["uid"] == "${datasource}" for p in d["panels"])


def test_means_come_from_exact_counters_never_from_histogram_sums() -> None:
    """Ray rebuilds a histogram's _sum from bucket midpoints (eks_inference/metric_names.py)."""
    for build in DASHBOARDS.values():
        for q in queries(build()):
            assert not any(n.endswith("_sum") for n in metric_names(q)), q


# -- rules ----------------------------------------------------------------------------------------------------

def test_each_model_gets_its_own_objective() -> None:
    config = dev_config()
    models = (ModelSpec(name="fast", slo_p99_ms=80), ModelSpec(name="big", slo_p99_ms=250), ModelSpec(name="dflt"))
    config = type(config)(**{**{f: getattr(config, f) for f in config.__dataclass_fields__}, "models": models})
    rules = rules_for(config)["groups"][0]["rules"]
    slo = {r["labels"]["slo_p99_ms"]: r["expr"] for r in rules if r["alert"] == "ModelLatencyOverSlo"}
    assert set(slo) == {"80", "250", str(int(config.loadtest.slo_p99_ms))}
    assert 'application="big"' in slo["250"] and slo["250"].endswith("> 250")
    assert 'application="fast"' in slo["80"] and 'application="dflt"' in slo["100"]
    assert all(r["for"] == "5m" for r in rules if r["alert"] == "ModelLatencyOverSlo")


def test_the_shed_alert_follows_config() -> None:
    doc = render_rules([ModelObjective("m", 100)], max_shed_ratio=0.05)
    (shed,) = [r for r in doc["groups"][0]["rules"] if r["alert"] == "ModelShedding"]
    assert shed["expr"].endswith("> 0.05") and 'status_code="503"' in shed["expr"]


def test_the_stack_deploys_the_rendered_rules(assemblies: dict[str, Assembly]) -> None:
    ns = the(assemblies["dev"], "AWS::APS::RuleGroupsNamespace")
    ws = next(iter(resources(assemblies["dev"], "AWS::APS::Workspace")))
    assert ns["Name"] == "eks-inference" and ns["Workspace"] == {"Fn::GetAtt": [ws, "Arn"]}
    assert ns["Data"] == rules_yaml(rules_for(dev_config()))
    assert ns["Data"] == (OBS / "rules" / "dev.yaml").read_text().split("\n", 1)[1]


@needs_promtool
def test_promtool_checks_the_rules_and_runs_every_alerts_unit_test(tmp_path: Path) -> None:
    for env in ("dev", "prod"):
        r = subprocess.run([str(PROMTOOL), "check", "rules", str(OBS / "rules" / f"{env}.yaml")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(PROMTOOL), "test", "rules", str(OBS / "tests" / "alerts-test.yaml")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    alerts = {r["alert"] for r in yaml.safe_load((OBS / "rules" / "dev.yaml").read_text())["groups"][0]["rules"]}
    tests = yaml.safe_load((OBS / "tests" / "alerts-test.yaml").read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == alerts and quiet == alerts


# -- the scrape configuration ---------------------------------------------------------------------------------

def test_the_scraper_gets_the_rendered_configuration_as_plain_yaml(assemblies: dict[str, Assembly]) -> None:
    blob = the(assemblies["dev"], "AWS::APS::Scraper")["ScrapeConfiguration"]["ConfigurationBlob"]
    assert isinstance(blob, str)
    doc = yaml.safe_load(blob)
    assert doc == render_scrape_config(serving_namespace="eks-inference", interval_s=30, neuron=True, gpu=False)
    # the managed scraper's subset: global and scrape_configs; Kubernetes discovery only; bearer token file only
    assert set(doc) == {"global", "scrape_configs"} and doc["global"]["scrape_interval"] == "30s"
    assert [j["job_name"] for j in doc["scrape_configs"]] == ["ray", "neuron-monitor", "kubelet"]
    for job in doc["scrape_configs"]:
        assert {k for k in job if k.endswith("_sd_configs")} == {"kubernetes_sd_configs"}
        assert job["kubernetes_sd_configs"][0]["role"] in ("pod", "node")
        assert job.get("authorization", {"credentials_file": TOKEN_FILE})["credentials_file"] == TOKEN_FILE


@needs_promtool
def test_promtool_accepts_the_scrape_configuration(assemblies: dict[str, Assembly], tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery, so each ``kubernetes_sd_configs`` block (checked
    above and exercised in tests/system/test_scrape_targets.py) is swapped for a static target, and the service
    account files the scraper reads are stood in by local files; everything else (relabeling regexes and
    actions, metric relabeling, TLS and authorization) is promtool's to judge."""
    blob = the(assemblies["dev"], "AWS::APS::Scraper")["ScrapeConfiguration"]["ConfigurationBlob"]
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t")
    ca.write_text("")
    doc = yaml.safe_load(blob.replace(TOKEN_FILE, str(token)).replace(CA_FILE, str(ca)))
    for job in doc["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["10.0.64.10:8080"]}]
    path = tmp_path / "scrape.yaml"
    path.write_text(yaml.safe_dump(doc))
    r = subprocess.run([str(PROMTOOL), "check", "config", str(path)], capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout + r.stderr, r.stdout + r.stderr


# -- the AWS resources ----------------------------------------------------------------------------------------

def test_workspace_is_encrypted_with_a_rotating_customer_key_and_keeps_config_retention(
        assemblies: dict[str, Assembly]) -> None:
    t = Template.from_json(assemblies["dev"].template("-Cluster"))
    ws = the(assemblies["dev"], "AWS::APS::Workspace")
    key_id = ws["KmsKeyArn"]["Fn::GetAtt"][0]
    key = assemblies["dev"].template("-Cluster")["Resources"][key_id]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == "Retain"
    assert ws["WorkspaceConfiguration"] == {"RetentionPeriodInDays": ObservabilitySpec().retention_days}
    t.has_output("MetricsQueryEndpoint", {"Value": {"Fn::GetAtt": [Match.any_value(), "PrometheusEndpoint"]}})


def test_scraper_writes_through_the_role_pair_a_customer_key_requires(assemblies: dict[str, Assembly]) -> None:
    asm = assemblies["dev"]
    res = asm.template("-Cluster")["Resources"]
    scraper = the(asm, "AWS::APS::Scraper")
    src = res[scraper["RoleConfiguration"]["SourceRoleArn"]["Fn::GetAtt"][0]]["Properties"]
    tgt_id = scraper["RoleConfiguration"]["TargetRoleArn"]["Fn::GetAtt"][0]
    tgt = res[tgt_id]["Properties"]
    (trust,) = src["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scraper.aps.amazonaws.com"}
    assert set(trust["Condition"]) == {"ArnLike", "StringEquals"}
    (ttrust,) = tgt["AssumeRolePolicyDocument"]["Statement"]
    assert ttrust["Principal"]["AWS"]["Fn::GetAtt"][0] == scraper["RoleConfiguration"]["SourceRoleArn"]["Fn::GetAtt"][0]
    assert "sts:ExternalId" in ttrust["Condition"]["StringLike"]
    policies = {p["Properties"]["Roles"][0]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
                for p in res.values() if p["Type"] == "AWS::IAM::Policy"}
    (write,) = policies[tgt_id]
    ws_id = scraper["Destination"]["AmpConfiguration"]["WorkspaceArn"]["Fn::GetAtt"][0]
    assert write["Action"] == "aps:RemoteWrite" and write["Resource"] == {"Fn::GetAtt": [ws_id, "Arn"]}
    (assume,) = policies[scraper["RoleConfiguration"]["SourceRoleArn"]["Fn::GetAtt"][0]]
    assert assume["Action"] == "sts:AssumeRole" and assume["Resource"] == {"Fn::GetAtt": [tgt_id, "Arn"]}


def test_scraper_stands_in_subnets_of_its_own_outside_every_vpc_subnet(assemblies: dict[str, Assembly]) -> None:
    asm = assemblies["dev"]
    vpc_subnets = [r["Properties"] for r in resources(asm, "AWS::EC2::Subnet", "-Network").values()]
    own = resources(asm, "AWS::EC2::Subnet")
    scraper = the(asm, "AWS::APS::Scraper")["Source"]["EksConfiguration"]
    assert sorted(s["Ref"] for s in scraper["SubnetIds"]) == sorted(own)
    cidrs = [ipaddress.ip_network(s["Properties"]["CidrBlock"]) for s in own.values()]
    assert all(c.prefixlen == 28 and c.subnet_of(ipaddress.ip_network("10.0.0.0/16")) for c in cidrs)
    assert not any(c.overlaps(ipaddress.ip_network(v["CidrBlock"])) for c in cidrs for v in vpc_subnets)
    assert len({s["Properties"]["AvailabilityZone"] for s in own.values()}) == 2
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in own.values())


def test_carving_finds_the_highest_free_blocks_or_says_what_to_change() -> None:
    used = ["10.0.0.0/22", "10.0.4.0/22", "10.0.8.0/22", "10.0.64.0/18", "10.0.128.0/18", "10.0.192.0/18"]
    assert scraper_subnet_cidrs("10.0.0.0/16", used) == ["10.0.63.240/28", "10.0.63.224/28"]
    from eks_inference.config import ConfigError

    with pytest.raises(ConfigError, match=r"vpc_cidr: 10.0.0.0/20 has no 2 free /28 blocks .*use a larger VPC"):
        scraper_subnet_cidrs("10.0.0.0/20", ["10.0.0.0/21", "10.0.8.0/21"])


def test_security_groups_open_only_the_api_and_metrics_ports(assemblies: dict[str, Assembly]) -> None:
    asm = assemblies["dev"]
    cluster = next(iter(resources(asm, "AWS::EKS::Cluster")))
    scraper_sg = the(asm, "AWS::APS::Scraper")["Source"]["EksConfiguration"]["SecurityGroupIds"][0]["Fn::GetAtt"][0]
    expected = [443, RAY_PORTS.metrics_export, 9010]
    ingress = sorted(r["Properties"]["FromPort"] for r in resources(asm, "AWS::EC2::SecurityGroupIngress").values()
                     if r["Properties"].get("SourceSecurityGroupId", {}).get("Fn::GetAtt", [""])[0] == scraper_sg)
    assert ingress == sorted(expected)
    for r in resources(asm, "AWS::EC2::SecurityGroupIngress").values():
        p = r["Properties"]
        if p.get("SourceSecurityGroupId", {}).get("Fn::GetAtt", [""])[0] == scraper_sg:
            assert p["GroupId"] == {"Fn::GetAtt": [cluster, "ClusterSecurityGroupId"]}
            assert p["FromPort"] == p["ToPort"] and p["IpProtocol"] == "tcp"
    egress = [r["Properties"] for r in resources(asm, "AWS::EC2::SecurityGroupEgress").values()
              if r["Properties"]["GroupId"] == {"Fn::GetAtt": [scraper_sg, "GroupId"]}]
    assert sorted(e["FromPort"] for e in egress) == sorted(expected)
    assert all(e["DestinationSecurityGroupId"] == {"Fn::GetAtt": [cluster, "ClusterSecurityGroupId"]} for e in egress)
    sg = asm.template("-Cluster")["Resources"][scraper_sg]["Properties"]
    assert all(e.get("CidrIp") == "255.255.255.255/32" for e in sg.get("SecurityGroupEgress", []))  # CDK's "none"


def test_neuron_monitor_runs_pinned_on_inferentia_nodes_behind_a_policy(assemblies: dict[str, Assembly]) -> None:
    from tests.system.test_scrape_targets import cluster_objects

    asm = assemblies["dev"]
    (ds,) = cluster_objects(asm, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["image"] == dev_config().addons.neuron_monitor_image and ":" in c["image"].rsplit("/", 1)[1]
    assert spec["nodeSelector"] == {"eks-inference/processor": "inferentia"}
    assert spec["tolerations"] == [{"key": "aws.amazon.com/neuron", "operator": "Exists", "effect": "NoSchedule"}]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9010, "protocol": "TCP"}]
    assert c["args"] == ["--port", "9010"]
    (np,) = [p for p in cluster_objects(asm, "NetworkPolicy") if p["metadata"]["name"] == "metrics-from-scraper"]
    own = sorted(s["Properties"]["CidrBlock"] for s in resources(asm, "AWS::EC2::Subnet").values())
    assert sorted(p["ipBlock"]["cidr"] for p in np["spec"]["ingress"][0]["from"]) == own
    assert np["spec"]["podSelector"] == {} and np["metadata"]["namespace"] == ds["metadata"]["namespace"]


def test_the_cluster_authenticates_with_access_entries_so_the_scraper_needs_no_rbac(
        assemblies: dict[str, Assembly]) -> None:
    """AMP creates the scraper's access entry when the cluster uses the access-entry API (its handler holds
    eks:CreateAccessEntry; cfn-lint's AWS::APS::Scraper schema lists the permission)."""
    asm = assemblies["dev"]
    assert the(asm, "AWS::EKS::Cluster")["AccessConfig"]["AuthenticationMode"] == "API"
    assert the(asm, "AWS::EKS::Cluster")["ResourcesVpcConfig"]["EndpointPrivateAccess"] is True
    manifests = json.dumps(resources(asm, "Custom::AWSCDK-EKS-KubernetesResource"))
    assert "aps-collector" not in manifests and "ClusterRoleBinding" not in manifests


def test_metric_names_agree_with_serving() -> None:
    assert names.DEPLOYMENT == DEPLOYMENT_NAME
    assert names.exported(names.TIMED_REQUESTS) == "ray_eks_inference_timed_requests_total"
    assert names.exported(names.REQUEST_QUEUE_MS) == "ray_eks_inference_request_queue_ms"


def test_a_gpu_group_adds_dcgm_exporter_its_port_and_its_scrape_job() -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_ec2 as ec2

    from eks_inference.config import AddonVersions, EndpointAccess, NodeGroupSpec, Processor
    from eks_inference.constructs.inference_cluster import InferenceCluster
    from eks_inference.constructs.observability import ClusterObservability

    stack = Stack(App(), "Gpu")
    vpc = ec2.Vpc(stack, "Vpc", ip_addresses=ec2.IpAddresses.cidr("10.1.0.0/16"), max_azs=2, subnet_configuration=[
        ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=22),
        ec2.SubnetConfiguration(name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=18)])
    ic = InferenceCluster(stack, "Cluster", vpc=vpc, endpoint_access=EndpointAccess.PRIVATE, node_groups=[
        NodeGroupSpec(name="system", processor=None, instance_types=("m7i.large",), min_size=1),
        NodeGroupSpec(name="gpu", processor=Processor.GPU, instance_types=("g6.xlarge",), max_size=1)])
    obs = ClusterObservability(stack, "Observability", cluster=ic.cluster, vpc=vpc, vpc_cidr="10.1.0.0/16",
                               spec=ObservabilitySpec(), rules=render_rules([], max_shed_ratio=0.01),
                               serving_namespace="eks-inference", gpu=True, after=[ic.vpc_cni])
    t = Template.from_stack(stack)
    v = AddonVersions()
    t.has_resource_properties("Custom::AWSCDK-EKS-HelmChart", {
        "Chart": "dcgm-exporter", "Version": v.dcgm_exporter_chart, "Repository": v.dcgm_exporter_repository,
        "Namespace": "monitoring"})
    charts = t.find_resources("Custom::AWSCDK-EKS-HelmChart").values()
    (values,) = [json.loads(r["Properties"]["Values"]) for r in charts if r["Properties"]["Chart"] == "dcgm-exporter"]
    assert values["nodeSelector"] == {"eks-inference/processor": "gpu"} and values["serviceMonitor"] == {
        "enabled": False}
    assert values["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert obs.ports == [443, RAY_PORTS.metrics_export, 9010, 9400]
    assert [j["job_name"] for j in obs.scrape_config["scrape_configs"]] == ["ray", "dcgm-exporter", "kubelet"]
    ingress = t.find_resources("AWS::EC2::SecurityGroupIngress", {"Properties": {"FromPort": 9400}})
    assert len(ingress) == 1
    assert all(ipaddress.ip_network(c).subnet_of(ipaddress.ip_network("10.1.0.0/16")) for c in obs.scraper_cidrs)


SCRAPER_ID = "s-0123abcd-4567-89ab-cdef-0123456789ab"


def test_a_known_scraper_id_narrows_both_scraper_roles_to_that_scraper() -> None:
    """GIVEN observability.scraper_id, the id the first deploy's MetricsScraperId output printed
    WHEN the metrics construct is built
    THEN the source role admits the scraper service only for that scraper, and the target role only with it as the
    external id; a malformed id is refused with the field, the value and the fix."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_ec2 as ec2

    from eks_inference.config import ConfigError, EndpointAccess, NodeGroupSpec
    from eks_inference.constructs.inference_cluster import InferenceCluster
    from eks_inference.constructs.observability import ClusterObservability

    stack = Stack(App(), "Pinned")
    vpc = ec2.Vpc(stack, "Vpc", ip_addresses=ec2.IpAddresses.cidr("10.1.0.0/16"), max_azs=2, subnet_configuration=[
        ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=22),
        ec2.SubnetConfiguration(name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=18)])
    ic = InferenceCluster(stack, "Cluster", vpc=vpc, endpoint_access=EndpointAccess.PRIVATE, node_groups=[
        NodeGroupSpec(name="system", processor=None, instance_types=("m7i.large",), min_size=1)],
        node_autoscaling=False)
    obs = ClusterObservability(stack, "Observability", cluster=ic.cluster, vpc=vpc, vpc_cidr="10.1.0.0/16",
                               spec=ObservabilitySpec(scraper_id=SCRAPER_ID),
                               rules=render_rules([], max_shed_ratio=0.01), serving_namespace="eks-inference")
    res = Template.from_stack(stack).to_json()["Resources"]
    source = res[stack.get_logical_id(obs.source_role.node.default_child)]  # type: ignore[arg-type]
    target = res[stack.get_logical_id(obs.target_role.node.default_child)]  # type: ignore[arg-type]
    (trust,) = source["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    (ttrust,) = target["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    for pinned in (trust["Condition"]["ArnLike"]["aws:SourceArn"], ttrust["Condition"]["StringLike"]["sts:ExternalId"]):
        assert pinned["Fn::Join"][1][-1] == f":scraper/{SCRAPER_ID}"
    with pytest.raises(ConfigError, match=r"observability.scraper_id.*'scraper/\*'.*MetricsScraperId"):
        ObservabilitySpec(scraper_id="scraper/*")
