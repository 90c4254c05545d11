"""NetworkStack: three AZs (named offline for any account and region), public and private subnets with
load-balancer tags, flow logs, S3 endpoint; and a synth whose output is clean."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

from aws_cdk import App, Environment
from aws_cdk.assertions import Match, Template

from eks_inference.config import ENVIRONMENTS_KEY, parse_platform
from eks_inference.node_runtime import SILENCE_END_OF_LIFE
from eks_inference.stacks.network_stack import NetworkStack
from tests.conftest import CDK, OWN_ACCOUNT, OWN_REGION, ROOT, Assembly, cdk_context, offline_env
from tests.system.cfn import resolve


def _subnets(t: Template, public: bool) -> dict:
    return t.find_resources("AWS::EC2::Subnet", {"Properties": {"MapPublicIpOnLaunch": public}})


def test_subnets_span_three_azs(assemblies: dict[str, Assembly]) -> None:
    for env_name, asm in assemblies.items():
        t = Template.from_json(asm.template("-Network"))
        for public in (True, False):
            subnets = _subnets(t, public)
            azs = {s["Properties"]["AvailabilityZone"] for s in subnets.values()}
            assert len(subnets) == 3 and len(azs) == 3, (env_name, public, azs)


def test_subnet_tags_for_load_balancers(assemblies: dict[str, Assembly]) -> None:
    t = Template.from_json(assemblies["dev"].template("-Network"))
    for public, tag in ((True, "kubernetes.io/role/elb"), (False, "kubernetes.io/role/internal-elb")):
        for s in _subnets(t, public).values():
            assert {"Key": tag, "Value": "1"} in s["Properties"]["Tags"]


def test_private_subnets_get_most_addresses(assemblies: dict[str, Assembly]) -> None:
    t = Template.from_json(assemblies["dev"].template("-Network"))
    private = {s["Properties"]["CidrBlock"] for s in _subnets(t, False).values()}
    public = {s["Properties"]["CidrBlock"] for s in _subnets(t, True).values()}
    assert all(c.endswith("/18") for c in private) and all(c.endswith("/22") for c in public)


def test_nat_gateways_per_environment(assemblies: dict[str, Assembly]) -> None:
    Template.from_json(assemblies["dev"].template("-Network")).resource_count_is("AWS::EC2::NatGateway", 1)
    Template.from_json(assemblies["prod"].template("-Network")).resource_count_is("AWS::EC2::NatGateway", 3)


def test_flow_logs_and_s3_gateway_endpoint(assemblies: dict[str, Assembly]) -> None:
    t = Template.from_json(assemblies["dev"].template("-Network"))
    t.has_resource_properties("AWS::EC2::FlowLog", {
        "ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs",
    })
    t.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})
    t.has_resource_properties("AWS::EC2::VPCEndpoint", {
        "VpcEndpointType": "Gateway",
        "ServiceName": Match.object_like({"Fn::Join": Match.array_with([Match.array_with([".s3"])])}),
    })
    prod = Template.from_json(assemblies["prod"].template("-Network"))
    prod.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 365})


def test_own_account_and_region_synthesize_offline(own_account_assembly: Assembly) -> None:
    """`cdk synth -c account=... -c region=eu-west-1` with no credentials and nothing cached in cdk.context.json:
    the VPC takes the region's first three zones from the shipped table instead of asking AWS."""
    asm = own_account_assembly
    assert not asm.manifest.get("missing"), asm.manifest.get("missing")
    for name in asm.stack_names:
        assert asm.manifest["artifacts"][name]["environment"] == f"aws://{OWN_ACCOUNT}/{OWN_REGION}"
    t = Template.from_json(asm.template("-Network"))
    for public in (True, False):
        azs = sorted(s["Properties"]["AvailabilityZone"] for s in _subnets(t, public).values())
        assert azs == ["eu-west-1a", "eu-west-1b", "eu-west-1c"], (public, azs)


def test_misspelt_region_stops_synth_with_one_line(tmp_path: Path) -> None:
    env = offline_env()
    env.pop(SILENCE_END_OF_LIFE, None)
    proc = subprocess.run([str(CDK), "synth", "-c", "env=dev", "-c", "region=eu-wset-1", "--quiet",
                           "-o", str(tmp_path / "cdk.out")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    app_lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                 if ln.strip() and "Subprocess exited with error" not in ln]  # the CDK CLI's own closing line
    assert app_lines == ["eks-inference: configuration error: environment 'dev' region: 'eu-wset-1' is not an AWS "
                         "region; did you mean 'eu-west-1'? Set 'region' in cdk.json or pass -c region=eu-west-1"]


def test_synth_output_is_clean(assemblies: dict[str, Assembly], own_account_assembly: Assembly) -> None:
    """No Node end-of-life banner forwarded as bytes literals, no warnings, nothing that looks like a crash, even
    though the synth runs without the Makefile's JSII_* variable (app.py sets it, as for `npx cdk synth`)."""
    for asm in (*assemblies.values(), own_account_assembly):
        out = asm.stdout
        assert "b'" not in out and "end-of-life" not in out and "!!" not in out, out[:2000]
        for crash in ("Traceback", "Error", "WARNING", "jsii.errors"):
            assert crash not in out, out[:2000]


def test_zone_lookup_only_when_asked() -> None:
    """With availability_zones: "lookup" the stack falls back to aws-cdk-lib's context lookup (the CLI would ask AWS
    and cache the answer in cdk.context.json); otherwise no lookup is ever registered."""
    envs = copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY])
    for zones, expect_lookup in (("lookup", True), (None, False)):
        block = dict(envs["dev"], account=OWN_ACCOUNT, region=OWN_REGION)
        if zones:
            block["availability_zones"] = zones
        config = parse_platform("dev", block)
        app = App()
        stack = NetworkStack(app, "Net", config=config, env=Environment(account=OWN_ACCOUNT, region=OWN_REGION))
        manifest = json.loads((Path(app.synth().directory) / "manifest.json").read_text())
        missing = [m["key"] for m in manifest.get("missing", [])]
        assert any(k.startswith(f"availability-zones:account={OWN_ACCOUNT}:region={OWN_REGION}") for k in missing) \
            is expect_lookup, missing
        assert expect_lookup or stack.availability_zones == ["eu-west-1a", "eu-west-1b", "eu-west-1c"]


def test_the_flow_log_key_admits_cloudwatch_logs_for_the_flow_log_group_only(assemblies: dict[str, Assembly]) -> None:
    """GIVEN the dev network stack
    WHEN the flow-log key's policy is read
    THEN CloudWatch Logs may use the key only with the encryption context of the one flow-log group (the key
    admitted every log group of the account before), and that group is the one the flow log writes to."""
    t = assemblies["dev"].template("-Network")["Resources"]
    (group,) = [r["Properties"] for r in t.values() if r["Type"] == "AWS::Logs::LogGroup"]
    (key,) = [r["Properties"] for r in t.values() if r["Type"] == "AWS::KMS::Key"]
    (logs,) = [s for s in key["KeyPolicy"]["Statement"] if "Service" in s["Principal"]]
    arn = resolve(logs["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"])
    assert arn == f"arn:aws:logs:us-west-2:111122223333:log-group:{group['LogGroupName']}"
    (flow,) = [r["Properties"] for r in t.values() if r["Type"] == "AWS::EC2::FlowLog"]
    assert flow["LogGroupName"] == {"Ref": next(k for k, r in t.items() if r["Type"] == "AWS::Logs::LogGroup")}
