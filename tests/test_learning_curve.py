"""The learning-curve experiment (experiments/learning_curve.py): nested, letter-whole
training subsets that keep the base rate, and the inverse power law read back."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from imr_outcome.data.model_input import build_model_input
from imr_outcome.train.pipeline import Rows


@pytest.fixture(scope="module")
def learning_curve(load_experiment: Callable[[str], ModuleType]) -> ModuleType:
    return load_experiment("learning_curve")


def _rows(n_letters: int) -> Rows:
    """Letters of 1-3 items; every fifth letter holds one Overturned item."""
    groups, labels = [], []
    for letter in range(n_letters):
        for item in range(letter % 3 + 1):
            groups.append(f"CM17-{letter:07d}")
            labels.append(int(letter % 5 == 0 and item == 0))
    inputs = [build_model_input("Physical therapy", "Low back pain.")] * len(groups)
    return Rows(
        ids=[str(i) for i in range(len(groups))],
        groups=groups,
        inputs=inputs,
        metadata=[{} for _ in groups],
        labels=np.asarray(labels, dtype=np.int64),
        context={},
    )


def test_subsets_are_nested_keep_letters_whole_and_keep_the_base_rate(
    learning_curve: ModuleType,
) -> None:
    rows = _rows(100)
    train_idx = np.flatnonzero(np.asarray([int(g[-7:]) for g in rows.groups]) < 80)
    fractions = [0.1, 0.5, 1.0]

    subsets = learning_curve.nested_subsets(rows, train_idx, fractions, seed=3)

    groups = np.asarray(rows.groups)
    kept = [set(groups[s]) for s in subsets]
    assert kept[0] < kept[1] < kept[2] == set(groups[train_idx])
    for subset, letters in zip(subsets, kept, strict=True):
        # whole letters: every item of a kept letter, none from outside the training rows
        assert set(subset) == {i for i in train_idx if groups[i] in letters}
    positives = [{g for g in letters if rows.labels[groups == g].any()} for letters in kept]
    assert [len(p) for p in positives] == [2, 8, 16]  # 16 positive letters of 80, ceil'd
    assert [len(k - p) for k, p in zip(kept, positives, strict=True)] == [7, 32, 64]


def test_the_inverse_power_law_is_recovered_and_inverted(learning_curve: ModuleType) -> None:
    n = np.array([30.0, 60.0, 90.0, 120.0, 160.0])
    auroc = learning_curve.inverse_power_law(n, 0.82, 1.5, 0.6)

    a, b, c = learning_curve.fit_curve(n, auroc, None)

    np.testing.assert_allclose((a, b, c), (0.82, 1.5, 0.6), rtol=1e-3)
    needed = learning_curve.letters_needed(a, b, c, 0.80)
    assert needed is not None and needed > 160
    assert learning_curve.inverse_power_law(np.array([needed]), a, b, c)[0] == pytest.approx(0.80)
    assert learning_curve.letters_needed(0.70, b, c, 0.75) is None
