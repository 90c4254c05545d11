"""Session-wide fixtures: the CDK app is synthesized once per environment through the real CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eks_inference.node_runtime import SILENCE_END_OF_LIFE, quiet_node_banner

quiet_node_banner()  # tests that build stacks in this process start jsii's Node.js too

# Real servers shared by tests/integration/ and tests/system/: one Ray and one moto server per session.
from tests.servers import local_ray, local_serve, minilm, minilm_bf16, moto_s3_endpoint, serving_cache  # noqa: E402, F401

ROOT = Path(__file__).resolve().parents[1]
CDK = ROOT / "node_modules" / ".bin" / "cdk"
ENVIRONMENTS = ("dev", "prod")


def cdk_context() -> dict[str, Any]:
    """The context block of cdk.json (feature flags and environments), as the CLI passes it to the app."""
    return json.loads((ROOT / "cdk.json").read_text())["context"]


def offline_env() -> dict[str, str]:
    """The process environment without AWS credentials or profile, so nothing can reach an account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_DEFAULT_"))}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return env


class Assembly:
    """One synthesized cloud assembly directory and its templates."""

    def __init__(self, path: Path, stdout: str):
        self.path = path
        self.stdout = stdout
        self.manifest = json.loads((path / "manifest.json").read_text())

    @property
    def stack_names(self) -> list[str]:
        return sorted(k for k, v in self.manifest["artifacts"].items() if v["type"] == "aws:cloudformation:stack")

    def template(self, suffix: str) -> dict[str, Any]:
        (name,) = [n for n in self.stack_names if n.endswith(suffix)]
        return json.loads((self.path / f"{name}.template.json").read_text())

    @property
    def template_paths(self) -> list[Path]:
        return [self.path / f"{n}.template.json" for n in self.stack_names]

    @property
    def validation_report(self) -> dict[str, Any]:
        return json.loads((self.path / "validation-report.json").read_text())


def synth(target: Path, *context: str) -> Assembly:
    """The real `cdk synth` CLI, offline, into ``target``. jsii's Node banner variable is left out on purpose: the
    app must quiet it itself, as it does for a user who runs `npx cdk synth` without the Makefile."""
    if not CDK.exists():
        pytest.fail("node_modules/.bin/cdk is missing: run `make setup` (the Makefile installs the CDK CLI)")
    env = offline_env()
    env.pop(SILENCE_END_OF_LIFE, None)
    args = [a for c in context for a in ("-c", c)]
    proc = subprocess.run([str(CDK), "synth", *args, "--quiet", "-o", str(target)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"cdk synth {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return Assembly(target, proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def assemblies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Assembly]]:
    """`cdk synth -c env=NAME` for every example environment, offline and without credentials."""
    base = tmp_path_factory.mktemp("cdk-out")
    yield {env_name: synth(base / env_name, f"env={env_name}") for env_name in ENVIRONMENTS}


OWN_ACCOUNT, OWN_REGION = "123456789012", "eu-west-1"


@pytest.fixture(scope="session")
def own_account_assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """`cdk synth -c env=dev` for an account and region that nothing has looked up or cached, as a newcomer runs
    it with their own account (one synth, shared by the network, summary and output tests)."""
    return synth(tmp_path_factory.mktemp("cdk-out-own"), "env=dev", f"account={OWN_ACCOUNT}", f"region={OWN_REGION}")


ENVIRONMENTS_KEY = "eks-inference:environments"
RUN_ID = "run-001"
_CHILD = (
    "import os, pathlib, runpy\n"
    "import eks_inference.constructs.model_image as m\n"
    "root = os.environ.get('EKI_TEST_REPO_ROOT')\n"
    "if root:\n"
    "    m.REPO_ROOT = pathlib.Path(root)\n"
    "runpy.run_path('app.py', run_name='__main__')\n"
)


def with_load_test_run(env: dict[str, Any], run_id: str = RUN_ID) -> None:
    """Give an environment block a load-test run: the examples ship without one (so a first deploy measures
    nothing), and setting ``run_id`` is all a run needs (its pods get nodes of their own)."""
    env["loadtest"]["run_id"] = run_id


def synth_variant(outdir: Path, edit: Callable[[dict[str, Any]], None], *, env_name: str = "dev",
                  repo_root: Path | None = None) -> Path:
    """Synthesize ``env_name`` with ``edit`` applied to its environment block; returns the assembly directory.

    The real app (``app.py`` → ``build_app``) runs in a child process, with the context the CDK CLI would pass
    (cdk.json, cdk.context.json, ``-c env=NAME``) in ``CDK_CONTEXT_JSON``; the child's memory (~600 MB of jsii)
    goes when it exits.
    """
    context = {**cdk_context(), **json.loads((ROOT / "cdk.context.json").read_text())}
    environments = copy.deepcopy(context[ENVIRONMENTS_KEY])
    edit(environments[env_name])
    context.update({ENVIRONMENTS_KEY: environments, "env": env_name,
                    "aws:cdk:enable-path-metadata": True, "aws:cdk:version-reporting": False})
    env = {**offline_env(), "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(outdir)}
    if repo_root is not None:
        env["EKI_TEST_REPO_ROOT"] = str(repo_root)
    proc = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"synth of the {env_name} variant failed:\n{proc.stdout}\n{proc.stderr}"
    return outdir


@pytest.fixture(scope="session")
def run_assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """dev with load-test run ``run-001`` (:func:`with_load_test_run`): the one synth that has load-test Jobs and
    a load-test image, shared by the chart, summary and diff tests."""
    path = synth_variant(tmp_path_factory.mktemp("cdk-out-run") / "dev", with_load_test_run)
    return Assembly(path, "")


CANARY_DIGEST = "b" * 64
CANARY = {"revision": "v2", "weights_sha256": CANARY_DIGEST}


def with_canary(env: dict[str, Any]) -> None:
    """Give an environment's model a canary of revision v2, as ``eks-inference rollout start`` writes it."""
    (model,) = env["models"]
    model["canary"] = dict(CANARY)


def with_canary_promoted(env: dict[str, Any]) -> None:
    """The canary's revision and digest made the model's, as a promotion writes them."""
    (model,) = env["models"]
    model.update(revision=CANARY["revision"], weights_sha256=CANARY_DIGEST)


@pytest.fixture(scope="session")
def canary_assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """dev with minilm's canary at v2 (:func:`with_canary`), shared by the rollout and diff tests."""
    return Assembly(synth_variant(tmp_path_factory.mktemp("cdk-out-canary") / "dev", with_canary), "")


@pytest.fixture(scope="session")
def promoted_assembly(tmp_path_factory: pytest.TempPathFactory) -> Assembly:
    """dev with v2 made minilm's revision (:func:`with_canary_promoted`)."""
    return Assembly(synth_variant(tmp_path_factory.mktemp("cdk-out-promoted") / "dev", with_canary_promoted), "")
