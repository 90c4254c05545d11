"""Alerts reach a person: the workspace's alert manager definition (checked by amtool where it is installed) routes
every alert to an SNS topic of the environment, encrypted with a rotating customer managed key that AMP may use
only for that topic, and to which only that workspace may publish."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from eks_inference.constructs.alert_topic import alert_topic_name
from eks_inference.observability.alertmanager import GROUP_BY, alertmanager_definition, inner_config
from tests.conftest import Assembly
from tests.system.cfn import resolve

AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool is missing: run scripts/install-test-tools.sh "
                                  "(Debian: apt-get install --no-install-recommends prometheus-alertmanager)")
ACCOUNT, REGION = "111122223333", "us-west-2"


def of_type(t: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in t["Resources"].items() if r["Type"] == kind}


def the(t: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    ((rid, res),) = of_type(t, kind).items()
    return rid, res


def definition(asm: Assembly) -> str:
    """The workspace's AlertManagerDefinition as CloudFormation hands it to AMP (intrinsics resolved)."""
    _, ws = the(asm.template("-Cluster"), "AWS::APS::Workspace")
    return str(resolve(ws["Properties"]["AlertManagerDefinition"], account=ACCOUNT, region=REGION))


def test_every_alert_goes_to_the_environments_topic(assemblies: dict[str, Assembly]) -> None:
    """GIVEN dev and prod synthesized WHEN the workspace's definition is read THEN it is AMP's document around an
    Alertmanager configuration with one route, grouped per alert, model and processor, to an SNS receiver naming
    the stack's own topic (by ARN) and its region for SigV4, with none of the fields AMP refuses; the topics of the
    two environments differ."""
    arns = set()
    for env_name, asm in assemblies.items():
        t = asm.template("-Cluster")
        doc = yaml.safe_load(definition(asm))
        assert set(doc) == {"alertmanager_config"}
        config = yaml.safe_load(doc["alertmanager_config"])
        assert config["route"]["receiver"] == "sns" and config["route"]["group_by"] == list(GROUP_BY)
        assert "routes" not in config["route"]
        (receiver,) = config["receivers"]
        (sns_config,) = receiver["sns_configs"]
        assert set(receiver) == {"name", "sns_configs"} and not {"api_url", "http_config"} & set(sns_config)
        stack = next(n for n in asm.stack_names if n.endswith("-Cluster"))
        region = asm.manifest["artifacts"][stack]["environment"].rsplit("/", 1)[1]
        assert sns_config["sigv4"] == {"region": region}
        _, topic = the(t, "AWS::SNS::Topic")
        name = topic["Properties"]["TopicName"]
        assert name == alert_topic_name(stack)
        assert env_name in name
        assert sns_config["topic_arn"].endswith(f":sns:{region}:{sns_config['topic_arn'].split(':')[4]}:{name}")
        arns.add(sns_config["topic_arn"])
    assert len(arns) == len(assemblies)


def test_the_topic_is_encrypted_with_a_rotating_key_only_this_workspace_may_use_for_it(
        assemblies: dict[str, Assembly]) -> None:
    """GIVEN dev WHEN synthesized THEN the topic is encrypted with its own customer managed key (rotation on,
    retained), whose policy lets aps.amazonaws.com generate and decrypt data keys only with this topic as encryption
    context, for this workspace and account; the topic policy lets aps.amazonaws.com publish only for this workspace
    and account, and refuses requests without TLS."""
    t = assemblies["dev"].template("-Cluster")
    ws_id, _ = the(t, "AWS::APS::Workspace")
    _, topic = the(t, "AWS::SNS::Topic")
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = t["Resources"][key_id]
    assert key["Properties"]["EnableKeyRotation"] is True and key["DeletionPolicy"] == "Retain"
    (aps_use,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                  if s.get("Principal") == {"Service": "aps.amazonaws.com"}]
    assert sorted(aps_use["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    topic_arn = yaml.safe_load(yaml.safe_load(definition(assemblies["dev"]))["alertmanager_config"])[
        "receivers"][0]["sns_configs"][0]["topic_arn"]
    assert resolve(aps_use["Condition"]["StringEquals"]["kms:EncryptionContext:aws:sns:topicArn"],
                   account=ACCOUNT, region=REGION) == topic_arn
    assert aps_use["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert aps_use["Condition"]["ArnEquals"] == {"aws:SourceArn": {"Fn::GetAtt": [ws_id, "Arn"]}}
    _, policy = the(t, "AWS::SNS::TopicPolicy")
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    (publish,) = [s for s in statements if s["Effect"] == "Allow"]
    assert publish["Principal"] == {"Service": "aps.amazonaws.com"}
    assert sorted(publish["Action"]) == ["sns:GetTopicAttributes", "sns:Publish"]
    assert publish["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": [ws_id, "Arn"]}},
                                    "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_stack_says_where_to_subscribe(assemblies: dict[str, Assembly]) -> None:
    t = assemblies["dev"].template("-Cluster")
    topic_id, _ = the(t, "AWS::SNS::Topic")
    assert t["Outputs"]["AlertTopicArn"]["Value"] == {"Ref": topic_id}


@needs_amtool
def test_amtool_accepts_the_alert_manager_configuration(assemblies: dict[str, Assembly], tmp_path: Path) -> None:
    """GIVEN the definition each environment's workspace carries WHEN its inner Alertmanager configuration is
    checked by amtool (Prometheus's own parser: receivers, routes, SNS and SigV4 fields) THEN it passes."""
    for env_name, asm in assemblies.items():
        path = tmp_path / f"{env_name}.yaml"
        path.write_text(inner_config(definition(asm)))
        r = subprocess.run([str(AMTOOL), "check-config", str(path)], capture_output=True, text=True)
        assert r.returncode == 0 and "SUCCESS" in r.stdout + r.stderr, r.stdout + r.stderr


@needs_amtool
def test_amtool_refuses_what_amp_would_refuse_too(tmp_path: Path) -> None:
    """The check has teeth: GIVEN a receiver without a topic WHEN checked THEN amtool fails, naming it."""
    broken = inner_config(alertmanager_definition(topic_arn="", region=REGION))
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    r = subprocess.run([str(AMTOOL), "check-config", str(path)], capture_output=True, text=True)
    assert r.returncode != 0 and "topic" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr

