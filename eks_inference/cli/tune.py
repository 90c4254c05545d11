"""``eks-inference tune``: the cheapest serving shape of a model on a processor that meets a latency target,
searched on local serving within a time budget (:mod:`eks_inference.tune`, trials by :mod:`eks_inference.ops.tune`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

from eks_inference.cli.help import add_command
from eks_inference.config import (
    CDK_JSON,
    ENVIRONMENTS_KEY,
    ConfigError,
    PlatformConfig,
    Processor,
    config_from_context,
    load_environment,
    read_project_context,
    tune_refusal,
    write_serving_patch,
)
from eks_inference.tune.space import Bounds, Candidate, configured, cpu_knobs, dtypes_for, neuron_space, sample, space

DEFAULT_SOURCE = "bundled:all-minilm-l6-v2"


def register(sub: Any) -> None:
    p = add_command(
        sub, "tune", summary="find the serving shape with the lowest cost per million inferences at a latency target",
        description=textwrap.fill(
            "Searches a processor's serving shapes (max_batch_size, batch wait, threads per replica, replicas on this "
            "machine, dtype and, on CPU processors, serving.cpu_tuning: oneDNN bf16 fpmath, transparent huge pages, "
            "torch.compile, each where this machine can honour it) within what this machine's cores and the "
            "processor's smallest node allow, on local "
            "serving: each candidate is served, verified against the fp32 reference (one that fails is recorded and "
            "never chosen) and measured with the capacity search (estimate and 95 %% interval) at the SLO. Successive "
            "halving within --budget-minutes: a short screen of many shapes, then repeats of the best third. Every "
            "trial is appended to --trials-file; a rerun with the same file skips them. Only an environment with "
            "\"tune_target\": true and its front door off may be tuned (it takes no traffic). Prints the trials "
            "ranked by USD per million at the SLO, the winner against the configured shape, and the winner's cdk.json "
            "patch; --write applies it. On inferentia it also lists NeuronCores per replica, compiled buckets and "
            "auto-cast within the smallest inf2 node, each marked needs a compile or needs a deploy: only a cluster "
            "measures them.", width=100),
        example_lines=(
            "eks-inference tune --env tune --processor graviton --slo-p99-ms 250 --budget-minutes 10",
            "eks-inference tune --env tune --processor graviton --slo-p99-ms 250 --budget-minutes 10 "
            "--trials-file out/tune.jsonl --write",
        ),
    )
    p.add_argument("--env", required=True, help="the environment to tune (it must be a tune target)")
    p.add_argument("--processor", required=True, choices=[x.value for x in Processor],
                   help="whose node group bounds the shapes; the trials run on this machine's CPU")
    p.add_argument("--slo-p99-ms", type=float, required=True, help="the latency target, in ms")
    p.add_argument("--slo-percentile", choices=("p50", "p90", "p95", "p99", "p999"), default="p99",
                   help="the percentile the target applies to")
    p.add_argument("--budget-minutes", type=float, required=True, help="time the search may take (this run)")
    p.add_argument("--trials-file", help="JSON lines of trials, appended to and resumed from "
                                         "(default: OUT/trials.jsonl)")
    p.add_argument("--write", action="store_true", help="apply the winner's serving shape to the environment")
    p.add_argument("--model", help="the environment's model to tune (default: its first)")
    p.add_argument("--cdk-json", default=CDK_JSON, help="the project file holding the environments")
    p.add_argument("--source", default=DEFAULT_SOURCE, help="weights served locally (bundled:NAME, a directory "
                                                            "or s3://...)")
    p.add_argument("--candidates", type=int, help="shapes drawn for the screen (default: what the budget holds, x2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw (a resumed tune must use the same)")
    p.add_argument("--price-as", default="host", metavar="TYPE|host",
                   help="EC2 type that prices this machine's hours (default: the type closest to its CPU)")
    p.add_argument("--out", help="directory for the trials file and the Pareto plot "
                                 "(default: .eks-inference/tune/ENV-PROCESSOR)")
    p.set_defaults(func=cmd_tune)


def _group(config: PlatformConfig, processor: Processor) -> Any:
    group = next((g for g in config.enabled_node_groups if g.processor is processor), None)
    if group is None:
        raise ConfigError(f"--processor: environment {config.env_name!r} has no enabled {processor.value} node group; "
                          f"enable one or pick another processor")
    return group


def _bounds(config: PlatformConfig, processor: Processor, cores: int, bf16_here: bool,
            knobs: dict[str, tuple[Any, ...]] | None = None) -> Bounds:
    return Bounds(cores=cores, node_vcpus=_group(config, processor).smallest_instance.vcpus,
                  dtypes=dtypes_for(processor, bf16_here=bf16_here), knobs=knobs or {})


def thp_available() -> bool:
    """Whether the kernel grants transparent huge pages to a process that asks (``always`` or ``madvise``)."""
    try:
        return "[never]" not in Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False


def cxx_available() -> bool:
    import shutil

    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def neuron_lines(model: Any, config: PlatformConfig, *, trials: Any, context: dict[str, Any]) -> list[str]:
    """The Inferentia settings within the group's smallest node, each with what it needs and its cdk.json change;
    recorded in the trials file as not measured (rung ``cluster``) so the report can say why none was chosen."""
    from eks_inference.ops.tune import cluster_effect

    node = _group(config, Processor.INFERENTIA).smallest_instance
    variants = neuron_space(model.serving, node_neuron_cores=node.neuron_cores)
    done = trials.load()
    out = [f"Inferentia settings (NeuronCores per replica up to {node.neuron_cores} of {node.name}, compiled "
           f"buckets, neuronx-cc --auto-cast): {len(variants)}, not measured here (they need a cluster):"]
    for v in variants:
        ch = v.changes(model.serving)
        if not ch:
            out.append(f"  {v.key}: as configured")
            continue
        need = v.needs(model.serving)
        effect, why = cluster_effect(model, Processor.INFERENTIA, ch)
        out.append(f"  {v.key}: {need} ({effect}: {why}); cdk.json serving: {json.dumps(ch, sort_keys=True)}")
        if (v.key, "cluster") not in done:
            trials.append({"format": "eks-inference/tune-trial/v1", "key": v.key, "rung": "cluster",
                           "config": {"processor": Processor.INFERENTIA.value, **v.patch()}, "patch": ch,
                           "context": context, "status": "not-measured", "verify": None, "note": need})
    return out


def fitting(candidates: list[Candidate], *, context: dict[str, Any], env: str, model: str) -> tuple[
        list[Candidate], dict[str, str]]:
    """Candidates whose patch the environment accepts (the checks synth applies, node fit included), and why each
    other one was left out."""
    ok, dropped = [], {}
    seen: dict[str, str | None] = {}
    for c in candidates:
        key = json.dumps(c.patch(), sort_keys=True)
        if key not in seen:
            ctx = copy.deepcopy(context)
            entry = next(m for m in ctx[ENVIRONMENTS_KEY][env]["models"] if m["name"] == model)
            entry["serving"] = {**(entry.get("serving") or {}), **c.patch()}
            try:
                config_from_context({**ctx, "env": env})
                seen[key] = None
            except ConfigError as e:
                seen[key] = str(e).splitlines()[0]
        if seen[key] is None:
            ok.append(c)
        else:
            dropped[c.key] = str(seen[key])
    return ok, dropped


def _price(a: argparse.Namespace, region: str) -> tuple[float | None, str]:
    from eks_inference.costs import closest_instance_type, host_cpu
    from eks_inference.tables.prices import DEFAULT_PRICES

    if a.price_as == "host":
        itype, why = closest_instance_type(host_cpu(), DEFAULT_PRICES, region)
    else:
        itype, why = a.price_as, "given with --price-as"
    hourly = DEFAULT_PRICES.hourly(itype, region)
    if hourly is None:
        raise ConfigError(f"--price-as: {itype!r} has no price in {region} in the price table; give a priced type")
    return hourly, f"{itype} at ${hourly:.4f}/h in {region} ({why})"


def cmd_tune(a: argparse.Namespace) -> int:
    from eks_inference.ops.tune import RUNGS, SCREEN, LocalTrials
    from eks_inference.serving.local import LocalRay, free_port, ray_environment, serving_cores
    from eks_inference.tune.report import render_pareto_png, separate, table_lines
    from eks_inference.tune.search import TrialsFile, successive_halving

    cdk_json = Path(a.cdk_json)
    config = load_environment(a.env, cdk_json=cdk_json)
    refusal = tune_refusal(config)
    if refusal:
        raise ConfigError(refusal)
    if a.budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes: {a.budget_minutes:g} is not positive; give minutes, e.g. 10")
    if a.slo_p99_ms <= 0:
        raise ConfigError(f"--slo-p99-ms: {a.slo_p99_ms:g} is not positive; give the latency target in ms")
    processor = Processor(a.processor)
    names = [m.name for m in config.models]
    name = a.model or (names[0] if names else None)
    model = next((m for m in config.models if m.name == name), None)
    if model is None:
        raise ConfigError(f"--model: {name!r} is not a model of environment {a.env!r}; use one of {names}")
    if processor not in model.processors:
        raise ConfigError(f"--processor: model {name!r} is not served on {processor.value} in {a.env!r}; use one of "
                          f"{[p.value for p in model.processors]}")
    from eks_inference.runtime.backends import cpu_has_native_bf16

    cores, bf16_here = serving_cores(), cpu_has_native_bf16()
    knobs, knob_notes = cpu_knobs(processor, bf16_here=bf16_here, thp_here=thp_available(),
                                  compiler_here=cxx_available())
    bounds = _bounds(config, processor, cores, bf16_here, knobs)
    hourly, price_note = _price(a, config.region)
    budget_s = a.budget_minutes * 60.0
    base = configured(model.serving, cores=cores, bf16_here=bf16_here)
    context = read_project_context(cdk_json)
    every, dropped = fitting(space(bounds), context=context, env=a.env, model=model.name)
    first = [base] if base in every else []
    n = a.candidates or max(2, 2 * math.ceil(budget_s * 0.5 / SCREEN.expected_s))
    candidates = sample(every, n, seed=a.seed, first=first)
    out = Path(a.out or Path(".eks-inference") / "tune" / f"{a.env}-{processor.value}")
    out.mkdir(parents=True, exist_ok=True)
    trials = TrialsFile(Path(a.trials_file) if a.trials_file else out / "trials.jsonl")
    print(f"tune {model.name!r} for {processor.value} in {a.env!r}: {a.slo_percentile} <= {a.slo_p99_ms:g} ms, "
          f"budget {a.budget_minutes:g} min")
    print(f"  space: {len(every)} shapes within {cores} core(s) here and a {bounds.node_vcpus}-vCPU node"
          f"{f' ({len(dropped)} more refused by the environment checks)' if dropped else ''}; screening up to "
          f"{len(candidates)}, the configured shape first" + ("" if first else " (outside the space: not measured)"))
    print(f"  configured: {base.describe()}")
    for knob, note in knob_notes.items():
        print(f"  {knob}: {note}")
    print(f"  priced as {price_note}")
    print(f"  trials: {trials.path}")
    sys.stdout.flush()
    ray_environment()
    ray = LocalRay(http_host="127.0.0.1", http_port=free_port(), num_cpus=cores).start()
    try:
        measure = LocalTrials(ray, model, source=a.source, work_dir=out.resolve(), slo_ms=a.slo_p99_ms,
                              percentile=a.slo_percentile, usd_per_hour=hourly)
        ctx = {"env": a.env, "model": model.name, "processor": processor.value, "slo_ms": a.slo_p99_ms,
               "percentile": a.slo_percentile, "cores": cores, "source": a.source, "price": price_note}
        outcome = successive_halving(candidates, measure, rungs=RUNGS, budget_s=budget_s, trials=trials,
                                     keep=first, context=ctx, say=lambda m: print(m, flush=True))
    finally:
        ray.shutdown()
    if processor is Processor.INFERENTIA:
        for line in neuron_lines(model, config, trials=trials, context=ctx):
            print(line)
    print(f"\n{outcome.ran} trial(s) run, {outcome.skipped} read back from the trials file, "
          f"{outcome.elapsed_s / 60:.1f} min" + (f"; stopped by {outcome.stopped}" if outcome.stopped else ""))
    for line in table_lines(outcome.records, configured_key=base.key):
        print(line)
    winner = outcome.winner
    png = out / "pareto.png"
    png.write_bytes(render_pareto_png(outcome.records, slo_ms=a.slo_p99_ms, percentile=a.slo_percentile,
                                      title=f"{model.name} for {processor.value} ({a.env})",
                                      winner_key=winner["key"] if winner else None, configured_key=base.key))
    print(f"Pareto plot: {png}")
    if winner is None:
        print("no shape was shown to meet the SLO with a passing verify: nothing to apply", file=sys.stderr)
        return 1
    print(f"\nwinner: {Candidate.from_dict(winner['config']).describe()} ({winner['rung']})")
    as_conf = next((r for r in outcome.records if r["key"] == base.key and r["rung"] == winner["rung"]), None)
    if as_conf is not None and as_conf is not winner:
        wc, cc = winner.get("capacity") or {}, as_conf.get("capacity") or {}
        ratio = (wc["rps"] / cc["rps"]) if wc.get("rps") and cc.get("rps") else None
        apart = separate(wc, cc)
        print(f"tuned vs as configured: {wc.get('rps')} vs {cc.get('rps')} req/s at the SLO"
              f"{f' ({ratio:.2f}x)' if ratio else ''}; intervals "
              f"{'separate' if apart else 'overlap' if apart is False else 'cannot be compared'}")
    changes = Candidate.from_dict(winner["config"]).changes(model.serving)
    if not changes:
        print("the configured shape is the winner: nothing to change")
        return 0
    patch = {"environments": {a.env: {"models": [{"name": model.name, "serving": changes}]}}}
    print("cdk.json patch (under context." + ENVIRONMENTS_KEY + "):")
    print(json.dumps(patch, indent=2))
    print("replicas: the winner ran as " f"{winner['config']['replicas']} replica(s) on {cores} core(s) here; the "
          "cluster's replica bounds stay as configured (size them with `eks-inference plan`)")
    from eks_inference.ops.tune import cluster_effect

    effect, why = cluster_effect(model, processor, changes)
    print(f"on a cluster ({processor.value}): {effect}: {why}")
    if a.write:
        write_serving_patch(a.env, model.name, changes, cdk_json=cdk_json)
        print(f"wrote the winner's serving shape to {cdk_json} (environment {a.env!r}, model {model.name!r}); "
              "it passes the validation synth applies")
    return 0
