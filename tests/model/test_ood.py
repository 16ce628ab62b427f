"""Mahalanobis out-of-distribution detector: fit, score, threshold, save/load, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imr_outcome.errors import IncompatibleModelError, InvalidInputError
from imr_outcome.model.ood import MahalanobisOod


def _gaussian(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 3.0, d)  # anisotropic: Euclidean distance would be wrong
    return rng.normal(size=(n, d)) * scales + 10.0


def test_the_threshold_flags_about_one_percent_of_new_in_distribution_points() -> None:
    detector = MahalanobisOod.fit(_gaussian(2000))

    flagged = detector.distances(_gaussian(5000, seed=1)) >= detector.threshold

    assert detector.quantile == 0.99
    assert 0.003 < flagged.mean() < 0.03


def test_distance_follows_the_covariance_not_euclidean_length() -> None:
    detector = MahalanobisOod.fit(_gaussian(2000))
    centre = detector.mean
    along_wide_axis = centre.copy()
    along_wide_axis[-1] += 6.0  # 2 sd of the widest axis (sd 3)
    along_narrow_axis = centre.copy()
    along_narrow_axis[0] += 6.0  # 12 sd of the narrowest axis (sd 0.5)

    wide, narrow = detector.distances(np.stack([along_wide_axis, along_narrow_axis]))

    assert wide == pytest.approx(2.0, rel=0.15)
    assert narrow == pytest.approx(12.0, rel=0.15)
    assert narrow >= detector.threshold > wide


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    detector = MahalanobisOod.fit(_gaussian(100), quantile=0.95)
    detector.save(tmp_path / "ood.npz")

    loaded = MahalanobisOod.load(tmp_path / "ood.npz")

    np.testing.assert_array_equal(loaded.mean, detector.mean)
    np.testing.assert_array_equal(loaded.precision, detector.precision)
    assert (loaded.threshold, loaded.quantile) == (detector.threshold, 0.95)


def test_bad_inputs_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"embeddings: expected shape \(n >= 10, d\)"):
        MahalanobisOod.fit(_gaussian(5))
    nan = _gaussian(20)
    nan[3, 2] = np.nan
    with pytest.raises(InvalidInputError, match="embeddings: contains NaN"):
        MahalanobisOod.fit(nan)
    with pytest.raises(InvalidInputError, match=r"quantile: expected a value in \(0, 1\)"):
        MahalanobisOod.fit(_gaussian(20), quantile=1.0)
    detector = MahalanobisOod.fit(_gaussian(20))
    with pytest.raises(InvalidInputError, match=r"expected shape \(n, 8\), got \(2, 3\)"):
        detector.distances(np.zeros((2, 3)))
    (tmp_path / "broken.npz").write_bytes(b"not an npz")
    with pytest.raises(IncompatibleModelError, match=r"broken\.npz: unreadable OOD detector"):
        MahalanobisOod.load(tmp_path / "broken.npz")


def test_a_held_out_threshold_is_the_quantile_of_held_out_distances() -> None:
    detector = MahalanobisOod.fit(_gaussian(200))
    held_out = _gaussian(50, seed=2) * 1.5  # wider than training: the threshold must rise

    moved = detector.with_threshold_from(held_out)

    expected = np.quantile(detector.distances(held_out), 0.99)
    assert moved.threshold == pytest.approx(expected)
    assert moved.threshold > detector.threshold
    np.testing.assert_array_equal(moved.mean, detector.mean)
    with pytest.raises(InvalidInputError, match="at least one finite held-out distance"):
        detector.with_threshold_from(np.zeros((0, 8)))


def test_a_cross_fitted_threshold_is_the_quantile_of_distances_from_inner_detectors() -> None:
    detector = MahalanobisOod.fit(_gaussian(200))
    distances = np.linspace(0.0, 10.0, 101)  # e.g. pooled over inner folds

    moved = detector.with_threshold(distances)

    assert moved.threshold == pytest.approx(9.9)
    assert moved.quantile == detector.quantile
    with pytest.raises(InvalidInputError, match="held_out_distances: expected at least one"):
        detector.with_threshold(np.array([1.0, np.nan]))
