"""Quiet jsii's Node.js support banner on the Node releases this project runs on.

aws-cdk-lib, cdk8s and cdk-nag run inside a Node.js process that jsii starts. The pinned jsii (1.142) prints a
framed banner on stderr at every start when Node is past its end of life (Node 20 since 2026-10-30), and
jsii's Python runtime forwards those lines as bytes literals (``b'!!  Node 20 is end-of-life…'``), twice per
synth. jsii reads ``JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION`` as a comma-separated list of *major
versions* to accept, so ``=1`` silences nothing; ``=20`` silences Node 20 and nothing else, so an older Node
still gets its warning. (``JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION`` only covers a release's six months
between end of life and end of jsii support, which Node 20 has left.)
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SILENCE_END_OF_LIFE = "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"
ACCEPTED_NODE_MAJORS = ("20",)
"""Node majors past jsii's support that the project still runs on (its Makefile and CI use Node 20)."""


def quiet_node_banner(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Add the accepted majors to the variable (keeping any the user listed); call before importing aws_cdk."""
    env = os.environ if environ is None else environ
    listed = [v.strip() for v in env.get(SILENCE_END_OF_LIFE, "").split(",") if v.strip()]
    env[SILENCE_END_OF_LIFE] = ",".join([*listed, *(m for m in ACCEPTED_NODE_MAJORS if m not in listed)])
    return env
