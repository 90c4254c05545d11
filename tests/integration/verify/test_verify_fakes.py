"""``eks-inference verify`` against endpoints on 127.0.0.1 that answer wrongly in the ways real deployments do.

The fakes (:mod:`.fakes`) wrap the bundled model with one fault each; verify must fail them (exit 1) and name
the worst input, pass the honest one (exit 0), and say what to do on a usage or connection error (exit 2).
The reference is computed in this process (torch is here) or, as in the load-test image, read from where it
is stored beside the weights, locally or on S3 (a moto server).
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from eks_inference.cli import main
from eks_inference.config import Task
from eks_inference.verify.probes import probes_for

from . import fakes
from .conftest import cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("verify")


@pytest.fixture(scope="module")
def correct(work: Path) -> Iterator[fakes.FakeTarget]:
    with fakes.running("correct", work) as target:
        yield target


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["verify", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_an_honest_target_passes(correct: fakes.FakeTarget, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "--url", correct.url, "--json")
    assert rc == 0, err
    v = json.loads(out)
    assert v["status"] == "passed" and v["probes"] == len(probes_for(Task.EMBEDDING, 128)) and v["skipped"] == []
    assert v["reference"] == "computed in-process (fp32, eager torch)" and v["source"] == fakes.BUNDLED
    assert min(r["score"] for r in v["rows"]) > 0.9999  # the same engine, batched and padded vs one at a time


@pytest.mark.parametrize(("twist", "worst_among"), [
    ("wrong-vectors", None),
    ("random-model", None),
    ("perturbed", None),
    # truncating at 32 of 128 tokens changes every probe longer than 32 tokens and none shorter
    ("silent-truncation", {"repeated", "ladder-45", "ladder-90", "ladder-190", "ladder-380", "ladder-540",
                           "at-limit", "over-limit", "russian", "arabic", "code"}),
])
def test_a_wrong_target_fails_naming_the_worst_input(twist: str, worst_among: set[str] | None, work: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with fakes.running(twist, work / twist) as target:
        rc, out, err = _run(capsys, "--url", target.url)
        assert rc == 1, out + err
        probe_ids = {p.id for p in probes_for(Task.EMBEDDING, 128)}
        summary = out.strip().splitlines()[-1]
        assert summary.startswith("FAILED: ") and "worst input: " in summary
        worst = summary.split("worst input: ", 1)[1].split(" ", 1)[0]
        assert worst in probe_ids
        assert f"disagrees with the fp32 reference; worst input: {worst} (" in err
        assert "✘ " + worst in out  # the table lists it first
        if worst_among is not None:
            assert worst in worst_among, summary
        rc, out, _ = _run(capsys, "--url", target.url, "--json")
        v = json.loads(out)
        assert rc == 1 and v["status"] == "failed" and v["worst"]["probe"] == worst


def test_usage_and_connection_errors_exit_2_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, out, err = _run(capsys, "--url", f"http://127.0.0.1:{port}/minilm")
    assert rc == 2 and out == ""
    assert err.startswith(f"eks-inference verify: error: cannot reach http://127.0.0.1:{port}/minilm/info: ")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "--url", "127.0.0.1:8000/minilm")
    assert rc == 2 and "is not an http(s) URL of a model endpoint" in err


def test_a_stored_reference_serves_a_machine_without_torch(correct: fakes.FakeTarget, work: Path,
                                                           without_torch: dict[str, str]) -> None:
    """The load-test image has no torch: verify there reads the reference stored beside the weights, and says
    what to install or run when there is none."""
    model = work / "model-dir"
    shutil.copytree(fakes.bundled_dir(), model)
    missing = cli("verify", "--url", correct.url, "--source", str(model), env=without_torch)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    err = missing.stderr.strip()
    assert "no stored reference for probe set v1 at max_seq_length 128" in err
    assert "install the serve extra (pip install 'eks-inference[serve]')" in err and "--write-reference" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1

    wrote = cli("verify", "--url", correct.url, "--source", str(model), "--write-reference")
    assert wrote.returncode == 0, wrote.stderr
    assert "note: reference written at " in wrote.stdout
    assert list((model / ".references").glob("probes-v1-*/seq-128/manifest.json"))

    stored = cli("verify", "--url", correct.url, "--source", str(model), env=without_torch)
    assert stored.returncode == 0, stored.stderr
    assert f"reference: stored: {model}/.references/probes-v1-" in stored.stdout
    assert stored.stdout.strip().splitlines()[-1].startswith("PASSED: ")

    # the load tester in that image verifies the same way before its schedule
    run = cli("loadtest", "run", "--url", correct.url, "--verify", "--verify-source", str(model), "--rates", "4",
              "--duration", "1", "--warmup", "0.2", "--no-progress", "--out", str(work / "lt.json"), env=without_torch)
    assert run.returncode == 0, run.stderr
    verdict = json.loads((work / "lt.json").read_text())["verification"]
    assert verdict["status"] == "passed" and verdict["reference"].startswith(f"stored: {model}/.references/")

    # a tampered stored reference is refused, not trusted
    (out_file,) = (model / ".references").glob("probes-v1-*/seq-128/outputs-*.json")
    out_file.write_text(out_file.read_text().replace("0.", "0.1", 5))
    tampered = cli("verify", "--url", correct.url, "--source", str(model), "--reference", "stored")
    assert tampered.returncode == 2 and "does not match its manifest's sha256" in tampered.stderr


def test_references_published_to_s3_verify_in_the_load_test_image(
        moto_s3_endpoint: str, work: Path, without_torch: dict[str, str]) -> None:
    """`publish` stores the references beside the weights on S3; a client without torch verifies from them."""
    import boto3

    from eks_inference.compile.publish import publish_model
    from eks_inference.compile.synthetic import write_synthetic_model
    from eks_inference.verify.reference import references_for_publish

    tiny = write_synthetic_model(work / "tiny", vocab_file=fakes.bundled_dir() / "vocab.txt")
    boto3.client("s3", endpoint_url=moto_s3_endpoint).create_bucket(Bucket="verify-refs")
    pub = publish_model(tiny, "s3://verify-refs", name="tiny", revision="v1", endpoint_url=moto_s3_endpoint,
                        references=references_for_publish)
    assert pub.status == "published"
    assert len(pub.references) == 6 and all("(written)" in line for line in pub.references)  # 32 … 512 tokens
    again = publish_model(tiny, "s3://verify-refs", name="tiny", revision="v1", endpoint_url=moto_s3_endpoint,
                          references=references_for_publish)
    assert again.status == "already-published" and all("(already-stored)" in line for line in again.references)

    model_uri = "s3://verify-refs/models/tiny/v1"
    answer = fakes.engine_answer(tiny, fakes.eager(tiny, Task.EMBEDDING), task=Task.EMBEDDING, max_seq_length=64)
    target = fakes.start(answer, model="tiny", max_seq_length=64, model_uri=model_uri)
    try:
        env = {**without_torch, "AWS_ENDPOINT_URL": moto_s3_endpoint}
        r = cli("verify", "--url", target.url, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"reference: stored: {model_uri}/.references/probes-v1-" in r.stdout
        assert "/seq-64/outputs-" in r.stdout
    finally:
        target.stop()
