"""``eks-inference loadtest run | report | compare``: argument parsing and the glue between runner, files and screen.

Exit codes: 0 done; 1 the target could not be measured (unreachable, no successes) — the result file
is still written with whatever was measured; 2 bad input (``ConfigError``); 130 interrupted (results so
far written). ``compare``: 1 when a target regressed beyond the noise both runs measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import os
import secrets
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from eks_inference import storage
from eks_inference.analysis import compare, report
from eks_inference.analysis.aggregate import DEFAULT_SLO_P99_MS, build_targets, series_verification
from eks_inference.analysis.timeline import client_timeline, segment_rows, timeline_table
from eks_inference.analysis.timeline import from_results as timeline_from_results
from eks_inference.cli.help import add_command
from eks_inference.cli.pricing import add_pricing_argument, prices_from_args
from eks_inference.config import ConfigError, Processor
from eks_inference.costs import closest_instance_type, host_cpu
from eks_inference.costs import parse_fractions as parse_placement
from eks_inference.loadgen import provenance, readiness, runner
from eks_inference.loadgen.client import Engine, parse_endpoint
from eks_inference.loadgen.host import pin_client
from eks_inference.loadgen.model_mix import default_ids
from eks_inference.loadgen.payloads import Payload, generate_payloads, load_payload_file, parse_length_dist
from eks_inference.loadgen.run_config import RunConfig, SearchSpec, parse_concurrencies, parse_fractions, parse_rates
from eks_inference.measure import results
from eks_inference.measure.capacity import capacity_at_slo, capacity_text
from eks_inference.measure.repeats import summarize_repeats
from eks_inference.measure.schedule import RateSchedule, build_schedule
from eks_inference.measure.spec import Arrival, Mode, StepSpec, TargetInfo
from eks_inference.measure.steps import summarize
from eks_inference.tables.prices import DEFAULT_REGION, age_warning

VIA = ("direct", "service", "front-door")
"""The network paths a load test names: a URL served straight (a port-forward, a local server), a model's in-cluster
Service, or the environment's front door (its load balancer, TLS and authentication included)."""

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100)


def register(subparsers: Any) -> None:
    lt = add_command(
        subparsers, "loadtest", summary="load-test a model endpoint and report price-performance",
        description=_wrap("Open-loop (rate) and closed-loop (concurrency) load tests with HDR histograms, and a "
                          "price-performance report merged exactly across clients."),
        example_lines=(
            "eks-inference loadtest run --url http://127.0.0.1:8000/minilm --rates 5,10,20 --duration 10 "
            "--out out/results/",
            "eks-inference loadtest report out/results --out out/report",
            "eks-inference loadtest compare out/before/report.json out/after/results/",
        ),
    )
    sub = lt.add_subparsers(dest="loadtest_command", metavar="{run,report,compare}")

    def group_help(_a: argparse.Namespace) -> int:
        lt.print_help()
        return 2

    lt.set_defaults(func=group_help)
    _register_run(sub)
    _register_report(sub)
    _register_compare(sub)


def _register_run(sub: Any) -> None:
    p = add_command(
        sub, "run", summary="send load to one endpoint and write one result file",
        description=_wrap("Send load to URL/predict (JSON {\"inputs\": [...]}) and write one result file per client. "
                          "Open loop measures latency from each request's intended send time (no coordinated "
                          "omission). With --clients N, the N clients of a run meet through ready markers under --out "
                          "and start together; with --wait-ready, each first waits for URL/healthz."),
        example_lines=(
            "eks-inference loadtest run --url http://127.0.0.1:8000/minilm --rates 5,10,20,40 --duration 10 \\",
            "    --target-name local-minilm-cpu --processor cpu --price-as c7i.large --out out/results/",
            "eks-inference loadtest run --url http://127.0.0.1:8000/minilm --capacity-fractions 0.3,0.6,0.9,1.1 \\",
            "    --duration 8 --out out/results/     # rates relative to the capacity measured first",
            "eks-inference loadtest run --url http://127.0.0.1:8000/minilm --schedule 5:20,40:60,5:60 \\",
            "    --out out/results/     # one run; per second: replicas reported by /info, latency, throughput",
            "eks-inference loadtest run --url http://minilm-serve:8000/minilm --rates 100,200 --run-id run-002 \\",
            "    --clients 4 --wait-ready 900 --skip-if-exists --out s3://BUCKET/results/run-002/graviton/",
        ),
    )
    g = p.add_argument_group("target")
    g.add_argument("--url", required=True, help="model endpoint base, e.g. http://127.0.0.1:8000/minilm "
                                                "(POST URL/predict, GET URL/info for provenance, URL/healthz)")
    g.add_argument("--target-name", help="label in reports (default: last path segment of the URL)")
    g.add_argument("--via", choices=VIA, default="direct",
                   help="the network path the URL takes, recorded in the result: front-door (the environment's load "
                        "balancer, TLS included), service (a model's in-cluster Service) or direct (default)")
    g.add_argument("--processor", choices=[x.value for x in Processor], help="processor family serving the target")
    g.add_argument("--instance-type", help="EC2 instance type the target runs on, for pricing, e.g. c7g.2xlarge")
    g.add_argument("--price-as", metavar="TYPE",
                   help="price the target as this EC2 instance type although it did not run on one (a laptop, "
                        "a local demo); the report labels its cost 'priced as TYPE'. 'host': the type closest to "
                        "this machine's CPU (vendor, cores, threads per core)")
    g.add_argument("--placement", metavar="ROLE=TYPE:NODES,...",
                   help="what the target occupies, each part at its share of its node, e.g. "
                        "'workers=inf2.xlarge:1,head=m7i.large:0.52,sidecars=m7i.large:0.1'; prices it instead of "
                        "--nodes x the price (the in-cluster Jobs pass it)")
    g.add_argument("--nodes", type=int, default=1, help="instances serving the target (cost = nodes × price)")
    g.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                   help="AWS region for pricing (default: $AWS_REGION, else the report's --region)")
    g = p.add_argument_group("load")
    g.add_argument("--mode", choices=[m.value for m in Mode],
                   help="open: fixed arrival rate; closed: fixed concurrency (default: from --rate/--concurrency)")
    g.add_argument("--rate", help="requests/s (open loop), or the pacing rate of a closed loop")
    g.add_argument("--rates", help="comma-separated rates for an open-loop sweep, e.g. 10,20,40")
    g.add_argument("--capacity-fractions", metavar="F1,F2,...",
                   help="measure the target's capacity first (a short closed loop), then sweep open-loop rates "
                        "at these fractions of it, e.g. 0.3,0.6,0.9,1.1; with --slo-p99-ms, while the last step "
                        "still meets it, go on at +15%% a step (up to 4 more) until one does not: the knee")
    g.add_argument("--calibrate-concurrency", type=int, default=16,
                   help="in-flight requests of the capacity measurement (--capacity-fractions)")
    g.add_argument("--calibrate-duration", type=float, default=5.0,
                   help="measured seconds of the capacity measurement, after --warmup")
    g.add_argument("--arrival", choices=[a.value for a in Arrival], default=Arrival.CONSTANT.value,
                   help="open-loop arrivals: constant spacing, or Poisson (random, independent users)")
    g.add_argument("--concurrency", help="in-flight requests (closed loop)")
    g.add_argument("--concurrencies", help="comma-separated concurrencies for a closed-loop sweep, e.g. 1,4,16")
    g.add_argument("--duration", type=float, help="measured seconds per step (default 30 unless --requests)")
    g.add_argument("--requests", type=int, help="measured requests per step (total over clients)")
    g.add_argument("--warmup", type=float, default=None,
                   help="seconds per step sent but not measured (default 5; 0 with --schedule/--ramp, where they are "
                        "the schedule's first seconds)")
    g.add_argument("--schedule", metavar="RATE:SECONDS,...",
                   help="one open-loop run whose total rate follows these segments: RATE:SECONDS holds a rate, "
                        "FROM-TO:SECONDS ramps, e.g. 10:30,40:60,10:60 (replaces --rate/--rates)")
    g.add_argument("--ramp", metavar="FROM:TO:SECONDS",
                   help="a linear ramp of the total rate, e.g. 5:40:120; after --schedule's segments if both")
    g.add_argument("--sample-replicas", choices=("auto", "on", "off"), default="auto",
                   help="ask URL/info once a second for the replicas the target reports and record them per second; "
                        "auto: on with --schedule/--ramp, off otherwise")
    g.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    g.add_argument("--connections", type=int,
                   help="connection pool limit (default: the concurrency, or 0.5 s × rate within 64..1024)")
    g.add_argument("--http-client", choices=[e.value for e in Engine], default=Engine.FAST.value,
                   help="fast: built-in keep-alive HTTP/1.1 engine; aiohttp: general-purpose client")
    g.add_argument("--max-lag-ms", type=float, default=10.0,
                   help="flag the client as behind schedule when its p99 send lag exceeds this "
                        "(or a tenth of --slo-p99-ms, if larger)")
    g = p.add_argument_group("payload")
    g.add_argument("--payload", help="JSONL file, one request per line: {\"inputs\": [..]}, {\"text\": ..} or a string")
    g.add_argument("--text-length", default="uniform:8-64",
                   help="generated words per text: fixed:N, uniform:LOW-HIGH or normal:MEAN,SD")
    g.add_argument("--inputs-per-request", type=int, default=1, help="generated texts per request")
    g.add_argument("--seed", type=int, default=0, help="seed for generated texts, Poisson arrivals and the model mix")
    g.add_argument("--models", type=int, metavar="N",
                   help="a family target: spread requests over N members m000..m(N-1) (as make demo-family publishes "
                        "them), each named in the header serve_multiplexed_model_id; latency is also split cold/warm")
    g.add_argument("--model-ids", metavar="ID,ID,...", help="a family target: these members, hottest first")
    g.add_argument("--model-mix", default="uniform", metavar="uniform|zipf:S",
                   help="how requests spread over the members (default uniform; zipf:1.1 is typical of tenants)")
    g = p.add_argument_group("SLO search")
    g.add_argument("--slo-p99-ms", type=float, help="latency target; recorded for the report")
    g.add_argument("--search", action="store_true",
                   help="find the highest rate whose p99 stays under --slo-p99-ms (doubling, then bisecting)")
    g.add_argument("--max-rate", type=float, default=100_000.0, help="upper bound of the search")
    g.add_argument("--search-steps", type=int, default=3, help="bisection steps after bracketing the SLO")
    g.add_argument("--search-resolution", type=float, default=0.05,
                   help="stop bisecting once the bracket is narrower than this share of its lower end")
    g.add_argument("--slo-percentile", choices=("p50", "p90", "p95", "p99", "p999"), default="p99",
                   help="the latency percentile --slo-p99-ms applies to: p99 needs ~1,000 samples a step for an "
                        "interval; shorter steps support p90 (~100) or p95 (~200), and every table labels it")
    g.add_argument("--max-error-rate", type=float, default=0.01, help="a step above this error fraction fails")
    g = p.add_argument_group("repeats and intervals")
    g.add_argument("--repeats", type=int, default=1,
                   help="measure every step N times, interleaved (each round in an order shuffled from --seed); "
                        "with --search, each probe N times. Every figure then carries a 95%% interval across them")
    g.add_argument("--budget", type=float, metavar="SECONDS",
                   help="time the run may spend measuring again steps whose repeats disagree, were contended or "
                        "left the search unsure, and searching (default: one more measurement of each such step)")
    g.add_argument("--drain", type=float, metavar="SECONDS",
                   help="seconds without load between steps, so that one step's queue does not spill into the "
                        "next (default 1 with --repeats > 1, else 0)")
    g = p.add_argument_group("verification")
    g.add_argument("--verify", action="store_true",
                   help="before sending load (after --wait-ready), check the target's answers against an fp32 "
                        "reference of its weights (as `eks-inference verify` does) and record the verdict in the "
                        "result file; a failing target is not measured (exit 1). With --clients N only client 0 "
                        "checks; the others record its verdict")
    g.add_argument("--verify-source", metavar="SOURCE",
                   help="weights of the reference: bundled:NAME, a model directory or s3://... (default: the "
                        "model_uri the target's /info names)")
    g.add_argument("--verify-reference", choices=("auto", "compute", "stored"), default="auto",
                   help="compute the reference here (needs torch), read the one stored beside the weights, or auto: "
                        "compute when torch is installed")
    g = p.add_argument_group("clients and output")
    g.add_argument("--out", required=True,
                   help="result file (*.json) or directory / s3:// prefix to write RUN_TARGET_clientN.json into")
    g.add_argument("--run-id", default=os.environ.get("EKS_INFERENCE_RUN_ID"),
                   help="groups the files of one run (default: $EKS_INFERENCE_RUN_ID or a new id)")
    g.add_argument("--clients", type=int, default=int(os.environ.get("EKS_INFERENCE_CLIENTS", "1")),
                   help="parallel clients in this run; each sends its share, and all start together through "
                        "ready markers under --out (default: $EKS_INFERENCE_CLIENTS or 1)")
    g.add_argument("--client-index", type=int,
                   help="this client's index (default: $JOB_COMPLETION_INDEX of an Indexed Job when --clients > 1, "
                        "else 0)")
    g.add_argument("--start-at", help="start at this time (epoch seconds or ISO 8601) instead of meeting the other "
                                      "clients through ready markers")
    g.add_argument("--wait-ready", type=float, metavar="SECONDS",
                   help="first poll URL/healthz until it answers 200, for at most SECONDS; also bounds the wait for "
                        f"the other clients (default: probe once; clients wait {readiness.DEFAULT_BARRIER_S:g} s)")
    g.add_argument("--skip-if-exists", action="store_true",
                   help="exit 0 without measuring when this client's result file for this run already exists")
    g.add_argument("--json", action="store_true", help="print the step summaries as JSON on stdout")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--no-server-metrics", action="store_true",
                   help="do not read the target's metrics (named in URL/info) around each step; by default "
                        "client 0 records them and every client pauses one metrics interval between steps")
    g.add_argument("--cpu-affinity", choices=("auto", "off"), default="auto",
                   help="auto (default): against a server on this machine with 3 or more cores, run on the last "
                        "core, which `eks-inference local` leaves free; off: run anywhere")
    p.set_defaults(func=cmd_run)


def _register_report(sub: Any) -> None:
    p = add_command(
        sub, "report", summary="merge result files and write the price-performance report",
        description=_wrap("Merge client result files exactly (HDR histograms), rank each run of each target by "
                          "USD per 1M inferences at the best rate meeting the SLO, and write report.json, report.csv, "
                          "report.png and report.html. Each run is its own series; --run-id picks runs."),
        example_lines=(
            "eks-inference loadtest report out/results --out out/report --slo-p99-ms 250",
            "eks-inference loadtest report s3://BUCKET/results/run-002/ --out s3://BUCKET/results/run-002/report/ \\",
            "    --wait-for 8 --wait-timeout 1800",
            "eks-inference loadtest report out/results --out out/report --run-id 20261129T101500Z-3f2a1c",
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="result files, directories or s3:// prefixes")
    p.add_argument("--out", required=True, help="directory (or s3:// prefix) for the report files")
    p.add_argument("--run-id", action="append", metavar="RUN_ID",
                   help="report only this run (repeat for several); default: every run found, each its own series")
    p.add_argument("--prices", help="JSON overriding the built-in price table: "
                                    "{\"date\": .., \"source\": .., \"prices\": {REGION|\"*\": {TYPE: USD/h}}}")
    add_pricing_argument(p)
    p.add_argument("--slo-p99-ms", type=float,
                   help=f"latency target (default: the one recorded in the results, else {DEFAULT_SLO_P99_MS:g})")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="a step above this error fraction fails")
    p.add_argument("--slo-percentile", choices=("p50", "p90", "p95", "p99", "p999"),
                   help="the percentile the SLO applies to (default: the one the runs recorded, else p99)")
    p.add_argument("--region", default=DEFAULT_REGION, help="price region for targets that recorded none")
    p.add_argument("--title", default="eks-inference price-performance", help="report title")
    p.add_argument("--wait-for", type=int, default=0,
                   help="wait until the inputs hold this many result files (client pods still running)")
    p.add_argument("--wait-timeout", type=float, default=600.0, help="seconds to wait for --wait-for")
    p.add_argument("--quiet", action="store_true", help="no console tables")
    p.add_argument("--tune-trials", action="append", metavar="FILE", default=[],
                   help="trials file(s) of `eks-inference tune` (repeatable, one per processor): adds the section "
                        "'tuned vs as configured' and ranks the processors between their tuned shapes")
    p.set_defaults(func=cmd_report)


def _console(*, stderr: bool) -> Console:
    """Rich console; logs and CI are not terminals, and 80 columns would truncate the tables."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=200)


# -- run ---------------------------------------------------------------------------------------------

def _parse_start_at(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--start-at: {text!r} is neither epoch seconds nor ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _default_target_name(url: str) -> str:
    ep = parse_endpoint(url)
    seg = ep.base_path.rstrip("/").rsplit("/", 1)[-1]
    return seg or ep.host.replace(":", "-")


def config_from_args(a: argparse.Namespace) -> RunConfig:
    """Validate the command line into a RunConfig (ConfigError names the option and the fix)."""
    parse_endpoint(a.url)
    if a.rate is not None and a.rates is not None:
        raise ConfigError("give --rate or --rates, not both")
    if a.concurrency is not None and a.concurrencies is not None:
        raise ConfigError("give --concurrency or --concurrencies, not both")
    rates = parse_rates(a.rate, option="--rate") if a.rate is not None else (
        parse_rates(a.rates) if a.rates is not None else ())
    if a.rate is not None and len(rates) != 1:
        raise ConfigError(f"--rate: {a.rate!r} is a list; use --rates for a sweep")
    concs = parse_concurrencies(a.concurrency, option="--concurrency") if a.concurrency is not None else (
        parse_concurrencies(a.concurrencies) if a.concurrencies is not None else ())
    if a.concurrency is not None and len(concs) != 1:
        raise ConfigError(f"--concurrency: {a.concurrency!r} is a list; use --concurrencies for a sweep")
    if a.mode is None and rates and concs:
        raise ConfigError("both a rate and a concurrency: say --mode closed (users paced at the rate) or "
                          "--mode open (the rate alone)")
    mode = Mode(a.mode) if a.mode else (Mode.CLOSED if concs else Mode.OPEN)
    if a.duration is not None and a.requests is not None:
        raise ConfigError("give --duration or --requests, not both")
    duration = a.duration if a.duration is not None or a.requests is not None else 30.0
    schedule = build_schedule(getattr(a, "schedule", None), getattr(a, "ramp", None))
    warmup = a.warmup if a.warmup is not None else (0.0 if schedule else 5.0)
    if schedule:
        if a.duration is not None or a.requests is not None:
            raise ConfigError("--schedule/--ramp: the run lasts the schedule; drop --duration and --requests")
        duration = RateSchedule(schedule).total_s - warmup
        if duration <= 0:
            raise ConfigError(f"--warmup: {warmup:g} s leaves nothing of the {RateSchedule(schedule).total_s:g} s "
                              "schedule to measure; lower it")
    choice = getattr(a, "sample_replicas", "auto")
    sample_replicas = bool(schedule) if choice == "auto" else choice == "on"
    search = None
    if a.search:
        if a.slo_p99_ms is None:
            raise ConfigError("--search needs --slo-p99-ms, the latency target to search under")
        if len(rates) > 1:
            raise ConfigError("--search starts from one --rate; drop --rates")
        search = SearchSpec(slo_p99_ms=a.slo_p99_ms, start_rate=rates[0] if rates else 10.0,
                            max_rate=a.max_rate, refine_steps=a.search_steps,
                            resolution=getattr(a, "search_resolution", 0.05),
                            percentile=getattr(a, "slo_percentile", "p99"))
        rates = ()
    fractions = parse_fractions(a.capacity_fractions) if a.capacity_fractions is not None else ()
    parse_length_dist(a.text_length)
    if a.wait_ready is not None and not 0 <= a.wait_ready <= 86_400:
        raise ConfigError(f"--wait-ready: {a.wait_ready:g} must be in [0, 86400] seconds, e.g. 600")
    if a.payload is not None and a.inputs_per_request != 1:
        raise ConfigError("--inputs-per-request applies to generated texts; a --payload file sets inputs per line")
    price_as, price_note = a.price_as, None
    if price_as == "host":
        price_as, price_note = closest_instance_type(host_cpu(), region=a.region)
    if a.placement:
        parse_placement(a.placement)
    target = TargetInfo(name=a.target_name or _default_target_name(a.url), url=parse_endpoint(a.url).url,
                        processor=a.processor, instance_type=a.instance_type, nodes=a.nodes, region=a.region,
                        price_as=price_as, price_note=price_note, placement=a.placement or None)
    client_index = a.client_index
    if client_index is None:
        client_index = int(os.environ.get("JOB_COMPLETION_INDEX", "0") or 0) if a.clients > 1 else 0
    run_id = a.run_id or (dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3))
    config = RunConfig(
        url=a.url, mode=mode, target=target, out=a.out, run_id=run_id, arrival=Arrival(a.arrival),
        rates=rates, concurrencies=concs, duration_s=duration, requests=a.requests, warmup_s=warmup,
        timeout_s=a.timeout, payload_file=a.payload, text_length=a.text_length,
        inputs_per_request=a.inputs_per_request, seed=a.seed, clients=a.clients, client_index=client_index,
        search=search, slo_p99_ms=a.slo_p99_ms, max_error_rate=a.max_error_rate, engine=Engine(a.http_client),
        connections=a.connections, max_lag_ms=a.max_lag_ms, start_at=_parse_start_at(a.start_at),
        capacity_fractions=fractions, calibrate_concurrency=a.calibrate_concurrency,
        calibrate_s=a.calibrate_duration, schedule=schedule, sample_replicas=sample_replicas,
        repeats=getattr(a, "repeats", 1), budget_s=getattr(a, "budget", None),
        drain_s=_drain(getattr(a, "drain", None), getattr(a, "repeats", 1)),
        slo_percentile=getattr(a, "slo_percentile", "p99"),
        model_ids=_model_ids(a), model_mix=getattr(a, "model_mix", "uniform"),
    )
    if config.clients > 1:
        if not a.run_id:
            raise ConfigError(f"--clients {config.clients}: the clients need one shared --run-id (or "
                              "$EKS_INFERENCE_RUN_ID) so that their results merge into one run")
        if config.out.endswith(".json"):
            raise ConfigError(f"--out {config.out}: with --clients {config.clients} every client would write this "
                              "one file; give a directory or s3:// prefix")
    return config


def _model_ids(a: argparse.Namespace) -> tuple[str, ...]:
    models, ids = getattr(a, "models", None), getattr(a, "model_ids", None)
    if models is not None and ids:
        raise ConfigError("--models and --model-ids: give one (N members m000.., or the ids themselves)")
    if ids:
        return tuple(i.strip() for i in ids.split(",") if i.strip())
    if getattr(a, "model_mix", "uniform") != "uniform" and models is None:
        raise ConfigError("--model-mix: only for a family target; add --models N or --model-ids")
    return tuple(default_ids(models)) if models is not None else ()


def _interval_lines(config: RunConfig, outcome: runner.RunOutcome) -> list[str]:
    """With repeats or a search: each step's repeats combined, with its 95 % intervals, then the capacity at the SLO."""
    if config.repeats < 2 and config.search is None:
        return []
    pct = config.search.percentile if config.search is not None else config.slo_percentile
    slo = config.search.slo_p99_ms if config.search is not None else config.slo_p99_ms
    indices = sorted({s.spec.index for s in outcome.steps if s.spec.index >= 0})
    combined = [summarize_repeats([[s.client_step(config)] for s in outcome.steps if s.spec.index == i],
                                  percentile=pct) for i in indices]
    lines = [f"{'step':<28} {'repeats':>7}  {'req/s [95 %]':>24}  {pct + ' ms [95 %]':>26}  flags"]
    for c in sorted(combined, key=lambda c: c["requested_rate"] or 0):
        lat = c["latency_ms"]
        load = (f"{c['requested_rate']:g} req/s offered" if c["mode"] == "open" else f"concurrency {c['concurrency']}")
        flags = [f for f in ("unstable" if c["unstable"] else "", "contended" if c.get("contended") else "") if f]
        thr = report.interval_text(c["throughput_rps"], c["throughput_rps_lo"], c["throughput_rps_hi"], ",.1f")
        ms = report.interval_text(lat[pct], lat.get(pct + "_lo"), lat.get(pct + "_hi"))
        lines.append(f"{load:<28} {c['repeats']:>7}  {thr:>24}  {ms:>26}  " + ", ".join(flags))
    if slo is not None:
        cap = capacity_at_slo(combined, slo_ms=slo, max_error_rate=config.max_error_rate, percentile=pct,
                              nodes=config.target.nodes)
        lines.append(capacity_text(cap))
    return lines


def _drain(drain: float | None, repeats: int) -> float:
    return drain if drain is not None else (1.0 if repeats > 1 else 0.0)


def load_payloads(config: RunConfig) -> list[Payload]:
    if config.payload_file:
        return load_payload_file(config.payload_file)
    return generate_payloads(parse_length_dist(config.text_length), inputs_per_request=config.inputs_per_request,
                             seed=config.seed)


def result_path(config: RunConfig) -> str:
    if config.out.endswith(".json"):
        return config.out
    return storage.join(config.out, f"{config.run_id}_{config.target.name}_client{config.client_index}.json")


def result_document(config: RunConfig, payloads: Sequence[Payload], outcome: runner.RunOutcome,
                     prov: Mapping[str, Any], verification: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The result file (format version :data:`results.FORMAT_VERSION`); ``verification`` is the run's verdict
    (None: not asked for)."""
    digest = hashlib.sha256(b"\n".join(p.body for p in payloads)).hexdigest()
    steps: list[dict[str, Any]] = []
    for s in outcome.steps:
        summary = summarize([s.client_step(config)])
        steps.append({
            "spec": s.spec.to_dict(), "status": s.status, "note": s.note,
            "started_at": provenance.iso(s.started_at), "ended_at": provenance.iso(s.ended_at),
            "summary": summary, "client": dict(s.client), "stats": s.stats.to_dict(),
            **({"server_metrics": dict(s.server_metrics)} if s.server_metrics is not None else {}),
        })
        if s.segments:
            steps[-1]["segments"] = [{"index": i, "segment": seg.to_list(), "stats": st.to_dict()}
                                     for i, seg, st in s.segments]
        if s.replicas:
            steps[-1]["replicas"] = [dict(r) for r in s.replicas]
    return {
        "format": results.FORMAT,
        "format_version": results.FORMAT_VERSION,
        "run_id": config.run_id,
        "status": outcome.status,
        "error": outcome.error,
        "notes": list(outcome.notes),
        "target": config.target.to_dict(),
        "client": {"index": config.client_index, "count": config.clients},
        "provenance": {
            **prov,
            "started_at": provenance.iso(outcome.started_at),
            "ended_at": provenance.iso(outcome.ended_at),
            "url": config.target.url,
            "server_info": outcome.server_info,
            "server_info_error": outcome.server_info_error,
        },
        "config": config.to_dict(),
        "calibration": outcome.calibration,
        "verification": dict(verification) if verification is not None else None,
        "payload": {
            "source": config.payload_file or "generated",
            "text_length": None if config.payload_file else config.text_length,
            "inputs_per_request": None if config.payload_file else config.inputs_per_request,
            "seed": config.seed,
            "distinct_payloads": len(payloads),
            "sha256": digest,
        },
        "steps": steps,
    }


class _RichProgress:
    """A progress bar per step on stderr, refreshed from the runner's monitor (no extra thread)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), TextColumn("{task.fields[stats]}"), console=console, auto_refresh=False,
        )
        self.task: TaskID | None = None
        self.planned_requests: int | None = None

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step_started(self, spec: StepSpec, *, planned_s: float | None, planned_requests: int | None) -> None:
        self.planned_requests = planned_requests
        total = float(planned_requests) if planned_requests is not None else float(planned_s or 1.0)
        self.task = self.progress.add_task(spec.label, total=total, stats="warming up")
        self.progress.refresh()

    def step_update(self, *, elapsed_s: float, measured: int, ok: int, errors: int, in_flight: int) -> None:
        if self.task is None:
            return
        done = float(measured) if self.planned_requests is not None else max(0.0, elapsed_s)
        stats = "warming up" if elapsed_s < 0 else f"ok {ok:,}  errors {errors:,}  in flight {in_flight:,}"
        self.progress.update(self.task, completed=done, stats=stats)
        self.progress.refresh()

    def step_finished(self, summary: Mapping[str, Any]) -> None:
        if self.task is not None:
            total = self.progress.tasks[-1].total
            p99 = summary["latency_ms"]["p99"]
            self.progress.update(self.task, completed=total, stats=(
                f"ok {summary['ok']:,}  errors {summary['errors']:,}  {summary['throughput_rps']:,.1f} req/s  "
                f"p99 {p99:,.2f} ms" if p99 is not None else f"errors {summary['errors']:,}"))
            self.progress.refresh()
            self.task = None


def _say(text: str) -> None:
    """A line for pod logs while waiting (stderr, flushed: no progress bar runs yet)."""
    print(f"eks-inference loadtest: {text}", file=sys.stderr, flush=True)


def _not_measured(why: str, started: float) -> runner.RunOutcome:
    return runner.RunOutcome(status="aborted", error=why, steps=(), started_at=started, ended_at=time.time(),
                             server_info=None, server_info_error="not asked: the run did not start")


def _verify(a: argparse.Namespace, config: RunConfig) -> dict[str, Any]:
    """Client 0's check of the target's answers, as stored in its result file (never raises)."""
    from eks_inference.verify.check import VerifyError, render_table, verify_target

    _say(f"verifying {config.url} against an fp32 reference of its weights")
    try:
        verdict = verify_target(config.url, source=a.verify_source, reference_mode=a.verify_reference,
                                timeout_s=max(30.0, config.timeout_s), say=_say)
    except VerifyError as e:
        _say(f"verification could not run: {e}")
        return {"status": "not-checked", "reason": f"verification could not run: {e}", "checked_by_client": 0}
    except Exception as e:  # S3 or filesystem trouble: record it, measure anyway
        _say(f"verification could not run: {type(e).__name__}: {e}")
        return {"status": "not-checked", "reason": f"verification could not run: {type(e).__name__}: {e}",
                "checked_by_client": 0}
    print(render_table(verdict, limit=5), file=sys.stderr, flush=True)
    return {**verdict.to_dict(), "checked_by_client": 0}


def _verdict_of_client0(barrier: readiness.Barrier) -> dict[str, Any]:
    """What client 0 wrote in its ready marker (its verdict, without the per-probe rows)."""
    marker = barrier.marker(0) or {}
    v = marker.get("verification")
    if isinstance(v, Mapping) and v.get("status"):
        return {**v, "recorded_from": "client 0's ready marker"}
    return {"status": "not-checked", "reason": "not checked by this client (client 0 verifies the run)"}


def _compact(v: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v[k] for k in ("status", "summary", "worst", "reason", "criteria", "reference", "source",
                              "probe_set_version", "checked_by_client", "checked_at") if k in v}


def _before_start(a: argparse.Namespace, config: RunConfig, dest: str,
                  prov: dict[str, Any]) -> tuple[RunConfig, str | None, dict[str, Any] | None]:
    """Wait for the target, verify it (client 0, with --verify) and wait for the other clients; returns the
    config to run (with the common start time), why it cannot start, and the verdict to record. Everything
    waited for is recorded in the provenance."""
    t0 = time.monotonic()
    budget = a.wait_ready if a.wait_ready is not None else readiness.DEFAULT_BARRIER_S
    verification: dict[str, Any] | None = None
    try:
        if a.wait_ready is not None:
            prov["waited_for_target_s"] = round(readiness.wait_ready(config.url, timeout_s=a.wait_ready, say=_say), 3)
        if a.verify:
            verification = (_verify(a, config) if config.client_index == 0 else
                            {"status": "not-checked", "reason": "not checked by this client (client 0 verifies "
                                                                "the run)"})
        if config.clients > 1 and config.start_at is None:
            barrier = readiness.Barrier(location=storage.parent(dest), run_id=config.run_id,
                                        target=config.target.name, clients=config.clients,
                                        index=config.client_index)
            extra: dict[str, Any] = {"host": prov.get("host"), "pod": prov.get("pod")}
            if verification is not None and config.client_index == 0:
                extra["verification"] = _compact(verification)
            barrier.arrive(ready_at=time.time(), extra=extra)
            start_at, ready = barrier.wait(timeout_s=budget, since=t0, say=_say)
            prov["barrier"] = {"markers": barrier.directory, "start_at": provenance.iso(start_at),
                               "ready_at": {str(i): provenance.iso(t) for i, t in sorted(ready.items())}}
            config = dataclasses.replace(config, start_at=start_at)
            if a.verify and config.client_index != 0:
                verification = _verdict_of_client0(barrier)
    except readiness.NotReady as e:
        return config, str(e), verification
    if verification is not None and verification.get("status") == "failed":
        worst = (verification.get("worst") or {}).get("text") or "see the verdict"
        return config, f"the target's answers FAILED verification (worst input: {worst})", verification
    return config, None, verification


def cmd_run(a: argparse.Namespace) -> int:
    config = config_from_args(a)
    payloads = load_payloads(config)
    dest = result_path(config)
    prov = provenance.collect()
    prov["via"] = a.via
    # Keep apart from a server on this machine (the split `eks-inference local` makes); every step records the
    # client's share of the host either way.
    prov["cpu_affinity"] = pin_client(parse_endpoint(config.url).host, enabled=a.cpu_affinity == "auto")
    started = time.time()
    err = _console(stderr=True)
    out = _console(stderr=a.json)

    verification: dict[str, Any] | None = None

    def write(outcome: runner.RunOutcome) -> None:
        storage.write_text(dest, results.dumps(result_document(config, payloads, outcome, prov, verification)))

    try:
        if a.skip_if_exists and storage.exists(dest):
            print(f"eks-inference loadtest: results for run {config.run_id} client {config.client_index} already "
                  f"exist at {dest}; not measuring again (set a new run_id to measure again)", file=sys.stderr)
            return EXIT_OK
        config, why, verification = _before_start(a, config, dest, prov)
        if why is not None:
            write(_not_measured(why, started))
            print(f"eks-inference loadtest: error: {why}; nothing measured (recorded in {dest})", file=sys.stderr)
            return EXIT_FAILED
    except ConfigError:
        raise
    except Exception as e:  # S3 or filesystem trouble at the output location: say what and where
        print(f"eks-inference loadtest: error: using the output location {storage.parent(dest)} failed: "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED

    async def go() -> runner.RunOutcome:
        # Ctrl-C and SIGTERM (a pod being deleted) stop the run; what was measured is still written. The stop
        # event ends the step at its next tick should the cancellation be lost (Python 3.11's wait_for can
        # swallow one that lands as the awaited future completes); a second signal stops at once.
        task = asyncio.current_task()
        assert task is not None
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, on_signal)
        server = not a.no_server_metrics
        if a.no_progress:
            return await runner.run(config, payloads, on_step=write, server_metrics=server, stop=stop)
        with _RichProgress(err) as bar:
            return await runner.run(config, payloads, progress=bar, on_step=write, server_metrics=server, stop=stop)

    try:
        outcome = asyncio.run(go())
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("eks-inference loadtest: interrupted before the first step; nothing measured", file=sys.stderr)
        return EXIT_INTERRUPTED
    write(outcome)
    summaries = [summarize([s.client_step(config)]) for s in outcome.steps]
    if summaries:
        out.print(report.steps_table(summaries, title=f"{config.target.name} — run {config.run_id}"))
    for s in outcome.steps:
        if s.segments:
            out.print(timeline_table(segment_rows([(i, seg, st) for i, seg, st in s.segments]),
                                     title=f"{s.spec.label}: per segment"))
        if s.replicas or config.schedule:
            out.print(timeline_table(client_timeline(s), title=f"{s.spec.label}: per second"))
    for note in outcome.notes:
        err.print(f"note: {note}", highlight=False)
    for line in _interval_lines(config, outcome):
        out.print(line, highlight=False)
    if a.json:
        print(json.dumps(summaries, indent=1))
    if outcome.status == "interrupted":
        print(f"eks-inference loadtest: interrupted; partial results written to {dest}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if outcome.status != "complete":
        print(f"eks-inference loadtest: error: {outcome.error}; "
              f"{'partial ' if outcome.steps else ''}results written to {dest}", file=sys.stderr)
        return EXIT_FAILED
    err.print(f"results written to {dest}", highlight=False)
    return EXIT_OK


# -- report ------------------------------------------------------------------------------------------

def _recorded_slo(parsed: Sequence[results.ParsedResult]) -> float | None:
    values = {r.doc.get("config", {}).get("slo_p99_ms") for r in parsed} - {None}
    if len(values) == 1:
        return float(values.pop())
    return None


def _run_id(r: results.ParsedResult) -> str | None:
    run = r.doc.get("run_id")
    return None if run is None else str(run)


def _only_runs(parsed: Sequence[results.ParsedResult], wanted: Sequence[str]) -> list[results.ParsedResult]:
    found = sorted({str(r.doc.get("run_id")) for r in parsed})
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ConfigError(f"--run-id {', '.join(missing)}: no such run among the inputs; runs there: "
                          f"{', '.join(found)}")
    return [r for r in parsed if str(r.doc.get("run_id")) in wanted]


def _slo_percentile(a: argparse.Namespace, parsed: Sequence[results.ParsedResult]) -> str:
    """``--slo-percentile``, else the one the runs recorded (when they agree), else p99."""
    if getattr(a, "slo_percentile", None):
        return str(a.slo_percentile)
    values = {r.doc.get("config", {}).get("slo_percentile") for r in parsed} - {None}
    return str(values.pop()) if len(values) == 1 else "p99"


def cmd_report(a: argparse.Namespace) -> int:
    if a.slo_p99_ms is not None and not a.slo_p99_ms > 0:
        raise ConfigError(f"--slo-p99-ms: {a.slo_p99_ms} must be positive, e.g. 100")
    if not 0 <= a.max_error_rate <= 1:
        raise ConfigError(f"--max-error-rate: {a.max_error_rate} must be in [0, 1]")
    if a.wait_for < 0 or a.wait_timeout < 0:
        raise ConfigError("--wait-for and --wait-timeout must be >= 0")
    prices = prices_from_args(a, a.prices)
    try:
        found, short = _gather(list(a.inputs), wait_for=a.wait_for, timeout_s=a.wait_timeout)
    except ConfigError:
        raise
    except Exception as e:  # S3 / filesystem trouble: say what and where, no traceback
        print(f"eks-inference loadtest report: error: reading inputs failed: {type(e).__name__}: {e}",
              file=sys.stderr)
        return EXIT_FAILED
    parsed, skipped = results.load_results(found)
    if a.run_id:
        parsed = _only_runs(parsed, a.run_id)
    slo = a.slo_p99_ms if a.slo_p99_ms is not None else (_recorded_slo(parsed) or DEFAULT_SLO_P99_MS)
    steps = [st for r in parsed for st in r.steps]
    by_series: dict[tuple[str, str | None], list[Any]] = {}
    for r in parsed:
        by_series.setdefault((str(r.doc["target"]["name"]), _run_id(r)), []).append(r.doc.get("verification"))
    targets, warnings = build_targets(
        steps, slo_p99_ms=slo, max_error_rate=a.max_error_rate, prices=prices, default_region=a.region,
        targets_without_steps=[(TargetInfo.from_dict(r.doc["target"]), _run_id(r), r.source) for r in parsed],
        verifications={k: series_verification(v) for k, v in by_series.items()},
        slo_percentile=_slo_percentile(a, parsed))
    warnings = list(skipped) + warnings
    if any(t.price_per_instance_hour is not None for t in targets):
        stale = age_warning(prices, today=dt.datetime.now(dt.UTC).date())
        if stale:
            warnings.append(stale)
    if short:
        warnings.append(short)
    for r in parsed:
        if r.doc.get("status") != "complete":
            warnings.append(f"{r.source}: run {r.doc.get('status')}: {r.doc.get('error')}")
    inputs = [{
        "source": r.source, "run_id": r.doc.get("run_id"), "target": r.doc["target"]["name"],
        "client": r.doc.get("client"), "status": r.doc.get("status"), "error": r.doc.get("error"),
        "started_at": r.provenance.get("started_at"), "ended_at": r.provenance.get("ended_at"),
        "provenance": {k: r.provenance.get(k) for k in ("tool_version", "git_sha", "host", "pod", "platform",
                                                          "cpu_count", "argv", "url", "waited_for_target_s",
                                                          "barrier")},
        "server_info": r.provenance.get("server_info"), "server_info_error": r.provenance.get("server_info_error"),
        "calibration": r.doc.get("calibration"), "notes": list(r.doc.get("notes") or []),
        "verification": _compact(r.doc["verification"]) if isinstance(r.doc.get("verification"), Mapping) else None,
    } for r in parsed]
    doc = report.build_document(targets, warnings=warnings, slo_p99_ms=slo, max_error_rate=a.max_error_rate,
                                prices=prices, inputs=inputs, generated_at=time.time())
    doc["slo_percentile"] = _slo_percentile(a, parsed)
    tuned = None
    if a.tune_trials:
        from eks_inference.analysis.tuned import read_trials, tuned_section

        tuned = tuned_section([rec for f in a.tune_trials for rec in read_trials(Path(f))])
        doc["tuned"] = tuned
    per_second = timeline_from_results(parsed, label_of={(t.target.name, str(t.run_id)): t.label for t in targets})
    if per_second:
        doc["timeline"] = per_second
    console = _console(stderr=False)
    if storage.is_s3(a.out):
        with tempfile.TemporaryDirectory() as tmp:
            paths = report.write_report(Path(tmp), doc, targets, slo_p99_ms=slo, title=a.title)
            written = []
            for p in paths.values():
                dest = storage.join(a.out, p.name)
                storage.write_bytes(dest, p.read_bytes(), content_type=_CONTENT_TYPES[p.suffix])
                written.append(dest)
    else:
        written = [str(p) for p in report.write_report(Path(a.out), doc, targets, slo_p99_ms=slo,
                                                       title=a.title).values()]
    if not a.quiet:
        report.print_report(console, targets, slo_p99_ms=slo, prices=prices, warnings=warnings, tuned=tuned)
        for label, entry in per_second.items():
            if entry["segments"]:
                console.print(timeline_table(entry["segments"], title=f"{label}: per segment"))
    console.print("report: " + ", ".join(written), highlight=False)
    if short:
        print(f"eks-inference loadtest report: error: {short}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


_CONTENT_TYPES = {".json": "application/json", ".csv": "text/csv", ".png": "image/png", ".html": "text/html"}


def _count_results(found: Sequence[storage.Found]) -> int:
    n = 0
    for f in found:
        try:
            n += results.is_result(json.loads(f.text))
        except json.JSONDecodeError:
            continue
    return n


def _gather(inputs: list[str], *, wait_for: int, timeout_s: float) -> tuple[list[storage.Found], str | None]:
    """Read the inputs, polling until ``wait_for`` result files are there; the second value says if they
    never all arrived (the report is still written from what is there)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = storage.read_inputs(inputs)
        except ConfigError:
            if time.monotonic() >= deadline or wait_for == 0:
                raise
            found = []
        n = _count_results(found)
        if n >= wait_for:
            return found, None
        if time.monotonic() >= deadline:
            if not found:
                raise ConfigError(f"no result files appeared in {timeout_s:g} s (--wait-for {wait_for})")
            return found, f"only {n} of {wait_for} result files arrived within {timeout_s:g} s; report is partial"
        time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))


# -- compare ---------------------------------------------------------------------------------------------------

def _register_compare(sub: Any) -> None:
    p = add_command(
        sub, "compare", summary="compare two load tests of the same targets: regression beyond noise or not",
        description=_wrap("Per target in both: capacity at the SLO, p99 at a common rate and USD per 1M inferences, "
                          "each with the 95 % interval its run measured. A figure moved only when the intervals "
                          "part and the estimates differ by more than --min-change. Exit 1 when a target "
                          "regressed, 0 otherwise, 2 on a usage error. BASE and NEW are report.json files, "
                          "report directories or result folders (merged as `loadtest report` would)."),
        example_lines=(
            "eks-inference loadtest compare out/before/report out/after/report",
            "eks-inference loadtest compare out/before/results out/after/results --slo-p99-ms 250 --json diff.json",
        ),
    )
    p.add_argument("base", metavar="BASE", help="the run before the change (report.json, its folder or results)")
    p.add_argument("new", metavar="NEW", help="the run after the change (same forms)")
    p.add_argument("--min-change", type=float, default=compare.DEFAULT_MIN_CHANGE,
                   help="a figure must also move by more than this fraction of BASE's estimate "
                        f"(default {compare.DEFAULT_MIN_CHANGE:g}: drift between runs that one run cannot see)")
    p.add_argument("--slo-p99-ms", type=float,
                   help="for result folders: the SLO to judge steps by (default: the one recorded, else "
                        f"{DEFAULT_SLO_P99_MS:g})")
    p.add_argument("--max-error-rate", type=float, default=0.01, help="for result folders: as for report")
    p.add_argument("--prices", help="for result folders: as for report")
    add_pricing_argument(p)
    p.add_argument("--region", default=DEFAULT_REGION, help="for result folders: as for report")
    p.add_argument("--json", metavar="PATH", help="also write the comparison as JSON here")
    p.set_defaults(func=cmd_compare)


def _comparable_report(path: str, a: argparse.Namespace, prices: Any) -> dict[str, Any]:
    """A report document from a report.json, a folder holding one, or result files (merged here)."""
    try:
        found = storage.read_inputs([path])
    except ConfigError as e:
        raise ConfigError(f"{path}: neither a report nor result files ({e})") from None
    reports = []
    for f in found:
        try:
            doc = json.loads(f.text)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("format") == results.REPORT_FORMAT:
            reports.append((f.source, doc))
    if len(reports) == 1:
        return reports[0][1]
    if len(reports) > 1:
        raise ConfigError(f"{path}: holds {len(reports)} reports ({', '.join(s for s, _ in reports)}); name one")
    try:
        parsed, skipped = results.load_results(found)
    except ConfigError as e:
        raise ConfigError(f"{path}: no report.json there, and {e}") from None
    slo = a.slo_p99_ms if a.slo_p99_ms is not None else (_recorded_slo(parsed) or DEFAULT_SLO_P99_MS)
    targets, warnings = build_targets(
        [st for r in parsed for st in r.steps], slo_p99_ms=slo, max_error_rate=a.max_error_rate, prices=prices,
        default_region=a.region,
        targets_without_steps=[(TargetInfo.from_dict(r.doc["target"]), _run_id(r), r.source) for r in parsed])
    return report.build_document(targets, warnings=list(skipped) + warnings, slo_p99_ms=slo,
                                 max_error_rate=a.max_error_rate, prices=prices, inputs=[], generated_at=time.time())


def cmd_compare(a: argparse.Namespace) -> int:
    if not 0 <= a.min_change < 1:
        raise ConfigError(f"--min-change: {a.min_change} must be in [0, 1), e.g. 0.1 for 10 %")
    if a.slo_p99_ms is not None and not a.slo_p99_ms > 0:
        raise ConfigError(f"--slo-p99-ms: {a.slo_p99_ms} must be positive, e.g. 100")
    prices = prices_from_args(a, a.prices)
    base, new = _comparable_report(a.base, a, prices), _comparable_report(a.new, a, prices)
    if base.get("slo_p99_ms") != new.get("slo_p99_ms"):
        raise ConfigError(f"BASE judged steps against p99 <= {base.get('slo_p99_ms')} ms and NEW against "
                          f"{new.get('slo_p99_ms')} ms; compare result folders with one --slo-p99-ms, or reports "
                          "written with the same one")
    try:
        rows, notes = compare.compare_documents(base, new, min_change=a.min_change)
    except ValueError as e:
        raise ConfigError(f"{e}; write each report with --run-id to pick one run") from None
    if not rows:
        raise ConfigError("no target is in both BASE and NEW: " + "; ".join(notes))
    console = _console(stderr=False)
    console.print(compare_table(rows, slo_p99_ms=float(base["slo_p99_ms"])))
    for c in rows:
        for note in c.notes:
            console.print(f"{c.target}: {note}", highlight=False)
    for note in notes:
        console.print(note, highlight=False)
    if a.json:
        storage.write_bytes(a.json, json.dumps(compare.to_dict(rows, notes, min_change=a.min_change), indent=2)
                            .encode(), content_type="application/json")
    bad = [c.target for c in rows if c.verdict == "regression"]
    console.print(("regression beyond noise: " + ", ".join(bad)) if bad else "no regression beyond noise",
                  highlight=False)
    return EXIT_FAILED if bad else EXIT_OK


def compare_table(rows: Sequence[compare.TargetComparison], *, slo_p99_ms: float) -> Any:
    from rich.table import Table

    table = Table(title=f"BASE → NEW (95 % intervals; SLO p99 <= {slo_p99_ms:g} ms)")
    for col in ("target", "figure", "BASE", "NEW", "change", "figure verdict", "target verdict"):
        table.add_column(col)
    for c in rows:
        for i, f in enumerate(c.figures):
            fmt = ",.4f" if f.unit == "USD" else ",.1f"
            table.add_row(c.target if i == 0 else "", f"{f.label} ({f.unit})", f.base.text(fmt), f.new.text(fmt),
                          "" if f.change is None else f"{f.change:+.1%}", f"{f.verdict}: {f.why}",
                          c.verdict if i == 0 else "")
    return table
