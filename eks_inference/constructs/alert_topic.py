"""The SNS topic a metrics workspace's alert manager publishes to, and from which people subscribe.

* **Encrypted with a customer managed key** (rotation on, retained like the other keys): SNS encrypts each message
  with a data key from it, asked for by the publisher, so the key policy lets Amazon Managed Service for
  Prometheus (``aps.amazonaws.com``) generate and decrypt data keys, and only for this topic (the encryption
  context SNS sends, ``aws:sns:topicArn``), from this workspace (``aws:SourceArn``) in this account (AMP user
  guide, "Giving Amazon Managed Service for Prometheus permission to send alert messages to your Amazon SNS
  topic": ``kms:GenerateDataKey*`` and ``kms:Decrypt`` for an SSE topic). An AWS managed key (``alias/aws/sns``)
  would not do: its policy cannot be given to AMP.
* **Topic policy**: ``aps.amazonaws.com`` may publish (and read the topic's attributes, as that guide asks) only
  for this workspace and account (``aws:SourceArn``, ``aws:SourceAccount``: the confused-deputy conditions of the
  same page); a publish without TLS is refused.
* **Named per environment**, ``<stack name>-alerts``, so the topic's ARN is known before it exists: the key policy
  names the topic by it, and the workspace's alert manager definition does too, without a reference that would
  make the workspace wait for the topic, the topic for its key and the key for the workspace.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct

APS = "aps.amazonaws.com"


def alert_topic_name(stack_name: str) -> str:
    """The topic's name: the stack's (which names the environment) and ``-alerts``."""
    return f"{stack_name}-alerts"


class AlertTopic(Construct):
    """The topic, its key and both policies (module docstring).

    :param workspace_arn: the one workspace that may publish.
    :param topic_name: default :func:`alert_topic_name` of the stack.
    """

    def __init__(self, scope: Construct, construct_id: str, *, workspace_arn: str,
                 topic_name: str | None = None) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.topic_name = topic_name or alert_topic_name(stack.stack_name)
        self.topic_arn = stack.format_arn(service="sns", resource=self.topic_name,
                                          arn_format=ArnFormat.NO_RESOURCE_NAME)
        """The topic's ARN, from its name (what the alert manager definition names)."""
        from_workspace = {"ArnEquals": {"aws:SourceArn": workspace_arn},
                          "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}}
        self.key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=RemovalPolicy.RETAIN,
                           description="Encrypts the eks-inference alert topic (SNS) that the metrics workspace "
                                       "publishes to")
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="AlertManagerEncryptsForTheAlertTopic", principals=[iam.ServicePrincipal(APS)],
            actions=["kms:GenerateDataKey*", "kms:Decrypt"], resources=["*"],
            conditions={**from_workspace, "StringEquals": {
                **from_workspace["StringEquals"], "kms:EncryptionContext:aws:sns:topicArn": self.topic_arn}}))
        self.topic = sns.Topic(self, "Topic", topic_name=self.topic_name, master_key=self.key, enforce_ssl=True,
                               display_name="eks-inference alerts")
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="AlertManagerPublishes", principals=[iam.ServicePrincipal(APS)],
            actions=["sns:Publish", "sns:GetTopicAttributes"], resources=[self.topic.topic_arn],
            conditions=from_workspace))
