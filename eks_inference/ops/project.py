"""The project's CDK context and environment config, read the way ``cdk`` and ``app_builder`` read them.

``cdk.json`` (``context``) and ``cdk.context.json`` (committed lookups) merge, ``-c KEY=VALUE`` wins, and
account and region fall back to ``CDK_DEFAULT_ACCOUNT``/``CDK_DEFAULT_REGION`` as in
:func:`eks_inference.app_builder.config_from_app`, without loading aws-cdk-lib.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eks_inference.config import ENVIRONMENTS_KEY, PlatformConfig, load_config
from eks_inference.ops.errors import OpsError


def parse_context_args(pairs: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OpsError(f"-c {pair!r}: not KEY=VALUE; write it like -c env=dev")
        out[key] = value
    return out


def read_context(app_dir: Path, overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    cdk_json = app_dir / "cdk.json"
    if not cdk_json.is_file():
        raise OpsError(f"{cdk_json}: not found; run from the project root or pass --app-dir")
    try:
        context = dict(json.loads(cdk_json.read_text()).get("context", {}))
        lookups = app_dir / "cdk.context.json"
        if lookups.is_file():
            context.update(json.loads(lookups.read_text()))
    except json.JSONDecodeError as e:
        raise OpsError(f"{app_dir}: cdk.json or cdk.context.json is not valid JSON ({e})") from None
    context.update(overrides or {})
    return context


def platform_config(context: Mapping[str, Any]) -> PlatformConfig:
    envs = context.get(ENVIRONMENTS_KEY) or {}
    env_name = context.get("env")
    if isinstance(envs, dict) and env_name in envs:
        block = dict(envs[env_name])
        for key in ("account", "region"):
            if context.get(key):
                block[key] = str(context[key])
        envs = {**envs, env_name: block}
    return load_config(env_name, envs, account=os.environ.get("CDK_DEFAULT_ACCOUNT"),
                       region=os.environ.get("CDK_DEFAULT_REGION"))


def availability_zones(context: Mapping[str, Any], config: PlatformConfig) -> list[str] | None:
    """The zones the VPC will span: the configured ones; with ``availability_zones: "lookup"`` the first ``max_azs``
    of the cached lookup in ``cdk.context.json``, as ``ec2.Vpc`` takes them; ``None`` when synth would still ask AWS.
    """
    if not config.zones_lookup and config.availability_zones:
        return list(config.availability_zones)
    zones = context.get(f"availability-zones:account={config.account}:region={config.region}")
    if isinstance(zones, list) and zones:
        return [str(z) for z in zones[: config.max_azs]]
    return None
