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

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: help setup synth summary demo test lint bench clean

help:
	@echo "make demo   set up, synthesize every stack, serve the bundled model locally and load-test it"
	@echo "make test   set up, lint, type-check and run the whole test suite (offline)"
	@echo "make synth  synthesize ENV=$(ENV) into cdk.out/"
	@echo "make bench  run the benchmarks in bench/ (prints ratios measured in one run)"

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

setup: $(VENV)/.installed .venv-checkov/.installed node_modules/.installed

synth: setup
	$(CDK) synth -c env=$(ENV) --quiet

summary: setup
	$(PY) -m eks_inference.summary cdk.out

demo: setup
	@echo "== Synthesizing every stack of env=$(ENV) into cdk.out/ (offline, no credentials)"
	$(CDK) synth -c env=$(ENV) --quiet
	$(PY) -m eks_inference.summary cdk.out

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy eks_inference app.py

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache out
