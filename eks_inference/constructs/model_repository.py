"""The S3 model repository: weights, compiled artifacts and load-test results under fixed prefixes."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, FeatureFlags, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from eks_inference.config import ConfigError

MODELS_PREFIX = "models/"
ARTIFACTS_PREFIX = "artifacts/"
RESULTS_PREFIX = "results/"
ACCESS_LOGS_FLAG = "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy"


class ModelRepository(Construct):
    """A private, KMS-encrypted, versioned, TLS-only bucket with access logs and a results lifecycle.

    Layout (what ``eks-inference publish`` writes and replicas read)::

        models/{name}/{revision}/...        weights + manifest.json (sha256 of every file)
        artifacts/{cache key}/...           compiled artifacts, written once per key
        results/{run id}/{target}/...       load-test client files and the merged report

    Under ``create_only_prefixes`` the bucket itself refuses every write that could replace an object: a PutObject
    or CompleteMultipartUpload without ``If-None-Match: *`` is denied whoever sends it (S3 User Guide, "Enforce
    conditional writes on Amazon S3 buckets"; parts of a multipart upload are exempt, only its completion creates
    the object). Server-side copies into those prefixes are refused as well (S3 accepts no conditional header on
    CopyObject there): upload instead, as ``eks-inference publish`` does.

    :param results_retention_days: load-test results expire after this many days; default 90.
    :param noncurrent_retention_days: overwritten object versions are kept this long; default 30.
    :param removal_policy: default RETAIN (models outlive a stack).
    :param create_only_prefixes: where nothing once written may be overwritten; default ``models/`` and
        ``artifacts/``, everything a replica loads.
    """

    def __init__(self, scope: Construct, construct_id: str, *, results_retention_days: int = 90,
                 noncurrent_retention_days: int = 30, removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
                 create_only_prefixes: Sequence[str] = (MODELS_PREFIX, ARTIFACTS_PREFIX)) -> None:
        super().__init__(scope, construct_id)
        bad = [p for p in create_only_prefixes if not isinstance(p, str) or not p.endswith("/") or "*" in p]
        if bad:
            raise ConfigError(f"ModelRepository create_only_prefixes: {bad!r} are not key prefixes; give prefixes "
                              "ending in '/', without wildcards, e.g. 'models/'")
        if not FeatureFlags.of(self).is_enabled(ACCESS_LOGS_FLAG):
            raise ConfigError(f"ModelRepository: the feature flag {ACCESS_LOGS_FLAG!r} is off in this app; without it "
                              "CDK grants access logging by ACL, which the buckets' BUCKET_OWNER_ENFORCED ownership "
                              'refuses at deploy; set it to true in cdk.json\'s "context" (cdk init sets it)')
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=removal_policy,
                           description="eks-inference model repository: weights, artifacts, results")
        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,  # S3 server access logging cannot write to SSE-KMS buckets
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=Duration.days(365),
                                              noncurrent_version_expiration=Duration.days(30))],
            removal_policy=removal_policy,
        )
        self.bucket = s3.Bucket(
            self, "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="model-repository/",
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-load-test-results", prefix=RESULTS_PREFIX,
                                 expiration=Duration.days(results_retention_days)),
                s3.LifecycleRule(id="expire-old-versions",
                                 noncurrent_version_expiration=Duration.days(noncurrent_retention_days),
                                 abort_incomplete_multipart_upload_after=Duration.days(7)),
            ],
            removal_policy=removal_policy,
        )
        self.create_only_prefixes = tuple(create_only_prefixes)
        if self.create_only_prefixes:
            self.bucket.add_to_resource_policy(iam.PolicyStatement(
                sid="CreateOnly", effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()], actions=["s3:PutObject"],
                resources=[self._objects(p) for p in self.create_only_prefixes],
                conditions={"Null": {"s3:if-none-match": "true"}, "Bool": {"s3:ObjectCreationOperation": "true"}}))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket.bucket_name}"

    def _objects(self, prefix: str) -> str:
        return self.bucket.arn_for_objects(f"{prefix}*")

    def grant_prefixes(self, grantee: iam.IGrantable, *, read: list[str], write: list[str]) -> None:
        """Object access scoped to prefixes: ``read`` may get and list, ``write`` may also put (create-only under
        :attr:`create_only_prefixes`, which the bucket enforces whatever this grants).

        Writers may abort their own multipart uploads: boto3 uploads large artifacts in parts and aborts a
        failed upload; without the permission the parts linger (billed) until the lifecycle rule's 7 days.
        """
        readable = sorted(set(read) | set(write))
        statements = [
            iam.PolicyStatement(sid="ListPrefixes", actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{p}*" for p in readable]}}),
            iam.PolicyStatement(sid="ReadPrefixes", actions=["s3:GetObject"],
                                resources=[self._objects(p) for p in readable]),
            iam.PolicyStatement(sid="DecryptObjects", actions=["kms:Decrypt"], resources=[self.key.key_arn]),
        ]
        if write:
            statements += [
                iam.PolicyStatement(sid="WritePrefixes", actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                                    resources=[self._objects(p) for p in write]),
                iam.PolicyStatement(sid="EncryptObjects", actions=["kms:GenerateDataKey"],
                                    resources=[self.key.key_arn]),
            ]
        for st in statements:
            grantee.grant_principal.add_to_principal_policy(st)

    def grant_verification_reads(self, grantee: iam.IGrantable) -> None:
        """What ``verify`` reads beside the weights without downloading them: each model's manifest (its
        weights digest) and the reference outputs stored under ``.references/``. Listing under ``models/``
        lets a missing reference read as 404 rather than 403; no weight file becomes readable.
        """
        statements = [
            iam.PolicyStatement(sid="ListModels", actions=["s3:ListBucket"], resources=[self.bucket.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{MODELS_PREFIX}*"]}}),
            iam.PolicyStatement(sid="ReadModelManifestsAndReferences", actions=["s3:GetObject"], resources=[
                self.bucket.arn_for_objects(f"{MODELS_PREFIX}*/manifest.json"),
                self.bucket.arn_for_objects(f"{MODELS_PREFIX}*/.references/*"),
            ]),
        ]
        for st in statements:
            grantee.grant_principal.add_to_principal_policy(st)
