"""The interface every classifier kind implements, and the registry of kinds.

A classifier maps model inputs (:class:`imr_outcome.data.model_input.ModelInput`, built
only from pre-filing text) to two-class logits. Calibration and the decision threshold
are applied on top by :class:`imr_outcome.model.model.OutcomeModel`, so a
classifier only has to produce scores that rank well.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import joblib
import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError

from imr_outcome.data.model_input import (
    MetadataValue,
    ModelInput,
    build_model_input,
    coerce_metadata_value,
)
from imr_outcome.data.schema import LABELS, PREFILING_FIELDS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.arrays import as_labels

if TYPE_CHECKING:
    from imr_outcome.model.ood import MahalanobisOod

Logits = npt.NDArray[np.float64]
"""Shape ``(n, 2)``: unnormalized scores for [Upheld, Overturned] (label-id order)."""


@dataclass(frozen=True)
class ItemScores:
    """What one inference pass of a classifier gives per item.

    Attributes:
        logits: shape ``(n, 2)``, see :data:`Logits`.
        windows: shape ``(n,)``, token windows each item was cut into (1 for kinds that
            do not window).
        ood_distance: shape ``(n,)``, each item's distance from the training items as the
            classifier's :attr:`Classifier.ood` detector measures it; None without one.
        embeddings: shape ``(n, d)``, the item embeddings of the encoder kinds from the
            same forward passes (what their record retrieves with); None for other kinds.
    """

    logits: Logits
    windows: npt.NDArray[np.int64]
    ood_distance: npt.NDArray[np.float64] | None
    embeddings: npt.NDArray[np.float64] | None = None


def single_windows(logits: Logits) -> ItemScores:
    """:class:`ItemScores` of a kind that neither windows nor detects OOD inputs."""
    return ItemScores(logits, np.ones(len(logits), dtype=np.int64), None)


class Classifier(Protocol):
    """A fitted two-class classifier over model inputs: what a saved model loads.

    Implementations own their inference and persistence (like setfit's model object);
    fitting (:class:`imr_outcome.train.pipeline.Estimator`), training loops, tracking and
    calibration live in training.
    """

    #: Name of the kind, as written in configs and in ``imr_model.json``.
    kind: ClassVar[str]
    #: Whether the kind reads the request / the case summary (warnings about text a
    #: model ignores are noise).
    reads_request: ClassVar[bool]
    reads_summary: ClassVar[bool]
    #: Out-of-distribution detector fitted on the training items, or None.
    ood: MahalanobisOod | None

    def logits(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> Logits:
        """Scores for each input, shape ``(n, 2)``; softmax of a row is the raw probability."""
        ...

    def score_items(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> ItemScores:
        """Logits, windows per item and OOD distances from one inference pass."""
        ...

    def save(self, directory: Path) -> None:
        """Write everything needed by :meth:`load` into ``directory`` (created if missing)."""
        ...

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a classifier written by :meth:`save`."""
        ...


#: Columns of the DataFrame the scikit-learn kinds fit on (the pyfunc's input columns):
#: the request, the case summary, then the pre-filing metadata (any may be missing).
FRAME_COLUMNS: tuple[str, ...] = ("request", "summary", *PREFILING_FIELDS)


def model_frame(
    inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None = None
) -> pd.DataFrame:
    """The DataFrame of :data:`FRAME_COLUMNS` that ``inputs`` were built from.

    Args:
        inputs: n model inputs; their caller's request and summary become the text columns.
        metadata: n pre-filing metadata dicts, or None (every metadata cell None).

    Returns:
        Shape ``(n, len(FRAME_COLUMNS))``, object columns.
    """
    rows = metadata if metadata is not None else [{}] * len(inputs)
    return pd.DataFrame(
        {
            "request": [item.caller_request for item in inputs],
            "summary": [item.caller_summary for item in inputs],
            **{name: [row.get(name) for row in rows] for name in PREFILING_FIELDS},
        },
        dtype=object,
    )


@functools.lru_cache(maxsize=16384)
def _cached_input(request: str, summary: str, metadata: tuple[tuple[str, Any], ...]) -> ModelInput:
    return build_model_input(request, summary, dict(metadata))


def frame_inputs(X: pd.DataFrame) -> tuple[list[ModelInput], list[dict[str, MetadataValue]]]:
    """Model inputs and metadata of a :data:`FRAME_COLUMNS` DataFrame (the inverse of
    :func:`model_frame`); built with ``build_model_input`` and cached, since grid search
    and cross-validation read the same rows many times.

    Raises:
        InvalidInputError: no ``request`` column, a column not in :data:`FRAME_COLUMNS`
            (post-filing fields never reach a model), an empty request, or bad metadata.
    """
    if not isinstance(X, pd.DataFrame) or "request" not in X.columns:
        raise InvalidInputError(
            "X", f"expected a DataFrame with columns {list(FRAME_COLUMNS)}; see model_frame()"
        )
    unknown = sorted(set(map(str, X.columns)) - set(FRAME_COLUMNS))
    if unknown:
        raise InvalidInputError(
            "X", f"unknown or post-filing column(s) {unknown}; allowed: {list(FRAME_COLUMNS)}"
        )
    n = len(X)
    summaries = X["summary"].tolist() if "summary" in X.columns else [""] * n
    present = [name for name in PREFILING_FIELDS if name in X.columns]
    metadata: list[dict[str, MetadataValue]] = [
        {name: coerce_metadata_value(name, X[name].iloc[i]) for name in present} for i in range(n)
    ]
    inputs = [
        _cached_input(str(request), "" if summary is None else str(summary), tuple(meta.items()))
        for request, summary, meta in zip(X["request"].tolist(), summaries, metadata, strict=True)
    ]
    return inputs, metadata


class SklearnKind(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A classifier kind that is a scikit-learn estimator (``majority``, ``tfidf_lr``,
    ``metadata_lr``).

    ``fit(X, y)`` takes X, a DataFrame of :data:`FRAME_COLUMNS` (the pyfunc's input), and
    y of shape (n,) in {0, 1}; ``decision_function`` gives the log-odds of Overturned,
    ``predict_proba`` their sigmoid, and ``get_params``/``set_params``/``sklearn.base.clone``
    work from the constructor's keyword arguments, so ``GridSearchCV`` and
    ``cross_val_predict`` compose it. Serving calls :meth:`logits` on model inputs, as for
    every :class:`Classifier`. A subclass builds its unfitted scikit-learn estimator
    (:meth:`_make_estimator`) and the features it reads (:meth:`_features`); the fitted
    one is ``estimator_``. Saved whole with joblib: load only model directories you trust.
    """

    kind: ClassVar[str]
    reads_request: ClassVar[bool] = True
    reads_summary: ClassVar[bool] = True
    #: No out-of-distribution detector.
    ood: MahalanobisOod | None = None
    #: Whether :meth:`fit` needs both labels present.
    _needs_both_classes: ClassVar[bool] = True
    #: The file :meth:`save` writes into its directory.
    MODEL_FILE: ClassVar[str] = "model.joblib"

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        raise NotImplementedError

    def _make_estimator(self, features: Any) -> Any:
        """The unfitted scikit-learn estimator for these training features."""
        raise NotImplementedError

    def _log_odds(self, features: Any) -> npt.NDArray[np.float64]:
        """Log-odds of Overturned from the fitted estimator, shape (n,)."""
        return np.asarray(self._fitted().decision_function(features), dtype=np.float64)

    def fit(self, X: pd.DataFrame, y: npt.ArrayLike) -> Self:
        """Fit on a DataFrame of :data:`FRAME_COLUMNS` and labels 0 (Upheld) / 1 (Overturned).

        Returns:
            self, with ``estimator_`` and ``classes_`` set.

        Raises:
            InvalidInputError: a label count other than ``len(X)``, one class only (for
                the logistic-regression kinds), or bad inputs.
        """
        inputs, metadata = frame_inputs(X)
        labels = as_labels(y, field="labels")
        if labels.size != len(inputs):
            raise InvalidInputError(
                "labels", f"expected one label per input ({len(inputs)}), found {labels.size}"
            )
        if self._needs_both_classes and labels.min() == labels.max():
            raise InvalidInputError(
                "labels",
                f"expected both {LABELS[0]} (0) and {LABELS[1]} (1) to fit a logistic "
                f"regression, found only {int(labels[0])}; use the majority kind or more data",
            )
        features = self._features(inputs, metadata)
        self.estimator_ = self._make_estimator(features).fit(features, labels)
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Log-odds of Overturned, shape (n,)."""
        inputs, metadata = frame_inputs(X)
        return self._log_odds(self._features(inputs, metadata))

    def predict_proba(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        """Raw (uncalibrated) probabilities, shape (n, 2), columns [Upheld, Overturned]."""
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: pd.DataFrame) -> npt.NDArray[np.int64]:
        """1 (Overturned) where the raw log-odds are positive, else 0."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def logits(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> Logits:
        """``[0, log-odds]`` rows, shape ``(n, 2)``; see :class:`Classifier`."""
        z = self._log_odds(self._features(inputs, metadata)) if inputs else np.zeros(0)
        return np.column_stack([np.zeros_like(z), z])

    def score_items(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> ItemScores:
        """Logits and one window per item; no OOD detector."""
        return single_windows(self.logits(inputs, metadata))

    def save(self, directory: Path) -> None:
        """Pickle the fitted estimator object with joblib into ``directory``.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit`.
        """
        self._fitted()
        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, directory / self.MODEL_FILE)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read what :meth:`save` wrote.

        Raises:
            ModelNotFoundError: no ``model.joblib`` in ``directory``.
            IncompatibleModelError: it cannot be unpickled or holds another kind.
        """
        path = directory / cls.MODEL_FILE
        if not path.is_file():
            raise ModelNotFoundError(f"{directory}: no {cls.MODEL_FILE}")
        try:
            loaded = joblib.load(path)
        except Exception as exc:  # unpickling can fail with any exception type
            raise IncompatibleModelError(
                f"{directory}: cannot unpickle {cls.MODEL_FILE} ({exc!r})"
            ) from exc
        if not isinstance(loaded, cls):
            raise IncompatibleModelError(
                f"{directory}: {cls.MODEL_FILE} holds a {type(loaded).__name__}, expected a "
                f"{cls.__name__}"
            )
        return loaded

    def _fitted(self) -> Any:
        estimator = getattr(self, "estimator_", None)
        if estimator is None:
            name = type(self).__name__
            raise NotFittedError(f"{name} is not fitted; call fit(X, y) or {name}.load(...)")
        return estimator


_KINDS: dict[str, Callable[[], type[Any]]] = {}


def register_kind(kind: str, loader: Callable[[], type[Any]]) -> None:
    """Register a classifier kind; ``loader`` imports and returns its class lazily.

    Lazy loading keeps ``import imr_outcome.model`` light: torch and transformers are
    imported only when a transformer kind is used.
    """
    _KINDS[kind] = loader


def classifier_class(kind: str) -> type[Any]:
    """The classifier class registered under ``kind``.

    Raises:
        IncompatibleModelError: when no such kind is registered.
    """
    if kind not in _KINDS:
        raise IncompatibleModelError(
            f"unknown classifier kind {kind!r}; known kinds: {sorted(_KINDS)}"
        )
    return _KINDS[kind]()


def _lazy(module: str, name: str) -> Callable[[], type[Any]]:
    def load() -> type[Any]:
        cls: type[Any] = getattr(importlib.import_module(module), name)
        return cls

    return load


register_kind("majority", _lazy("imr_outcome.model.baselines", "MajorityClassifier"))
register_kind("tfidf_lr", _lazy("imr_outcome.model.baselines", "TfidfLogReg"))
register_kind("two_stage", _lazy("imr_outcome.model.two_stage", "TwoStageLogReg"))
register_kind("metadata_lr", _lazy("imr_outcome.model.baselines", "MetadataLogReg"))
register_kind("frozen_encoder_lr", _lazy("imr_outcome.model.frozen_encoder", "FrozenEncoderLogReg"))
register_kind("transformer", _lazy("imr_outcome.model.transformer", "TransformerClassifier"))
