"""Shared test fixtures: seeded randomness, fixture paths, the real-data location."""

from __future__ import annotations

import random
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
    """A tiny random BERT (hidden 32, 2 layers) with a WordPiece tokenizer trained on the
    invented fixture letters, saved as a local model directory."""
    from tiny_bert import make_tiny_bert

    corpus = [p.read_text(encoding="utf-8") for p in sorted(LETTER_FIXTURES.glob("*.txt"))]
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), corpus)
