"""Checked label and probability arrays, shared by the fitted model and its evaluation.

Labels are 0 = Upheld and 1 = Overturned (see ``imr_outcome.data.schema.LABELS``); ``p``
is always the probability of Overturned. The calibrators, the classifier kinds and the
decision bands check their inputs here; the evaluation metrics
(:mod:`imr_outcome.train.metrics`) do too.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imr_outcome.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def _preview(values: npt.NDArray[np.generic], limit: int = 5) -> str:
    shown = ", ".join(repr(v.item()) for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"


def as_labels(y_true: npt.ArrayLike, field: str = "y_true") -> IntArray:
    """Validate binary labels and return them as an int64 array.

    Args:
        y_true: shape (n,), n >= 1, values 0 (Upheld) or 1 (Overturned); bool and float
            0.0/1.0 are accepted.
        field: the argument name used in error messages.

    Returns:
        The labels, shape (n,), dtype int64.

    Raises:
        InvalidInputError: ``field`` is not 1-D, is empty, or holds other values.
    """
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise InvalidInputError(field, f"expected a 1-D array of labels, found shape {y.shape}")
    if y.size == 0:
        raise InvalidInputError(field, "expected at least one label, found none")
    if y.dtype.kind not in "biuf":
        raise InvalidInputError(
            field,
            f"expected integer labels 0 (Upheld) or 1 (Overturned), found dtype {y.dtype}; "
            "map label names to ids with imr_outcome.data.schema.LABELS first",
        )
    bad = np.setdiff1d(np.unique(y), [0, 1])
    if bad.size:
        raise InvalidInputError(
            field, f"expected labels 0 (Upheld) or 1 (Overturned), found {_preview(bad)}"
        )
    return y.astype(np.int64)


def as_probabilities(p: npt.ArrayLike, n: int, field: str) -> FloatArray:
    """Validate probabilities of Overturned and return them as a float64 array.

    Args:
        p: shape (n,), finite values in [0, 1].
        n: the expected length (the number of labels).
        field: the argument name used in error messages.

    Returns:
        The probabilities, shape (n,), dtype float64.

    Raises:
        InvalidInputError: ``field`` has the wrong shape or length, is not numeric, or
            holds NaN, infinity or values outside [0, 1].
    """
    a = np.asarray(p)
    if a.ndim != 1:
        raise InvalidInputError(
            field,
            f"expected a 1-D array of Overturned probabilities, found shape {a.shape}; "
            "pass the Overturned column, e.g. proba[:, 1]",
        )
    if a.dtype.kind not in "biuf":
        raise InvalidInputError(field, f"expected numbers, found dtype {a.dtype}")
    if a.shape[0] != n:
        raise InvalidInputError(
            field, f"expected one probability per label ({n} labels), found {a.shape[0]}"
        )
    values = a.astype(np.float64)
    not_finite = np.flatnonzero(~np.isfinite(values))
    if not_finite.size:
        raise InvalidInputError(
            field,
            f"expected finite probabilities, found {values[not_finite[0]]} at index "
            f"{not_finite[0]}",
        )
    if values.min() < 0.0 or values.max() > 1.0:
        raise InvalidInputError(
            field,
            f"expected probabilities in [0, 1], found values from {values.min():g} to "
            f"{values.max():g}; pass probabilities (predict_proba), not logits",
        )
    return values
