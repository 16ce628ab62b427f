"""What this machine runs natively, and the numeric precision that follows from it.

bf16 autocast is fast on a CPU only with AVX512-BF16 or AMX; elsewhere PyTorch emulates
it, measured at 99 s per optimizer step against 6.7 s in fp32 on a 2-core AMD EPYC (AVX2
only) with the default fine-tuning job (issue 11). ``precision: auto`` therefore means
bf16 on a CUDA GPU with bf16 support or a CPU with AVX512-BF16/AMX, fp16 mixed precision on
a CUDA GPU without bf16 (before Ampere: V100, T4; fp16 tensor cores, loss scaling by the
Trainer), and fp32 otherwise.
Every machine resolves its own precision: a model trained in bf16 still runs inference
in fp32 on a CPU without bf16.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16"]
ResolvedPrecision = Literal["fp32", "bf16", "fp16"]

#: Slowdown of emulated bf16 against fp32 on an AVX2-only CPU (99 s vs 6.7 s per step).
EMULATED_BF16_SLOWDOWN = 15


@dataclass(frozen=True)
class CpuFlags:
    """The CPU features that decide precision and (int8) backends.

    Attributes:
        avx2: 256-bit integer and float SIMD.
        avx512_bf16: AVX-512 bf16 dot products.
        amx: Advanced Matrix Extensions tiles (bf16 or int8).
        vnni: AVX512-VNNI or AVX-VNNI int8 dot products.
    """

    avx2: bool
    avx512_bf16: bool
    amx: bool
    vnni: bool

    @property
    def native_bf16(self) -> bool:
        """Whether bf16 matrix products run natively (AVX512-BF16 or AMX)."""
        return self.avx512_bf16 or self.amx

    def describe(self) -> str:
        """The flags as ``"avx2 avx512_bf16- amx- vnni-"`` (``-`` marks an absent flag)."""
        return " ".join(
            name + ("" if present else "-")
            for name, present in (
                ("avx2", self.avx2),
                ("avx512_bf16", self.avx512_bf16),
                ("amx", self.amx),
                ("vnni", self.vnni),
            )
        )


def _proc_cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo``; empty where there is none."""
    try:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


#: Environment variable that overrides the detected flags: a space- or comma-separated list
#: of ``/proc/cpuinfo`` flag names (``"avx2"``, ``"avx2 avx512_bf16 avx512_vnni"``). The
#: tests fake both sides of every capability-dependent path with it; a user can force the
#: AVX2-only path on any machine.
CPU_FLAGS_ENV = "IMR_CPU_FLAGS"


def flags_from_names(names: set[str]) -> CpuFlags:
    """:class:`CpuFlags` from ``/proc/cpuinfo``-style flag names (unknown names ignored)."""
    return CpuFlags(
        avx2="avx2" in names,
        avx512_bf16="avx512_bf16" in names,
        amx="amx_bf16" in names or "amx_tile" in names or "amx_int8" in names,
        vnni="avx512_vnni" in names or "avx_vnni" in names,
    )


@functools.cache
def cpu_flags() -> CpuFlags:
    """The CPU flags: :data:`CPU_FLAGS_ENV` when set, else as torch reports them
    (``torch.cpu.get_capabilities()``, via cpuinfo), falling back to ``/proc/cpuinfo`` when
    torch lacks that helper. Cached: tests that change the override call
    ``cpu_flags.cache_clear()`` (and ``machine_precision.cache_clear()``)."""
    import os

    override = os.environ.get(CPU_FLAGS_ENV)
    if override is not None:
        return flags_from_names(set(override.replace(",", " ").split()))
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        caps = {key: bool(value) for key, value in get().items() if isinstance(value, bool)}
        return CpuFlags(
            avx2=caps.get("avx2", False),
            avx512_bf16=caps.get("avx512_bf16", False),
            amx=caps.get("amx_bf16", False) or caps.get("amx_tile", False),
            vnni=caps.get("avx512_vnni", False) or caps.get("avx_vnni", False),
        )
    return flags_from_names(_proc_cpuinfo_flags())


def cuda_bf16() -> bool:
    """Whether a CUDA GPU with bf16 support is available (and will be used)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def cuda_without_bf16() -> bool:
    """Whether a CUDA GPU is used that lacks bf16 (compute capability below 8.0)."""
    import torch

    return bool(torch.cuda.is_available() and not torch.cuda.is_bf16_supported())


def resolve_precision(
    requested: Precision,
    *,
    flags: CpuFlags | None = None,
    gpu_bf16: bool | None = None,
    gpu_fp16: bool | None = None,
) -> ResolvedPrecision:
    """The precision to run in on this machine.

    Args:
        requested: ``"auto"`` (bf16 where native, fp16 on a GPU without bf16, else
            fp32), ``"fp32"`` or ``"bf16"``
            (honoured everywhere; logged as a warning where bf16 is emulated).
        flags: the CPU flags; default :func:`cpu_flags` (tests pass fakes).
        gpu_bf16: whether a bf16-capable CUDA GPU is used; default :func:`cuda_bf16`.
        gpu_fp16: whether a CUDA GPU without bf16 is used (``auto`` gives fp16 mixed
            precision there); default :func:`cuda_without_bf16`.

    Returns:
        ``"fp32"``, ``"bf16"``, or (``auto`` on a CUDA GPU without bf16) ``"fp16"``.
    """
    if requested == "fp32":
        return "fp32"
    flags = cpu_flags() if flags is None else flags
    gpu = cuda_bf16() if gpu_bf16 is None else gpu_bf16
    fp16_gpu = cuda_without_bf16() if gpu_fp16 is None else gpu_fp16
    # On a GPU the CPU's flags do not matter: the GPU runs the matrix products.
    native = gpu or (not fp16_gpu and flags.native_bf16)
    if requested == "bf16":
        if not native:
            logger.warning(
                "precision bf16 on a CPU without AVX512-BF16 or AMX (%s): bf16 is emulated "
                "and about %dx slower than fp32; use precision auto or fp32",
                flags.describe(),
                EMULATED_BF16_SLOWDOWN,
            )
        return "bf16"
    resolved: ResolvedPrecision = "bf16" if native else "fp16" if fp16_gpu else "fp32"
    logger.info("precision auto -> %s (%s, cuda bf16: %s)", resolved, flags.describe(), gpu)
    return resolved


@functools.cache
def machine_precision(requested: Precision) -> ResolvedPrecision:
    """:func:`resolve_precision` on this machine, resolved (and logged) once per value."""
    return resolve_precision(requested)
