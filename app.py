#!/usr/bin/env python3
"""CDK entry point: load the environment's config, build the stacks, add the checks. Nothing else."""

import sys

from aws_cdk import App

from eks_inference.app_builder import build_app
from eks_inference.config import ConfigError

app = App()
try:
    build_app(app)
except ConfigError as e:
    sys.exit(f"eks-inference: configuration error: {e}")
app.synth()
