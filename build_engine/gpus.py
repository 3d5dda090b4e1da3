"""GPUs a hospital is likely to own, with the three numbers sizing needs.

Memory is the total `nvidia-smi` reports (MiB), bandwidth the data-sheet HBM/GDDR figure, and the
compute capability decides whether FP8 (weights, activations or KV cache) exists at all: it needs
Ada (8.9) or Hopper (9.0); Ampere cards get INT4-AWQ, BF16 and INT8 KV cache only.
"""

from __future__ import annotations

from dataclasses import dataclass

from build_engine.errors import ConfigError

MIB = 1024**2


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int
    bandwidth_tb_s: float
    sm: int  # compute capability x10

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def has_fp8(self) -> bool:
        return self.sm >= 89


GPUS = {g.name.lower(): g for g in (
    Gpu("A10-24GB", 23028, 0.60, 86),
    Gpu("L20-48GB", 46068, 0.864, 89),
    Gpu("L40S-48GB", 46068, 0.864, 89),
    Gpu("A100-40GB", 40960, 1.555, 80),
    Gpu("A100-80GB", 81920, 2.039, 80),
    Gpu("A800-80GB", 81920, 2.039, 80),
    Gpu("H20-96GB", 97871, 4.0, 90),
    Gpu("H100-80GB", 81559, 3.35, 90),
    Gpu("H800-80GB", 81559, 3.35, 90),
    Gpu("H200-141GB", 143771, 4.8, 90),
)}


def gpu_by_name(name: str, memory_gib: float | None = None) -> Gpu:
    """Look a GPU up by name; `memory_gib` overrides the table (e.g. a MIG slice or a PCIe variant)."""
    try:
        gpu = GPUS[name.lower()]
    except KeyError:
        names = ", ".join(g.name for g in GPUS.values())
        raise ConfigError(f"unknown GPU {name!r}; expected one of {names}") from None
    if memory_gib is None:
        return gpu
    if memory_gib <= 0:
        raise ConfigError(f"--gpu-mem-gib must be positive, got {memory_gib}")
    return Gpu(gpu.name, round(memory_gib * 1024), gpu.bandwidth_tb_s, gpu.sm)
