"""`eks-inference local` end to end, as `make demo` drives it: --detach, query, --stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eks_inference.config import ENVIRONMENTS_KEY
from eks_inference.serving.local import free_port, pid_alive, port_in_use, session_processes
from tests.conftest import cdk_context

from .conftest import get, post

pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eks_inference.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_local_detach_serves_the_bundled_model_and_stop_cleans_up(tmp_path: Path, serving_cache: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    common = ["--state-dir", str(state)]
    # the same serving shape as the session's `minilm` app, so its compiled artifact is reused
    start = cli("local", "--detach", "--port", str(port), "--model", "minilm", "--replicas", "1",
                "--max-batch-size", "8", "--artifact-uri", str(serving_cache / "repo"), *common)
    assert start.returncode == 0, start.stdout + start.stderr
    url = f"http://127.0.0.1:{port}/minilm"
    assert url in start.stdout
    st = json.loads((state / "local.json").read_text())
    assert st["status"] == "ready" and st["url"] == url and pid_alive(st["pid"])

    status, body = post(f"{url}/predict", {"inputs": ["hello world", "local mode works"]})
    assert status == 200 and isinstance(body, dict) and len(body["outputs"]) == 2
    _, info = get(f"{url}/info")
    assert info["model_uri"] == "bundled:all-minilm-l6-v2" and info["processor"] == "cpu"

    again = cli("local", "--detach", "--port", str(free_port()), *common)
    assert again.returncode == 1, again.stderr
    assert again.stderr.strip() == (f"eks-inference: local serving already runs (pid {st['pid']}, {url}); stop it "
                                    "with `eks-inference local --stop` first, or give this one another --state-dir")

    stop = cli("local", "--stop", *common, timeout=120)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped local serving" in stop.stdout
    assert not pid_alive(st["pid"])
    assert not (state / "local.json").exists()
    deadline = time.monotonic() + 120  # bounds a hang: the port is released when the server process is gone
    while port_in_use("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_in_use("127.0.0.1", port)
    assert not session_processes(st["temp_dir"])  # no Ray process of that session survives
    assert not Path(st["temp_dir"]).exists()

    nothing = cli("local", "--stop", *common)
    assert nothing.returncode == 0 and "nothing to stop" in nothing.stdout


def test_print_config_is_the_rendered_serve_config(tmp_path: Path) -> None:
    r = cli("local", "--print-config", "--port", "8123", "--state-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    from eks_inference.serving.serve_config import APP_IMPORT_PATH

    app = cfg["applications"][0]
    assert app["import_path"] == APP_IMPORT_PATH and app["route_prefix"] == "/minilm"
    assert cfg["http_options"] == {"host": "127.0.0.1", "port": 8123, "request_timeout_s": 60}
    assert app["args"]["model_uri"] == "bundled:all-minilm-l6-v2" and app["args"]["processor"] == "cpu"
    bad = cli("local", "--print-config", "--max-batch-size", "0", "--state-dir", str(tmp_path))
    assert bad.returncode == 2 and "max_batch_size" in bad.stderr


def test_print_config_for_an_environment_uses_its_serving_shape(tmp_path: Path) -> None:
    cdk = tmp_path / "cdk.json"
    dev = cdk_context()[ENVIRONMENTS_KEY]["dev"]
    dev["models"] = [{"name": "minilm", "processors": ["graviton"],
                      "serving": {"max_batch_size": 16, "num_threads": 2, "dtype": "bf16", "num_replicas": 1}}]
    cdk.write_text(json.dumps({"context": {ENVIRONMENTS_KEY: {"dev": dev}}}))
    r = cli("local", "--print-config", "--env", "dev", "--cdk-json", str(cdk), "--state-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    dep = json.loads(r.stdout)["applications"][0]["deployments"][0]
    assert dep["user_config"] == {"max_batch_size": 16, "batch_wait_timeout_s": 0.01, "max_seq_length": 128,
                                  "num_threads": 2, "dtype": "bf16"}
    assert dep["ray_actor_options"] == {"num_cpus": 1.0}
    r = cli("local", "--print-config", "--env", "dev", "--cdk-json", str(cdk), "--state-dir", str(tmp_path),
            "--dtype", "fp32", "--replicas", "2", "--threads", "1")
    dep = json.loads(r.stdout)["applications"][0]["deployments"][0]
    scaling = dep["autoscaling_config"]
    assert (dep["user_config"]["dtype"], scaling["min_replicas"], scaling["max_replicas"],
            dep["user_config"]["max_batch_size"]) == ("fp32", 2, 2, 16)
    r = cli("local", "--print-config", "--env", "dev", "--cdk-json", str(cdk), "--state-dir", str(tmp_path),
            "--min-replicas", "1", "--max-replicas", "64")
    scaling = json.loads(r.stdout)["applications"][0]["deployments"][0]["autoscaling_config"]
    cap = max(1, (os.cpu_count() or 1) // 2)  # two torch threads per replica: never more threads than cores
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (1, min(64, cap))
    assert cap >= 64 or f"serving 1..{cap} instead of 1..64" in r.stderr
    missing = cli("local", "--print-config", "--env", "prod", "--cdk-json", str(cdk), "--state-dir", str(tmp_path))
    assert missing.returncode == 2 and "'prod' is not a defined environment" in missing.stderr
