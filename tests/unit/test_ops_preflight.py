"""Preflight pieces that need no AWS: quota classes, Docker buildx platforms, the CLI's usage errors."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import replace

import pytest

from eks_inference.config import ENVIRONMENTS_KEY, Processor
from eks_inference.ops import preflight as pf
from eks_inference.ops.project import availability_zones, platform_config, read_context
from tests.conftest import ROOT, offline_env

EI = ROOT / ".venv" / "bin" / "eks-inference"

# RECORDED: `docker buildx inspect` of Docker Desktop's default builder (buildx 0.2x) on an x86 machine
# with QEMU emulation registered, and of a plain Linux daemon without it.
INSPECT_WITH_EMULATION = """Name:          default
Driver:        docker

Nodes:
Name:             default
Endpoint:         default
Status:           running
BuildKit version: v0.20.2
Platforms:        linux/amd64, linux/amd64/v2, linux/amd64/v3, linux/arm64, linux/riscv64, linux/ppc64le, linux/386
Labels:
 org.mobyproject.buildkit.worker.moby.host-gateway-ip: 172.17.0.1
"""
INSPECT_PLAIN = """Name:   default
Driver: docker

Nodes:
Name:      default
Endpoint:  default
Status:    running
Platforms: linux/amd64*, linux/amd64/v2, linux/amd64/v3, linux/386
"""


def dev_context(**overrides: str) -> pf.Context:
    ctx = read_context(ROOT, {"env": "dev", **overrides})
    config = platform_config(ctx)
    return pf.Context(config=config, assembly=None, zones=availability_zones(ctx, config))


def runner(outputs: dict[str, tuple[int, str]]) -> pf.Runner:
    def run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        rc, out = outputs[" ".join(cmd[1:])]
        return subprocess.CompletedProcess(list(cmd), rc, out if rc == 0 else "", "" if rc == 0 else out)
    return run


def test_quota_classes() -> None:
    assert [pf.quota_class(f) for f in ("inf2", "g5", "g6e", "vt1", "p5", "c7g", "m7i", "t4g", "r7g")] == [
        "inf", "g", "g", "g", "p", "standard", "standard", "standard", "standard"]


def test_buildx_platforms_are_parsed() -> None:
    assert pf.parse_buildx_platforms(INSPECT_WITH_EMULATION) >= {"linux/amd64", "linux/arm64"}
    assert pf.parse_buildx_platforms(INSPECT_PLAIN) == {"linux/amd64", "linux/386"}


def test_docker_needs_arm64_for_the_graviton_image() -> None:
    ctx = dev_context()
    assert not ctx.config.loadtest.run_id  # dev ships without a run, so the app has no load-test image
    assert ctx.images_to_build() == {"graviton": "linux/arm64", "inferentia": "linux/amd64"}
    run = replace(ctx.config, loadtest=replace(ctx.config.loadtest, run_id="run-001"))
    assert pf.Context(config=run, assembly=None, zones=ctx.zones).images_to_build() == {
        "graviton": "linux/arm64", "inferentia": "linux/amd64", "loadtest": "linux/amd64"}
    x86_only = replace(ctx.config, models=tuple(replace(m, processors=(Processor.INFERENTIA,))
                                                for m in ctx.config.models))
    x86_ctx = pf.Context(config=x86_only, assembly=None, zones=ctx.zones)
    assert x86_ctx.images_to_build() == {"inferentia": "linux/amd64"}
    plain = pf.check_docker(x86_ctx, which=lambda _: "/usr/bin/docker",
                            run=runner({"buildx version": (0, "v0.20.1"), "buildx inspect": (0, INSPECT_PLAIN)}))
    assert plain.status == "pass"  # nothing to build for arm64: no emulation needed
    ok = pf.check_docker(ctx, run=runner({"buildx version": (0, "github.com/docker/buildx v0.20.1"),
                                          "buildx inspect": (0, INSPECT_WITH_EMULATION)}),
                         which=lambda _: "/usr/bin/docker")
    assert ok.status == "pass"
    lacking = pf.check_docker(ctx, run=runner({"buildx version": (0, "v0.20.1"), "buildx inspect": (0, INSPECT_PLAIN)}),
                              which=lambda _: "/usr/bin/docker")
    assert lacking.status == "fail" and "lacks linux/arm64" in lacking.found
    assert "tonistiigi/binfmt --install arm64" in lacking.fix
    no_daemon = pf.check_docker(ctx, run=runner({
        "buildx version": (0, "v0.20.1"),
        "buildx inspect": (1, "ERROR: Cannot connect to the Docker daemon at unix:///var/run/docker.sock")}),
        which=lambda _: "/usr/bin/docker")
    assert no_daemon.status == "fail" and no_daemon.fix.startswith("start the Docker daemon")


def test_missing_docker_fails_unless_image_uris_cover_every_image() -> None:
    ctx = dev_context()
    missing = pf.check_docker(ctx, which=lambda _: None)
    assert (missing.status, missing.found.split(";")[0]) == ("fail", "docker not found")
    uris = {k: f"111122223333.dkr.ecr.us-west-2.amazonaws.com/eks-inference:{k}-1"
            for k in ("graviton", "inferentia", "loadtest")}
    covered = pf.Context(config=type(ctx.config)(**{**ctx.config.__dict__, "image_uris": uris}), assembly=None,
                         zones=ctx.zones)
    assert covered.images_to_build() == {}
    warned = pf.check_docker(covered, which=lambda _: None)
    assert warned.status == "warn" and "image_uris cover every image" in warned.found


def test_zones_are_the_ones_the_vpc_spans() -> None:
    assert dev_context().zones == list(dev_context().config.availability_zones) == ["us-west-2a", "us-west-2b",
                                                                                     "us-west-2c"]
    ctx = read_context(ROOT, {"env": "dev"})
    ctx[ENVIRONMENTS_KEY]["dev"] = {**ctx[ENVIRONMENTS_KEY]["dev"], "availability_zones": "lookup", "max_azs": 2}
    config = platform_config(ctx)
    assert availability_zones(ctx, config) is None  # synth would ask AWS; so does preflight
    ctx["availability-zones:account=111122223333:region=us-west-2"] = ["us-west-2b", "us-west-2c", "us-west-2d"]
    assert availability_zones(ctx, config) == ["us-west-2b", "us-west-2c"]  # the cached lookup, first max_azs


def test_no_credentials_is_one_line() -> None:
    env = {**offline_env(), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    proc = subprocess.run([str(EI), "preflight", "--env", "dev"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("eks-inference preflight: no AWS credentials")


@pytest.mark.parametrize(("args", "message"), [
    (["preflight", "--env", "nope"], "configuration error: env: 'nope' is not a defined environment"),
    (["preflight", "--env", "dev", "-c", "region"], "-c 'region': not KEY=VALUE"),
    (["diff", "cdk.out"], "give two cloud assembly directories"),
    (["diff", "--deployed"], "--deployed needs -c env=NAME"),
])
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run([str(EI), *args], cwd=ROOT, env=offline_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["diff", "preflight"])
def test_help_has_summary_examples_and_documented_options(command: str) -> None:
    from eks_inference.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices is not None
    assert sub._choices_actions and any(a.dest == command and a.help for a in sub._choices_actions)
    p = sub.choices[command]
    assert p.epilog and p.epilog.startswith("examples:\n  eks-inference " + command)
    for action in p._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"
    assert p.format_help().count("(default: cdk.out)") == 1
