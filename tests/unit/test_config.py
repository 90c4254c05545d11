"""Every config validation rule stops synth with a ConfigError naming the field, the value and the fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from eks_inference.config import (
    ENVIRONMENTS_KEY,
    AddonVersions,
    ConfigError,
    DType,
    EndpointAccess,
    LoadTestSpec,
    ModelSpec,
    NodeGroupSpec,
    Processor,
    ServingSpec,
    instance_family,
    load_config,
    parse_platform,
)
from tests.conftest import cdk_context


def envs() -> dict[str, Any]:
    return copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY])


def dev(**changes: Any) -> dict[str, Any]:
    block = envs()["dev"]
    block.update(changes)
    return block


def groups_with(name: str, **changes: Any) -> list[dict[str, Any]]:
    groups = envs()["dev"]["node_groups"]
    for g in groups:
        if g["name"] == name:
            g.update(changes)
    return groups


def test_example_environments_are_valid() -> None:
    d = load_config("dev", envs())
    p = load_config("prod", envs())
    assert d.nat_gateways == 1 and p.nat_gateways == 3
    assert d.endpoint_access is EndpointAccess.PUBLIC_AND_PRIVATE and d.public_access_cidrs
    assert p.endpoint_access is EndpointAccess.PRIVATE and not p.public_access_cidrs
    assert max(g.max_size for g in p.enabled_node_groups) > max(g.max_size for g in d.enabled_node_groups)
    assert {g.processor for g in d.enabled_node_groups} == {None, Processor.GRAVITON, Processor.INFERENTIA}
    assert {g.name for g in d.node_groups if not g.enabled} == {"gpu", "cpu"}


def test_unknown_env_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"env: 'staging' is not a defined environment; .*dev, prod"):
        load_config("staging", envs())


def test_no_env_selected() -> None:
    with pytest.raises(ConfigError, match=r"no environment selected; pass -c env=NAME"):
        load_config(None, envs())


def test_missing_account_says_where_to_set_it() -> None:
    block = dev()
    del block["account"]
    with pytest.raises(ConfigError, match=r"account: '' is not a 12-digit AWS account id; .*CDK_DEFAULT_ACCOUNT"):
        parse_platform("dev", block)


def test_account_and_region_fall_back_to_arguments() -> None:
    block = dev()
    del block["account"], block["region"]
    cfg = parse_platform("dev", block, account="123456789012", region="eu-west-1")
    assert (cfg.account, cfg.region) == ("123456789012", "eu-west-1")


def test_bad_region() -> None:
    with pytest.raises(ConfigError, match=r"region: 'oregon' is not an AWS region"):
        parse_platform("dev", dev(region="oregon"))


def test_x86_instance_in_graviton_group() -> None:
    with pytest.raises(ConfigError, match=r"node group 'graviton' instance_types: 'c7i.2xlarge' is not a graviton "
                                          r"instance type; use one of the families c7g"):
        parse_platform("dev", dev(node_groups=groups_with("graviton", instance_types=["c7i.2xlarge"])))


def test_non_inf2_instance_in_inferentia_group() -> None:
    with pytest.raises(ConfigError, match=r"'g5.xlarge' is not an inferentia instance type; use one of the "
                                          r"families inf2"):
        parse_platform("dev", dev(node_groups=groups_with("inferentia", instance_types=["g5.xlarge"])))


def test_malformed_instance_type() -> None:
    with pytest.raises(ConfigError, match=r"'c7g-large' is not an EC2 instance type; write it as FAMILY.SIZE"):
        instance_family("c7g-large")


def test_min_greater_than_max() -> None:
    with pytest.raises(ConfigError, match=r"node group 'inferentia': max_size 1 < min_size 2; raise max_size or lower "
                                          r"min_size"):
        parse_platform("dev", dev(node_groups=groups_with("inferentia", min_size=2, max_size=1)))


def test_desired_outside_range() -> None:
    with pytest.raises(ConfigError, match=r"desired_size 9 is outside \[1, 4\]"):
        parse_platform("dev", dev(node_groups=groups_with("graviton", desired_size=9)))


def test_fewer_than_two_azs() -> None:
    with pytest.raises(ConfigError, match=r"max_azs: 1 is fewer than 2 Availability Zones; EKS needs"):
        parse_platform("dev", dev(max_azs=1))


def test_malformed_public_cidr() -> None:
    with pytest.raises(ConfigError, match=r"public_access_cidrs: '203.0.113.7/24' is not a valid CIDR"):
        parse_platform("dev", dev(public_access_cidrs=["203.0.113.7/24"]))


def test_world_open_endpoint_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'0.0.0.0/0' opens the Kubernetes API to the whole internet"):
        parse_platform("dev", dev(public_access_cidrs=["0.0.0.0/0"]))


def test_public_endpoint_needs_cidrs() -> None:
    with pytest.raises(ConfigError, match=r"public_access_cidrs: \[\] is empty while endpoint_access is public"):
        parse_platform("dev", dev(public_access_cidrs=[]))


def test_private_endpoint_with_cidrs() -> None:
    with pytest.raises(ConfigError, match=r"is set while endpoint_access is private"):
        parse_platform("dev", dev(endpoint_access="private"))


def test_unknown_endpoint_access() -> None:
    with pytest.raises(ConfigError, match=r"endpoint_access: 'public' is not allowed; use one of public-and-private, "
                                          r"private"):
        parse_platform("dev", dev(endpoint_access="public"))


def test_malformed_vpc_cidr() -> None:
    with pytest.raises(ConfigError, match=r"vpc_cidr: '10.0.0.1/16' is not a valid IPv4 network"):
        parse_platform("dev", dev(vpc_cidr="10.0.0.1/16"))


def test_too_small_vpc() -> None:
    with pytest.raises(ConfigError, match=r"vpc_cidr: '10.0.0.0/24' must be an IPv4 /16../20"):
        parse_platform("dev", dev(vpc_cidr="10.0.0.0/24"))


def test_nat_gateways_range() -> None:
    with pytest.raises(ConfigError, match=r"nat_gateways: 0 is outside 1..3"):
        parse_platform("dev", dev(nat_gateways=0))


def test_bad_admin_role() -> None:
    with pytest.raises(ConfigError, match=r"admin_role_arn: 'admin' is not an IAM role ARN"):
        parse_platform("dev", dev(admin_role_arn="admin"))


def test_unknown_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"environment 'dev': 'nat_gateway' is not a known field; use one of"):
        parse_platform("dev", dev(nat_gateway=2))


def test_system_group_required() -> None:
    groups = [g for g in envs()["dev"]["node_groups"] if g["name"] != "system"]
    with pytest.raises(ConfigError, match=r"has no enabled system group"):
        parse_platform("dev", dev(node_groups=groups))


def test_model_needs_an_enabled_group_for_its_processor() -> None:
    models = [{"name": "minilm", "processors": ["gpu"]}]
    with pytest.raises(ConfigError, match=r"model 'minilm' processors: 'gpu' has no enabled node group; enable"):
        parse_platform("dev", dev(models=models))


def test_duplicate_node_group_names() -> None:
    groups = envs()["dev"]["node_groups"]
    groups.append(dict(groups[1]))
    with pytest.raises(ConfigError, match=r"node_groups: \['graviton'\] are defined twice"):
        parse_platform("dev", dev(node_groups=groups))


def test_unknown_processor() -> None:
    with pytest.raises(ConfigError, match=r"processor: 'tpu' is not allowed; use one of graviton, inferentia"):
        parse_platform("dev", dev(node_groups=groups_with("graviton", processor="tpu")))


def test_instance_types_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match=r"instance_types: 'c7g.xlarge' is not a list"):
        parse_platform("dev", dev(node_groups=groups_with("graviton", instance_types="c7g.xlarge")))


def test_unpinned_addon_version() -> None:
    with pytest.raises(ConfigError, match=r"addons.kuberay_operator_chart: 'latest' is not a pinned version"):
        AddonVersions(kuberay_operator_chart="latest")


def test_serving_buckets_must_end_at_max_batch() -> None:
    with pytest.raises(ConfigError, match=r"batch_buckets: \[1, 8\] does not end at max_batch_size 16"):
        ServingSpec(max_batch_size=16, batch_buckets=(1, 8))


def test_serving_defaults_bucket_by_powers_of_two() -> None:
    assert ServingSpec(max_batch_size=24).batch_buckets == (1, 2, 4, 8, 16, 24)
    assert ServingSpec(dtype=DType.BF16).dtype is DType.BF16


def test_serving_sequence_limit() -> None:
    with pytest.raises(ConfigError, match=r"serving.max_seq_length: 1024 exceeds"):
        ServingSpec(max_seq_length=1024)


def test_model_name_must_be_kebab_case() -> None:
    with pytest.raises(ConfigError, match=r"model name: 'MiniLM' is not a valid name"):
        ModelSpec(name="MiniLM")


def test_loadtest_run_id_and_rates() -> None:
    with pytest.raises(ConfigError, match=r"loadtest.run_id: 'Run 1' is not a valid id"):
        LoadTestSpec(run_id="Run 1")
    with pytest.raises(ConfigError, match=r"loadtest.rates: \[0\] must be non-empty and positive"):
        LoadTestSpec(rates=(0,))


def test_node_group_architecture_is_derived_from_family() -> None:
    def arch(processor: Processor, instance: str) -> str:
        return NodeGroupSpec(name="g", processor=processor, instance_types=(instance,)).architecture

    assert arch(Processor.GRAVITON, "c7g.xlarge") == "arm64"
    assert arch(Processor.INFERENTIA, "inf2.xlarge") == "amd64"
    assert arch(Processor.GPU, "g5.xlarge") == "amd64"


def test_closed_loop_needs_a_request_per_client() -> None:
    with pytest.raises(ConfigError, match=r"loadtest.concurrencies: \[1, 8\] has steps below clients=2"):
        LoadTestSpec(run_id="c", mode="closed", concurrencies=(1, 8), clients=2)
