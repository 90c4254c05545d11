"""Every config validation rule stops synth with a ConfigError naming the field, the value and the fix."""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from eks_inference.config import (
    CDK_JSON,
    ENVIRONMENTS_KEY,
    WORKER_MEMORY_GIB,
    AddonVersions,
    ConfigError,
    DType,
    EndpointAccess,
    LoadTestSpec,
    ModelSpec,
    NodeGroupSpec,
    Processor,
    ServingSpec,
    WorkerPodRequests,
    config_from_context,
    format_config_error,
    instance_family,
    load_config,
    load_environment,
    parse_platform,
    read_project_context,
    worker_pod_requests,
)
from eks_inference.tables.instance_types import INSTANCE_TYPES
from tests.conftest import CDK, ROOT, cdk_context, offline_env


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
    with pytest.raises(ConfigError, match=r"desired_size 9 is outside \[1, 8\]"):
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


def test_serving_buckets_must_reach_max_batch() -> None:
    with pytest.raises(ConfigError, match=r"batch_buckets: \[1, 8\] ends below max_batch_size 16"):
        ServingSpec(max_batch_size=16, batch_buckets=(1, 8))


def test_max_batch_size_may_lie_within_written_buckets() -> None:
    """GIVEN buckets compiled up to 32 WHEN max_batch_size is 16 THEN Inferentia keeps them: 16 is live within."""
    spec = ServingSpec(max_batch_size=16, batch_buckets=(1, 4, 16, 32))
    assert spec.live_batch_buckets(Processor.INFERENTIA) == (1, 4, 16, 32)
    assert spec.live_batch_buckets(Processor.GRAVITON) == (1, 4, 16, 32)  # written buckets are kept


def test_cpu_buckets_do_not_follow_max_batch_size() -> None:
    """GIVEN default buckets WHEN max_batch_size moves below the ceiling THEN CPU and GPU replicas' buckets stay put
    (the change is user_config only), while Inferentia's compiled buckets follow it."""
    cpu = {ServingSpec(max_batch_size=n).live_batch_buckets(Processor.GRAVITON) for n in (1, 8, 24, 32, 64)}
    assert cpu == {(1, 2, 4, 8, 16, 32, 64)}
    assert ServingSpec(max_batch_size=200).live_batch_buckets(Processor.GPU)[-1] == 256
    assert ServingSpec(max_batch_size=16).live_batch_buckets(Processor.INFERENTIA) == (1, 2, 4, 8, 16)


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


def test_loadtest_clients_run_on_an_x86_cpu_type_of_the_table() -> None:
    """The load-test image is linux/amd64: its node group must be an x86 CPU family, in a size the table knows."""
    assert LoadTestSpec().client_instance_type == "c7i.xlarge"
    with pytest.raises(ConfigError, match=r"^loadtest.client_instance_type: 'c7g.xlarge' is not an x86 CPU instance "
                                          r"type \(the load-test image is linux/amd64\); use one of the families "):
        LoadTestSpec(client_instance_type="c7g.xlarge")
    with pytest.raises(ConfigError, match=r"^loadtest.client_instance_type: 'c7i.medium' is not a size in the "
                                          r"instance table .*; use one of the sizes large, xlarge"):
        LoadTestSpec(client_instance_type="c7i.medium")


def test_node_group_architecture_is_derived_from_family() -> None:
    def arch(processor: Processor, instance: str) -> str:
        return NodeGroupSpec(name="g", processor=processor, instance_types=(instance,)).architecture

    assert arch(Processor.GRAVITON, "c7g.xlarge") == "arm64"
    assert arch(Processor.INFERENTIA, "inf2.xlarge") == "amd64"
    assert arch(Processor.GPU, "g5.xlarge") == "amd64"


def test_closed_loop_needs_a_request_per_client() -> None:
    with pytest.raises(ConfigError, match=r"loadtest.concurrencies: \[1, 8\] has steps below clients=2"):
        LoadTestSpec(run_id="c", mode="closed", concurrencies=(1, 8), clients=2)


# --- Regions and Availability Zones: synth needs no AWS call for any account ---------------------------------


def test_default_zones_are_the_regions_first_for_any_account() -> None:
    cfg = parse_platform("dev", dev(account="123456789012", region="eu-west-1"))
    assert cfg.availability_zones == ("eu-west-1a", "eu-west-1b", "eu-west-1c") and not cfg.zones_lookup
    assert parse_platform("dev", dev(max_azs=2)).availability_zones == ("us-west-2a", "us-west-2b")


def test_default_zones_skip_letters_a_region_does_not_offer_every_account() -> None:
    cfg = parse_platform("dev", dev(region="ap-northeast-1"))
    assert cfg.availability_zones == ("ap-northeast-1a", "ap-northeast-1c", "ap-northeast-1d")


def test_misspelt_region_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"^environment 'dev' region: 'eu-wset-1' is not an AWS region; did you mean "
                                          r"'eu-west-1'\? Set 'region' in cdk.json or pass -c region=eu-west-1$"):
        parse_platform("dev", dev(region="eu-wset-1"))


def test_region_newer_than_the_table_works_with_named_zones() -> None:
    with pytest.raises(ConfigError, match=r"region: 'zz-qqqq-7' is not an AWS region; check the name; a region newer"):
        parse_platform("dev", dev(region="zz-qqqq-7"))
    zones = ["zz-qqqq-7a", "zz-qqqq-7b"]
    cfg = parse_platform("dev", dev(region="zz-qqqq-7", availability_zones=zones, nat_gateways=1))
    assert cfg.availability_zones == tuple(zones) and cfg.max_azs == 2


def test_zones_named_in_the_config_set_max_azs() -> None:
    cfg = parse_platform("dev", dev(region="us-east-1", availability_zones=["us-east-1b", "us-east-1d", "us-east-1f"]))
    assert cfg.availability_zones == ("us-east-1b", "us-east-1d", "us-east-1f") and cfg.max_azs == 3


def test_zone_outside_the_region() -> None:
    with pytest.raises(ConfigError, match=r"^availability_zones: 'eu-west-1d' is not a zone of eu-west-1; use one of "
                                          r"eu-west-1a, eu-west-1b, eu-west-1c$"):
        parse_platform("dev", dev(region="eu-west-1", availability_zones=["eu-west-1a", "eu-west-1d"]))
    with pytest.raises(ConfigError, match=r"availability_zones: 'us-west-2a' is not a zone name of eu-west-1"):
        parse_platform("dev", dev(region="eu-west-1", availability_zones=["us-west-2a", "us-west-2b"]))


def test_zone_count_must_match_an_explicit_max_azs() -> None:
    with pytest.raises(ConfigError, match=r"names 2 zones but max_azs is 3; list 3 zones, or leave max_azs out"):
        parse_platform("dev", dev(availability_zones=["us-west-2a", "us-west-2b"], max_azs=3))


def test_lookup_only_when_asked() -> None:
    assert parse_platform("dev", dev(availability_zones="lookup")).zones_lookup
    with pytest.raises(ConfigError, match=r"availability_zones: 'us-west-2a' is neither a list of zone names nor "
                                          r"'lookup'"):
        parse_platform("dev", dev(availability_zones="us-west-2a"))


def test_region_whose_accounts_see_different_zones_needs_them_named() -> None:
    with pytest.raises(ConfigError, match=r"cannot be chosen offline in us-west-1: each account sees two of its three "
                                          r"zones.*describe-availability-zones --region us-west-1\), or use 'lookup'"):
        parse_platform("dev", dev(region="us-west-1", max_azs=2))
    assert parse_platform("dev", dev(region="us-west-1", availability_zones=["us-west-1b", "us-west-1c"])).max_azs == 2


def test_more_azs_than_the_region_offers() -> None:
    with pytest.raises(ConfigError, match=r"max_azs: 4 exceeds the 3 zones every account sees in eu-west-1"):
        parse_platform("dev", dev(region="eu-west-1", max_azs=4))


# --- Errors: named, typed, and all at once ----------------------------------------------------------------------


def test_public_access_cidrs_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match=r"^public_access_cidrs: '203.0.113.0/24' is not a list; "
                                          r"write \[\"203.0.113.0/24\"\]$"):
        parse_platform("dev", dev(public_access_cidrs="203.0.113.0/24"))


def test_serving_errors_name_the_model() -> None:
    models = [{"name": "minilm", "processors": ["graviton"], "serving": {"max_batch_size": 0}}]
    with pytest.raises(ConfigError, match=r"^model 'minilm' serving.max_batch_size: 0 is not a positive integer; "
                                          r"give a whole number >= 1$"):
        parse_platform("dev", dev(models=models))
    models[0]["serving"] = {"dtype": "int4"}
    with pytest.raises(ConfigError, match=r"^model 'minilm' serving.dtype: 'int4' is not allowed; use one of fp32"):
        parse_platform("dev", dev(models=models))


def test_every_error_is_reported_at_once() -> None:
    block = dev(nat_gateways=0, public_access_cidrs="203.0.113.0/24")
    block["node_groups"][1]["instance_types"] = ["c7i.2xlarge"]
    block["node_groups"][2].update(min_size=3, max_size=2)
    block["models"] = [{"name": "minilm", "processors": ["graviton"], "serving": {"max_batch_size": 0}},
                       {"name": "qa", "task": "qa", "processors": ["inferentia"]}]
    block["loadtest"] = {"run_id": "Run 1", "clients": 0}
    block["addons"] = {"kuberay_operator_chart": "latest"}
    with pytest.raises(ConfigError) as info:
        parse_platform("dev", block)
    expected = [
        r"^nat_gateways: 0 is outside 1\.\.3",
        r"^public_access_cidrs: '203\.0\.113\.0/24' is not a list",
        r"^node group 'graviton' instance_types: 'c7i\.2xlarge' is not a graviton instance type",
        r"^node group 'inferentia': max_size 2 < min_size 3",
        r"^model 'minilm' serving\.max_batch_size: 0 is not a positive integer",
        r"^model 'qa' task: 'qa' is not allowed; use one of embedding, classification, question-answering",
        r"^loadtest\.run_id: 'Run 1' is not a valid id",
        r"^loadtest\.clients: 0 is outside 1\.\.100",
        r"^addons\.kuberay_operator_chart: 'latest' is not a pinned version",
    ]
    errors = info.value.errors
    assert len(errors) == len(expected), "\n".join(errors)
    for pattern, line in zip(expected, errors, strict=True):
        assert re.match(pattern, line), (pattern, line)
    assert str(info.value) == "\n".join(errors)
    shown = format_config_error(info.value)
    assert shown.splitlines()[0] == f"eks-inference: {len(expected)} configuration errors:"
    assert shown.splitlines()[1:] == [f"  {i}. {e}" for i, e in enumerate(errors, 1)]


def test_one_error_is_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_platform("dev", dev(nat_gateways=0))
    assert format_config_error(info.value) == ("eks-inference: configuration error: nat_gateways: 0 is outside 1..3; "
                                               "use 1 (dev) or one per AZ (prod); private nodes need a route out")


def test_instance_size_must_be_in_the_table() -> None:
    with pytest.raises(ConfigError, match=r"'c7g\.3xlarge' is not a c7g size in the instance table .*; use one of the "
                                          r"sizes medium, large, xlarge, 2xlarge"):
        parse_platform("dev", dev(node_groups=groups_with("graviton", instance_types=["c7g.3xlarge"])))


# --- Layouts that cannot fit the nodes ----------------------------------------------------------------------------


def _minilm(**serving: Any) -> list[dict[str, Any]]:
    return [{"name": "minilm", "processors": ["graviton", "inferentia"], "serving": serving}]


def four_each() -> list[dict[str, Any]]:
    """dev's node groups with four graviton and four inferentia nodes at most."""
    groups = groups_with("graviton", max_size=4)
    for g in groups:
        if g["name"] == "inferentia":
            g["max_size"] = 4
    return groups


def test_more_replicas_than_max_nodes_hold() -> None:
    """One Serve replica per worker pod, one whole-node pod per node: 5 replicas need 5 nodes, 4 are allowed."""
    with pytest.raises(ConfigError) as info:
        parse_platform("dev", dev(node_groups=four_each(), models=_minilm(num_replicas=5, num_threads=2)))
    assert info.value.errors == (
        "node group 'graviton' max_size: 4 cannot hold the serving replicas, which need 5 c7g.2xlarge nodes "
        "(minilm: 5 replicas, 1 per node (whole node)); raise max_size to 5 or lower max_replicas",
        "node group 'inferentia' max_size: 4 cannot hold the serving replicas, which need 5 inf2.xlarge nodes "
        "(minilm: 5 replicas, 1 per node (whole node)); raise max_size to 5 or lower max_replicas",
    )
    groups = groups_with("graviton", max_size=10)
    for g in groups:
        if g["name"] == "inferentia":
            g["max_size"] = 10
    assert parse_platform("dev", dev(node_groups=groups, models=_minilm(num_replicas=5))).models[0]


def test_upgrade_needs_room_for_the_new_clusters_minimum() -> None:
    """A NewCluster upgrade starts the new Ray cluster at min_replicas while the old one may run at max_replicas:
    groups of 4 nodes hold 3 + 1, not 4 + 1."""
    assert parse_platform("dev", dev(node_groups=four_each(), models=_minilm(min_replicas=1, max_replicas=3)))
    with pytest.raises(ConfigError) as info:
        parse_platform("dev", dev(node_groups=four_each(), models=_minilm(min_replicas=1, max_replicas=4)))
    assert info.value.errors == (
        "node group 'graviton' max_size: 4 leaves no room for a NewCluster upgrade, whose new Ray cluster starts at "
        "min_replicas next to the old one at max_replicas: 5 c7g.2xlarge nodes (minilm: 4 + 1 replicas, 1 per node "
        "(whole node)); raise max_size to 5, or lower max_replicas or min_replicas",
        "node group 'inferentia' max_size: 4 leaves no room for a NewCluster upgrade, whose new Ray cluster starts "
        "at min_replicas next to the old one at max_replicas: 5 inf2.xlarge nodes (minilm: 4 + 1 replicas, 1 per "
        "node (whole node)); raise max_size to 5, or lower max_replicas or min_replicas",
    )


def test_upgrade_room_counts_every_model_of_the_group() -> None:
    """An image change upgrades all RayServices of a processor at once: two models on graviton add up."""
    models = [{"name": "a", "processors": ["graviton"], "serving": {"min_replicas": 1, "max_replicas": 2}},
              {"name": "b", "processors": ["graviton"], "serving": {"num_replicas": 1}}]
    with pytest.raises(ConfigError, match=r"^node group 'graviton' max_size: 4 leaves no room for a NewCluster "
                                          r"upgrade, .*: 5 c7g\.2xlarge nodes \(a: 2 \+ 1 replicas, 1 per node "
                                          r"\(whole node\); b: 1 \+ 1 replicas, 1 per node \(whole node\)\)"):
        parse_platform("dev", dev(node_groups=four_each(), models=models))
    assert parse_platform("dev", dev(node_groups=groups_with("graviton", max_size=5), models=models))


def test_models_that_share_nodes_pack_by_their_requests() -> None:
    """A 2-CPU, 8 GiB pod: a c7g.4xlarge (16 vCPU, 32 GiB) holds three by memory, so 6 replicas need 2 nodes,
    and an upgrade (6 old + 3 new) three."""
    node = INSTANCE_TYPES["c7g.4xlarge"]
    req = worker_pod_requests(ServingSpec(num_threads=1), Processor.GRAVITON)
    assert (req.cpu, req.memory_gib) == (2, 8)
    assert req.per_node(node) == node.allocatable_memory_mib // (8 * 1024) == 3
    groups = groups_with("graviton", instance_types=["c7g.4xlarge"], max_size=3)
    shared = [{"name": "small", "processors": ["graviton"], "shares_node": True,
               "serving": {"min_replicas": 3, "max_replicas": 6}}]
    assert parse_platform("dev", dev(node_groups=groups, models=shared)).models[0].shares_node
    shared[0]["serving"] = {"num_replicas": 7}
    with pytest.raises(ConfigError, match=r"which need 3 c7g\.4xlarge nodes \(small: 7 replicas, 3 per node\)"):
        parse_platform("dev", dev(node_groups=groups_with("graviton", instance_types=["c7g.4xlarge"], max_size=2),
                                  models=shared))


def test_worker_pod_requests_are_sized_once() -> None:
    """The one sizing of a worker pod, which the capacity check, the cost table and the serving chart all take: Ray's
    CPUs (whole) or the torch threads, whichever is more, plus one for the raylet, the Serve proxy and the metrics
    agent; WORKER_MEMORY_GIB; the replica's NeuronCores on inf2 and whole GPUs on GPU nodes, nothing elsewhere."""
    s = ServingSpec(num_threads=2, neuron_cores_per_replica=2, gpus_per_replica=0.5)
    assert worker_pod_requests(s, Processor.GRAVITON) == WorkerPodRequests(cpu=3, memory_gib=WORKER_MEMORY_GIB)
    assert worker_pod_requests(s, Processor.INFERENTIA) == WorkerPodRequests(cpu=3, memory_gib=WORKER_MEMORY_GIB,
                                                                             neuron_cores=2)
    assert worker_pod_requests(s, Processor.GPU) == WorkerPodRequests(cpu=3, memory_gib=WORKER_MEMORY_GIB, gpus=1)
    assert worker_pod_requests(ServingSpec(cpus_per_replica=2.5), Processor.CPU).cpu == 3 + 1
    assert worker_pod_requests(ServingSpec(cpus_per_replica=0.5), Processor.CPU).cpu == 1 + 1


def test_worker_pod_larger_than_a_node() -> None:
    with pytest.raises(ConfigError, match=r"^model 'minilm' serving: a worker pod needs 2 CPU, 8 GiB, 4 NeuronCores "
                                          r"but one inf2\.xlarge \(node group 'inferentia'\) offers 3\.92 CPU, "
                                          r"15\.0 GiB, 2 NeuronCores; lower"):
        parse_platform("dev", dev(models=[{"name": "minilm", "processors": ["inferentia"],
                                           "serving": {"neuron_cores_per_replica": 4}}]))


def test_num_threads_above_the_instances_vcpus() -> None:
    with pytest.raises(ConfigError, match=r"^model 'minilm' serving\.num_threads: 6 exceeds the 4 vCPUs of "
                                          r"inf2\.xlarge \(node group 'inferentia'\); use at most 4, or a larger "
                                          r"instance type$"):
        parse_platform("dev", dev(models=[{"name": "minilm", "processors": ["inferentia"],
                                           "serving": {"num_threads": 6}}]))


def test_capacity_uses_the_groups_smallest_instance_type() -> None:
    groups = groups_with("graviton", instance_types=["c7g.4xlarge", "c7g.xlarge"])
    with pytest.raises(ConfigError, match=r"num_threads: 8 exceeds the 4 vCPUs of c7g\.xlarge \(node group 'graviton'"):
        parse_platform("dev", dev(node_groups=groups, models=[{"name": "m", "processors": ["graviton"],
                                                               "serving": {"num_threads": 8}}]))


def test_allocatable_follows_the_eks_bootstrap() -> None:
    """nodeadm reserves 6/1/0.5/0.5 % of the first four cores, 0.25 % of the rest, and 11 MiB per pod + 255 MiB."""
    t = INSTANCE_TYPES["c7g.2xlarge"]
    assert (t.vcpus, t.memory_gib, t.max_pods) == (8, 16, 58)
    assert t.allocatable_cpu_millis == 8000 - (60 + 10 + 10 + 10)
    assert t.allocatable_memory_mib == 16 * 1024 - (11 * 58 + 255) - 100
    assert INSTANCE_TYPES["inf2.24xlarge"].neuron_cores == 12 and INSTANCE_TYPES["g5.12xlarge"].gpus == 4


def test_readme_example_is_what_synth_prints() -> None:
    readme = (ROOT / "docs" / "configure.md").read_text()
    shown = re.search(r"```\n(eks-inference: 3 configuration errors:\n.*?)\n```", readme, flags=re.S)
    assert shown, "docs/configure.md's configuration error example is missing"
    block = dev(region="eu-wset-1", node_groups=groups_with("graviton", instance_types=["c7i.2xlarge"]))
    block["models"][0]["serving"]["max_batch_size"] = 0
    with pytest.raises(ConfigError) as info:
        parse_platform("dev", block)
    assert format_config_error(info.value) == shown.group(1)


def test_synth_prints_every_error(tmp_path: Path) -> None:
    """Through the real CLI and app.py: two mistakes, two numbered lines, no traceback."""
    env = offline_env()
    proc = subprocess.run([str(CDK), "synth", "-c", "env=dev", "-c", "account=12345", "-c", "region=eu-west1",
                           "--quiet", "-o", str(tmp_path / "cdk.out")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Subprocess exited with error" not in ln]
    assert lines == [
        "eks-inference: 2 configuration errors:",
        "  1. environment 'dev' account: '12345' is not a 12-digit AWS account id; set 'account' in the environment, "
        "pass -c account=123456789012, or export CDK_DEFAULT_ACCOUNT",
        "  2. environment 'dev' region: 'eu-west1' is not an AWS region; did you mean 'eu-west-1'? Set 'region' in "
        "cdk.json or pass -c region=eu-west-1",
    ], proc.stderr


# --- Autoscaling bounds -------------------------------------------------------------------------------------------


def test_replica_bounds_default_and_shorthand() -> None:
    """No bounds: one replica, no scaling; num_replicas fixes both; the target is derived per processor from the
    batch size: 1 on CPUs, a quarter batch on accelerators (default_target_ongoing_requests)."""
    assert ServingSpec().replicas == (1, 1)
    assert ServingSpec(num_replicas=3).replicas == (3, 3)
    assert ServingSpec(min_replicas=2).replicas == (2, 2)
    assert ServingSpec(min_replicas=1, max_replicas=4).replicas == (1, 4)
    assert ServingSpec(max_batch_size=32).target_for(Processor.GRAVITON) == 1
    assert ServingSpec(max_batch_size=32).target_for(Processor.INFERENTIA) == 8
    assert ServingSpec(max_batch_size=2).target_for(Processor.GPU) == 1
    assert ServingSpec(max_batch_size=512, max_ongoing_requests=64).target_for(Processor.GPU) == 64
    assert ServingSpec(target_ongoing_requests=6).target_for(Processor.CPU) == 6


@pytest.mark.parametrize(("serving", "message"), [
    ({"min_replicas": 0}, r"serving\.min_replicas: 0 is not a positive integer; give a whole number >= 1; with no "
                          r"replica, the RayService's Service has no endpoint and requests fail instead of waiting"),
    ({"min_replicas": 3, "max_replicas": 2}, r"serving: max_replicas 2 < min_replicas 3; raise max_replicas or "
                                             r"lower min_replicas"),
    ({"num_replicas": 2, "max_replicas": 4}, r"serving: num_replicas 2 is given with min_replicas/max_replicas "
                                             r"\(None/4\); give a fixed num_replicas or the autoscaling bounds"),
    ({"target_ongoing_requests": 100}, r"serving\.target_ongoing_requests: 100 exceeds max_ongoing_requests 64: "
                                       r"the replica would queue and shed before Serve's autoscaler adds replicas; "
                                       r"lower it to at most 64, or raise max_ongoing_requests"),
    ({"upscale_delay_s": -1}, r"serving\.upscale_delay_s: -1 is outside 0\.\.86400 s"),
    ({"look_back_period_s": 0}, r"serving\.look_back_period_s: 0 is outside \(0, 3600\] s"),
    ({"initializing_timeout_s": 5}, r"serving\.initializing_timeout_s: 5 is outside 60\.\.86400 s"),
])
def test_scaling_fields_are_checked(serving: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^model 'minilm' {message}"):
        parse_platform("dev", dev(models=_minilm(**serving)))


def test_system_group_cannot_scale_to_zero() -> None:
    """The Cluster Autoscaler runs on the system nodes; a system group at 0 would have to scale itself up."""
    with pytest.raises(ConfigError, match=r"node group 'system' min_size: 0 leaves the system group empty at times, "
                                          r"and the cluster autoscaler, the operators and the Ray heads run there; "
                                          r"use min_size 1 or more"):
        parse_platform("dev", dev(node_groups=groups_with("system", min_size=0)))
    assert NodeGroupSpec(name="inf", processor=Processor.INFERENTIA, instance_types=("inf2.xlarge",), min_size=0,
                         max_size=2).min_size == 0


def test_dev_inferentia_scales_from_zero() -> None:
    """dev keeps no Inferentia node idle: the group starts at 0 and the autoscaler adds one for the first replica."""
    group = load_config("dev", envs()).node_group_for(Processor.INFERENTIA)
    assert (group.min_size, group.desired_size, group.max_size) == (0, None, 6)


# --- One reader of cdk.json -----------------------------------------------------------------------------------------


def test_only_config_names_cdk_json_as_a_file() -> None:
    """Every command reaches cdk.json through read_project_context and validates what it read as synth does, so none
    can accept a shape synth refuses: no other module of the package names the file (prose may mention it)."""
    files = (CDK_JSON, "cdk.context.json")
    naming = set()
    for path in sorted((ROOT / "eks_inference").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            value = node.value if isinstance(node, ast.Constant) else None
            if isinstance(value, str) and value.endswith(files) and not any(c.isspace() for c in value):
                naming.add(path.relative_to(ROOT).as_posix())
    assert naming == {"eks_inference/config.py"}


def test_project_context_is_cdk_json_over_its_cached_lookups(tmp_path: Path) -> None:
    """The CDK CLI's order: cdk.json's context wins over cdk.context.json beside it; the cache adds the lookups."""
    (tmp_path / "cdk.json").write_text(json.dumps({"app": "python app.py", "context": {"a": "project", "b": 1}}))
    (tmp_path / "cdk.context.json").write_text(json.dumps({"a": "cached", "zones": ["us-west-2a"]}))
    assert read_project_context(tmp_path / "cdk.json") == {"a": "project", "b": 1, "zones": ["us-west-2a"]}
    (tmp_path / "cdk.context.json").unlink()
    assert read_project_context(tmp_path / "cdk.json") == {"a": "project", "b": 1}


@pytest.mark.parametrize(("text", "problem"), [
    (None, re.escape("not found; run from the project root or give the path to its cdk.json")),
    ('{"context": {', r"not valid JSON \(.* line 1 column 14 \(char 13\)\); fix the file"),
    ("[]", re.escape("holds a JSON list, not an object; fix the file")),
    ('{"context": []}', re.escape("""'context' is list, not an object; write "context": {...}""")),
])
def test_an_unreadable_cdk_json_is_named(tmp_path: Path, text: str | None, problem: str) -> None:
    cdk_json = tmp_path / "cdk.json"
    if text is not None:
        cdk_json.write_text(text)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(cdk_json))}: {problem}$"):
        load_environment("dev", cdk_json=cdk_json)


def test_load_environment_validates_as_synth_and_names_the_defined_ones(tmp_path: Path) -> None:
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps({"context": {ENVIRONMENTS_KEY: envs()}}))
    assert load_environment("prod", cdk_json=cdk_json) == load_config("prod", envs())
    with pytest.raises(ConfigError) as info:
        load_environment("staging", cdk_json=cdk_json)
    assert info.value.errors == (f"{cdk_json}: env: 'staging' is not a defined environment; use one of dev, prod",)
    cdk_json.write_text(json.dumps({"context": {}}))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(cdk_json))}: context 'eks-inference:environments' is "
                                          "missing or empty; define the environments there$"):
        load_environment("dev", cdk_json=cdk_json)
    block = dev()
    block["models"][0]["serving"]["max_batch_size"] = 0
    cdk_json.write_text(json.dumps({"context": {ENVIRONMENTS_KEY: {"dev": block}}}))
    with pytest.raises(ConfigError) as from_file:
        load_environment("dev", cdk_json=cdk_json)
    with pytest.raises(ConfigError) as from_mapping:
        load_config("dev", {"dev": block})
    assert from_file.value.errors == from_mapping.value.errors


def test_context_account_and_region_win_over_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """As `cdk synth -c account=... -c region=...`: the command line, then the block, then CDK_DEFAULT_*."""
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "777777777777")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-central-1")
    context = {ENVIRONMENTS_KEY: envs(), "env": "dev"}
    config = config_from_context({**context, "account": "999988887777", "region": "us-east-1"})
    assert (config.account, config.region) == ("999988887777", "us-east-1")
    config = config_from_context(context)
    assert (config.account, config.region) == ("111122223333", "us-west-2")
    block = dev()
    del block["account"], block["region"]
    config = config_from_context({ENVIRONMENTS_KEY: {"dev": block}, "env": "dev"})
    assert (config.account, config.region) == ("777777777777", "eu-central-1")


def test_weights_sha256_must_be_a_digest_and_every_example_environment_pins_one() -> None:
    """GIVEN a model entry
    WHEN weights_sha256 is not 64 lower-case hex digits
    THEN config names the field, the value and where to copy the digest from; and every model of the example
    environments pins the digest of the weights it serves (the bundled model's, as `eks-inference publish` prints)."""
    from eks_inference.artifacts.resolve import BUNDLED_MODELS, resolve_model

    with pytest.raises(ConfigError, match=r"model 'm' weights_sha256: 'v1' is not a sha256 digest; copy .*publish"):
        ModelSpec(name="m", weights_sha256="v1")
    bundled = {f"bundled:{n}": resolve_model(f"bundled:{n}", cache_dir="unused").digest for n in BUNDLED_MODELS}
    environments = cdk_context()[ENVIRONMENTS_KEY]
    for env_name in environments:
        for model in load_config(env_name, environments).models:
            assert model.weights_sha256 is not None, f"{env_name}: model {model.name!r} pins no weights digest"
            assert model.weights_sha256 == bundled[model.local_source]
