"""The Pod Security Standards as Pod Security Admission evaluates a pod, at policy version 1.36 ("latest" for our
cluster's minor), to check pod templates against their namespace's ``pod-security.kubernetes.io/enforce`` label.

Reproduced from kubernetes staging/src/k8s.io/pod-security-admission/policy/ (published as
kubernetes/pod-security-admission, tag v0.36.2): one function per ``check_*.go``, each returning the check's
``ForbiddenReason`` when it forbids the pod. ``visitContainers`` covers init, regular and ephemeral containers.
Restricted runs every baseline check except those a restricted check overrides (``OverrideCheckIDs``:
``capabilities_restricted`` replaces ``capabilities_baseline``, ``restrictedVolumes`` replaces ``hostPathVolumes``,
``procMount_restricted`` replaces ``procMount``). ``relaxPolicyForUserNamespacePod`` (``hostUsers: false``) relaxes
``procMount`` (baseline), ``runAsNonRoot`` and ``runAsUser``; Windows pods (``spec.os.name: windows``) skip
``allowPrivilegeEscalation``, ``capabilities_restricted`` and ``seccompProfile_restricted``.

A namespace without the label enforces ``privileged`` (the API server's default admission configuration, which EKS
keeps).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"

Spec = dict[str, Any]
Meta = dict[str, Any]


def containers(spec: Spec) -> Iterator[dict[str, Any]]:
    """visitor.go ``visitContainers``."""
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])
    yield from spec.get("ephemeralContainers", [])


def _sc(c: dict[str, Any]) -> dict[str, Any]:
    return c.get("securityContext") or {}


def _pod_sc(spec: Spec) -> dict[str, Any]:
    return spec.get("securityContext") or {}


def _user_namespace(spec: Spec) -> bool:
    return spec.get("hostUsers") is False


def _windows(spec: Spec) -> bool:
    return (spec.get("os") or {}).get("name") == "windows"


# --- baseline ---------------------------------------------------------------------------------------------------

def host_namespaces(meta: Meta, spec: Spec) -> str | None:
    return "host namespaces" if any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")) else None


def privileged(meta: Meta, spec: Spec) -> str | None:
    return "privileged" if any(_sc(c).get("privileged") is True for c in containers(spec)) else None


CAPABILITIES_ALLOWED = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                        "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def capabilities_baseline(meta: Meta, spec: Spec) -> str | None:
    added = {a for c in containers(spec) for a in (_sc(c).get("capabilities") or {}).get("add", [])}
    return "non-default capabilities" if added - CAPABILITIES_ALLOWED else None


def host_path_volumes(meta: Meta, spec: Spec) -> str | None:
    return "hostPath volumes" if any("hostPath" in v for v in spec.get("volumes", [])) else None


def host_ports(meta: Meta, spec: Spec) -> str | None:
    return "hostPort" if any(p.get("hostPort") for c in containers(spec) for p in c.get("ports", [])) else None


def app_armor_profile(meta: Meta, spec: Spec) -> str | None:
    allowed_types = {"RuntimeDefault", "Localhost"}
    types = [(_pod_sc(spec).get("appArmorProfile") or {})] + [(_sc(c).get("appArmorProfile") or {})
                                                              for c in containers(spec)]
    bad_type = any(t and t.get("type") not in allowed_types for t in types)
    bad_annotation = any(k.startswith("container.apparmor.security.beta.kubernetes.io/")
                         and v and v != "runtime/default" and not v.startswith("localhost/")
                         for k, v in (meta.get("annotations") or {}).items())
    return "forbidden AppArmor profile" if bad_type or bad_annotation else None


SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}  # 1.31+


def se_linux_options(meta: Meta, spec: Spec) -> str | None:
    opts = [_pod_sc(spec).get("seLinuxOptions")] + [_sc(c).get("seLinuxOptions") for c in containers(spec)]
    bad = any(o is not None and (o.get("type", "") not in SELINUX_TYPES or o.get("user") or o.get("role"))
              for o in opts)
    return "seLinuxOptions" if bad else None


def proc_mount(meta: Meta, spec: Spec) -> str | None:
    """check_procMount_baseline.go at 1.35: any value in a user namespace."""
    if _user_namespace(spec):
        return None
    return proc_mount_restricted(meta, spec)


def seccomp_profile_baseline(meta: Meta, spec: Spec) -> str | None:
    profiles = [_pod_sc(spec).get("seccompProfile")] + [_sc(c).get("seccompProfile") for c in containers(spec)]
    bad = any(p and p.get("type") not in ("RuntimeDefault", "Localhost") for p in profiles)
    return "seccompProfile" if bad else None


SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}  # 1.32+


def sysctls(meta: Meta, spec: Spec) -> str | None:
    names = {s["name"] for s in _pod_sc(spec).get("sysctls", [])}
    return "forbidden sysctls" if names - SAFE_SYSCTLS else None


def windows_host_process(meta: Meta, spec: Spec) -> str | None:
    opts = [_pod_sc(spec).get("windowsOptions")] + [_sc(c).get("windowsOptions") for c in containers(spec)]
    return "hostProcess" if any(o and o.get("hostProcess") for o in opts) else None


def host_probes_and_lifecycle(meta: Meta, spec: Spec) -> str | None:
    """check_hostProbesAndhostLifecycle.go (1.34+)."""
    def hosts(handler: dict[str, Any] | None) -> list[str]:
        handler = handler or {}
        return [h for k in ("httpGet", "tcpSocket") if (h := (handler.get(k) or {}).get("host"))]
    for c in containers(spec):
        handlers = [c.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [(c.get("lifecycle") or {}).get(h) for h in ("postStart", "preStop")]
        if any(hosts(h) for h in handlers):
            return "probe or lifecycle host"
    return None


# --- restricted -------------------------------------------------------------------------------------------------

def allow_privilege_escalation(meta: Meta, spec: Spec) -> str | None:
    if _windows(spec):
        return None
    return "allowPrivilegeEscalation != false" if any(
        _sc(c).get("allowPrivilegeEscalation") is not False for c in containers(spec)) else None


def capabilities_restricted(meta: Meta, spec: Spec) -> str | None:
    if _windows(spec):
        return None
    for c in containers(spec):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            return "unrestricted capabilities"
    return None


RESTRICTED_VOLUME_SOURCES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image",
                             "persistentVolumeClaim", "projected", "secret"}


def restricted_volumes(meta: Meta, spec: Spec) -> str | None:
    return "restricted volume types" if any(
        not (set(v) - {"name"}) & RESTRICTED_VOLUME_SOURCES for v in spec.get("volumes", [])) else None


def proc_mount_restricted(meta: Meta, spec: Spec) -> str | None:
    return "procMount" if any(_sc(c).get("procMount") not in (None, "Default") for c in containers(spec)) else None


def run_as_non_root(meta: Meta, spec: Spec) -> str | None:
    if _user_namespace(spec):
        return None
    pod = _pod_sc(spec).get("runAsNonRoot")
    if pod is False or any(_sc(c).get("runAsNonRoot") is False for c in containers(spec)):
        return "runAsNonRoot != true"
    if pod is not True and any(_sc(c).get("runAsNonRoot") is None for c in containers(spec)):
        return "runAsNonRoot != true"
    return None


def run_as_user(meta: Meta, spec: Spec) -> str | None:
    if _user_namespace(spec):
        return None
    users = [_pod_sc(spec).get("runAsUser")] + [_sc(c).get("runAsUser") for c in containers(spec)]
    return "runAsUser=0" if 0 in users else None


def seccomp_profile_restricted(meta: Meta, spec: Spec) -> str | None:
    if _windows(spec):
        return None
    valid = ("RuntimeDefault", "Localhost")
    pod = _pod_sc(spec).get("seccompProfile")
    if pod is not None and pod.get("type") not in valid:
        return "seccompProfile"
    for c in containers(spec):
        own = _sc(c).get("seccompProfile")
        if (own is not None and own.get("type") not in valid) or (own is None and pod is None):
            return "seccompProfile"
    return None


Check = Callable[[Meta, Spec], "str | None"]
BASELINE_CHECKS: dict[str, Check] = {
    "hostNamespaces": host_namespaces, "privileged": privileged, "capabilities_baseline": capabilities_baseline,
    "hostPathVolumes": host_path_volumes, "hostPorts": host_ports, "appArmorProfile": app_armor_profile,
    "seLinuxOptions": se_linux_options, "procMount": proc_mount, "seccompProfile_baseline": seccomp_profile_baseline,
    "sysctls": sysctls, "windowsHostProcess": windows_host_process,
    "hostProbesAndHostLifecycle": host_probes_and_lifecycle,
}
RESTRICTED_CHECKS: dict[str, tuple[Check, tuple[str, ...]]] = {
    "allowPrivilegeEscalation": (allow_privilege_escalation, ()),
    "capabilities_restricted": (capabilities_restricted, ("capabilities_baseline",)),
    "restrictedVolumes": (restricted_volumes, ("hostPathVolumes",)),
    "procMount_restricted": (proc_mount_restricted, ("procMount",)),
    "runAsNonRoot": (run_as_non_root, ()),
    "runAsUser": (run_as_user, ()),
    "seccompProfile_restricted": (seccomp_profile_restricted, ()),
}


def forbidden(meta: Meta, spec: Spec, level: str) -> list[str]:
    """The forbidden reasons of every check of ``level`` that rejects the pod (empty: admitted)."""
    if level == PRIVILEGED:
        return []
    if level not in (BASELINE, RESTRICTED):
        raise ValueError(f"unknown Pod Security level {level!r}")
    checks: dict[str, Check] = dict(BASELINE_CHECKS)
    if level == RESTRICTED:
        for check_id, (check, overrides) in RESTRICTED_CHECKS.items():
            for overridden in overrides:
                checks.pop(overridden)
            checks[check_id] = check
    return [reason for check in checks.values() if (reason := check(meta, spec))]


def enforce_level(namespace_labels: dict[str, str] | None) -> str:
    return (namespace_labels or {}).get(ENFORCE_LABEL, PRIVILEGED)
