"""The metrics workspace's alert manager definition: every alert of :mod:`eks_inference.observability.rules` goes
to one SNS topic, from which people subscribe (docs/observability.md, "Alerts: how to subscribe").

The format is Amazon Managed Service for Prometheus's (AMP user guide, "Create an alert manager configuration"):
a YAML document whose ``alertmanager_config`` holds, as a string, a standard Alertmanager configuration; SNS is
its only receiver type, the topic must be in the workspace's account, ``sigv4.region`` is required and
``api_url`` and ``http_config`` are refused ("Configure alert manager to send messages to your Amazon SNS topic").
``repeat_interval`` is capped at five days there. ``amtool check-config`` checks the inner configuration in
``make test``.

Routing: one route to the topic, grouped per alert, model and processor (a latency alert on two models is two
messages, one alert across two replicas of a model is one), a first message 30 s after the first alert of a group,
news of a group at most every 5 minutes, and a still-firing alert repeated every 4 hours. The subject stays
within what SNS takes (ASCII, 100 characters; AMP truncates longer ones): the status, the alert and the count.
"""

from __future__ import annotations

import textwrap
from typing import Any

import yaml

RECEIVER = "sns"
GROUP_BY = ("alertname", "application", "processor")
SUBJECT = "[{{ .Status | toUpper }}] {{ .GroupLabels.alertname }} ({{ .Alerts | len }})"


def render_alertmanager_config(*, topic_arn: str, region: str) -> dict[str, Any]:
    """The Alertmanager configuration (``alertmanager_config``) that routes every alert to ``topic_arn``."""
    return {
        "route": {"receiver": RECEIVER, "group_by": list(GROUP_BY), "group_wait": "30s", "group_interval": "5m",
                  "repeat_interval": "4h"},
        "receivers": [{"name": RECEIVER, "sns_configs": [{
            "topic_arn": topic_arn, "sigv4": {"region": region}, "subject": SUBJECT, "send_resolved": True}]}],
    }


def alertmanager_definition(*, topic_arn: str, region: str) -> str:
    """``AWS::APS::Workspace.AlertManagerDefinition``: AMP's document around the configuration."""
    inner = yaml.safe_dump(render_alertmanager_config(topic_arn=topic_arn, region=region), sort_keys=False,
                           width=1000)
    return "alertmanager_config: |\n" + textwrap.indent(inner, "  ")


def inner_config(definition: str) -> str:
    """The Alertmanager configuration inside an AMP definition (what ``amtool check-config`` reads)."""
    return str(yaml.safe_load(definition)["alertmanager_config"])
