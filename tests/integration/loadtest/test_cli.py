"""The real ``eks-inference loadtest`` CLI, in subprocesses, against HTTP servers and S3 on 127.0.0.1."""

from __future__ import annotations

import csv
import itertools
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from eks_inference import __version__

from .conftest import ROOT, StubServer, cli, free_port

pytestmark = pytest.mark.integration

SUMMARY_FIELDS = {"requests", "errors", "throughput_rps", "latency_ms", "mode", "target"}
LATENCY_FIELDS = {"p50", "p90", "p99", "p999", "max"}
FAST = ("--warmup", "0.3", "--no-progress")
# An SLO far above what a stub needs, and with it a send lag tolerated up to a tenth of it: a busy machine that
# starves the client for a moment must not leave a step unranked where ranking is what a test checks.
GENEROUS_SLO = ("--slo-p99-ms", "2000")
BUCKET = "loadtest-results"


def _results(d: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]


def _mark_verified(d: Path) -> None:
    """Record a passing verdict in every result file under ``d``. The stub answers canned outputs, which no
    verification passes, and only verified targets are ranked; verification itself is tested against real
    and faulty model endpoints in tests/integration/verify/."""
    for p in sorted(d.glob("*.json")):
        doc = json.loads(p.read_text())
        doc["verification"] = {"status": "passed", "summary": "PASSED (recorded by the test)"}
        p.write_text(json.dumps(doc))


def test_run_then_report_end_to_end(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    server = stub_server()
    results, out = tmp_path / "results", tmp_path / "report"
    r = cli("loadtest", "run", "--url", server.url("minilm"), "--rates", "50,100", "--duration", "1.5", *FAST,
            "--target-name", "stub-c7i", "--processor", "cpu", "--instance-type", "c7i.xlarge", "--nodes", "2",
            "--region", "eu-west-1", "--inputs-per-request", "3", "--slo-p99-ms", "1500", "--out", f"{results}/",
            "--json")
    assert r.returncode == 0, r.stderr
    summaries = json.loads(r.stdout)
    assert [s["requested_rate"] for s in summaries] == [50.0, 100.0]
    for s, rate in zip(summaries, (50, 100), strict=True):
        assert set(s) >= SUMMARY_FIELDS and set(s["latency_ms"]) >= LATENCY_FIELDS
        assert s["mode"] == "open" and s["target"] == "stub-c7i"
        assert s["requests"] == 1.5 * rate and s["errors"] == 0
        assert s["inferences"] == 3 * s["ok"]
        lat = s["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]

    r = cli("loadtest", "run", "--url", server.url("minilm"), "--mode", "closed", "--concurrencies", "1,4",
            "--requests", "120", *FAST, "--target-name", "laptop", "--processor", "cpu", "--instance-type", "laptop",
            "--out", str(results / "laptop.json"))
    assert r.returncode == 0, r.stderr
    assert "results written to" in r.stderr

    docs = _results(results)
    assert len(docs) == 2
    for doc in docs:
        assert doc["format_version"] == 1 and doc["status"] == "complete"
        prov = doc["provenance"]
        assert prov["tool_version"] == __version__ and "git_sha" in prov and prov["host"]
        assert prov["server_info"]["model"] == "stub" and prov["server_info_error"] is None
        assert prov["started_at"] < prov["ended_at"] and prov["url"] == server.url("minilm")
        assert doc["config"]["run_id"] == doc["run_id"] and doc["config"]["url"] == server.url("minilm")
        for step in doc["steps"]:
            assert step["stats"]["latency"]["hist"] and step["stats"]["series"]
    closed = next(d for d in docs if d["target"]["name"] == "laptop")
    assert [s["summary"]["requests"] for s in closed["steps"]] == [120, 120]
    assert [s["summary"]["concurrency"] for s in closed["steps"]] == [1, 4]

    r = cli("loadtest", "report", str(results), "--out", str(out), *GENEROUS_SLO)
    assert r.returncode == 0, r.stderr
    unverified = json.loads((out / "report.json").read_text())
    assert [t["rank"] for t in unverified["targets"]] == [None, None]  # run without --verify: never ranked
    assert {t["verified"] for t in unverified["targets"]} == {"not checked"}
    assert any(w.startswith("stub-c7i: its answers were not verified") for w in unverified["warnings"])

    _mark_verified(results)
    r = cli("loadtest", "report", str(results), "--out", str(out), *GENEROUS_SLO)
    assert r.returncode == 0, r.stderr
    for name in ("report.json", "report.csv", "report.png", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "Price-performance" in r.stdout and "stub-c7i" in r.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["slo_p99_ms"] == 2000  # the report's, over the 1500 recorded
    ranked = {t["target"]["name"]: t for t in report["targets"]}
    priced = ranked["stub-c7i"]
    assert priced["rank"] == 1 and priced["region"] == "eu-west-1"
    assert priced["price_per_instance_hour"] > 0 and priced["hourly_usd"] == pytest.approx(
        2 * priced["price_per_instance_hour"])
    best = priced["best"]
    passing = [st for st in priced["steps"] if st["slo_met"]]
    assert passing, priced["steps"]  # 50 and 100 req/s against a stub: p99 far below 2000 ms
    assert best["inferences_per_s"] == max(st["inferences_per_s"] for st in passing)
    assert priced["usd_per_million_inferences"] == pytest.approx(
        priced["hourly_usd"] / (best["inferences_per_s"] * 3600) * 1e6)
    assert ranked["laptop"]["rank"] is None and ranked["laptop"]["usd_per_million_inferences"] is None
    assert any("laptop" in w and "n/a" in w for w in report["warnings"])
    with (out / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["target"] for r in rows} == {"stub-c7i", "laptop"}
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "stub-c7i" in html


def test_without_server_info_the_result_says_so(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    server = stub_server("--no-info")
    r = cli("loadtest", "run", "--url", server.url(), "--rate", "20", "--requests", "10", *FAST,
            "--out", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    prov = json.loads((tmp_path / "r.json").read_text())["provenance"]
    assert prov["server_info"] is None and "HTTP 404" in prov["server_info_error"]


def test_parallel_clients_merge_into_one_step(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    """Two client processes share one run (as pods of an Indexed Job do): each sends half of 160 req/s;
    the report merges their histograms and sums throughput over the window both were measuring."""
    server = stub_server()
    # They meet through ready markers (as the chart's pods do), so both start together however long a busy
    # machine takes to bring either process up; a fixed --start-at could pass before one of them is up.

    def client(i: int) -> Any:
        return cli("loadtest", "run", "--url", server.url(), "--rate", "160", "--duration", "3", *FAST,
                   "--clients", "2", "--client-index", str(i), "--run-id", "shared-run",
                   "--out", f"{tmp_path}/results/")

    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(client, range(2)))
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    docs = _results(tmp_path / "results")
    assert sorted(d["client"]["index"] for d in docs) == [0, 1]
    assert all(d["steps"][0]["spec"]["client_rate"] == 80.0 for d in docs)

    r = cli("loadtest", "report", str(tmp_path / "results"), "--out", str(tmp_path / "report"), "--quiet")
    assert r.returncode == 0, r.stderr
    (target,) = json.loads((tmp_path / "report" / "report.json").read_text())["targets"]
    (step,) = target["steps"]
    assert step["clients"] == 2 and step["requested_rate"] == 160.0
    assert step["requests"] == sum(d["steps"][0]["summary"]["requests"] for d in docs) == 480
    assert step["throughput_rps"] == pytest.approx(160, rel=0.05)
    assert "common window" in step["throughput_method"]


def test_start_at_sends_nothing_before_that_time(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    """--start-at (instead of ready markers): the step begins at the given time, checked on the server's side. A
    start that a busy machine reaches late still holds: the step then begins at once."""
    server = stub_server("--record-arrivals")
    start = time.time() + 2
    r = cli("loadtest", "run", "--url", server.url(), "--rate", "20", "--requests", "10", "--warmup", "0",
            "--no-progress", "--start-at", f"{start:.3f}", "--out", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    probe, *measured = server.stats()["arrivals"]
    assert len(measured) == 10 and min(measured) >= start, (start, probe, measured)


@pytest.fixture
def s3_env(moto_s3_endpoint: str) -> dict[str, str]:
    """The session's moto S3 server (tests/integration/conftest.py), a fresh bucket, and the environment
    that points boto3 in the CLI subprocesses at it."""
    import boto3

    env = {"AWS_ENDPOINT_URL": moto_s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    boto3.client("s3", endpoint_url=moto_s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    return env


def test_results_and_report_on_s3(stub_server: Callable[..., StubServer], s3_env: dict[str, str],
                                  tmp_path: Path) -> None:
    import boto3

    server = stub_server()
    r = cli("loadtest", "run", "--url", server.url(), "--rate", "50", "--requests", "40", *FAST,
            "--instance-type", "c7g.xlarge", "--run-id", "s3-run", "--out", "s3://loadtest-results/runs/s3-run/",
            env=s3_env)
    assert r.returncode == 0, r.stderr
    r = cli("loadtest", "report", "s3://loadtest-results/runs/s3-run/", "--out", "s3://loadtest-results/runs/s3-run/report/",
            "--wait-for", "1", "--wait-timeout", "10", "--quiet", env=s3_env)
    assert r.returncode == 0, r.stderr
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/s3-run/")["Contents"]}
    assert "runs/s3-run/s3-run_stub_client0.json" in keys
    assert {f"runs/s3-run/report/report.{x}" for x in ("json", "csv", "png", "html")} <= keys
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="runs/s3-run/report/report.json")["Body"].read())
    assert report["targets"][0]["steps"][0]["requests"] == 40


# -- bad input ---------------------------------------------------------------------------------------

def test_unreachable_url_is_a_clear_error_and_keeps_the_result(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/minilm"
    # An hour's step: that the CLI returns at all, within cli()'s timeout, shows it did not sit it out.
    r = cli("loadtest", "run", "--url", url, "--rate", "10", "--duration", "3600", *FAST,
            "--out", str(tmp_path / "r.json"))
    assert r.returncode == 1
    assert f"cannot use {url}/predict" in r.stderr and "onnect" in r.stderr
    assert "results written to" in r.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["status"] == "aborted" and "cannot use" in doc["error"]
    assert "Traceback" not in r.stderr


def test_wrong_path_is_a_clear_error(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    server = stub_server("--model", "minilm")
    r = cli("loadtest", "run", "--url", server.url("bert"), "--rate", "10", "--requests", "5", *FAST,
            "--out", str(tmp_path / "r.json"))
    assert r.returncode == 1 and "HTTP 404" in r.stderr and "model's base" in r.stderr


def test_malformed_payload_file_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "payload.jsonl"
    f.write_text('{"inputs": ["fine"]}\n{"inputs": ["broken"\n')
    r = cli("loadtest", "run", "--url", "http://127.0.0.1:9/m", "--rate", "10", "--duration", "1",
            "--payload", str(f), "--out", str(tmp_path / "r.json"))
    assert r.returncode == 2
    assert f"{f}:2: not valid JSON" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--rates", "10,-5"], "'-5' is not a rate"),
    (["--rates", "10,abc"], "'abc' in '10,abc' is not a number"),
    (["--rate", "0"], "'0' is not a rate"),
    (["--concurrencies", "4,0"], "0 is outside 1..100000"),
    (["--mode", "closed", "--rate", "10"], "needs --concurrency"),
    (["--mode", "open", "--concurrency", "4"], "only for --mode closed"),
    (["--rate", "10", "--concurrency", "4"], "say --mode closed"),
    (["--mode", "open", "--rate", "10", "--concurrency", "4"], "only for --mode closed"),
    (["--rate", "10", "--duration", "5", "--requests", "10"], "not both"),
    (["--rate", "10", "--search"], "--search needs --slo-p99-ms"),
    (["--rate", "10", "--text-length", "uniform:9-1"], "--text-length"),
    (["--rate", "10", "--clients", "2", "--client-index", "5"], "--client-index: 5 must be in 0..1"),
    (["--rate", "10", "--clients", "2", "--client-index", "1"], "need one shared --run-id"),
    (["--rate", "10", "--clients", "2", "--client-index", "1", "--run-id", "r"], "every client would write this"),
    (["--rate", "10", "--wait-ready", "-1"], "--wait-ready: -1 must be in [0, 86400]"),
    (["--rate", "10", "--price-as", "a b"], "--price-as: 'a b' is not an instance type"),
    (["--capacity-fractions", "0.5,0"], "--capacity-fractions: '0' is not a fraction"),
    (["--capacity-fractions", "0.5", "--rates", "10"], "--capacity-fractions: sweeps open-loop rates of its own"),
])
def test_invalid_options_exit_2_with_the_reason(tmp_path: Path, args: list[str], message: str) -> None:
    r = cli("loadtest", "run", "--url", "http://127.0.0.1:9/m", *args, "--out", str(tmp_path / "r.json"))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_mixed_format_versions_in_one_report(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    server = stub_server()
    r = cli("loadtest", "run", "--url", server.url(), "--rate", "20", "--requests", "10", *FAST,
            "--out", str(tmp_path / "v1.json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "v1.json").read_text())
    doc["format_version"] = 2
    (tmp_path / "v2.json").write_text(json.dumps(doc))
    r = cli("loadtest", "report", str(tmp_path / "v1.json"), str(tmp_path / "v2.json"), "--out",
            str(tmp_path / "report"))
    assert r.returncode == 2
    assert "different format versions" in r.stderr and "v1.json" in r.stderr and "v2.json" in r.stderr
    assert not (tmp_path / "report").exists()


def test_help_documents_every_option() -> None:
    for sub in ("run", "report"):
        r = cli("loadtest", sub, "--help")
        assert r.returncode == 0
        options = set(re.findall(r"(--[a-z0-9-]+)", r.stdout))
        assert len(options) > (25 if sub == "run" else 8)
        from eks_inference.cli import build_parser

        parser = build_parser()
        sub_actions = next(a for a in parser._actions if a.dest == "command")
        lt = sub_actions.choices["loadtest"]  # type: ignore[index]
        sp = next(a for a in lt._actions if a.dest == "loadtest_command").choices[sub]
        for action in sp._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{sub} {action.option_strings} has no help"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_keeps_what_it_measured(stub_server: Callable[..., StubServer], tmp_path: Path,
                                                sig: signal.Signals) -> None:
    server = stub_server()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eks_inference.cli", "loadtest", "run", "--url", server.url(), "--rates", "50,100",
         "--duration", "30", *FAST, "--out", str(tmp_path / "r.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    # Interrupt once the first step has measured something (the server counts the probe, the warm-up's 15 and
    # then the step's), whenever a busy machine gets there; the step lasts 30 s more.
    deadline = time.monotonic() + 120
    while server.stats()["predicts"] < 80:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never got going"
        time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)  # bounds a hang: a busy machine writes the results slowly
    assert proc.returncode == 130, stderr
    assert "interrupted; partial results written" in stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["status"] == "interrupted"
    (step,) = doc["steps"]
    assert step["status"] == "interrupted" and step["summary"]["ok"] > 50


def test_two_runs_in_one_folder_stay_apart(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    server = stub_server()
    for run_id, rates in (("run-a", "20,40"), ("run-b", "30")):
        r = cli("loadtest", "run", "--url", server.url(), "--rates", rates, "--requests", "20", *FAST, *GENEROUS_SLO,
                "--instance-type", "c7g.xlarge", "--run-id", run_id, "--out", f"{tmp_path}/results/")
        assert r.returncode == 0, r.stderr
    _mark_verified(tmp_path / "results")
    r = cli("loadtest", "report", str(tmp_path / "results"), "--out", str(tmp_path / "both"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "both" / "report.json").read_text())
    series = {t["label"]: [s["requested_rate"] for s in t["steps"]] for t in report["targets"]}
    assert series == {"stub · run run-a": [20.0, 40.0], "stub · run run-b": [30.0]}
    assert sorted(r["rank"] for r in report["ranking"]) == [1, 2]
    assert "stub · run run-a" in r.stdout and "stub · run run-b" in r.stdout
    with (tmp_path / "both" / "report.csv").open() as f:
        assert {(row["series"], row["run_id"]) for row in csv.DictReader(f)} == {
            ("stub · run run-a", "run-a"), ("stub · run run-b", "run-b")}

    r = cli("loadtest", "report", str(tmp_path / "results"), "--out", str(tmp_path / "one"), "--run-id", "run-b",
            "--quiet")
    assert r.returncode == 0, r.stderr
    (only,) = json.loads((tmp_path / "one" / "report.json").read_text())["targets"]
    assert only["label"] == "stub" and only["run_id"] == "run-b"
    r = cli("loadtest", "report", str(tmp_path / "results"), "--out", str(tmp_path / "none"), "--run-id", "run-z")
    assert r.returncode == 2
    assert "--run-id run-z: no such run among the inputs; runs there: run-a, run-b" in r.stderr


def test_capacity_sweep_goes_on_until_the_knee(stub_server: Callable[..., StubServer], tmp_path: Path) -> None:
    """Rates relative to a measured capacity; while the last step still meets the SLO the sweep goes on at +15%
    (the stub's 20 ms sleep never saturates, so it stops after the 4 extra steps), and stops at once when a step
    misses it. The SLO that is met is 100 times the stub's delay: a busy machine that starves the client for a
    moment must not end the sweep early (nor flag a step behind schedule, which also ends it)."""
    server = stub_server("--delay", "0.02")
    common = ("--capacity-fractions", "0.25,0.5", "--calibrate-concurrency", "4", "--calibrate-duration", "1",
              "--duration", "0.5", "--warmup", "0.2", "--no-progress")
    r = cli("loadtest", "run", "--url", server.url(), *common, *GENEROUS_SLO, "--out", str(tmp_path / "a.json"))
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "a.json").read_text())
    cal = doc["calibration"]
    # 4 users × 1 / 20 ms at most; how far below that depends on the machine's speed, not on the code
    assert cal["concurrency"] == 4 and 0 < cal["throughput_rps"] <= 200
    rates = [s["spec"]["rate"] for s in doc["steps"]]
    assert rates[:2] == cal["rates"] == [float(f"{cal['throughput_rps'] * f:.3g}") for f in (0.25, 0.5)]
    assert len(rates) == 6 and all(b == pytest.approx(a * 1.15, rel=0.01) for a, b in itertools.pairwise(rates[1:]))
    assert "capacity:" in r.stderr and "to find the knee" in r.stderr
    r = cli("loadtest", "run", "--url", server.url(), *common, "--slo-p99-ms", "1", "--out", str(tmp_path / "b.json"))
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "b.json").read_text())["steps"]) == 2


def test_report_with_tune_trials_adds_tuned_vs_configured(stub_server: Callable[..., StubServer],
                                                          tmp_path: Path) -> None:
    """`loadtest report --tune-trials F`: the section beside the run's ranking, in the console, report.json and the
    HTML; the trials are written by tune's own search (its fake measurement seam)."""
    from tests.unit.test_tuned_report import FAST as TUNED
    from tests.unit.test_tuned_report import MID, SLOW, tune

    server = stub_server()
    results, out = tmp_path / "results", tmp_path / "report"
    r = cli("loadtest", "run", "--url", server.url("minilm"), "--rate", "20", "--requests", "10", *FAST,
            "--out", f"{results}/")
    assert r.returncode == 0, r.stderr
    trials = tmp_path / "graviton.jsonl"
    tune(trials, "graviton", configured=SLOW, others=[TUNED, MID], usd_per_hour=1.0)
    r = cli("loadtest", "report", str(results), "--tune-trials", str(trials), "--out", str(out), *GENEROUS_SLO)
    assert r.returncode == 0, r.stderr
    assert "Tuned vs as configured (processors ranked between tuned shapes)" in r.stdout
    assert f"tuned:      {TUNED.key}" in r.stdout and f"configured: {SLOW.key}" in r.stdout
    doc = json.loads((out / "report.json").read_text())
    assert doc["tuned"]["processors"][0]["tuned"]["key"] == TUNED.key
    assert '<table id="tuned">' in (out / "report.html").read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    r = cli("loadtest", "report", str(results), "--tune-trials", str(bad), "--out", str(tmp_path / "r2"))
    assert r.returncode == 2 and "line 1 is not a tune trial record" in r.stderr
