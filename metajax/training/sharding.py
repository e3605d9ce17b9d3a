"""Data-parallel meta-batches with `jax.sharding`: tasks split over devices, parameters replicated.

The same code runs on one CPU, a GPU or many devices (test on CPU with
`XLA_FLAGS=--xla_force_host_platform_device_count=N`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASK_AXIS = "tasks"


def task_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: all of `jax.devices()`) whose axis splits the tasks."""
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), (TASK_AXIS,))


def task_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (task) axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(TASK_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_divisible(meta_batch: int, mesh: Mesh, what: str = "meta_batch") -> None:
    n = mesh.devices.size
    if meta_batch % n:
        raise ValueError(f"{what}={meta_batch} must be a multiple of the {n} devices it is split over")
