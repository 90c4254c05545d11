"""GcsStore (the Ray GCS fault-tolerance store) in a bare stack, and the ``ray`` block of config that asks for it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Match, Template

from eks_inference.config import ConfigError, RaySpec, parse_platform
from eks_inference.constructs.gcs_store import GcsStore
from eks_inference.k8s.ray_service import GCS_STORE_PORT
from tests.conftest import cdk_context


def _stack(**kw: Any) -> tuple[Stack, GcsStore, Template]:
    app = App()
    stack = Stack(app, "Bare")
    vpc = ec2.Vpc(stack, "Vpc", max_azs=3, nat_gateways=1)
    admit = ec2.SecurityGroup(stack, "ClusterSg", vpc=vpc)
    store = GcsStore(stack, "GcsStore", vpc=vpc, admit=admit, **kw)
    return stack, store, Template.from_stack(stack)


@pytest.fixture(scope="module")
def bare() -> tuple[Stack, GcsStore, Template]:
    return _stack()


def test_one_shard_tls_auth_kms_and_a_replica_in_another_zone(bare) -> None:  # type: ignore[no-untyped-def]
    # GIVEN the defaults WHEN synthesized THEN a standalone (cluster mode disabled) group Ray can use
    _, _, t = bare
    t.resource_count_is("AWS::ElastiCache::ReplicationGroup", 1)
    t.has_resource_properties("AWS::ElastiCache::ReplicationGroup", {
        "ClusterMode": "disabled", "NumCacheClusters": 2, "Engine": "redis",
        "AutomaticFailoverEnabled": True, "MultiAZEnabled": True,
        "TransitEncryptionEnabled": True, "TransitEncryptionMode": "required",
        "AtRestEncryptionEnabled": True, "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("GcsStoreKey"), "Arn"]},
        "Port": GCS_STORE_PORT, "SnapshotRetentionLimit": 0,
        "AuthToken": {"Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": Match.string_like_regexp("AuthToken")},
                                        ":SecretString:::}}"]]},
    })
    t.has_resource_properties("AWS::ElastiCache::ReplicationGroup", Match.not_({"NumNodeGroups": Match.any_value()}))
    t.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    t.has_resource_properties("AWS::SecretsManager::Secret", {
        "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("GcsStoreKey"), "Arn"]},
        "GenerateSecretString": {"ExcludePunctuation": True, "PasswordLength": 64, "IncludeSpace": False}})


def test_the_token_never_appears_in_the_template(bare) -> None:  # type: ignore[no-untyped-def]
    _, _, t = bare
    (group,) = t.find_resources("AWS::ElastiCache::ReplicationGroup").values()
    assert "{{resolve:secretsmanager:" in json.dumps(group["Properties"]["AuthToken"])


def test_private_subnets_and_the_port_from_the_cluster_only(bare) -> None:  # type: ignore[no-untyped-def]
    stack, store, t = bare
    (subnet_group,) = t.find_resources("AWS::ElastiCache::SubnetGroup").values()
    private = {stack.resolve(s.subnet_id)["Ref"] for s in store.node.scope.node.find_child("Vpc").private_subnets}
    assert {s["Ref"] for s in subnet_group["Properties"]["SubnetIds"]} == private
    ingress = t.find_resources("AWS::EC2::SecurityGroupIngress")
    assert [(r["Properties"]["FromPort"], r["Properties"]["ToPort"], r["Properties"]["SourceSecurityGroupId"])
            for r in ingress.values()] == [(GCS_STORE_PORT, GCS_STORE_PORT,
                                            {"Fn::GetAtt": [_logical(t, "ClusterSg"), "GroupId"]})]
    (sg,) = [r for k, r in t.find_resources("AWS::EC2::SecurityGroup").items() if k.startswith("GcsStore")]
    assert "SecurityGroupIngress" not in sg["Properties"]
    assert sg["Properties"]["SecurityGroupEgress"][0]["CidrIp"] == "255.255.255.255/32"  # no egress at all
    assert len(store.subnet_cidrs) == len(private)  # the NetworkPolicy names each


def _logical(t: Template, prefix: str) -> str:
    (lid,) = [k for k in t.find_resources("AWS::EC2::SecurityGroup") if k.startswith(prefix)]
    return lid


def test_no_replica_means_no_failover() -> None:
    _, _, t = _stack(replicas=0)
    t.has_resource_properties("AWS::ElastiCache::ReplicationGroup", {
        "NumCacheClusters": 1, "AutomaticFailoverEnabled": False, "MultiAZEnabled": False})


def test_replicas_outside_the_range_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"ray\.redis_replicas: 6 is outside 0\.\.5"):
        _stack(replicas=6)


def _env(**ray: Any) -> dict[str, Any]:
    return {**cdk_context()["eks-inference:environments"]["dev"], "ray": ray}


def test_config_defaults_off_and_prod_turns_it_on() -> None:
    assert RaySpec() == RaySpec(gcs_fault_tolerance=False, redis_node_type="cache.t4g.medium", redis_replicas=1)
    envs = cdk_context()["eks-inference:environments"]
    assert envs["prod"]["ray"]["gcs_fault_tolerance"] is True
    assert envs["dev"]["ray"]["gcs_fault_tolerance"] is False
    assert parse_platform("dev", _env(gcs_fault_tolerance=True, redis_replicas=0)).ray.redis_replicas == 0


@pytest.mark.parametrize(("ray", "message"), [
    ({"gcs_fault_tolerance": "yes"}, r"ray\.gcs_fault_tolerance: 'yes' is not true or false; write true or false"),
    ({"redis_node_type": "m7g.large"}, r"ray\.redis_node_type: 'm7g\.large' is not an ElastiCache node type; write "
                                       r"it as cache\.FAMILY\.SIZE"),
    ({"redis_replicas": -1}, r"ray\.redis_replicas: -1 is outside 0\.\.5; use 1"),
    ({"redis": 1}, r"ray: 'redis' is not a known field; use one of gcs_fault_tolerance, redis_node_type, "
                   r"redis_replicas"),
])
def test_config_mistakes_are_named_one_per_line(ray: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_platform("dev", _env(**ray))


def test_every_ray_mistake_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        parse_platform("dev", _env(gcs_fault_tolerance=1, redis_node_type="x", redis_replicas=9))
    assert [line.split(":")[0] for line in e.value.errors] == [
        "ray.gcs_fault_tolerance", "ray.redis_node_type", "ray.redis_replicas"]
