"""Local-mode process control: state file, --stop on live, dead and missing servers, CLI defaults."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eks_inference.config import ConfigError
from eks_inference.serving import local
from eks_inference.serving.commands import local_defaults, register, render_local_config


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
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    local.write_state({"pid": proc.pid, "url": "http://x", "model": "m"}, tmp_path)
    lines: list[str] = []
    t0 = time.monotonic()
    assert local.stop(state_dir=tmp_path, out=lines.append) == 0
    assert time.monotonic() - t0 < 10
    assert proc.wait(5) == 0
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
    assert (dep["num_replicas"], dep["user_config"]["num_threads"]) == (replicas, threads)
    assert dep["ray_actor_options"] == {"num_cpus": float(threads)}
    assert dep["user_config"]["batch_wait_timeout_s"] == 0.0
    assert app["args"]["artifact_uri"] == str(tmp_path.resolve() / "artifacts")
    assert app["args"]["cache_dir"] == str(tmp_path.resolve() / "cache")
    assert cfg["http_options"] == {"host": "127.0.0.1", "port": 8765}


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
