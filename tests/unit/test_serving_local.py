"""Local-mode process control: state file, --stop on live, dead and missing servers, CLI defaults."""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from eks_inference.cli.serving import local_defaults, register, render_local_config
from eks_inference.config import ENVIRONMENTS_KEY, ConfigError
from eks_inference.serving import local
from tests.conftest import cdk_context


def test_stop_without_state_is_a_no_op(tmp_path: Path) -> None:
    lines: list[str] = []
    assert local.stop(state_dir=tmp_path, out=lines.append) == 0
    assert "nothing to stop" in lines[0]


def test_stop_removes_stale_state_of_a_dead_process(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    local.write_state({"pid": dead.pid, "url": "http://x", "model": "m"}, tmp_path)
    lines: list[str] = []
    assert local.stop(state_dir=tmp_path, out=lines.append) == 0
    assert "not running" in lines[0]
    assert local.read_state(tmp_path) is None


def test_stop_signals_a_live_server_and_waits_for_it(tmp_path: Path) -> None:
    code = ("import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
            "print('up', flush=True)\n"
            "time.sleep(3600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    local.write_state({"pid": proc.pid, "url": "http://x", "model": "m"}, tmp_path)
    lines: list[str] = []
    # The child would sleep for an hour: stop() returning 0 and the child's exit status 0 show that our SIGTERM
    # ended it, without a clock that a busy machine could run past.
    assert local.stop(state_dir=tmp_path, out=lines.append) == 0
    assert proc.wait(60) == 0
    assert "stopped local serving of 'm'" in lines[0]
    assert local.read_state(tmp_path) is None


def test_pid_alive_and_ports() -> None:
    import os

    assert local.pid_alive(os.getpid())
    port = local.free_port()
    assert not local.port_in_use("127.0.0.1", port)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["local", *argv])


def test_local_config_defaults_fit_this_machine(tmp_path: Path) -> None:
    cfg = render_local_config(parse("--state-dir", str(tmp_path), "--port", "8765"))
    app = cfg["applications"][0]
    dep = app["deployments"][0]
    replicas, threads = local_defaults()
    scaling = dep["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], dep["user_config"]["num_threads"]) == (
        1, replicas, threads)
    assert dep["ray_actor_options"] == {"num_cpus": float(threads)}
    assert dep["user_config"]["batch_wait_timeout_s"] == 0.0
    assert app["args"]["artifact_uri"] == str(tmp_path.resolve() / "artifacts")
    assert app["args"]["cache_dir"] == str(tmp_path.resolve() / "cache")
    assert cfg["http_options"] == {"host": "127.0.0.1", "port": 8765, "request_timeout_s": 60}


@pytest.mark.parametrize(("cpus", "expected"), [(1, (1, 1)), (2, (2, 1)), (4, (4, 1)), (8, (4, 2)), (64, (4, 2))])
def test_local_defaults_prefer_single_thread_replicas_on_small_machines(cpus: int, expected: tuple[int, int]) -> None:
    assert local_defaults(cpus) == expected


def test_run_foreground_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = render_local_config(parse("--state-dir", str(tmp_path), "--port", str(port)))
        with pytest.raises(ConfigError, match=f"--port: {port} is already in use"):
            local.run_foreground(cfg, state_dir=tmp_path)


RAY_FAILURE = (
    "application 'minilm' is DEPLOY_FAILED: Failed to update the deployments ['InferenceModel'].\n"
    "InferenceModel: The deployment failed to start 6 times in a row. This may be due to a problem with its "
    "constructor or initial health check failing. See controller logs for details. Error:\n"
    "\x1b[36mray::ServeReplica:minilm:InferenceModel.initialize_and_get_metadata()\x1b[39m (pid=15510)\n"
    '  File "/x/ray/serve/_private/replica.py", line 1928, in initialize\n'
    "    raise RuntimeError(traceback.format_exc()) from None\n"
    "RuntimeError: Traceback (most recent call last):\n"
    '  File "/x/eks_inference/artifacts/resolve.py", line 231, in bundled_model_path\n'
    "eks_inference.config.ConfigError: bundled model 'bert-base' is unknown; use one of all-minilm-l6-v2\n"
)


def test_a_ray_failure_is_reduced_to_its_meaningful_line_without_colour_codes() -> None:
    e = local.DeployFailed(RAY_FAILURE)
    assert e.summary == "ConfigError: bundled model 'bert-base' is unknown; use one of all-minilm-l6-v2"
    assert local.failure_summary("\x1b[31mno exception here\x1b[0m\n\n") == "no exception here"
    assert "\x1b" not in local.strip_ansi(RAY_FAILURE)


def test_the_wait_for_weights_is_reported_once_then_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock of the test's own: a machine busy enough to stall between two calls must not add a progress line.
    now = [1000.0]
    monkeypatch.setattr(local, "time", SimpleNamespace(monotonic=lambda: now[0]))
    lines: list[str] = []
    seen: list[dict] = []
    report = local.WaitReporter(lines.append, on_waiting=seen.append, every_s=0.05)
    waiting = {"status": "waiting_for_weights", "missing": "s3://b/models/m/v1/manifest.json",
               "command": "eks-inference publish MODEL_DIR --to s3://b --name m --revision v1", "checks": 4}
    report(waiting)
    report(waiting)
    now[0] += 0.06
    report(waiting)
    report({"status": "loading"})
    report({"status": "loading"})
    assert lines == [
        "waiting for the model's weights: s3://b/models/m/v1/manifest.json does not exist yet",
        "  publish them with: eks-inference publish MODEL_DIR --to s3://b --name m --revision v1",
        "  serving starts by itself once they appear (Ctrl-C or `eks-inference local --stop` to give up)",
        "  still waiting for s3://b/models/m/v1/manifest.json (0 min, 4 checks)",
        "  weights found; loading the model ...",
    ]
    assert seen == [waiting]


def test_a_second_local_says_it_already_runs_not_a_config_error(tmp_path: Path) -> None:
    import os

    local.write_state({"pid": os.getpid(), "url": "http://127.0.0.1:8000/minilm", "model": "minilm"}, tmp_path)
    cfg = render_local_config(parse("--state-dir", str(tmp_path)))
    with pytest.raises(local.AlreadyRunning) as e:
        local.run_foreground(cfg, state_dir=tmp_path)
    assert not isinstance(e.value, ConfigError)
    assert str(e.value) == (f"local serving already runs (pid {os.getpid()}, http://127.0.0.1:8000/minilm); stop it "
                            "with `eks-inference local --stop` first, or give this one another --state-dir")
    r = subprocess.run([sys.executable, "-m", "eks_inference.cli", "local", "--detach", "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("eks-inference: local serving already runs")
    assert "configuration error" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("flags", [(), ("--print-config",)])
def test_a_bad_source_is_one_line_before_ray_starts(tmp_path: Path, flags: tuple[str, ...]) -> None:
    r = subprocess.run([sys.executable, "-m", "eks_inference.cli", "local", "--source", "bundled:bert-base",
                        "--state-dir", str(tmp_path), *flags], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["eks-inference: configuration error: --source: 'bundled:bert-base' is not a "
                                     "bundled model; use bundled:all-minilm-l6-v2, a model directory or "
                                     "s3://BUCKET/models/NAME/REVISION"]
    assert r.stdout == "" and not (tmp_path / "local.json").exists()


@pytest.mark.parametrize(("cpus", "threads", "ray_cpus", "expected"),
                         [(2, 2, 1.0, 1), (4, 2, 1.0, 2), (2, 1, 1.0, 2), (8, 1, 2.0, 4), (1, 4, 1.0, 1)])
def test_local_replicas_never_run_more_torch_threads_than_the_machine_has_cores(
        cpus: int, threads: int, ray_cpus: float, expected: int) -> None:
    """dev's replicas ask Ray for 1 CPU but run 2 torch threads: on 2 cores a second replica would double the
    threads the cores share and every forward would slow down, so the cap counts threads as cores."""
    from eks_inference.cli.serving import local_replica_cap
    from eks_inference.config import ServingSpec

    serving = ServingSpec(num_threads=threads, cpus_per_replica=ray_cpus)
    assert local_replica_cap(serving, cpus) == expected


def test_dev_served_locally_keeps_its_threads_within_this_machines_cores(tmp_path: Path) -> None:
    import os

    cfg = render_local_config(parse("--env", "dev", "--state-dir", str(tmp_path)))
    dep = cfg["applications"][0]["deployments"][0]
    threads = dep["user_config"]["num_threads"]
    cores = os.cpu_count() or 1
    assert dep["autoscaling_config"]["max_replicas"] * threads <= max(cores, threads)


def test_local_env_refuses_a_shape_that_synth_refuses(tmp_path: Path) -> None:
    """GIVEN an environment whose model runs more torch threads than its nodes have vCPUs (a local CPU could run
    them), WHEN `local --env` serves it and synth builds it, THEN both refuse it, in the same words."""
    from aws_cdk import App

    from eks_inference.app_builder import config_from_app

    block = copy.deepcopy(cdk_context()[ENVIRONMENTS_KEY]["dev"])
    block["models"][0]["serving"]["num_threads"] = 16
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps({"context": {ENVIRONMENTS_KEY: {"dev": block}}}))
    with pytest.raises(ConfigError) as local_error:
        render_local_config(parse("--env", "dev", "--cdk-json", str(cdk_json), "--state-dir", str(tmp_path)))
    with pytest.raises(ConfigError) as synth_error:
        config_from_app(App(context={ENVIRONMENTS_KEY: {"dev": block}, "env": "dev"}))
    assert local_error.value.errors == synth_error.value.errors
    assert "model 'minilm' serving.num_threads: 16 exceeds the 8 vCPUs of c7g.2xlarge (node group 'graviton')" in (
        str(local_error.value))


def test_local_env_without_a_cdk_json_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--env: .*cdk\.json: not found; run from the project root or pass "
                                          r"--cdk-json$"):
        render_local_config(parse("--env", "dev", "--cdk-json", str(tmp_path / "cdk.json"), "--state-dir",
                                  str(tmp_path)))


def test_free_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    # the kernel's bind(0) and every outgoing connection draw from the ephemeral range: a port taken from it
    # was given away before HAProxy bound it on a busy machine
    low = local._ephemeral_low()
    ports = [local.free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    if low - 1 - local.QUIET_PORTS[0] >= 1000:
        assert all(local.QUIET_PORTS[0] <= p < low for p in ports)
    for p in ports:
        assert not local.port_in_use("127.0.0.1", p)


def test_an_ephemeral_range_that_leaves_no_gap_lets_the_kernel_pick(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "range").write_text("1024\t65535\n")
    assert local._ephemeral_low(tmp_path / "range") == 1024
    assert local._ephemeral_low(tmp_path / "missing") == 32768
    monkeypatch.setattr(local, "_ephemeral_low", lambda: 1024)
    port = local.free_port()
    assert 0 < port < 65536 and not local.port_in_use("127.0.0.1", port)
