"""The project's CDK context and environment config, read the way ``cdk`` and ``app_builder`` read them.

:func:`eks_inference.config.read_project_context` reads ``cdk.json`` (and the lookups cached in
``cdk.context.json``), ``-c KEY=VALUE`` wins, and :func:`eks_inference.config.config_from_context` selects and
validates the environment exactly as synth does, without loading aws-cdk-lib.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eks_inference.config import CDK_JSON, PlatformConfig, config_from_context, read_project_context
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
    """The context of the project in ``app_dir`` with the command line's ``-c`` values on top."""
    if not (app_dir / CDK_JSON).is_file():
        raise OpsError(f"{app_dir / CDK_JSON}: not found; run from the project root or pass --app-dir")
    return {**read_project_context(app_dir / CDK_JSON), **(overrides or {})}


def platform_config(context: Mapping[str, Any]) -> PlatformConfig:
    """The environment ``-c env=NAME`` selects, validated as synth validates it (ConfigError otherwise)."""
    return config_from_context(context)


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
