"""``eks-inference verify`` against the real serving stack: the bundled model on Ray Serve, in fp32 and in bf16.

The session's shared apps are reused (``minilm``: fp32, max_seq_length 128, batches of up to 8; ``minilm_bf16``:
bf16 even where the CPU only emulates it, max_seq_length 64), so this adds no deployment. What must hold: the
compiled TorchScript graph, dynamic batching with padding, and bf16 weights all stay within the tolerance of
the fp32 eager reference on every probe, including those at and over the truncation limit.
"""

from __future__ import annotations

import json

import pytest

from eks_inference.cli import main

from .conftest import get

pytestmark = pytest.mark.integration


def _verify(url: str, capsys: pytest.CaptureFixture[str]) -> dict:
    rc = main(["verify", "--url", url, "--json"])
    out = capsys.readouterr()
    verdict = json.loads(out.out)
    assert rc == 0, verdict["summary"] + out.err
    return dict(verdict)


def test_fp32_serving_agrees_with_the_reference(minilm: str, capsys: pytest.CaptureFixture[str]) -> None:
    v = _verify(minilm, capsys)
    assert v["status"] == "passed" and v["target_dtype"] == "fp32" and v["max_seq_length"] == 128
    assert v["source"] == "bundled:all-minilm-l6-v2" and v["target_digest"] == v["source_digest"]
    worst = min(r["score"] for r in v["rows"])
    print(f"fp32 worst cosine {worst:.6f} on {v['worst']['probe']}")
    assert worst > 0.9999  # a traced fp32 graph differs from eager in rounding only
    flags = {r["probe"]: r for r in v["rows"]}
    assert flags["at-limit"]["ok"] and flags["over-limit"]["ok"]  # truncation at exactly 128 tokens, flagged


def test_bf16_serving_agrees_within_tolerance(minilm_bf16: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, info = get(f"{minilm_bf16}/info")
    assert status == 200 and info["dtype"] == "bf16"  # really bf16, emulated if need be
    v = _verify(minilm_bf16, capsys)
    assert v["status"] == "passed" and v["target_dtype"] == "bf16" and v["max_seq_length"] == 64
    worst = min(r["score"] for r in v["rows"])
    print(f"bf16 worst cosine {worst:.6f} on {v['worst']['probe']}")
    assert 0.99 <= worst < 0.99999  # inside the tolerance, and visibly not fp32
