"""Clients that wait: for the target's /healthz, for each other (a barrier through the output location), and
that leave an existing result alone. Real CLI subprocesses against the stub server on 127.0.0.1; the barrier
over a temporary directory and over the session's moto S3 server."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, StubServer, cli

pytestmark = pytest.mark.integration

FAST = ("--warmup", "0.3", "--no-progress")
BUCKET = "loadtest-barrier"


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def _stderr_until(proc: subprocess.Popen[str], text: str) -> str:
    """``proc``'s stderr up to the first line containing ``text`` (all of it, should the process end first)."""
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_wait_ready_polls_healthz_and_says_what_the_server_waits_for(
        stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    # The target becomes ready once the client has said what it waits for (a ready server takes the loading
    # one's port), not after a fixed time that a busy machine could spend just starting the client.
    loading = stub_server("--ready-after", "3600")
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", loading.url(), "--rate", "20",
         "--requests", "10", *FAST, "--wait-ready", "300", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    head = _stderr_until(proc, f"waiting for {loading.url()}/healthz: HTTP 503:")
    loading.stop()
    server = stub_server("--port", str(loading.port))
    _, tail = proc.communicate(timeout=300)
    stderr = head + tail
    assert proc.returncode == 0, stderr
    assert f"waiting for {server.url()}/healthz: HTTP 503:" in stderr
    assert "model weights s3://models/stub/v1/model.safetensors" in stderr  # the server's own reason
    assert f"{server.url()}/healthz is ready after" in stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "complete" and doc["provenance"]["waited_for_target_s"] > 0
    (step,) = doc["steps"]
    assert step["summary"]["ok"] == 10 and step["summary"]["errors"] == 0  # nothing was sent before it was ready


def test_wait_ready_deadline_is_one_clear_line(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    # Not ready for an hour: that the CLI returns at all, within cli()'s timeout, shows it gave up at its deadline.
    server = stub_server("--ready-after", "3600")
    out = tmp_path / "r.json"
    r = cli("loadtest", "run", "--url", server.url(), "--rate", "20", "--requests", "10", *FAST,
            "--wait-ready", "2", "--out", str(out))
    assert r.returncode == 1
    (line,) = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert f"error: {server.url()}/healthz was not ready within 2 s (last answer: HTTP 503:" in line
    assert "raise --wait-ready" in line and "Traceback" not in r.stderr
    doc = json.loads(out.read_text())  # the report (and its --wait-for) still hears from this client
    assert doc["status"] == "aborted" and "not ready within 2 s" in doc["error"] and doc["steps"] == []
    assert server.stats()["predicts"] == 0


def _start_client(server: StubServer, index: int, out: str, run_id: str,
                  env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", server.url(), "--rate", "40",
         "--duration", "2", *FAST, "--clients", "2", "--client-index", str(index), "--run-id", run_id,
         "--wait-ready", "300", "--skip-if-exists", "--out", out],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **(env or {})})


def _barrier_run(server: StubServer, out: str, run_id: str,
                 env: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """Client 0 first, client 1 once client 0 waits for it (a pod scheduled late); both must start together. Both
    pass --skip-if-exists, as the chart's pods do: with no result there yet, they measure."""
    first = _start_client(server, 0, out, run_id, env)
    heads = [_stderr_until(first, f"waiting for the other clients of run {run_id}"), ""]
    second = _start_client(server, 1, out, run_id, env)
    done = []
    for head, proc in zip(heads, (first, second), strict=True):
        _, err = proc.communicate(timeout=300)
        done.append((proc.returncode, head + err))
    return done


def _check_started_together(docs: list[dict[str, Any]], stderr0: str) -> None:
    assert sorted(d["client"]["index"] for d in docs) == [0, 1]
    starts = [_epoch(d["steps"][0]["started_at"]) for d in docs]
    assert abs(starts[0] - starts[1]) < 0.25, starts
    barriers = [d["provenance"]["barrier"] for d in docs]
    assert barriers[0]["start_at"] == barriers[1]["start_at"]
    ready = {int(k): _epoch(v) for k, v in barriers[0]["ready_at"].items()}
    assert ready[1] > ready[0]  # client 1 really was late, and client 0 waited for it
    assert min(starts) >= ready[1]
    assert "waiting for the other clients of run" in stderr0 and "1 of 2 ready, missing 1" in stderr0


def test_clients_start_together_through_a_directory(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    server = stub_server()
    out = tmp_path / "results"
    runs = _barrier_run(server, f"{out}/", "barrier-dir")
    assert all(rc == 0 for rc, _ in runs), [err for _, err in runs]
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    _check_started_together(docs, runs[0][1])
    assert sorted(p.name for p in (out / "_ready").iterdir()) == [
        "barrier-dir_stub_client0.ready", "barrier-dir_stub_client1.ready"]
    r = cli("loadtest", "report", str(out), "--out", str(tmp_path / "report"), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert not any("_ready" in w for w in report["warnings"])  # markers are not read as results
    (step,) = report["targets"][0]["steps"]
    assert step["clients"] == 2 and step["requests"] == 80  # 40/s for 2 s, shared


@pytest.fixture
def s3_env(moto_s3_endpoint: str) -> dict[str, str]:
    import boto3

    env = {"AWS_ENDPOINT_URL": moto_s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=moto_s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    return env


def test_clients_start_together_through_s3_and_skip_existing_results(
        stub_server: Callable[..., StubServer], s3_env: dict[str, str]) -> None:
    import boto3

    server = stub_server()
    out = f"s3://{BUCKET}/results/barrier-s3/stub/"
    runs = _barrier_run(server, out, "barrier-s3", s3_env)
    assert all(rc == 0 for rc, _ in runs), [err for _, err in runs]
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results/barrier-s3/")["Contents"])
    assert "results/barrier-s3/stub/_ready/barrier-s3_stub_client1.ready" in keys
    docs = [json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys if k.endswith(".json")]
    _check_started_together(docs, runs[0][1])

    # A Job that runs again with the same run id measures nothing and overwrites nothing.
    key = "results/barrier-s3/stub/barrier-s3_stub_client1.json"
    before = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    predicts = server.stats()["predicts"]
    r = cli("loadtest", "run", "--url", server.url(), "--rate", "40", "--duration", "2", *FAST, "--clients", "2",
            "--client-index", "1", "--run-id", "barrier-s3", "--wait-ready", "40", "--skip-if-exists", "--out", out,
            env=s3_env)
    assert r.returncode == 0, r.stderr
    assert "results for run barrier-s3 client 1 already exist" in r.stderr and "set a new run_id" in r.stderr
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == before
    assert server.stats()["predicts"] == predicts


def test_skip_if_exists_in_a_directory(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    server = stub_server()
    args = ("loadtest", "run", "--url", server.url(), "--rate", "20", "--requests", "10", *FAST, "--run-id",
            "once", "--skip-if-exists", "--out", f"{tmp_path}/")
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    path = tmp_path / "once_stub_client0.json"
    before, predicts = path.read_bytes(), server.stats()["predicts"]
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert (f"results for run once client 0 already exist at {path}; not measuring again (set a new run_id"
            in again.stderr)
    assert path.read_bytes() == before and server.stats()["predicts"] == predicts


def test_a_missing_client_ends_the_wait_with_a_clear_line(
        stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    server = stub_server()
    r = cli("loadtest", "run", "--url", server.url(), "--rate", "20", "--requests", "10", *FAST, "--clients", "3",
            "--client-index", "0", "--run-id", "alone", "--wait-ready", "2", "--out", f"{tmp_path}/")
    assert r.returncode == 1
    assert ("error: only 1 of 3 clients of run alone (stub) were ready within 2 s (missing: 1, 2); check those "
            "client pods, or raise --wait-ready") in r.stderr
    assert "Traceback" not in r.stderr
