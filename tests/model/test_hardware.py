"""precision: auto resolves per machine, with the capability faked both ways."""

from __future__ import annotations

import logging

import pytest

from imr_outcome.model.hardware import CpuFlags, cpu_flags, resolve_precision
from imr_outcome.model.settings import TrainingConfig

AVX2_ONLY = CpuFlags(avx2=True, avx512_bf16=False, amx=False, vnni=False)
SAPPHIRE_RAPIDS = CpuFlags(avx2=True, avx512_bf16=True, amx=True, vnni=True)
ZEN4 = CpuFlags(avx2=True, avx512_bf16=True, amx=False, vnni=True)


def test_auto_is_the_default() -> None:
    assert TrainingConfig().precision == "auto"


@pytest.mark.parametrize(
    ("flags", "gpu", "expected"),
    [
        (AVX2_ONLY, False, "fp32"),
        (SAPPHIRE_RAPIDS, False, "bf16"),
        (ZEN4, False, "bf16"),
        (AVX2_ONLY, True, "bf16"),
    ],
)
def test_auto_is_bf16_only_where_it_is_native(flags: CpuFlags, gpu: bool, expected: str) -> None:
    assert resolve_precision("auto", flags=flags, gpu_bf16=gpu, gpu_fp16=False) == expected


@pytest.mark.parametrize(("flags", "expected"), [(AVX2_ONLY, "fp16"), (SAPPHIRE_RAPIDS, "fp16")])
def test_auto_on_a_gpu_without_bf16_is_fp16(flags: CpuFlags, expected: str) -> None:
    # A V100/T4 (no bf16) runs the products: fp16 mixed precision, whatever the CPU has.
    assert resolve_precision("auto", flags=flags, gpu_bf16=False, gpu_fp16=True) == expected


def test_explicit_precisions_ignore_a_gpu_without_bf16() -> None:
    assert resolve_precision("fp32", flags=AVX2_ONLY, gpu_bf16=False, gpu_fp16=True) == "fp32"


def test_fp32_is_always_honoured() -> None:
    assert resolve_precision("fp32", flags=SAPPHIRE_RAPIDS, gpu_bf16=True) == "fp32"


def test_explicit_bf16_on_an_emulating_cpu_is_honoured_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="imr_outcome.model.hardware"):
        resolved = resolve_precision("bf16", flags=AVX2_ONLY, gpu_bf16=False)

    assert resolved == "bf16"
    (record,) = caplog.records
    assert "emulated" in record.getMessage()
    assert "15x slower" in record.getMessage()


def test_explicit_bf16_on_a_native_cpu_warns_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imr_outcome.model.hardware"):
        assert resolve_precision("bf16", flags=SAPPHIRE_RAPIDS, gpu_bf16=False) == "bf16"

    assert caplog.records == []


def test_the_flags_of_this_machine_are_read() -> None:
    flags = cpu_flags()

    assert isinstance(flags.avx2, bool)
    assert flags.describe().split()[0].startswith("avx2")
