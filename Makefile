# eks-inference: `make demo` and `make test` do all set-up on a fresh machine (Python 3.11+, Node 20+).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
ENV ?= dev
PYTEST_ARGS ?=

# jsii reads a list of Node majors to accept ("1" silences nothing); app.py adds 20 itself for plain `npx cdk`.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help setup setup-test synth summary demo demo-family test lint lock bench clean

help:  ## list the targets and the variables they read
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 16
	@echo "Variables (make TARGET VAR=value):"
	@echo "  ENV=$(ENV)        environment in cdk.json to synthesize and serve (dev, prod, or your own)"
	@echo "  DEMO_PORT=$(DEMO_PORT)  port of the local server that make demo starts"
	@echo "  DEMO_OUT=$(DEMO_OUT)  where make demo writes results and the report"
	@echo "  DEMO_PRICE_AS=$(DEMO_PRICE_AS)  EC2 type the demo prices this machine as (labelled 'priced as'); host: the type closest to its CPU"
	@echo "  DEMO_START=$(DEMO_START)  the demo's search starts at this fraction of the capacity it measures first"
	@echo "  DEMO_REPEATS=$(DEMO_REPEATS)  measurements of each search probe (interleaved repeats, 95 % intervals)"
	@echo "  DEMO_REPLICAS=$(DEMO_REPLICAS)  serving replicas, pinned while the demo measures capacity"
	@echo "  DEMO_PLAN_RPS=$(DEMO_PLAN_RPS)  load the demo's fleet plan is sized for, in requests/s"
	@echo "  PYTEST_ARGS=      extra pytest arguments for make test, e.g. PYTEST_ARGS='-k report'"
	@echo "  PYTHON=$(PYTHON)  interpreter that creates .venv (3.11 or newer)"

$(VENV)/.installed: requirements-cdk.txt requirements-serve.txt requirements-loadtest.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# checkov pins an older boto3 than the runtime set, so it lives in a venv of its own.
.venv-checkov/.installed: requirements-checkov.txt
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed  ## create .venv and install the pinned set and the CDK CLI

setup-test: setup .venv-checkov/.installed
	bash scripts/install-test-tools.sh

synth: setup  ## synthesize ENV into cdk.out/ (offline, no credentials)
	$(CDK) synth -c env=$(ENV) --quiet

summary: setup  ## summarize the synthesized cdk.out/ (run make synth first)
	$(PY) -m eks_inference.summary cdk.out

EI := $(VENV)/bin/eks-inference
DEMO_PORT ?= 8000
DEMO_OUT ?= out/demo
DEMO_PRICE_AS ?= host
DEMO_START ?= 0.6
DEMO_REPEATS ?= 2
DEMO_REPLICAS ?= 1
DEMO_PLAN_RPS ?= 100000
DEMO_URL = http://127.0.0.1:$(DEMO_PORT)/minilm

demo: setup  ## set up, synthesize every stack, serve the bundled model locally, verify it, load-test it, write the report
	@echo "== 1/6 Synthesizing every stack of env=$(ENV) into cdk.out/ (offline, no credentials)"
	$(CDK) synth -c env=$(ENV) --quiet
	$(PY) -m eks_inference.summary cdk.out
	@echo "== 2/6 Serving the bundled model locally with the RayService's serve config"
	$(EI) local --env $(ENV) --detach --port $(DEMO_PORT) --replicas $(DEMO_REPLICAS)
	trap '$(EI) local --stop' EXIT; \
	  echo "== 3/6 A few requests"; \
	  $(PY) scripts/demo_query.py $(DEMO_URL); \
	  echo "== 4/6 Is it right? Every probe answered as by an fp32 reference of the same weights"; \
	  $(EI) verify --url $(DEMO_URL); \
	  echo "== 5/6 Capacity at the SLO: a search, each probe measured $(DEMO_REPEATS) times (about three minutes), and the report"; \
	  echo "   (SLO on p95: 8 s steps hold a few hundred requests at the lower rates, too few for a p99 interval)"; \
	  rm -rf $(DEMO_OUT); \
	  $(EI) loadtest run --url $(DEMO_URL) --search --capacity-fractions $(DEMO_START) --repeats $(DEMO_REPEATS) \
	    --duration 8 --warmup 2 --budget 300 --search-steps 5 --timeout 10 --wait-ready 120 --verify --target-name local-minilm-cpu \
	    --processor cpu --price-as $(DEMO_PRICE_AS) --slo-p99-ms 250 --slo-percentile p95 \
	    --out $(DEMO_OUT)/results/; \
	  $(EI) loadtest report $(DEMO_OUT)/results --out $(DEMO_OUT)/report --slo-p99-ms 250
	@echo "== 6/6 The fleet that would serve $(DEMO_PLAN_RPS) requests/s, from the lower bound of the capacity interval"
	$(EI) plan $(DEMO_OUT)/report --target-rps $(DEMO_PLAN_RPS) || test $$? -eq 1  # 1: refused, and it says why
	@echo "Report: $(DEMO_OUT)/report/report.html (PNG: $(DEMO_OUT)/report/report.png)"

FAMILY_MEMBERS ?= 20
FAMILY_ROOM ?= 4
FAMILY_REQUESTS ?= 400

demo-family: setup  ## publish derived members of the bundled model as a family, serve it, run a Zipf load, verify a sample
	$(PY) bench/family.py --members $(FAMILY_MEMBERS) --room $(FAMILY_ROOM) --requests $(FAMILY_REQUESTS) \
	  --concurrency 4 --verify 3

lint: setup  ## ruff, mypy, the floors contract (lint-imports), dependencies (deptry) and dead code (vulture)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy eks_inference app.py
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry .
	$(VENV)/bin/vulture

test: setup-test lint  ## set up, lint, type-check and run the whole test suite (offline)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lock: setup  ## rewrite the hash-locked requirement files (requirements-*.lock) from PyPI after a pin changes
	$(PY) scripts/lock_requirements.py

bench: setup  ## run the benchmarks in bench/ (each prints ratios measured in one run)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:  ## remove build outputs, caches and demo results (keeps .venv and node_modules)
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache out
