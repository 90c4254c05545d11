"""The constructs work inside someone else's App/Stack, and the snippet in docs/constructs.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys

from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk.assertions import Match, Template
from aws_cdk.lambda_layer_kubectl_v36 import KubectlV36Layer

from eks_inference.config import NodeGroupSpec, Processor
from eks_inference.constructs.processor_node_group import ProcessorNodeGroup
from tests.conftest import ROOT, offline_env


def test_processor_node_group_in_a_foreign_cluster() -> None:
    stack = Stack(App(), "SomeoneElses")
    cluster = eks.Cluster(stack, "Theirs", version=eks.KubernetesVersion.V1_36,
                          vpc=ec2.Vpc(stack, "Vpc", max_azs=2),
                          kubectl_provider_options=eks.KubectlProviderOptions(
                              kubectl_layer=KubectlV36Layer(stack, "Layer")))
    group = ProcessorNodeGroup(stack, "Inf2", cluster=cluster, spec=NodeGroupSpec(
        name="inf", processor=Processor.INFERENTIA, instance_types=("inf2.8xlarge",), min_size=1, max_size=3))
    t = Template.from_stack(stack)
    t.has_resource_properties("AWS::EKS::Nodegroup", {
        "AmiType": "AL2023_x86_64_NEURON", "InstanceTypes": ["inf2.8xlarge"],
        "Labels": {"eks-inference/processor": "inferentia"},
        "Taints": [{"Key": "aws.amazon.com/neuron", "Value": "true", "Effect": "NO_SCHEDULE"}],
        "ScalingConfig": {"MinSize": 1, "MaxSize": 3, "DesiredSize": {"Fn::GetAtt": [Match.any_value(), "Size"]}},
    })
    t.has_resource_properties("Custom::NodeCount", {"MinSize": 1, "MaxSize": 3, "InitialSize": 1})
    assert group.nodegroup is not None and group.role is not None and group.launch_template is not None


def test_readme_snippet_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    readme = (ROOT / "docs" / "constructs.md").read_text()
    match = re.search(r"<!-- snippet: import-constructs .*?-->\s*```python\n(.*?)```", readme, re.S)
    assert match, "docs/constructs.md lost its import-constructs snippet"
    script = tmp_path / "snippet.py"
    script.write_text(match.group(1))
    env = {**offline_env(), "CDK_OUTDIR": str(tmp_path / "cdk.out")}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "MyInference/Inference/Cluster ['graviton', 'system']" in proc.stdout
    assert list(tmp_path.glob("cdk.out/MyInference.template.json"))
