"""Shared test fixtures: seeded randomness, fixture paths, the real-data location."""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TESTS_DIR = Path(__file__).resolve().parent
FIXTURES = TESTS_DIR / "fixtures"
LETTER_FIXTURES = FIXTURES / "letters"
#: Real data lives beside the checkout (../shared/data); it is never copied into the repo.
SHARED_DATA = TESTS_DIR.parent.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _own_resolution_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Remembered model resolutions go to a session folder, never the user's ~/.cache
    (set before any fixture loads a model; CLI subprocesses inherit it)."""
    from imr_outcome.model.model_uri import CACHE_DIR_ENV

    previous = os.environ.get(CACHE_DIR_ENV)
    os.environ[CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("resolution-cache"))
    yield
    if previous is None:
        os.environ.pop(CACHE_DIR_ENV, None)
    else:
        os.environ[CACHE_DIR_ENV] = previous


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _drop_handlers_on_closed_streams() -> Iterator[None]:
    """A CLI run under ``CliRunner`` (``serve``'s logging config) leaves a root handler on
    the runner's stream, closed once the run ends; later tests' log records then printed
    "I/O operation on closed file" tracebacks. Drop such handlers after each test."""
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
            root.removeHandler(handler)


def _import_experiment(name: str) -> ModuleType:
    path = TESTS_DIR.parent / "experiments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_experiment() -> Callable[[str], ModuleType]:
    """Imports a script of ``experiments/`` (not a package) as a module:
    ``load_experiment("cv_table")``; FileNotFoundError for no such script."""
    return _import_experiment


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


# ------------------------------------------------------------------ Spark (serving)


def _spark_missing() -> str | None:
    """Why Spark cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install -e '.[spark]')"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and Path(java_home, "bin/java").exists()):
        return "Java (17 or 21) is not on PATH and JAVA_HOME is unset"
    return None


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    """One Spark local[2] session for the module (no UI, two shuffle partitions)."""
    if (missing := _spark_missing()) is not None:
        if os.environ.get("IMR_REQUIRE_SPARK") == "1":
            pytest.fail(f"IMR_REQUIRE_SPARK=1 but {missing}")
        pytest.skip(missing)
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        session = (
            SparkSession.builder.master("local[2]")
            .appName("imr-outcome tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.default.parallelism", "2")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()
