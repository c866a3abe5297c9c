"""Real-time instance types as sizes: what an ``InstanceType`` stands for on this host.

An instance of a real-time variant is a unit of capacity: its workers (one per vCPU, or
``SAGEMAKER_MODEL_SERVER_WORKERS`` from the model's environment, as SageMaker's serving toolkits read it),
always warm, and its memory reserved in the host budget, split evenly between its workers. Sizes are
Amazon's published vCPU and memory figures; GPUs are listed for the record (workers here run on CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from zeroscale.errors import ValidationException

WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
_GIB = 1024


@dataclass(frozen=True)
class InstanceSize:
    vcpus: int
    memory_mb: int
    gpus: int = 0


def _family(prefix: str, sizes: dict[str, tuple[int, int, int]]) -> dict[str, InstanceSize]:
    return {f"ml.{prefix}.{size}": InstanceSize(v, gib * _GIB, g) for size, (v, gib, g) in sizes.items()}


# size -> (vCPUs, memory GiB, GPUs)
INSTANCE_TYPES: dict[str, InstanceSize] = {
    **_family("t2", {"medium": (2, 4, 0), "large": (2, 8, 0), "xlarge": (4, 16, 0), "2xlarge": (8, 32, 0)}),
    **_family(
        "m5",
        {
            "large": (2, 8, 0),
            "xlarge": (4, 16, 0),
            "2xlarge": (8, 32, 0),
            "4xlarge": (16, 64, 0),
            "12xlarge": (48, 192, 0),
            "24xlarge": (96, 384, 0),
        },
    ),
    **_family(
        "m6i",
        {
            "large": (2, 8, 0),
            "xlarge": (4, 16, 0),
            "2xlarge": (8, 32, 0),
            "4xlarge": (16, 64, 0),
            "8xlarge": (32, 128, 0),
            "12xlarge": (48, 192, 0),
            "16xlarge": (64, 256, 0),
            "24xlarge": (96, 384, 0),
            "32xlarge": (128, 512, 0),
        },
    ),
    **_family(
        "c5",
        {
            "large": (2, 4, 0),
            "xlarge": (4, 8, 0),
            "2xlarge": (8, 16, 0),
            "4xlarge": (16, 32, 0),
            "9xlarge": (36, 72, 0),
            "18xlarge": (72, 144, 0),
        },
    ),
    **_family(
        "c6i",
        {
            "large": (2, 4, 0),
            "xlarge": (4, 8, 0),
            "2xlarge": (8, 16, 0),
            "4xlarge": (16, 32, 0),
            "8xlarge": (32, 64, 0),
            "12xlarge": (48, 96, 0),
            "16xlarge": (64, 128, 0),
            "24xlarge": (96, 192, 0),
            "32xlarge": (128, 256, 0),
        },
    ),
    **_family(
        "r5",
        {
            "large": (2, 16, 0),
            "xlarge": (4, 32, 0),
            "2xlarge": (8, 64, 0),
            "4xlarge": (16, 128, 0),
            "12xlarge": (48, 384, 0),
            "24xlarge": (96, 768, 0),
        },
    ),
    **_family(
        "g4dn",
        {
            "xlarge": (4, 16, 1),
            "2xlarge": (8, 32, 1),
            "4xlarge": (16, 64, 1),
            "8xlarge": (32, 128, 1),
            "12xlarge": (48, 192, 4),
            "16xlarge": (64, 256, 1),
        },
    ),
    **_family(
        "g5",
        {
            "xlarge": (4, 16, 1),
            "2xlarge": (8, 32, 1),
            "4xlarge": (16, 64, 1),
            "8xlarge": (32, 128, 1),
            "12xlarge": (48, 192, 4),
            "16xlarge": (64, 256, 1),
            "24xlarge": (96, 384, 4),
            "48xlarge": (192, 768, 8),
        },
    ),
}


def instance_size(instance_type: str, variant: str) -> InstanceSize:
    """The size of a known instance type; ValidationException naming it (and the variant) otherwise."""
    size = INSTANCE_TYPES.get(instance_type)
    if size is None:
        families = sorted({name.split(".")[1] for name in INSTANCE_TYPES})
        raise ValidationException(
            f"InstanceType {instance_type} of production variant {variant} is not served by zeroscale. "
            f"Served families: {', '.join('ml.' + f + '.*' for f in families)} (see README, Real-time)."
        )
    return size


def workers_per_instance(size: InstanceSize, env: Mapping[str, str]) -> int:
    """One worker per vCPU, unless the model's environment sets ``SAGEMAKER_MODEL_SERVER_WORKERS``
    (1 to the instance's vCPUs: each worker holds a share of the instance's memory)."""
    text = env.get(WORKERS_ENV, "").strip()
    if not text:
        return size.vcpus
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= size.vcpus:
        raise ValidationException(
            f"{WORKERS_ENV}={text!r} must be a whole number from 1 to the instance's {size.vcpus} vCPUs."
        )
    return count
