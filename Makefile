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

.PHONY: help setup setup-test synth summary demo test lint bench clean

help:  ## list the targets and the variables they read
	@echo "Targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 16
	@echo "Variables (make TARGET VAR=value):"
	@echo "  ENV=$(ENV)        environment in cdk.json to synthesize and serve (dev, prod, or your own)"
	@echo "  DEMO_PORT=$(DEMO_PORT)  port of the local server that make demo starts"
	@echo "  DEMO_OUT=$(DEMO_OUT)  where make demo writes results and the report"
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

synth: setup  ## synthesize ENV into cdk.out/ (offline, no credentials)
	$(CDK) synth -c env=$(ENV) --quiet

summary: setup  ## summarize the synthesized cdk.out/ (run make synth first)
	$(PY) -m eks_inference.summary cdk.out

EI := $(VENV)/bin/eks-inference
DEMO_PORT ?= 8000
DEMO_OUT ?= out/demo
DEMO_URL = http://127.0.0.1:$(DEMO_PORT)/minilm

demo: setup  ## set up, synthesize every stack, serve the bundled model locally, load-test it, write the report
	@echo "== 1/4 Synthesizing every stack of env=$(ENV) into cdk.out/ (offline, no credentials)"
	$(CDK) synth -c env=$(ENV) --quiet
	$(PY) -m eks_inference.summary cdk.out
	@echo "== 2/4 Serving the bundled model locally with the RayService's serve config"
	$(EI) local --env $(ENV) --detach --port $(DEMO_PORT)
	trap '$(EI) local --stop' EXIT; \
	  echo "== 3/4 A few requests"; \
	  $(PY) scripts/demo_query.py $(DEMO_URL); \
	  echo "== 4/4 A short open-loop sweep (about a minute) and the price-performance report"; \
	  rm -rf $(DEMO_OUT); \
	  $(EI) loadtest run --url $(DEMO_URL) --mode open --rates 5,10,20,40 --duration 10 --warmup 3 \
	    --target-name local-minilm-cpu --processor cpu --slo-p99-ms 250 --out $(DEMO_OUT)/results/; \
	  $(EI) loadtest report $(DEMO_OUT)/results --out $(DEMO_OUT)/report --slo-p99-ms 250
	@echo "Report: $(DEMO_OUT)/report/report.html (PNG: $(DEMO_OUT)/report/report.png)"

lint: setup  ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy eks_inference app.py

test: setup-test lint  ## set up, lint, type-check and run the whole test suite (offline)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup  ## run the benchmarks in bench/ (each prints ratios measured in one run)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:  ## remove build outputs, caches and demo results (keeps .venv and node_modules)
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache out
