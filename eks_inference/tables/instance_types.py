"""What one node of each allowed EC2 instance type offers to pods, so config can tell a layout that cannot fit.

The figures are the public EC2 specifications (vCPUs, memory, NeuronCores, GPUs) and the pod limit that the EKS
AL2023 node bootstrap (``nodeadm``) derives from the ENI limits. What pods may request is less than the
instance has: ``nodeadm`` reserves CPU and memory for the kubelet and the kubelet evicts below 100 MiB free
(amazon-eks-ami ``nodeadm/internal/kubelet/config.go``: ``getCPUMillicoresToReserve``,
``getMemoryMebibytesToReserve``, ``evictionHard``). DaemonSet pods' small requests are not subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass

INSTANCE_TYPES_DATE = "2026-11-29"
"""When the table was last checked against the EC2 instance type pages and amazon-eks-ami's ENI data."""


@dataclass(frozen=True)
class InstanceType:
    """One EC2 instance type as a Kubernetes node sees it.

    :param name: e.g. ``c7g.2xlarge``.
    :param vcpus: vCPUs.  :param memory_gib: memory in GiB.
    :param neuron_cores: ``aws.amazon.com/neuroncore`` the Neuron device plugin advertises (inf2), else 0.
    :param gpus: ``nvidia.com/gpu`` the NVIDIA device plugin advertises, else 0.
    :param max_pods: the node's pod limit under the VPC CNI (ENIs × (IPv4 per ENI − 1) + 2).
    """

    name: str
    vcpus: int
    memory_gib: float
    max_pods: int
    neuron_cores: int = 0
    gpus: int = 0

    @property
    def allocatable_cpu_millis(self) -> int:
        """vCPUs less the kubelet's reservation: 6 % of the first core, 1 % of the second, 0.5 % of the
        third and fourth, 0.25 % of the rest."""
        total = self.vcpus * 1000
        reserved = 0.0
        for start, end, share in ((0, 1000, 0.06), (1000, 2000, 0.01), (2000, 4000, 0.005), (4000, total, 0.0025)):
            if total > start:
                reserved += (min(total, end) - start) * share
        return total - int(reserved)

    @property
    def allocatable_memory_mib(self) -> int:
        """Memory less the kubelet's reservation (11 MiB per possible pod + 255 MiB) and the eviction floor."""
        return int(self.memory_gib * 1024) - (11 * self.max_pods + 255) - 100


_VCPUS = {"medium": 1, "large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16, "8xlarge": 32, "12xlarge": 48,
          "16xlarge": 64, "24xlarge": 96, "32xlarge": 128, "48xlarge": 192}
# Nitro compute, general-purpose and memory families share their ENI limits size for size.
_MAX_PODS = {"medium": 8, "large": 29, "xlarge": 58, "2xlarge": 58, "4xlarge": 234, "8xlarge": 234, "12xlarge": 234,
             "16xlarge": 737, "24xlarge": 737, "32xlarge": 737, "48xlarge": 737}
_TO_16X = ("medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge")

# family: (GiB of memory per vCPU, sizes offered)
_REGULAR: dict[str, tuple[int, tuple[str, ...]]] = {
    "c6g": (2, _TO_16X), "c7g": (2, _TO_16X), "c7gn": (2, _TO_16X), "m6g": (4, _TO_16X), "m7g": (4, _TO_16X),
    "r7g": (8, _TO_16X),
    "c8g": (2, (*_TO_16X, "24xlarge", "48xlarge")),
    "c7a": (2, (*_TO_16X, "24xlarge", "32xlarge", "48xlarge")),
    "c6i": (2, (*_TO_16X[1:], "24xlarge", "32xlarge")), "m6i": (4, (*_TO_16X[1:], "24xlarge", "32xlarge")),
    "c7i": (2, (*_TO_16X[1:], "24xlarge", "48xlarge")), "m7i": (4, (*_TO_16X[1:], "24xlarge", "48xlarge")),
}

# name: (vCPUs, GiB, max pods, NeuronCores, GPUs)
_IRREGULAR: dict[str, tuple[int, float, int, int, int]] = {
    "t3.nano": (2, 0.5, 4, 0, 0), "t3.micro": (2, 1, 4, 0, 0), "t3.small": (2, 2, 11, 0, 0),
    "t3.medium": (2, 4, 17, 0, 0), "t3.large": (2, 8, 35, 0, 0), "t3.xlarge": (4, 16, 58, 0, 0),
    "t3.2xlarge": (8, 32, 58, 0, 0),
    "t4g.nano": (2, 0.5, 4, 0, 0), "t4g.micro": (2, 1, 4, 0, 0), "t4g.small": (2, 2, 11, 0, 0),
    "t4g.medium": (2, 4, 17, 0, 0), "t4g.large": (2, 8, 35, 0, 0), "t4g.xlarge": (4, 16, 58, 0, 0),
    "t4g.2xlarge": (8, 32, 58, 0, 0),
    # One Inferentia2 device has two NeuronCores.
    "inf2.xlarge": (4, 16, 58, 2, 0), "inf2.8xlarge": (32, 128, 234, 2, 0),
    "inf2.24xlarge": (96, 384, 737, 12, 0), "inf2.48xlarge": (192, 768, 737, 24, 0),
    "g5.xlarge": (4, 16, 58, 0, 1), "g5.2xlarge": (8, 32, 58, 0, 1), "g5.4xlarge": (16, 64, 234, 0, 1),
    "g5.8xlarge": (32, 128, 234, 0, 1), "g5.12xlarge": (48, 192, 737, 0, 4), "g5.16xlarge": (64, 256, 234, 0, 1),
    "g5.24xlarge": (96, 384, 737, 0, 4), "g5.48xlarge": (192, 768, 345, 0, 8),
    "g6.xlarge": (4, 16, 58, 0, 1), "g6.2xlarge": (8, 32, 58, 0, 1), "g6.4xlarge": (16, 64, 234, 0, 1),
    "g6.8xlarge": (32, 128, 234, 0, 1), "g6.12xlarge": (48, 192, 234, 0, 4), "g6.16xlarge": (64, 256, 737, 0, 1),
    "g6.24xlarge": (96, 384, 737, 0, 4), "g6.48xlarge": (192, 768, 737, 0, 8),
    "g6e.xlarge": (4, 32, 58, 0, 1), "g6e.2xlarge": (8, 64, 58, 0, 1), "g6e.4xlarge": (16, 128, 234, 0, 1),
    "g6e.8xlarge": (32, 256, 234, 0, 1), "g6e.12xlarge": (48, 384, 292, 0, 4),
    "g6e.16xlarge": (64, 512, 737, 0, 1), "g6e.24xlarge": (96, 768, 492, 0, 4),
    "g6e.48xlarge": (192, 1536, 492, 0, 8),
}


def _table() -> dict[str, InstanceType]:
    out: dict[str, InstanceType] = {}
    for family, (gib_per_vcpu, sizes) in _REGULAR.items():
        for size in sizes:
            name = f"{family}.{size}"
            out[name] = InstanceType(name, _VCPUS[size], _VCPUS[size] * gib_per_vcpu, _MAX_PODS[size])
    for name, (vcpus, gib, max_pods, cores, gpus) in _IRREGULAR.items():
        out[name] = InstanceType(name, vcpus, gib, max_pods, neuron_cores=cores, gpus=gpus)
    return out


INSTANCE_TYPES: dict[str, InstanceType] = _table()


def sizes_of(family: str) -> list[str]:
    """The sizes the table lists for a family, smallest first."""
    return [n.split(".", 1)[1] for n, t in sorted(INSTANCE_TYPES.items(), key=lambda kv: kv[1].vcpus)
            if n.split(".", 1)[0] == family]


HOST_FAMILIES: dict[str, tuple[str, int]] = {"intel": ("c7i", 2), "amd": ("c7a", 1), "arm": ("c7g", 1)}
"""The compute family a machine of each CPU vendor is priced as, and how many vCPUs that family gives per physical
core: c7i (Intel Sapphire Rapids) exposes both hyperthreads of a core, c7a (AMD EPYC Genoa) and c7g (Graviton3)
one vCPU per core, SMT off (EC2 instance type pages, "Processor" and "threads per core")."""
