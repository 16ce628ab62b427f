"""The ONNX Runtime scoring backend of the fine-tuned transformer: which exported variant
a classifier folder scores with, and the session that runs it.

At registration (:mod:`imr_outcome.train.onnx_export`) the classifier is exported to
``classifier/model.onnx``, on a CPU with int8 dot products (VNNI or AMX,
:func:`~imr_outcome.model.hardware.cpu_flags`) also to a dynamically quantised
``classifier/model.int8.onnx``, and each variant's parity with torch is written to
``classifier/onnx.json``, with the time each passing variant and torch took to score the
same items on the export machine. The exported graph returns the window logits and the mean-pooled
last hidden state (what the OOD detector reads), so one forward pass serves scoring and
OOD as on torch. A model whose ONNX file failed parity (or has none) runs on torch, with a
warning when ONNX was asked for.

Evidence (:mod:`imr_outcome.model.attribution`) needs gradients, so it always runs on the
torch model; only scoring runs on ONNX Runtime.

Sources: ONNX Runtime graph optimisation + dynamic int8 quantisation of MiniLM-L6 gives
about 2x over PyTorch on AVX512-VNNI (P. Schmid, "Optimizing Transformers with Hugging Face
Optimum"); without VNNI, int8 matrix products are emulated and measured slower than fp32.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.hardware import CpuFlags, cpu_flags

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

Backend = Literal["auto", "torch", "onnx"]
Variant = Literal["fp32", "int8"]
BACKENDS: tuple[Backend, ...] = ("auto", "torch", "onnx")

#: The exported graphs and the parity record, inside the classifier folder.
ONNX_FILES: dict[Variant, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
PARITY_FILE = "onnx.json"


def preferred_variant(flags: CpuFlags | None = None) -> Variant:
    """int8 where the CPU has int8 dot products (VNNI or AMX), fp32 elsewhere."""
    flags = cpu_flags() if flags is None else flags
    return "int8" if (flags.vnni or flags.amx) else "fp32"


def check_backend(backend: str) -> Backend:
    """``backend`` if it is one of :data:`BACKENDS`.

    Raises:
        InvalidInputError: another value (names ``backend`` and the choices).
    """
    if backend not in BACKENDS:
        raise InvalidInputError(
            "backend", f"expected one of {', '.join(BACKENDS)}, found {backend!r}"
        )
    return backend


# ---------------------------------------------------------------------------- runtime


class OnnxSession:
    """An ONNX Runtime CPU session of an exported classifier (thread-safe ``run``).

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: torch's thread count, as the torch path uses).
    """

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        # Without shrinkage the CPU arena keeps its high-water mark for good: one
        # 99k-character summary (4 batches of 32 windows) left it at 960 MiB instead of
        # 215 MiB, for ~4% on a two-window call (issue 14; AMD EPYC, avx2).
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, batch: dict[str, Any]) -> tuple[FloatArray, FloatArray]:
        """Window logits ``(b, 2)`` and pooled hidden states ``(b, d)``, float64.

        Args:
            batch: padded int64 arrays or tensors ``(b, t)`` keyed by input name.
        """
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
        logits, pooled = self.session.run(["logits", "pooled"], feed, self.run_options)
        return np.asarray(logits, dtype=np.float64), np.asarray(pooled, dtype=np.float64)


def read_parity(directory: Path) -> dict[str, Any]:
    """The parity record of a classifier folder (``{}`` when it has none)."""
    path = directory / PARITY_FILE
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def measured_speedups(record: dict[str, Any], flags: CpuFlags) -> dict[Variant, float] | None:
    """Each passing variant's scoring time over torch fp32's, as timed at export.

    Returns None unless the record has timings and was written on a CPU with ``flags``
    (:meth:`CpuFlags.describe`): timings from other hardware say nothing here (on an AMD
    EPYC with VNNI but no AMX, ORT fp32 measured 1.28x torch fp32, int8 0.50x).
    """
    timing = record.get("timing")
    if not isinstance(timing, dict) or record.get("exported_on") != flags.describe():
        return None
    torch_ms = timing.get("ms_torch")
    variant_ms = timing.get("ms", {})
    if not isinstance(torch_ms, (int, float)) or torch_ms <= 0 or not isinstance(variant_ms, dict):
        return None
    return {
        cast(Variant, variant): float(ms) / float(torch_ms)
        for variant, ms in variant_ms.items()
        if variant in ONNX_FILES and isinstance(ms, (int, float))
    }


def open_session(
    directory: Path, backend: Backend, flags: CpuFlags | None = None
) -> OnnxSession | None:
    """The ONNX session a classifier folder should score with, or None for torch.

    ``torch`` -> None. ``auto`` on a CPU with the export machine's flags, when the export
    timed the variants (:func:`measured_speedups`) -> the fastest passing variant if it beat
    torch there, else None (torch). Otherwise (``onnx``, or ``auto`` without timings from
    such a CPU) -> the variant this CPU prefers (:func:`preferred_variant`), else fp32,
    among the variants that passed parity; None (torch) when none did, logged as a warning
    when ``onnx`` was asked for.
    """
    if backend == "torch":
        return None
    flags = cpu_flags() if flags is None else flags
    record = read_parity(directory)
    passed = {
        entry["variant"]
        for entry in record.get("variants", [])
        if entry.get("passed")
        and (directory / ONNX_FILES[cast(Variant, entry["variant"])]).is_file()
    }
    speedups = measured_speedups(record, flags) if backend == "auto" else None
    if speedups is not None:
        timed = {variant: ratio for variant, ratio in speedups.items() if variant in passed}
        fastest = min(timed, key=timed.__getitem__, default=None)
        if fastest is not None and timed[fastest] < 1.0:
            logger.info(
                "scoring with ONNX Runtime (%s, %.2fx torch fp32 at export) from %s",
                fastest,
                timed[fastest],
                directory,
            )
            return OnnxSession(directory / ONNX_FILES[fastest])
        logger.info("backend auto: torch measured fastest on this CPU at export (%s)", timed)
        return None
    first = preferred_variant(flags)
    # int8 without VNNI/AMX is slower than fp32 (module docstring): fp32 only there.
    candidates: list[Variant] = [first, "fp32"] if first == "int8" else ["fp32"]
    for variant in candidates:
        if variant in passed:
            logger.info("scoring with ONNX Runtime (%s) from %s", variant, directory)
            return OnnxSession(directory / ONNX_FILES[variant])
    level = logging.WARNING if backend == "onnx" else logging.INFO
    reason = (
        "no ONNX export" if not record else f"no ONNX variant passed parity ({record['variants']})"
    )
    logger.log(level, "backend %s: %s in %s; scoring with torch", backend, reason, directory)
    return None
