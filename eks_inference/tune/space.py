"""The shapes a tune may try for one processor, each within what the machine and the node group allow.

A :class:`Candidate` is one serving shape: replicas on the machine, torch threads per replica, ``max_batch_size``,
the batch wait and the dtype. Its ``patch`` is the part of the model's ``serving`` block it sets; replicas stay a
local figure (the cluster's replica bounds are the autoscaler's, sized by the fleet plan), so the patch gives the
per-replica shape only.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from eks_inference.config import LIVE_BATCH_CEILING, DType, Processor, ServingSpec

BATCH_SIZES = (4, 8, 16, 32, 64)
"""``max_batch_size`` values tried: powers of two up to the live ceiling, so moving between them needs no restart."""
BATCH_WAITS_MS = (0.0, 2.0, 5.0, 10.0, 20.0)
"""Batch waits tried, in ms: none (the busy-aware batcher fills batches while a forward runs) up to two forwards."""
THREADS = (1, 2, 4, 8)


@dataclass(frozen=True, order=True)
class Candidate:
    """One serving shape."""

    replicas: int
    threads: int
    max_batch_size: int
    batch_wait_ms: float
    dtype: str
    fpmath: str = "default"
    """``serving.cpu_tuning``: oneDNN's fp32 math mode, transparent huge pages, ``torch.compile``."""
    thp: bool = False
    torch_compile: bool = False

    @property
    def key(self) -> str:
        """Stable identity in the trials file: ``r2-t1-b32-w5-fp32``, then ``-fbf16``, ``-thp``, ``-tc`` for the CPU
        settings that are on (a shape without them keeps the key it always had)."""
        knobs = (f"-f{self.fpmath}" if self.fpmath != "default" else "") + ("-thp" if self.thp else "") + (
            "-tc" if self.torch_compile else "")
        return f"r{self.replicas}-t{self.threads}-b{self.max_batch_size}-w{self.batch_wait_ms:g}-{self.dtype}{knobs}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        return cls(replicas=int(d["replicas"]), threads=int(d["threads"]), max_batch_size=int(d["max_batch_size"]),
                   batch_wait_ms=float(d["batch_wait_ms"]), dtype=str(d["dtype"]),
                   fpmath=str(d.get("fpmath", "default")), thp=bool(d.get("thp", False)),
                   torch_compile=bool(d.get("torch_compile", False)))

    @classmethod
    def from_key(cls, key: str) -> Candidate:
        """The candidate a :attr:`key` names (``r2-t1-b16-w0-fp32``, then ``-fbf16``, ``-thp``, ``-tc`` if set)."""
        r, t, b, w, dtype, *knobs = key.split("-")
        if not all(k in ("fbf16", "thp", "tc") for k in knobs) or len(set(knobs)) != len(knobs):
            raise ValueError(f"{key!r}: unknown settings {knobs}")
        c = cls(replicas=int(r.removeprefix("r")), threads=int(t.removeprefix("t")),
                max_batch_size=int(b.removeprefix("b")), batch_wait_ms=float(w.removeprefix("w")), dtype=dtype,
                fpmath="bf16" if "fbf16" in knobs else "default", thp="thp" in knobs, torch_compile="tc" in knobs)
        if c.key != key:
            raise ValueError(f"{key!r} is not a trial key")
        return c

    def tuning(self) -> dict[str, Any]:
        return {"fpmath": self.fpmath, "thp": self.thp, "torch_compile": self.torch_compile}

    def patch(self) -> dict[str, Any]:
        """The serving fields this shape sets in ``cdk.json`` (one replica's shape; Ray CPUs follow the threads)."""
        return {"max_batch_size": self.max_batch_size, "batch_wait_timeout_s": round(self.batch_wait_ms / 1000, 6),
                "num_threads": self.threads, "cpus_per_replica": float(self.threads), "dtype": self.dtype,
                "cpu_tuning": self.tuning()}

    def changes(self, serving: ServingSpec) -> dict[str, Any]:
        """The part of :meth:`patch` that differs from ``serving``. Ray CPUs follow the threads only where the threads
        change: in the cluster each replica has a worker pod of its own, sized by the larger of the two, so Ray's CPU
        count alone changes nothing but would restart the replicas."""
        now = {"max_batch_size": serving.max_batch_size, "batch_wait_timeout_s": serving.batch_wait_timeout_s,
               "num_threads": serving.num_threads, "cpus_per_replica": serving.cpus_per_replica,
               "dtype": serving.dtype.value, "cpu_tuning": dataclasses.asdict(serving.cpu_tuning)}
        out = {k: v for k, v in self.patch().items() if now[k] != v}
        if "num_threads" not in out:
            out.pop("cpus_per_replica", None)
        return out

    def describe(self) -> str:
        knobs = [*([f"fpmath {self.fpmath}"] if self.fpmath != "default" else []),
                 *(["THP"] if self.thp else []), *(["torch.compile"] if self.torch_compile else [])]
        return (f"{self.replicas} x {self.threads}-thread replica(s), batch {self.max_batch_size}, wait "
                f"{self.batch_wait_ms:g} ms, {self.dtype}" + "".join(f", {k}" for k in knobs))


def configured(serving: ServingSpec, *, cores: int, bf16_here: bool = True) -> Candidate:
    """The environment's own shape as it runs on this machine (as ``eks-inference local --env`` serves it): as many
    of its replicas as the cores hold, and bf16 as fp32 where this CPU has no bf16."""
    per = max(1, int(max(serving.cpus_per_replica, serving.num_threads)))
    replicas = max(1, min(serving.replicas[1], cores // per))
    dtype = serving.dtype.value if bf16_here or serving.dtype is not DType.BF16 else DType.FP32.value
    t = serving.cpu_tuning
    return Candidate(replicas=replicas, threads=serving.num_threads, max_batch_size=serving.max_batch_size,
                     batch_wait_ms=round(serving.batch_wait_timeout_s * 1000, 3), dtype=dtype,
                     fpmath=t.fpmath, thp=t.thp, torch_compile=t.torch_compile)


@dataclass(frozen=True)
class Bounds:
    """What a candidate must fit: the cores it runs on here and the smallest node of the processor's group."""

    cores: int
    """Cores for serving on this machine (replicas x threads may not exceed them)."""
    node_vcpus: int
    """vCPUs of the smallest instance type of the processor's node group; one is left to Ray's own processes."""
    dtypes: tuple[str, ...]
    knobs: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """CPU settings tried (``fpmath``, ``thp``, ``torch_compile``) and their values; one left out is tried at its
    default only (:func:`cpu_knobs` leaves out what this machine cannot honour, or the processor does not use)."""

    def admits(self, c: Candidate) -> str | None:
        """Why ``c`` is out of bounds, or None."""
        if c.replicas * c.threads > self.cores:
            return f"{c.replicas} x {c.threads} threads exceed the {self.cores} core(s) for serving here"
        if c.threads > max(1, self.node_vcpus - 1):
            return f"{c.threads} threads exceed a {self.node_vcpus}-vCPU node less one for Ray"
        if c.max_batch_size > LIVE_BATCH_CEILING:
            return f"max_batch_size {c.max_batch_size} is above the live ceiling {LIVE_BATCH_CEILING}"
        if c.dtype not in self.dtypes:
            return f"dtype {c.dtype} is not tried on this processor"
        defaults = {"fpmath": "default", "thp": False, "torch_compile": False}
        for name, default in defaults.items():
            if getattr(c, name) not in self.knobs.get(name, (default,)):
                return f"cpu_tuning.{name} {getattr(c, name)!r} is not tried here"
        return None


def dtypes_for(processor: Processor, *, bf16_here: bool) -> tuple[str, ...]:
    """fp32 always; bf16 too where the trials can run it natively (a CPU that only emulates bf16 serves fp32 in its
    place, so such a trial would measure fp32 under bf16's name). ``verify`` then decides whether bf16 answers right.
    Every processor this project serves has bf16 (Graviton3+, Inferentia2, recent x86, GPUs)."""
    return (DType.FP32.value, DType.BF16.value) if bf16_here else (DType.FP32.value,)


def space(bounds: Bounds, *, batch_sizes: Sequence[int] = BATCH_SIZES,
          batch_waits_ms: Sequence[float] = BATCH_WAITS_MS) -> list[Candidate]:
    """Every candidate within ``bounds``, in a fixed order."""
    out = []
    for threads in THREADS:
        for replicas in range(1, bounds.cores + 1):
            for mbs, wait, dtype, fpmath, thp, tc in itertools.product(
                    batch_sizes, batch_waits_ms, bounds.dtypes, bounds.knobs.get("fpmath", ("default",)),
                    bounds.knobs.get("thp", (False,)), bounds.knobs.get("torch_compile", (False,))):
                c = Candidate(replicas=replicas, threads=threads, max_batch_size=mbs, batch_wait_ms=float(wait),
                              dtype=dtype, fpmath=fpmath, thp=thp, torch_compile=tc)
                if bounds.admits(c) is None:
                    out.append(c)
    return out


def sample(candidates: Iterable[Candidate], n: int, *, seed: int, first: Sequence[Candidate] = ()) -> list[Candidate]:
    """``first`` (kept, in order), then up to ``n`` minus those drawn at random with ``seed``: the same seed draws the
    same trials, so a resumed tune asks for the trials it already holds."""
    pool = sorted(set(candidates) - set(first))
    random.Random(seed).shuffle(pool)
    return [*first, *pool[:max(0, n - len(first))]]


def cpu_knobs(processor: Processor, *, bf16_here: bool, thp_here: bool, compiler_here: bool) -> tuple[
        dict[str, tuple[Any, ...]], dict[str, str]]:
    """The CPU settings a tune tries on ``processor`` and, for each one left out, why.

    Only processors whose replicas run on CPU use them (Graviton, CPU; Inferentia and GPU replicas run their model
    on the accelerator, where ``cpu_tuning`` is not rendered). A setting this machine cannot honour is left out
    rather than measured under its name: ``fpmath`` bf16 without bf16 instructions changes nothing,
    ``THP_MEM_ALLOC_ENABLE`` needs transparent huge pages the kernel grants (not ``never``), and ``torch.compile``'s
    CPU backend (inductor) writes C++ that a compiler must build."""
    if processor.backend != "cpu":
        return {}, {"cpu_tuning": f"{processor.value} replicas run their model on the accelerator: not a CPU setting"}
    knobs: dict[str, tuple[Any, ...]] = {}
    notes: dict[str, str] = {}
    if bf16_here:
        knobs["fpmath"] = ("default", "bf16")
    else:
        notes["fpmath"] = "bf16: no effect here (this CPU has no bf16 instructions); not measured"
    if thp_here:
        knobs["thp"] = (False, True)
    else:
        notes["thp"] = "no effect here (transparent huge pages are off in this kernel); not measured"
    if compiler_here:
        knobs["torch_compile"] = (False, True)
    else:
        notes["torch_compile"] = "no C++ compiler here for inductor; not measured"
    return knobs, notes


NEURON_AUTO_CASTS = ("none", "matmult", "all")


@dataclass(frozen=True)
class NeuronVariant:
    """An Inferentia setting that only a cluster can measure: NeuronCores per replica, the compiled batch buckets
    and the compiler's auto-cast."""

    neuron_cores_per_replica: int
    batch_buckets: tuple[int, ...]
    auto_cast: str | None

    @property
    def key(self) -> str:
        return (f"nc{self.neuron_cores_per_replica}-b{'.'.join(map(str, self.batch_buckets))}-"
                f"ac{self.auto_cast or 'dtype'}")

    def patch(self) -> dict[str, Any]:
        return {"neuron_cores_per_replica": self.neuron_cores_per_replica, "batch_buckets": list(self.batch_buckets),
                "auto_cast": self.auto_cast}

    def changes(self, serving: ServingSpec) -> dict[str, Any]:
        now = {"neuron_cores_per_replica": serving.neuron_cores_per_replica,
               "batch_buckets": list(serving.batch_buckets),
               "auto_cast": None if serving.auto_cast is None else serving.auto_cast.value}
        return {k: v for k, v in self.patch().items() if now[k] != v}

    def needs(self, serving: ServingSpec) -> str:
        """``needs a compile`` when the artifact changes (buckets, auto-cast: the compile Job writes a new one
        before replicas can load it), else ``needs a deploy`` (NeuronCores per replica resize the worker pods)."""
        ch = self.changes(serving)
        return "needs a compile" if {"batch_buckets", "auto_cast"} & set(ch) else "needs a deploy"


def neuron_space(serving: ServingSpec, *, node_neuron_cores: int) -> list[NeuronVariant]:
    """Inferentia settings within the smallest inf2 node of the group: NeuronCores per replica in powers of two up to
    the node's, buckets up to each of :data:`BATCH_SIZES` that is at least ``max_batch_size`` (so the configured
    batch size stays live), and the configured auto-cast beside each other one that differs from what the dtype
    gives. Not measured here: a tune lists them with what they need."""
    cores = [n for n in (1, 2, 4, 8, 16, 32) if n <= max(1, node_neuron_cores)]
    tops = [b for b in BATCH_SIZES if b >= serving.max_batch_size] or [serving.max_batch_size]
    same = "none" if serving.dtype is DType.FP32 else "all"  # what no auto_cast gives (neuron_cast_args)
    casts = [serving.auto_cast.value if serving.auto_cast else None,
             *(x for x in NEURON_AUTO_CASTS if x != same and x != (serving.auto_cast and serving.auto_cast.value))]
    out = []
    for nc, top, cast in itertools.product(cores, tops, casts):
        buckets = (*(b for b in (1, 2, 4, 8, 16, 32, 64, 128) if b < top), top)
        out.append(NeuronVariant(neuron_cores_per_replica=nc, batch_buckets=buckets, auto_cast=cast))
    return out
