"""The Neuron stack pinned: the inf2 groups' AMI release per environment, the SDK in one table, and what a change
of either asks for (validation, synth, preflight rows that need no AWS, the diff's line)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from eks_inference.cli import main
from eks_inference.config import (
    CDK_JSON,
    ENVIRONMENTS_KEY,
    NEURON_BASE_TAG,
    ConfigError,
    ImageBases,
    load_config,
    read_project_context,
)
from eks_inference.ops import diff as d
from eks_inference.ops import preflight as pf
from eks_inference.ops.neuron_artifacts import compile_command, neuron_models
from eks_inference.ops.trial import TrialContext
from eks_inference.ops.trial_runner import wait_commands
from eks_inference.tables.neuron import (
    NEURON_AMI_RELEASE,
    NEURON_AMIS,
    NEURON_METADATA,
    NEURON_SDK,
    NeuronAmi,
    driver_gap,
)
from tests.conftest import ROOT, Assembly

PIN_LINE = (r"^node group '{group}': no ami_release_version in environment '{env}', so EKS would pick the AMI \(and "
            r"its Neuron driver\) on the day the group is created; add \"ami_release_version\": "
            rf"\"{re.escape(NEURON_AMI_RELEASE)}\" \(recorded with Neuron SDK {re.escape(NEURON_SDK.version)} in "
            r"eks_inference/tables/neuron.py\)$")


def environments() -> dict[str, Any]:
    return copy.deepcopy(dict(read_project_context(ROOT / CDK_JSON)[ENVIRONMENTS_KEY]))


def inf_group(block: dict[str, Any]) -> dict[str, Any]:
    return next(g for g in block["node_groups"] if g["processor"] == "inferentia")


def test_every_environment_pins_the_recorded_release_on_its_inf2_group() -> None:
    envs = environments()
    assert {"dev", "prod"} <= set(envs)
    for name in envs:
        (group,) = [g for g in load_config(name, envs).node_groups if g.processor and g.processor.value == "inferentia"]
        assert group.ami_release_version == NEURON_AMI_RELEASE, name
    assert NEURON_AMIS[NEURON_AMI_RELEASE].ami_name == "amazon-eks-node-al2023-x86_64-neuron-1.36-v20260714"


def test_an_unpinned_inf2_group_outside_dev_is_one_line_each() -> None:
    envs = environments()
    del inf_group(envs["prod"])["ami_release_version"]
    with pytest.raises(ConfigError) as e:
        load_config("prod", envs)
    assert [line for line in str(e.value).splitlines()] == [
        line for line in str(e.value).splitlines() if re.match(PIN_LINE.format(group="inferentia", env="prod"), line)]
    assert len(str(e.value).splitlines()) == 1

    staging = copy.deepcopy(envs["prod"])
    second = {**inf_group(staging), "name": "inferentia-big", "instance_types": ["inf2.8xlarge"]}
    staging["node_groups"].append(second)
    staging["node_groups"].append({**second, "name": "inferentia-off", "enabled": False})  # disabled: not asked
    with pytest.raises(ConfigError) as e:
        load_config("staging", {**envs, "staging": staging})
    lines = str(e.value).splitlines()
    assert len(lines) == 2
    assert re.match(PIN_LINE.format(group="inferentia", env="staging"), lines[0])
    assert re.match(PIN_LINE.format(group="inferentia-big", env="staging"), lines[1])


def test_the_pin_check_also_runs_beside_other_mistakes() -> None:
    envs = environments()
    del inf_group(envs["prod"])["ami_release_version"]
    envs["prod"]["nat_gateways"] = -1
    with pytest.raises(ConfigError) as e:
        load_config("prod", envs)
    lines = str(e.value).splitlines()
    assert any("nat_gateways" in line for line in lines)
    assert sum(bool(re.match(PIN_LINE.format(group="inferentia", env="prod"), line)) for line in lines) == 1


def test_a_badly_written_release_is_its_own_line_and_not_a_missing_pin() -> None:
    envs = environments()
    inf_group(envs["prod"])["ami_release_version"] = "1.35.6-20260714"
    with pytest.raises(ConfigError) as e:
        load_config("prod", envs)
    (line,) = str(e.value).splitlines()
    assert line.startswith("node group 'inferentia' ami_release_version: '1.35.6-20260714' is not an EKS AMI "
                           "release for Kubernetes 1.36; write 1.36.PATCH-YYYYMMDD")


def test_dev_may_leave_it_out_and_preflight_warns() -> None:
    envs = environments()
    del inf_group(envs["dev"])["ami_release_version"]
    config = load_config("dev", envs)
    (row,) = pf.check_neuron_ami(pf.Context(config=config, assembly=None, zones=None))
    assert row.status == pf.WARN and row.check == "AMI release inferentia"
    assert row.fix == f'add "ami_release_version": "{NEURON_AMI_RELEASE}" to the group in cdk.json'


def test_preflight_reads_the_release_against_the_sdk() -> None:
    envs = environments()
    ctx = pf.Context(config=load_config("prod", envs), assembly=None, zones=None)
    (row,) = pf.check_neuron_ami(ctx)
    assert row.status == pf.PASS
    assert row.found == (f"{NEURON_AMI_RELEASE}: Neuron driver 2.29.0.0 for Neuron SDK {NEURON_SDK.version} "
                         f"(released with driver {NEURON_SDK.driver})")
    inf_group(envs["prod"])["ami_release_version"] = "1.36.9-20261201"
    (row,) = pf.check_neuron_ami(pf.Context(config=load_config("prod", envs), assembly=None, zones=None))
    assert row.status == pf.WARN and "not recorded next to Neuron SDK" in row.found
    old = NeuronAmi(release_version="1.36.0-20260501", ami_name="x", driver="2.27.3.0")
    assert driver_gap(old) == (f"AMI release 1.36.0-20260501 ships Neuron driver 2.27.3.0, older than the "
                               f"{NEURON_SDK.driver} released with Neuron SDK {NEURON_SDK.version}")
    assert driver_gap(NEURON_AMIS[NEURON_AMI_RELEASE]) is None


def test_the_sdk_is_recorded_once_and_the_image_builds_from_it() -> None:
    assert f"-sdk{NEURON_SDK.version}-" in NEURON_BASE_TAG
    dockerfile = (ROOT / "model_images" / "inferentia2" / "Dockerfile").read_text()
    assert f"ARG NEURON_BASE={NEURON_BASE_TAG}" in dockerfile
    assert f'com.amazonaws.neuron.sdk.version="{NEURON_SDK.version}"' in dockerfile
    assert f"NEURON_SDK_VERSION={NEURON_SDK.version}" in dockerfile


def test_synth_renders_the_pinned_release_and_records_the_sdk(assemblies: dict[str, Assembly]) -> None:
    for env in ("dev", "prod"):
        groups = [r["Properties"] for r in assemblies[env].template("Cluster")["Resources"].values()
                  if r["Type"] == "AWS::EKS::Nodegroup"]
        (inf,) = [g for g in groups if g.get("AmiType") == "AL2023_x86_64_NEURON"]
        assert inf["ReleaseVersion"] == NEURON_AMI_RELEASE, env
        assert all("ReleaseVersion" not in g for g in groups if g is not inf)
        meta = assemblies[env].template("Inference")["Metadata"][NEURON_METADATA]
        assert meta == {"sdk": NEURON_SDK.version, "neuronx_cc": NEURON_SDK.neuronx_cc, "models": ["minilm"]}


def test_diff_names_the_artifacts_a_new_sdk_needs(assemblies: dict[str, Assembly]) -> None:
    new = {n: json.loads((assemblies["dev"].path / f"{n}.template.json").read_text())
           for n in assemblies["dev"].stack_names}
    (inference,) = [n for n in new if n.endswith("-Inference")]
    old = copy.deepcopy(new)
    old[inference]["Metadata"][NEURON_METADATA]["sdk"] = "2.29.0"
    result = d.diff_templates(old, new)
    (note,) = result.notes
    assert note.startswith(f"Neuron SDK 2.29.0 → {NEURON_SDK.version}: compiled artifacts for SDK "
                           f"{NEURON_SDK.version} are needed for model 'minilm' before any replica runs it; run "
                           "`eks-inference compile ... --processor inferentia --publish-to REPOSITORY`")
    assert result.changed
    assert f"! {note}" in d.render_text(result)
    assert f"> **Before deploying:** {note}" in d.render_markdown(result)
    assert json.loads(d.render_json(result))["notes"] == [note]
    assert d.diff_templates(new, new).notes == []


def test_the_compile_command_publishes_what_the_replicas_look_for() -> None:
    config = load_config("prod", environments())
    (model,) = neuron_models(config)
    assert compile_command(model, "s3://bucket-1") == (
        "eks-inference compile s3://bucket-1/models/minilm/v1 --name minilm --revision v1 --task embedding "
        "--processor inferentia --dtype bf16 --batch-buckets 1,2,4,8,16,32 --max-seq-length 128 "
        f"--weights-sha256 {model.weights_sha256} --publish-to s3://bucket-1")


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_the_trial_plan_names_the_neuron_stack(env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["trial", "--env", env, "--budget-usd", "1000", "--dry-run", "--app-dir", str(ROOT),
               "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert (f"Neuron SDK {NEURON_SDK.version} (neuronx-cc {NEURON_SDK.neuronx_cc}) for minilm: compiled by the compile "
            "Jobs, then checked published, before any replica is waited on; inferentia on AMI release "
            f"{NEURON_AMI_RELEASE}") in out


def test_the_trials_compile_step_requires_the_pinned_compilers_artifacts(tmp_path: Path) -> None:
    config = load_config("prod", environments())
    ctx = TrialContext(config=config, run_dir=tmp_path, deadline=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
                       run_id="trial-x")
    wait, check = wait_commands("compile", ctx)
    assert wait[:4] == ["kubectl", "-n", "eks-inference", "wait"] and "eks-inference/role=compile" in wait
    assert check[1:] == ["-m", "eks_inference.cli", "preflight", "--env", "prod", "--artifacts-only"]


def test_a_neuron_base_of_another_sdk_than_the_table_is_refused() -> None:
    digest = "@sha256:" + "0" * 64
    assert ImageBases(neuron_base=NEURON_BASE_TAG + digest).neuron_base == NEURON_BASE_TAG + digest
    older = NEURON_BASE_TAG.replace(f"-sdk{NEURON_SDK.version}-", "-sdk2.29.0-") + digest
    with pytest.raises(ConfigError) as e:
        ImageBases(neuron_base=older)
    (line,) = str(e.value).splitlines()
    assert line == (f"images.neuron_base: {older!r} is a Neuron SDK 2.29.0 image, but eks_inference/tables/neuron.py "
                    f"pins {NEURON_SDK.version} (the compiler the published artifacts are checked against); run "
                    f"`python scripts/pin_base_images.py pin` to pin the SDK {NEURON_SDK.version} tag, or bump the "
                    "table first")
