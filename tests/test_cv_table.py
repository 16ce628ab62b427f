"""The champion rule of ``make run`` (experiments/cv_table.py): only configs whose
pretrained weights load here without a network are candidates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def cv_table(load_experiment: Callable[[str], ModuleType]) -> ModuleType:
    return load_experiment("cv_table")


def _config(tmp_path: Path, model: str) -> Path:
    path = tmp_path / "candidate.yaml"
    path.write_text(f"data: {{split: dwc}}\nmodel: {model}\n")
    return path


def test_offline_local_and_weightless_configs_run_here(
    cv_table: ModuleType, tmp_path: Path
) -> None:
    local = tmp_path / "encoder"
    local.mkdir()

    assert cv_table.weights_here(_config(tmp_path, "{kind: tfidf_lr}"))
    assert cv_table.weights_here(
        _config(tmp_path, "{kind: transformer, base_model: offline:minilm}")
    )
    assert cv_table.weights_here(
        _config(tmp_path, f"{{kind: two_stage, item_stage: encoder, item_encoder: {local}}}")
    )


@pytest.mark.parametrize(("cached", "runs"), [(None, False), ("/cache/config.json", True)])
def test_a_hub_name_runs_here_only_from_the_hugging_face_cache(
    cv_table: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cached: str | None,
    runs: bool,
) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: cached)
    hub = "{kind: two_stage, item_encoder: sentence-transformers/all-mpnet-base-v2}"

    assert cv_table.weights_here(_config(tmp_path, hub)) is runs
