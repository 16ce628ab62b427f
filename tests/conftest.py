"""Shared test fixtures: seeded randomness, fixture paths, the real-data location."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
FIXTURES = TESTS_DIR / "fixtures"
LETTER_FIXTURES = FIXTURES / "letters"
#: Real data lives beside the checkout (../shared/data); it is never copied into the repo.
SHARED_DATA = TESTS_DIR.parent.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The real data folder; skips the test when it is absent."""
    if not (SHARED_DATA / "dwc-imr-letters" / "pdf").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with the WordPiece vocabulary trained on the
    invented fixture letters, saved as a local model directory."""
    from tiny_bert import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


#: The two kinds of CPU this project runs on, as ``IMR_CPU_FLAGS`` values: AVX2 only (bf16
#: emulated, int8 without VNNI slower than fp32) and AVX512-BF16 with VNNI (AMD Zen 4).
CPUS = {
    "avx2-only": "avx2",
    "avx512-bf16-vnni": "avx2 avx512_bf16 avx512_vnni",
}


@pytest.fixture
def fake_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """A setter: ``fake_cpu("avx2")`` makes
    :func:`~imr_outcome.model.hardware.cpu_flags` report those flags (and forgets the cached
    precision) until the test ends; the real flags come back afterwards."""
    from imr_outcome.model import hardware

    def clear() -> None:
        hardware.cpu_flags.cache_clear()
        hardware.machine_precision.cache_clear()

    def set_flags(flags: str) -> None:
        monkeypatch.setenv(hardware.CPU_FLAGS_ENV, flags)
        clear()

    yield set_flags
    monkeypatch.undo()
    clear()


@pytest.fixture(params=sorted(CPUS))
def cpu(request: pytest.FixtureRequest, fake_cpu: Callable[[str], None]) -> str:
    """Runs the test once per kind of CPU in :data:`CPUS` (capability faked); its name."""
    fake_cpu(CPUS[request.param])
    return str(request.param)
