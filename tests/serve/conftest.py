"""Fixtures shared by the serving tests: a Spark local[2] session."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _missing() -> str | None:
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
    if (missing := _missing()) is not None:
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
