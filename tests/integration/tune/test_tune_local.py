"""A real, small tune on local serving: two shapes of the bundled model served on the session's Ray, each verified
against the fp32 reference and measured with the capacity search, recorded in a trials file that a rerun resumes
from. The budget is tiny and the measurements short: what is checked is the path (serve, verify, measure, record,
resume), not the figures, which a busy machine moves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eks_inference.config import CDK_JSON, load_environment
from eks_inference.ops.tune import LocalTrials
from eks_inference.serving.local import LocalRay
from eks_inference.tune.report import table_lines
from eks_inference.tune.search import Rung, TrialsFile, eligible, successive_halving
from eks_inference.tune.space import Candidate
from tests.conftest import ROOT
from tests.servers import get

pytestmark = pytest.mark.integration

TINY = Rung("screen", expected_s=60.0, settings={"repeats": 1, "duration_s": 2.0, "warmup_s": 0.5,
                                                 "search_budget_s": 20.0})


def test_a_small_local_tune_serves_verifies_measures_and_resumes(local_ray: LocalRay, tmp_path: Path) -> None:
    """GIVEN dev's model under another name on the session's Ray WHEN two batching shapes are tuned within a 10-minute
    budget THEN each trial ran the shape asked for, passed verify, carries a capacity block from the search, and is
    in the trials file; the winner, if any rate met the SLO, is an eligible trial; a rerun measures nothing again."""
    model = load_environment("dev", cdk_json=ROOT / CDK_JSON).models[0]
    model = dataclasses.replace(model, name="minilm-tune")
    shapes = [Candidate(1, 1, 8, 0.0, "fp32"), Candidate(1, 1, 16, 2.0, "fp32")]
    measure = LocalTrials(local_ray, model, source="bundled:all-minilm-l6-v2", work_dir=tmp_path, slo_ms=500.0,
                          percentile="p99", usd_per_hour=0.1)
    trials = TrialsFile(tmp_path / "trials.jsonl")
    try:
        out = successive_halving(shapes, measure, rungs=(TINY,), budget_s=600, trials=trials)
        assert out.ran == 2 and [r["key"] for r in out.records] == [c.key for c in shapes], out.stopped
        for rec in out.records:
            assert rec["status"] == "measured", rec.get("note")
            assert rec["verify"]["status"] == "passed", rec["verify"]
            assert rec["capacity"]["probes"], rec["capacity"]  # the search probed at least one rate
        _, info = get(f"{local_ray.url}/minilm-tune/info")
        assert (info["max_batch_size"], info["batch_wait_timeout_s"]) == (16, 0.002)  # the last shape is what serves
        assert out.winner is None or eligible(out.winner)
        assert any("r1-t1-b16-w2-fp32" in line for line in table_lines(out.records))

        def never(c: Candidate, rung: Rung) -> dict[str, object]:
            raise AssertionError(f"{c.key} measured again")
        again = successive_halving(shapes, never, rungs=(TINY,), budget_s=600, trials=trials)
        assert (again.ran, again.skipped) == (0, 2)
        assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 2
    finally:
        local_ray.remove("minilm-tune")


def test_a_shape_with_cpu_knobs_serves_compiled_with_its_env_and_passes_verify(local_ray: LocalRay,
                                                                              tmp_path: Path) -> None:
    """GIVEN a candidate with transparent huge pages and torch.compile WHEN tune serves it on the session's Ray THEN the
    replica reports the compiled head and THP_MEM_ALLOC_ENABLE in its own environment (set through the actor's
    runtime_env), and its answers pass verify against the fp32 reference. Inductor compiles MiniLM in the warm-up
    (about 40 s of one core here)."""
    model = dataclasses.replace(load_environment("dev", cdk_json=ROOT / CDK_JSON).models[0], name="minilm-knobs")
    c = Candidate(1, 1, 8, 0.0, "fp32", thp=True, torch_compile=True)
    measure = LocalTrials(local_ray, model, source="bundled:all-minilm-l6-v2", work_dir=tmp_path, slo_ms=500.0,
                          percentile="p99", usd_per_hour=0.1)
    try:
        info = measure.serve(c)
        assert info["torch_compile"] is True
        assert info["cpu_env"].get("THP_MEM_ALLOC_ENABLE") == "1"
        assert "DNNL_DEFAULT_FPMATH_MODE" not in info["cpu_env"]
        verdict = measure.verify()
        assert verdict["status"] == "passed", verdict
    finally:
        local_ray.remove("minilm-knobs")
