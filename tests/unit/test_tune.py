"""eks-inference tune: the search space's bounds, the budget, verify as a gate, resume, the refusal rule and the
cdk.json patch. The trials here go through a fake measurement (the search's seam); a real local tune runs in
tests/integration/test_tune_local.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from eks_inference.cli import main
from eks_inference.cli.tune import fitting
from eks_inference.config import (
    CDK_JSON,
    ENVIRONMENTS_KEY,
    ConfigError,
    config_from_context,
    load_environment,
    read_project_context,
    tune_refusal,
    write_serving_patch,
)
from eks_inference.tune.report import pareto_front, separate, table_lines, why_dropped
from eks_inference.tune.search import Rung, TrialsFile, successive_halving
from eks_inference.tune.space import Bounds, Candidate, configured, sample, space
from tests.conftest import ROOT

SCREEN = Rung("screen", expected_s=60.0)
CONFIRM = Rung("confirm", expected_s=120.0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeMeasure:
    """A trial costs ``cost[rung]`` seconds of the fake clock; capacity grows with batch size and replicas; the shapes
    in ``wrong`` fail verify (the fastest of all, so a search that ignored verify would pick them)."""

    def __init__(self, clock: FakeClock, wrong: set[str] = frozenset(), cost: dict[str, float] | None = None) -> None:
        self.clock, self.wrong = clock, wrong
        self.cost = cost or {"screen": 60.0, "confirm": 120.0}
        self.calls: list[tuple[str, str]] = []

    def __call__(self, c: Candidate, rung: Rung) -> dict[str, Any]:
        self.calls.append((c.key, rung.name))
        self.clock.t += self.cost[rung.name]
        if c.key in self.wrong:
            return {"status": "failed-verify", "verify": {"status": "failed", "summary": "FAILED: cosine 0.62"},
                    "capacity": {"rps": 10_000.0, "rps_lo": 9_000.0, "rps_hi": None}, "throughput_rps": 10_000.0,
                    "p99_ms": 5.0, "usd_per_million": 0.001}
        rps = 10.0 * c.replicas + c.max_batch_size + 30.0 - c.batch_wait_ms
        return {"status": "measured", "verify": {"status": "passed", "summary": "PASSED"},
                "capacity": {"rps": rps, "rps_lo": rps * 0.9, "rps_hi": rps * 1.1, "notes": []},
                "throughput_rps": rps, "p99_ms": 200.0 - rps, "usd_per_million": 100.0 / rps}


def shapes(n: int) -> list[Candidate]:
    return sample(space(Bounds(cores=2, node_vcpus=8, dtypes=("fp32",))), n, seed=1)


def test_the_space_stays_within_the_cores_and_the_node() -> None:
    """GIVEN 2 cores here and a 2-vCPU node WHEN the space is built THEN no candidate runs more threads than the node
    less one holds, nor more replica threads than the cores, and a shape beyond either is refused saying which."""
    bounds = Bounds(cores=2, node_vcpus=2, dtypes=("fp32", "bf16"))
    every = space(bounds)
    assert every and all(c.replicas * c.threads <= 2 and c.threads == 1 for c in every)
    assert {c.replicas for c in every} == {1, 2} and {c.dtype for c in every} == {"fp32", "bf16"}
    assert all(c.max_batch_size <= 64 for c in every)
    assert "exceed the 2 core(s)" in str(bounds.admits(Candidate(3, 1, 8, 0.0, "fp32")))
    assert "2-vCPU node" in str(Bounds(cores=4, node_vcpus=2, dtypes=("fp32",)).admits(Candidate(1, 2, 8, 0.0, "fp32")))


def test_the_search_keeps_to_its_budget(tmp_path: Path) -> None:
    """GIVEN screens of 60 s and confirmations of 120 s WHEN the budget is 5 minutes THEN the screen stops at half of
    it, the confirmations at the end, no trial runs past it, and the search says what stopped it."""
    clock = FakeClock()
    measure = FakeMeasure(clock)
    out = successive_halving(shapes(20), measure, rungs=(SCREEN, CONFIRM), budget_s=300, clock=clock,
                             trials=TrialsFile(tmp_path / "t.jsonl"))
    screens = [k for k, r in measure.calls if r == "screen"]
    confirms = [k for k, r in measure.calls if r == "confirm"]
    assert len(screens) == 2 and len(confirms) == 1  # 2 x 60 s <= 150 s; then 120 s of the 180 s left
    assert clock.t - 1000.0 <= 300
    assert out.stopped is not None and "budget" in out.stopped
    assert out.winner is not None and out.winner["rung"] == "confirm"


def test_a_candidate_that_fails_verify_is_never_promoted_or_chosen(tmp_path: Path) -> None:
    """GIVEN the fastest shape of all answers wrongly WHEN the search runs THEN it is recorded with its verdict, never
    confirmed and never the winner, and the table says why it was dropped."""
    cands = shapes(6)
    wrong = {cands[2].key}
    clock = FakeClock()
    measure = FakeMeasure(clock, wrong=wrong)
    out = successive_halving(cands, measure, rungs=(SCREEN, CONFIRM), budget_s=3600, clock=clock,
                             trials=TrialsFile(tmp_path / "t.jsonl"))
    assert (cands[2].key, "screen") in measure.calls and (cands[2].key, "confirm") not in measure.calls
    assert out.winner is not None and out.winner["key"] not in wrong
    rec = next(r for r in out.records if r["key"] in wrong)
    assert why_dropped(rec) == "failed verify: FAILED: cosine 0.62"
    assert any("dropped: failed verify" in line for line in table_lines(out.records))
    assert rec["key"] not in {r["key"] for r in pareto_front(out.records)}


def test_the_configured_shape_is_confirmed_beside_the_winner(tmp_path: Path) -> None:
    cands = shapes(9)
    base = min(cands, key=lambda c: 10 * c.replicas + c.max_batch_size - c.batch_wait_ms)  # the slowest shape
    clock = FakeClock()
    out = successive_halving([base, *[c for c in cands if c != base]], FakeMeasure(clock), rungs=(SCREEN, CONFIRM),
                             budget_s=3600, clock=clock, keep=[base], trials=TrialsFile(tmp_path / "t.jsonl"))
    confirmed = {r["key"] for r in out.records if r["rung"] == "confirm"}
    assert base.key in confirmed and len(confirmed) == 3 + 1  # ceil(9 / 3) best, and the configured shape
    assert out.winner is not None and out.winner["key"] != base.key


def test_a_rerun_with_the_trials_file_skips_done_trials(tmp_path: Path) -> None:
    """GIVEN a search that ran out of budget WHEN it runs again with the same trials file THEN it measures no trial
    twice, goes on where it stopped, and a third run with room for everything measures nothing new."""
    cands, trials = shapes(8), TrialsFile(tmp_path / "t.jsonl")
    clock = FakeClock()
    first = FakeMeasure(clock)
    one = successive_halving(cands, first, rungs=(SCREEN, CONFIRM), budget_s=240, clock=clock, trials=trials)
    assert one.ran == len(first.calls) > 0 and one.stopped
    second = FakeMeasure(clock)
    two = successive_halving(cands, second, rungs=(SCREEN, CONFIRM), budget_s=3600, clock=clock, trials=trials)
    assert not set(first.calls) & set(second.calls)
    assert two.skipped == len(first.calls)
    third = FakeMeasure(clock)
    three = successive_halving(cands, third, rungs=(SCREEN, CONFIRM), budget_s=3600, clock=clock, trials=trials)
    assert third.calls == [] and three.ran == 0
    assert three.winner is not None and two.winner is not None and three.winner["key"] == two.winner["key"]
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == len(first.calls) + len(second.calls)
    assert all({"config", "verify", "capacity", "seconds", "patch"} <= set(json.loads(x)) for x in lines)


def test_trials_under_another_slo_are_not_reused(tmp_path: Path) -> None:
    cands, trials = shapes(3), TrialsFile(tmp_path / "t.jsonl")
    clock = FakeClock()
    successive_halving(cands, FakeMeasure(clock), rungs=(SCREEN,), budget_s=3600, clock=clock, trials=trials,
                       context={"slo_ms": 100})
    again = FakeMeasure(clock)
    successive_halving(cands, again, rungs=(SCREEN,), budget_s=3600, clock=clock, trials=trials,
                       context={"slo_ms": 250})
    assert len(again.calls) == 3


def test_a_broken_trials_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"key": "a", "rung": "screen"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"line 2 is not a trial record"):
        TrialsFile(path).load()


def test_pareto_front_and_interval_separation() -> None:
    points = (("a", 10, 50), ("b", 20, 80), ("c", 15, 90), ("d", 5, 40))
    recs = [{"key": k, "status": "measured", "verify": {"status": "passed"}, "capacity": {"rps": x},
             "throughput_rps": x, "p99_ms": y} for k, x, y in points]
    assert [r["key"] for r in pareto_front(recs)] == ["d", "a", "b"]  # c: b is faster at lower p99
    assert separate({"rps_lo": 30, "rps_hi": 40}, {"rps_lo": 10, "rps_hi": 20}) is True
    assert separate({"rps_lo": 15, "rps_hi": 40}, {"rps_lo": 10, "rps_hi": 20}) is False
    assert separate({"rps_lo": None, "rps_hi": 40}, {"rps_lo": 10, "rps_hi": 20}) is None


def _project_with_tune_env(tmp_path: Path, **changes: Any) -> Path:
    doc = json.loads((ROOT / CDK_JSON).read_text())
    envs = doc["context"][ENVIRONMENTS_KEY]
    tune = copy.deepcopy(envs["dev"])
    tune.update({"tune_target": True, "front_door": {"enabled": False}}, **changes)
    envs["tune"] = tune
    path = tmp_path / CDK_JSON
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def test_the_winners_patch_round_trips_through_config_validation(tmp_path: Path) -> None:
    """GIVEN a tune target WHEN a candidate's patch is written THEN cdk.json, read back through the validation synth
    applies, serves exactly that shape; a patch the node cannot hold is refused and leaves the file as it was."""
    path = _project_with_tune_env(tmp_path)
    c = Candidate(replicas=2, threads=1, max_batch_size=16, batch_wait_ms=2.0, dtype="fp32")
    write_serving_patch("tune", "minilm", c.patch(), cdk_json=path)
    s = load_environment("tune", cdk_json=path).models[0].serving
    assert (s.max_batch_size, s.batch_wait_timeout_s, s.num_threads, s.cpus_per_replica, s.dtype.value) == (
        16, 0.002, 1, 1.0, "fp32")
    assert configured(s, cores=2) == c
    before = path.read_text()
    with pytest.raises(ConfigError, match=r"cpus_per_replica|does not fit|node"):
        write_serving_patch("tune", "minilm", {"num_threads": 64, "cpus_per_replica": 64.0}, cdk_json=path)
    assert path.read_text() == before


def test_fitting_drops_shapes_the_environment_refuses(tmp_path: Path) -> None:
    path = _project_with_tune_env(tmp_path)
    context = read_project_context(path)
    ok = Candidate(1, 2, 32, 10.0, "bf16")
    too_big = Candidate(1, 16, 32, 10.0, "fp32")  # a 16-CPU worker pod on an 8-vCPU c7g.2xlarge
    kept, dropped = fitting([ok, too_big], context=context, env="tune", model="minilm")
    assert kept == [ok] and set(dropped) == {too_big.key}


def test_only_a_tune_target_without_a_front_door_may_be_tuned(tmp_path: Path) -> None:
    """The rule: ``"tune_target": true`` and the front door off; anything else is refused saying which is missing."""
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    path = _project_with_tune_env(tmp_path / "a")
    assert tune_refusal(load_environment("tune", cdk_json=path)) is None
    assert "front door is enabled" in str(tune_refusal(load_environment("dev", cdk_json=path)))
    unmarked = _project_with_tune_env(tmp_path / "b", tune_target=False)
    assert "not marked as one" in str(tune_refusal(load_environment("tune", cdk_json=unmarked)))
    with pytest.raises(ConfigError, match=r"tune_target: 'yes' is not true or false"):
        load_environment("tune", cdk_json=_project_with_tune_env(tmp_path / "c", tune_target="yes"))


def test_tuning_an_environment_that_takes_traffic_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["tune", "--env", "dev", "--processor", "graviton", "--slo-p99-ms", "100", "--budget-minutes", "1",
               "--cdk-json", str(ROOT / CDK_JSON)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "environment 'dev' is not a tune target" in err, err


def test_what_a_tuned_shape_does_to_a_running_rayservice() -> None:
    """GIVEN dev's model (batch 32, 2 threads, bf16) WHEN a tune's patch is classified THEN batching alone is applied
    in place on Graviton (user_config: KubeRay resubmits serveConfigV2, replicas reconfigure), is a Serve restart on
    Inferentia (its compiled buckets follow the batch size), and new threads resize the worker pods (a deploy)."""
    from eks_inference.config import Processor
    from eks_inference.ops.tune import cluster_effect

    model = load_environment("dev", cdk_json=ROOT / CDK_JSON).models[0]
    batching = Candidate(1, 2, 16, 2.0, "bf16").changes(model.serving)
    assert batching == {"max_batch_size": 16, "batch_wait_timeout_s": 0.002}
    assert cluster_effect(model, Processor.GRAVITON, batching)[0] == "in place"
    effect, why = cluster_effect(model, Processor.INFERENTIA, batching)
    assert effect == "serve restart" and "args" in why
    threads = Candidate(2, 1, 32, 10.0, "bf16").changes(model.serving)
    assert threads == {"num_threads": 1}  # Ray CPUs already 1
    effect, why = cluster_effect(model, Processor.GRAVITON, {**threads, "num_threads": 4, "cpus_per_replica": 4.0})
    assert effect == "needs a deploy" and "worker pods change" in why


def test_the_space_holds_the_cpu_knobs_this_machine_can_honour() -> None:
    """GIVEN a Graviton tune on a CPU without bf16 but with huge pages and a C++ compiler WHEN the space is built THEN
    THP and torch.compile are tried, bf16 fpmath is left out with "no effect here", every candidate stays within the
    cores; an Inferentia tune tries no CPU setting (its replicas run on NeuronCores)."""
    from eks_inference.config import Processor
    from eks_inference.tune.space import cpu_knobs

    knobs, notes = cpu_knobs(Processor.GRAVITON, bf16_here=False, thp_here=True, compiler_here=True)
    assert knobs == {"thp": (False, True), "torch_compile": (False, True)}
    assert "no effect here" in notes["fpmath"]
    bounds = Bounds(cores=2, node_vcpus=8, dtypes=("fp32",), knobs=knobs)
    every = space(bounds)
    assert {(c.thp, c.torch_compile) for c in every} == {(False, False), (False, True), (True, False), (True, True)}
    assert {c.fpmath for c in every} == {"default"}
    assert all(c.replicas * c.threads <= 2 for c in every)
    assert "not tried here" in str(bounds.admits(Candidate(1, 1, 8, 0.0, "fp32", fpmath="bf16")))
    with_bf16, _ = cpu_knobs(Processor.GRAVITON, bf16_here=True, thp_here=False, compiler_here=False)
    assert with_bf16 == {"fpmath": ("default", "bf16")}
    none, why = cpu_knobs(Processor.INFERENTIA, bf16_here=True, thp_here=True, compiler_here=True)
    assert none == {} and "accelerator" in why["cpu_tuning"]
    # a shape without knobs keeps the key trials files already hold
    assert Candidate(2, 1, 32, 5.0, "fp32").key == "r2-t1-b32-w5-fp32"
    assert Candidate(2, 1, 32, 5.0, "fp32", thp=True, torch_compile=True).key == "r2-t1-b32-w5-fp32-thp-tc"


def test_a_tuned_cpu_knob_round_trips_through_config_validation(tmp_path: Path) -> None:
    path = _project_with_tune_env(tmp_path)
    c = Candidate(replicas=2, threads=1, max_batch_size=16, batch_wait_ms=2.0, dtype="fp32", fpmath="bf16", thp=True,
                  torch_compile=True)
    kept, dropped = fitting([c], context=read_project_context(path), env="tune", model="minilm")
    assert kept == [c] and not dropped
    write_serving_patch("tune", "minilm", c.changes(load_environment("tune", cdk_json=path).models[0].serving),
                        cdk_json=path)
    s = load_environment("tune", cdk_json=path).models[0].serving
    assert (s.cpu_tuning.fpmath, s.cpu_tuning.thp, s.cpu_tuning.torch_compile) == ("bf16", True, True)
    assert configured(s, cores=2) == c
    assert "cpu_tuning" not in c.changes(s)


def test_inferentia_settings_stay_within_the_node_and_say_what_they_need(tmp_path: Path) -> None:
    """The smallest inf2 node bounds NeuronCores per replica (inf2.xlarge: 2); buckets reach each tried batch size at
    or above max_batch_size; each auto-cast; a new artifact needs a compile, new cores only a deploy. Their patches
    pass the environment's validation."""
    from eks_inference.tables.instance_types import INSTANCE_TYPES
    from eks_inference.tune.space import NEURON_AUTO_CASTS, neuron_space

    path = _project_with_tune_env(tmp_path)
    serving = load_environment("tune", cdk_json=path).models[0].serving
    cores = INSTANCE_TYPES["inf2.xlarge"].neuron_cores
    variants = neuron_space(serving, node_neuron_cores=cores)
    assert {v.neuron_cores_per_replica for v in variants} == {n for n in (1, 2, 4) if n <= cores}
    assert all(v.batch_buckets[-1] >= serving.max_batch_size for v in variants)
    # dev serves bf16, whose default is --auto-cast all: the configured (None) and the two others are tried
    assert serving.dtype.value == "bf16" and serving.auto_cast is None
    assert {v.auto_cast for v in variants} == {None, *NEURON_AUTO_CASTS} - {"all"}
    same = [v for v in variants if v.batch_buckets == serving.batch_buckets and v.auto_cast is None]
    assert [v.neuron_cores_per_replica for v in same] == [1, 2]
    assert same[0].changes(serving) == {} and same[1].changes(serving) == {"neuron_cores_per_replica": 2}
    assert same[1].needs(serving) == "needs a deploy"
    cast = next(v for v in variants if v.neuron_cores_per_replica == 1 and v.batch_buckets == serving.batch_buckets
                and v.auto_cast == "matmult")
    assert cast.needs(serving) == "needs a compile" and cast.changes(serving) == {"auto_cast": "matmult"}
    context = read_project_context(path)
    for v in variants:
        ctx = copy.deepcopy(context)
        entry = ctx[ENVIRONMENTS_KEY]["tune"]["models"][0]
        entry["serving"] = {**entry.get("serving", {}), **v.patch()}
        config_from_context({**ctx, "env": "tune"})


def test_tune_lists_inferentia_settings_as_needing_a_cluster_and_records_them_once(tmp_path: Path) -> None:
    from eks_inference.cli.tune import neuron_lines

    path = _project_with_tune_env(tmp_path)
    config = load_environment("tune", cdk_json=path)
    trials = TrialsFile(tmp_path / "t.jsonl")
    lines = neuron_lines(config.models[0], config, trials=trials, context={"env": "tune"})
    assert "not measured here (they need a cluster)" in lines[0]
    assert any(x.startswith("  nc1-") and "as configured" in x for x in lines)
    assert any(x.startswith("  nc2-") and ": needs a deploy (needs a deploy:" in x for x in lines)
    assert any(": needs a compile (serve restart:" in x for x in lines)
    recs = list(trials.load().values())
    assert recs and all(r["status"] == "not-measured" and r["rung"] == "cluster" for r in recs)
    assert all(why_dropped(r) in ("needs a compile", "needs a deploy") for r in recs)
    neuron_lines(config.models[0], config, trials=trials, context={"env": "tune"})
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == len(recs)


def test_a_trial_key_names_its_candidate_back() -> None:
    for c in (Candidate(2, 1, 16, 0.0, "fp32"), Candidate(1, 1, 8, 5.0, "fp32", thp=True),
              Candidate(1, 2, 32, 2.5, "bf16", fpmath="bf16", thp=True, torch_compile=True)):
        assert Candidate.from_key(c.key) == c
    for bad in ("r2-t1-b16-w0", "r2-t1-b16-w0-fp32-xx", "r2-t1-b16-w0-fp32-tc-thp", "rx-t1-b16-w0-fp32"):
        with pytest.raises(ValueError):
            Candidate.from_key(bad)
