"""Import layers: serving loads model/ and never train/ (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return set(done.stdout.split())


def test_the_predictor_loads_the_model_package_and_nothing_of_training() -> None:
    loaded = _modules_after_import("imr_outcome.serve.predictor")

    assert "imr_outcome.serve.predictor" in loaded
    assert "imr_outcome.model.model" in loaded
    training = [m for m in loaded if m == "imr_outcome.train" or m.startswith("imr_outcome.train.")]
    assert training == []
    assert "transformers.trainer" not in loaded


def test_the_fine_tuning_module_does_import_the_trainer() -> None:
    # The checks above can fail: this is what a leak would look like.
    loaded = _modules_after_import("imr_outcome.train.fine_tune")

    assert "transformers.trainer" in loaded
    assert "imr_outcome.train" in loaded
