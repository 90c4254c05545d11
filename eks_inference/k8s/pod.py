"""Pod building blocks shared by every chart: resources, restricted security contexts, scratch volumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eks_inference.config import POD_SCRATCH_GIB

NON_ROOT_UID = 10001
"""The images run as this user (see model_images/); pods pin it so a root image would fail to start.
Above 10000 so it never matches a user on the node."""


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Requests and limits of one container; requests equal limits unless ``cpu_limit`` says otherwise.

    :param cpu: CPU request, e.g. ``"2"`` or ``"500m"``.
    :param memory: memory request and limit, e.g. ``"4Gi"``.
    :param cpu_limit: default equal to ``cpu`` (Guaranteed QoS: serving latency must not depend on neighbours).
    :param extended: device resources such as ``{"aws.amazon.com/neuroncore": 2}``; requests = limits.
    """

    cpu: str
    memory: str
    cpu_limit: str | None = None
    extended: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        requests: dict[str, Any] = {"cpu": self.cpu, "memory": self.memory}
        limits: dict[str, Any] = {"cpu": self.cpu_limit or self.cpu, "memory": self.memory}
        for name, count in self.extended.items():
            requests[name] = count
            limits[name] = count
        return {"requests": requests, "limits": limits}


def restricted_container_security_context(*, read_only_root: bool = True) -> dict[str, Any]:
    """The Kubernetes 'restricted' Pod Security Standard for one container."""
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def scratch_volumes(*, shm_size: str | None = None,
                    tmp_size: str = f"{POD_SCRATCH_GIB}Gi") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) that give a read-only-root container its writable places.

    ``/tmp`` holds Ray's session directory, downloaded weights and compiled artifacts (a family's replica bounds what
    it keeps there, ``FamilySpec.disk_budget``, to fit the default size); ``/dev/shm`` backs
    Ray's object store (a memory-backed emptyDir, since the container default of 64 MiB is far too small).
    """
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": tmp_size}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if shm_size:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm_size}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def env_list(env: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(env.items())]
