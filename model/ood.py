"""Out-of-distribution score from the fine-tuned encoder: Mahalanobis distance to training.

An item's embedding is the mean over its token windows of the encoder's last hidden
state, mean-pooled over the window's real tokens (shape ``(d,)``, d = hidden size). The
training items' embeddings give a mean and a covariance; an input's score is its
Mahalanobis distance from that mean (Lee et al. 2018, "A Simple Unified Framework for
Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS; for fine-tuned
transformers on text, Podolskiy et al. 2021, "Revisiting Mahalanobis Distance for
Transformer-Based Out-of-Domain Detection", AAAI). With a few hundred items in a
384-dimensional space the sample covariance is singular, so it is shrunk with the
Ledoit-Wolf estimator (Ledoit & Wolf 2004, "A well-conditioned estimator for
large-dimensional covariance matrices"; ``sklearn.covariance.LedoitWolf``). Class labels
are not used (one class-agnostic Gaussian; with ~50 positives a per-class covariance
would be noise).

The flag threshold is the ``quantile`` of distances of items the encoder was not trained
on (``fit_calibrated`` sets it from inner cross-fitting folds' held-out rows, see
:meth:`MahalanobisOod.with_threshold_from`), so about ``1 - quantile`` of new
in-distribution items are flagged. Fine-tuning pulls the training items together (on the
DWC letters, training distances put the 99% quantile at 16.5 while the median held-out
item sat at 36), so the training quantile that :meth:`MahalanobisOod.fit` starts from is
only a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.covariance import LedoitWolf

from imr_outcome.errors import IncompatibleModelError, InvalidInputError

FloatArray = npt.NDArray[np.float64]

#: Training-distance quantile above which an input is flagged.
DEFAULT_QUANTILE = 0.99
#: Fewer training items than this give no usable covariance (no detector is fitted).
MIN_ITEMS = 10


@dataclass(frozen=True)
class MahalanobisOod:
    """A fitted Mahalanobis out-of-distribution detector.

    Attributes:
        mean: training embedding mean, shape ``(d,)``.
        precision: inverse of the shrunk covariance, shape ``(d, d)``.
        threshold: distance at or above which an input is out of distribution
            (the ``quantile`` of the training distances), > 0.
        quantile: the training quantile the threshold was set at, in (0, 1).
    """

    mean: FloatArray
    precision: FloatArray
    threshold: float
    quantile: float

    @classmethod
    def fit(cls, embeddings: FloatArray, quantile: float = DEFAULT_QUANTILE) -> MahalanobisOod:
        """Fit on training embeddings.

        Args:
            embeddings: shape ``(n, d)``, n >= :data:`MIN_ITEMS`, finite.
            quantile: training quantile for the threshold, in (0, 1).

        Raises:
            InvalidInputError: too few rows, non-finite values, or a quantile out of range.
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) < MIN_ITEMS:
            raise InvalidInputError(
                "embeddings", f"expected shape (n >= {MIN_ITEMS}, d), got {x.shape}"
            )
        if not np.isfinite(x).all():
            raise InvalidInputError("embeddings", "contains NaN or infinite values")
        if not 0 < quantile < 1:
            raise InvalidInputError("quantile", f"expected a value in (0, 1), got {quantile}")
        estimator = LedoitWolf().fit(x)
        mean = np.asarray(estimator.location_, dtype=np.float64)
        precision = np.asarray(estimator.precision_, dtype=np.float64)
        distances = _distances(x, mean, precision)
        return cls(mean, precision, float(np.quantile(distances, quantile)), quantile)

    def with_threshold_from(self, embeddings: FloatArray) -> MahalanobisOod:
        """A copy whose threshold is the :attr:`quantile` of these embeddings' distances.

        Use embeddings of items the encoder was not fine-tuned on: fine-tuning pulls the
        training items' embeddings together, so a threshold from their own distances
        flags nearly every new item.

        Args:
            embeddings: shape ``(m, d)``, m >= 1.

        Raises:
            InvalidInputError: no rows, or rows of another dimension.
        """
        return self.with_threshold(self.distances(embeddings))

    def with_threshold(self, held_out_distances: FloatArray) -> MahalanobisOod:
        """A copy whose threshold is the :attr:`quantile` of distances of held-out items
        (for a cross-fitted model: each item's distance under an inner detector that was
        fitted without its letter).

        Args:
            held_out_distances: shape ``(m,)``, m >= 1, finite, >= 0.

        Raises:
            InvalidInputError: no distances, or non-finite ones.
        """
        distances = np.asarray(held_out_distances, dtype=np.float64)
        if distances.ndim != 1 or len(distances) == 0 or not np.isfinite(distances).all():
            raise InvalidInputError(
                "held_out_distances",
                f"expected at least one finite held-out distance, got shape {distances.shape}",
            )
        threshold = float(np.quantile(distances, self.quantile))
        return MahalanobisOod(self.mean, self.precision, threshold, self.quantile)

    def distances(self, embeddings: FloatArray) -> FloatArray:
        """Mahalanobis distances, shape ``(n,)``, >= 0, of embeddings shaped ``(n, d)``."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.mean):
            raise InvalidInputError(
                "embeddings", f"expected shape (n, {len(self.mean)}), got {x.shape}"
            )
        return _distances(x, self.mean, self.precision)

    def save(self, path: Path) -> None:
        """Write the detector as one ``.npz`` file."""
        np.savez(
            path,
            mean=self.mean,
            precision=self.precision,
            threshold=np.float64(self.threshold),
            quantile=np.float64(self.quantile),
        )

    @classmethod
    def load(cls, path: Path) -> MahalanobisOod:
        """Read a detector written by :meth:`save`.

        Raises:
            IncompatibleModelError: the file is unreadable or its arrays do not fit.
        """
        try:
            with np.load(path) as stored:
                mean = np.asarray(stored["mean"], dtype=np.float64)
                precision = np.asarray(stored["precision"], dtype=np.float64)
                threshold, quantile = float(stored["threshold"]), float(stored["quantile"])
        except (OSError, KeyError, ValueError) as exc:
            raise IncompatibleModelError(f"{path}: unreadable OOD detector ({exc})") from exc
        if mean.ndim != 1 or precision.shape != (len(mean), len(mean)):
            raise IncompatibleModelError(
                f"{path}: mean {mean.shape} and precision {precision.shape} do not fit"
            )
        return cls(mean, precision, threshold, quantile)


def _distances(x: FloatArray, mean: FloatArray, precision: FloatArray) -> FloatArray:
    centred = x - mean
    squared = np.einsum("nd,de,ne->n", centred, precision, centred)
    distances: FloatArray = np.sqrt(np.maximum(squared, 0.0))
    return distances


__all__ = ["DEFAULT_QUANTILE", "MIN_ITEMS", "MahalanobisOod"]
