"""The store Ray's Global Control Service (GCS) keeps its state in, so that a lost Ray head comes back with it.

KubeRay's GCS fault tolerance needs an external Redis-compatible store that Ray can use:

* **Standalone, one shard.** Ray refuses a Redis cluster of more than one shard (ray
  src/ray/gcs/store_client/redis_context.cc, ``RedisContext::Connect`` asks ``CLUSTER INFO`` and fails on
  ``cluster_size > 1``) and KubeRay documents standalone Redis only; ElastiCache Serverless is a cluster. So:
  ElastiCache (Redis OSS), cluster mode disabled: one primary, ``replicas`` in other zones with automatic failover
  (Multi-AZ) when there is at least one.
* **TLS, required.** Ray speaks TLS to the store when its address is ``rediss://``, and verifies the server with the
  CA bundle ``RAY_REDIS_CA_CERT`` names (eks_inference.k8s.ray_service.GcsFaultTolerance).
* **An auth token** generated into a Secrets Manager secret; CloudFormation resolves it into the replication group
  at deploy through a dynamic reference, so the value is never in the template.
* **A customer managed key** (rotation on) encrypts the store at rest and the secret.
* **Private subnets**, and a security group that admits the store's port from the EKS cluster security group only.
  That is as narrow as a security group can be here: with the VPC CNI a pod sends from its node's network interface
  and with its node's security groups (the cluster security group, on every managed node), so a rule cannot tell a
  Ray head from any other pod of the cluster. (Security groups for pods could, with trunk interfaces on every node
  and a SecurityGroupPolicy per head; not worth its limits here.) The heads alone are let out to the store by the
  serving chart's NetworkPolicies, under the default deny of every namespace the app creates; the auth token
  keeps out anyone else who reaches the port.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws, Fn, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from eks_inference.config import ConfigError
from eks_inference.k8s.ray_service import GCS_STORE_PORT

ENGINE = "redis"
ENGINE_VERSION = "7.1"
"""Redis OSS 7.1, the newest ElastiCache offers for Redis OSS; Ray's own tests run against Redis 7."""


class GcsStore(Construct):
    """An ElastiCache replication group for the GCS state of every Ray cluster of the environment (module docstring).

    :param vpc: the cluster's VPC; the store lives in its private subnets.
    :param admit: the security group whose members may connect (the EKS cluster security group).
    :param node_type: ElastiCache node type, default ``cache.t4g.medium``.
    :param replicas: replicas of the shard in other zones, default 1 (automatic failover, Multi-AZ); 0 to 5.
    :param key: the KMS key for the store and the secret; default a new one with rotation on, retained.
    """

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, admit: ec2.ISecurityGroup,
                 node_type: str = "cache.t4g.medium", replicas: int = 1, key: kms.IKey | None = None,
                 port: int = GCS_STORE_PORT) -> None:
        super().__init__(scope, construct_id)
        if not 0 <= replicas <= 5:
            raise ConfigError(f"ray.redis_replicas: {replicas!r} is outside 0..5; use 1 (a replica in another zone) "
                              "or 0 (a single node)")
        subnets = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS).subnets
        self.port = port
        self.subnet_cidrs: Sequence[str] = [s.ipv4_cidr_block for s in subnets]
        """Where the store's network interfaces are: the NetworkPolicy that lets the heads out names them."""
        self.key = key or kms.Key(self, "Key", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                                  description="Encrypts the eks-inference Ray GCS store and its auth token")
        # ElastiCache auth tokens: 16 to 128 printable characters without '/', '"' or '@'; letters and digits only.
        self.auth_token = secretsmanager.Secret(
            self, "AuthToken", description="Auth token of the eks-inference Ray GCS store (ElastiCache)",
            encryption_key=self.key, generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True, include_space=False))
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=False,
            description="eks-inference Ray GCS store: pods of the cluster (NetworkPolicies narrow it to Ray heads)")
        self.security_group.add_ingress_rule(admit, ec2.Port.tcp(port),
                                             "Ray heads and KubeRay Redis cleanup Jobs (pods of the cluster)")
        self.subnet_group = elasticache.CfnSubnetGroup(
            self, "SubnetGroup", description="eks-inference Ray GCS store: the private subnets",
            subnet_ids=[s.subnet_id for s in subnets])
        failover = replicas > 0
        self.replication_group = elasticache.CfnReplicationGroup(
            self, "ReplicationGroup",
            replication_group_description="eks-inference Ray GCS fault tolerance (KubeRay gcsFaultToleranceOptions)",
            engine=ENGINE, engine_version=ENGINE_VERSION, cache_node_type=node_type,
            cluster_mode="disabled", num_cache_clusters=1 + replicas,
            automatic_failover_enabled=failover, multi_az_enabled=failover,
            port=port, cache_subnet_group_name=self.subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            transit_encryption_enabled=True, transit_encryption_mode="required",
            at_rest_encryption_enabled=True, kms_key_id=self.key.key_arn,
            auth_token=self.auth_token.secret_value.unsafe_unwrap(),  # a {{resolve:secretsmanager:...}} reference
            auto_minor_version_upgrade=True,
            # The GCS state lives as long as its Ray cluster; a backup of it could never be restored into a new one.
            snapshot_retention_limit=0,
        )
        self.host: str = self.replication_group.attr_primary_end_point_address
        """The primary endpoint: after a failover it names the new primary."""
        self.address = Fn.join("", ["rediss://", self.host, ":", self.replication_group.attr_primary_end_point_port])

    def grant_token_read(self, grantee: iam.IGrantable) -> None:
        """Let ``grantee`` read the auth token and nothing else: ``GetSecretValue`` on this secret, and ``kms:Decrypt``
        with the store's key only when Secrets Manager asks for this secret (``kms:ViaService`` and the encryption
        context Secrets Manager sends, ``SecretARN``: Secrets Manager User Guide, "Secret encryption and decryption
        in AWS Secrets Manager"). Narrower than ``Secret.grant_read``, which adds ``DescribeSecret`` and any use of the
        key through Secrets Manager."""
        arn = self.auth_token.secret_arn
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=["secretsmanager:GetSecretValue"], resources=[arn]))
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=["kms:Decrypt"], resources=[self.key.key_arn], conditions={"StringEquals": {
                "kms:ViaService": f"secretsmanager.{Aws.REGION}.amazonaws.com",
                "kms:EncryptionContext:SecretARN": arn}}))
