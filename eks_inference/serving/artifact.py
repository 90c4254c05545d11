"""Which compiled artifact a replica of a serve config loads: one function for the replica and the compile step.

The compile step (``eks-inference compile --serve-app``, the compile Job in the cluster) must publish exactly the
artifact the replicas will look for, so both derive the request, and with it the cache key, from the same
application ``args`` and ``user_config`` here: the dtype the processor actually serves, the sequence buckets of
the backend, the SDK versions of the image. Run on the same node group with the same image, the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from eks_inference.artifacts.resolve import ArtifactRequest, sdk_versions
from eks_inference.config import DType
from eks_inference.runtime.backends import cpu_has_native_bf16, effective_dtype
from eks_inference.runtime.bucketing import seq_buckets_for
from eks_inference.serving.serve_config import AppArgs, UserConfig


@dataclass(frozen=True)
class ReplicaArtifact:
    """The request for the artifact, and why its dtype differs from the configured one (None when it does not)."""

    request: ArtifactRequest
    dtype_note: str | None
    bf16_native: bool | None
    """Whether this CPU runs bf16 natively; None when the question does not arise (not cpu, or not bf16)."""


def replica_artifact(args: AppArgs, cfg: UserConfig) -> ReplicaArtifact:
    """The artifact a replica with ``args`` and ``cfg`` loads on this machine."""
    bf16_native = cpu_has_native_bf16() if args.backend == "cpu" and cfg.dtype is DType.BF16 else None
    dtype, note = effective_dtype(args.backend, cfg.dtype.value, bf16_native=bool(bf16_native),
                                  allow_emulated_bf16=args.allow_emulated_bf16)
    request = ArtifactRequest(model=args.model, revision=args.revision, task=args.task.value,
                              processor=args.processor.value, backend=args.backend, dtype=dtype,
                              batch_buckets=args.batch_buckets,
                              seq_buckets=seq_buckets_for(args.backend, cfg.max_seq_length),
                              versions=sdk_versions(args.backend),
                              auto_cast=args.auto_cast if args.backend == "neuron" else None)
    return ReplicaArtifact(request=request, dtype_note=note, bf16_native=bf16_native)
