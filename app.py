#!/usr/bin/env python3
"""CDK entry point: load the environment's config, build the stacks, add the checks. Nothing else."""

import sys

from eks_inference.node_runtime import quiet_node_banner

quiet_node_banner()  # before aws_cdk starts its Node.js process, which reads it once

from aws_cdk import App  # noqa: E402

from eks_inference.app_builder import build_app  # noqa: E402
from eks_inference.config import ConfigError, format_config_error  # noqa: E402

app = App()
try:
    build_app(app)
except ConfigError as e:
    sys.exit(format_config_error(e))
app.synth()
