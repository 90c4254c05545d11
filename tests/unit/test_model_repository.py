"""ModelRepository in a bare stack: a private, encrypted, versioned, TLS-only bucket with access logs and documented
lifecycle defaults, and grants scoped to its prefixes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from aws_cdk import App, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from eks_inference.config import ConfigError
from eks_inference.constructs.model_repository import ARTIFACTS_PREFIX, MODELS_PREFIX, RESULTS_PREFIX, ModelRepository


@dataclass
class Built:
    stack: Stack
    template: Template
    default: ModelRepository
    short: ModelRepository
    roles: dict[str, iam.Role]

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child))

    def statements(self, role: str) -> dict[str, dict[str, Any]]:
        """The role's policy statements by Sid."""
        (policy,) = self.template.find_resources("AWS::IAM::Policy", {"Properties": {
            "Roles": [{"Ref": self.logical_id(self.roles[role])}]}}).values()
        return {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}


LOGS_BY_BUCKET_POLICY = {"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True}
"""The feature flag (set in cdk.json, and by ``cdk init`` for new apps) under which S3 access logging is granted by
bucket policy; without it aws-cdk-lib grants it by ACL, which an owner-enforced bucket refuses at synth."""


@pytest.fixture(scope="module")
def built() -> Built:
    """One synth: a repository with the defaults, one with short retention that is destroyed with the stack, and
    three roles: a replica (reads models and artifacts), a compiler (also writes artifacts), a verifier."""
    stack = Stack(App(context=LOGS_BY_BUCKET_POLICY), "Repository")
    default = ModelRepository(stack, "Default")
    short = ModelRepository(stack, "Short", results_retention_days=7, noncurrent_retention_days=3,
                            removal_policy=RemovalPolicy.DESTROY)
    roles = {name: iam.Role(stack, name.capitalize(), assumed_by=iam.ServicePrincipal("pods.eks.amazonaws.com"))
             for name in ("replica", "compiler", "verifier")}
    default.grant_prefixes(roles["replica"], read=[MODELS_PREFIX, ARTIFACTS_PREFIX], write=[])
    default.grant_prefixes(roles["compiler"], read=[MODELS_PREFIX], write=[ARTIFACTS_PREFIX])
    default.grant_verification_reads(roles["verifier"])
    return Built(stack, Template.from_stack(stack), default, short, roles)


def test_bucket_is_private_kms_encrypted_versioned_and_logged(built: Built) -> None:
    """GIVEN a repository WHEN synthesized THEN its bucket blocks public access, is encrypted with its own rotating
    key (bucket key on), versioned, owner-enforced, and logs access to the access-log bucket under a prefix."""
    repo = built.default
    built.template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    built.template.has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [{
            "BucketKeyEnabled": True,
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {
                "Fn::GetAtt": [built.logical_id(repo.key), "Arn"]}}}]},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "VersioningConfiguration": {"Status": "Enabled"},
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        "LoggingConfiguration": {"DestinationBucketName": {"Ref": built.logical_id(repo.access_logs)},
                                 "LogFilePrefix": "model-repository/"},
    })


def test_access_logs_use_s3_managed_keys(built: Built) -> None:
    """GIVEN the access-log bucket WHEN synthesized THEN it is encrypted with S3-managed keys (S3 server access
    logging cannot write to SSE-KMS buckets) and expires logs after a year."""
    props = built.template.find_resources("AWS::S3::Bucket")[built.logical_id(built.default.access_logs)]["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    assert props["LifecycleConfiguration"]["Rules"] == [{"Id": "expire-access-logs", "ExpirationInDays": 365,
                                                          "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                                                          "Status": "Enabled"}]


def test_every_bucket_refuses_plain_http(built: Built) -> None:
    """GIVEN both buckets of a repository WHEN synthesized THEN each policy denies requests without TLS."""
    for bucket in (built.default.bucket, built.default.access_logs):
        built.template.has_resource_properties("AWS::S3::BucketPolicy", {
            "Bucket": {"Ref": built.logical_id(bucket)},
            "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
                "Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])},
        })


@pytest.mark.parametrize(("repo", "results_days", "noncurrent_days", "deletion"), [
    ("default", 90, 30, "Retain"),
    ("short", 7, 3, "Delete"),
])
def test_lifecycle_and_removal_follow_the_documented_defaults(built: Built, repo: str, results_days: int,
                                                              noncurrent_days: int, deletion: str) -> None:
    """GIVEN the defaults, or other retention and removal WHEN synthesized THEN results expire after 90 days and
    old versions after 30 by default, incomplete uploads after 7, and models outlive the stack unless told."""
    r: ModelRepository = getattr(built, repo)
    resource = built.template.find_resources("AWS::S3::Bucket")[built.logical_id(r.bucket)]
    assert resource["Properties"]["LifecycleConfiguration"]["Rules"] == [
        {"Id": "expire-load-test-results", "Prefix": RESULTS_PREFIX, "ExpirationInDays": results_days,
         "Status": "Enabled"},
        {"Id": "expire-old-versions", "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}, "Status": "Enabled"},
    ]
    assert resource["DeletionPolicy"] == deletion
    key = built.template.find_resources("AWS::KMS::Key")[built.logical_id(r.key)]
    assert key["DeletionPolicy"] == deletion


def test_read_grant_lists_and_reads_only_its_prefixes(built: Built) -> None:
    """GIVEN a grant that only reads WHEN synthesized THEN the role may list and get under its prefixes and
    decrypt, and may neither write nor encrypt."""
    st = built.statements("replica")
    assert set(st) == {"ListPrefixes", "ReadPrefixes", "DecryptObjects"}
    assert st["ListPrefixes"]["Condition"] == {"StringLike": {"s3:prefix": ["artifacts/*", "models/*"]}}
    assert st["ReadPrefixes"]["Action"] == "s3:GetObject" and len(st["ReadPrefixes"]["Resource"]) == 2


def test_write_grant_may_put_and_abort_uploads_under_its_prefixes_only(built: Built) -> None:
    """GIVEN a grant that writes artifacts WHEN synthesized THEN the role may put and abort its multipart uploads
    under artifacts/ only, encrypt with the repository's key, and read what it writes."""
    st = built.statements("compiler")
    assert set(st) == {"ListPrefixes", "ReadPrefixes", "DecryptObjects", "WritePrefixes", "EncryptObjects"}
    assert st["WritePrefixes"]["Action"] == ["s3:PutObject", "s3:AbortMultipartUpload"]
    assert st["WritePrefixes"]["Resource"]["Fn::Join"][1][-1] == f"/{ARTIFACTS_PREFIX}*"
    assert st["EncryptObjects"]["Resource"] == {"Fn::GetAtt": [built.logical_id(built.default.key), "Arn"]}
    assert st["ListPrefixes"]["Condition"] == {"StringLike": {"s3:prefix": ["artifacts/*", "models/*"]}}


def test_verification_reads_manifests_and_references_but_no_weights(built: Built) -> None:
    """GIVEN grant_verification_reads WHEN synthesized THEN the role may list under models/ and get only manifests
    and stored references."""
    st = built.statements("verifier")
    assert set(st) == {"ListModels", "ReadModelManifestsAndReferences"}
    tails = [r["Fn::Join"][1][-1] for r in st["ReadModelManifestsAndReferences"]["Resource"]]
    assert tails == [f"/{MODELS_PREFIX}*/manifest.json", f"/{MODELS_PREFIX}*/.references/*"]


def test_uri_names_the_bucket(built: Built) -> None:
    """GIVEN a repository WHEN its URI is resolved THEN it is s3:// and the bucket's name."""
    assert built.stack.resolve(built.default.uri) == {
        "Fn::Join": ["", ["s3://", {"Ref": built.logical_id(built.default.bucket)}]]}


def test_an_app_without_the_access_log_policy_flag_is_refused_before_any_resource() -> None:
    """GIVEN an app without the flag that grants access logging by bucket policy WHEN a repository is built THEN
    one ConfigError names the flag and the fix, and nothing was created (CDK would otherwise fail on an ACL)."""
    stack = Stack(App(), "NoFlag")
    with pytest.raises(ConfigError, match=r"serverAccessLogsUseBucketPolicy.* is off .*set it to true in cdk.json"):
        ModelRepository(stack, "Repo")
    assert not Template.from_stack(stack).find_resources("AWS::S3::Bucket")


def test_the_bucket_refuses_any_write_that_could_replace_what_replicas_load(built: Built) -> None:
    """GIVEN a repository with the default create-only prefixes
    WHEN its bucket policy is read
    THEN it denies, to every principal, a PutObject under models/ and artifacts/ that creates an object without
    If-None-Match (the form the S3 User Guide gives; parts of a multipart upload are exempt, their completion is
    not), and nothing under results/."""
    (policy,) = [p["Properties"]["PolicyDocument"] for p in built.template.find_resources(
        "AWS::S3::BucketPolicy").values() if p["Properties"]["Bucket"] == {"Ref": built.logical_id(
            built.default.bucket)}]
    (deny,) = [s for s in policy["Statement"] if s.get("Sid") == "CreateOnly"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == {"AWS": "*"} and deny["Action"] == "s3:PutObject"
    assert deny["Condition"] == {"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}}
    assert sorted(r["Fn::Join"][1][-1] for r in deny["Resource"]) == [f"/{ARTIFACTS_PREFIX}*", f"/{MODELS_PREFIX}*"]


def test_create_only_prefixes_must_be_plain_prefixes() -> None:
    """GIVEN a create-only prefix with a wildcard or no trailing slash WHEN a repository is built THEN ConfigError
    names the field, the values and the fix."""
    stack = Stack(App(context=LOGS_BY_BUCKET_POLICY), "Bad")
    with pytest.raises(ConfigError, match=r"create_only_prefixes: \['models', 'a/\*/'\] are not key prefixes.*'/'"):
        ModelRepository(stack, "Repo", create_only_prefixes=("models", "a/*/", "artifacts/"))
