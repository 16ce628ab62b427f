"""Baseline classifiers: the training prior, TF-IDF + logistic regression, metadata only.

Every deep model has to beat these:

- ``"majority"`` (:class:`MajorityClassifier`): the Overturned rate of the training set
  for every item. Its AUROC is 0.5 by construction; its Brier score is the floor a useful
  model must get under.
- ``"tfidf_lr"`` (:class:`TfidfLogReg`): word n-gram TF-IDF (Salton & Buckley 1988,
  "Term-weighting approaches in automatic text retrieval", Information Processing &
  Management 24(5)) of the request segment and of the case summary, kept apart, then an
  L2-regularized logistic regression. Linear, so every prediction splits exactly into
  per-n-gram contributions (:meth:`TfidfLogReg.feature_contributions`), which the
  evidence module maps to character spans with :func:`ngram_spans`.
- ``"metadata_lr"`` (:class:`MetadataLogReg`): for the DMHC table, which has no case
  text: one-hot pre-filing metadata and the request category, then logistic regression.

All three keep their fitted state in one scikit-learn estimator, saved with joblib beside
a ``classifier.json`` that records the kind, the format version and the constructor
configs. Loading unpickles code: load only model directories you trust.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

import joblib
import numpy as np
import numpy.typing as npt
import sklearn
from pydantic import ValidationError
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from imr_outcome.data.counterfactuals import normalize_text
from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS, PREFILING_FIELDS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.arrays import as_labels
from imr_outcome.model.base import ItemScores, Logits, single_windows
from imr_outcome.model.settings import (
    MetadataConfig,
    ModelConfig,
    TfidfConfig,
    TrainingConfig,
    model_config,
)

if TYPE_CHECKING:
    from imr_outcome.model.ood import MahalanobisOod

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: The JSON file describing a saved classifier (kind, format version, configs).
CLASSIFIER_FILE = "classifier.json"
#: The fitted scikit-learn estimator, pickled with joblib.
MODEL_FILE = "model.joblib"
#: Bump when what :meth:`save` writes changes incompatibly.
FORMAT_VERSION = 1

#: The word pattern of scikit-learn's ``CountVectorizer``/``TfidfVectorizer`` default:
#: runs of two or more word characters. Set explicitly on the vectorizer so that
#: :func:`ngram_spans` tokenizes exactly as the model does.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_TOKEN_RE = re.compile(TOKEN_PATTERN)

#: Majority-class probabilities are clipped to this range so the log-odds stay finite
#: when the training set holds one class only.
PRIOR_CLIP: tuple[float, float] = (1e-6, 1.0 - 1e-6)

#: TF-IDF fields: feature-name prefix -> the ModelInput segment it reads. "request" is
#: segment A (the metadata prefix followed by the request), "summary" is segment B.
SEGMENTS: dict[str, str] = {"request": "text", "summary": "text_pair"}
#: Feature-name prefix of the one vocabulary over request + summary (``segments: joint``).
JOINT = "text"

#: Columns of the metadata model: the pre-filing fields, then the request category.
METADATA_COLUMNS: tuple[str, ...] = (*PREFILING_FIELDS, "request")

#: The value a missing (None or absent) metadata field is encoded as.
UNKNOWN = "unknown"


# ----------------------------------------------------------------------------- helpers


def _check_training_set(
    inputs: Sequence[ModelInput], labels: npt.ArrayLike, *, both_classes: bool
) -> npt.NDArray[np.int64]:
    """Validate labels against ``inputs``; returns them as int64, shape (n,)."""
    y = as_labels(labels, field="labels")
    if y.size != len(inputs):
        raise InvalidInputError(
            "labels", f"expected one label per input ({len(inputs)}), found {y.size}"
        )
    if both_classes and y.min() == y.max():
        raise InvalidInputError(
            "labels",
            f"expected both {LABELS[0]} (0) and {LABELS[1]} (1) to fit a logistic "
            f"regression, found only {int(y[0])}; use the majority kind or more data",
        )
    return y


def _logistic_regression(
    model: TfidfConfig | MetadataConfig, training: TrainingConfig
) -> LogisticRegression:
    """L2-regularized logistic regression (lbfgs), see the scikit-learn user guide §1.1.11.

    ``class_weight="balanced"`` weights class k by ``n / (2 * n_k)``, so both classes
    carry equal total weight (King & Zeng 2001, "Logistic Regression in Rare Events Data").
    """
    return LogisticRegression(
        C=model.c,
        class_weight="balanced" if training.class_weighted_loss else None,
        max_iter=5000,
        random_state=training.seed,
    )


def _two_class_logits(log_odds: FloatArray) -> Logits:
    """``[0, z]`` rows, shape (n, 2): softmax gives ``[1 - sigmoid(z), sigmoid(z)]``."""
    z = np.asarray(log_odds, dtype=np.float64).reshape(-1)
    return np.column_stack([np.zeros_like(z), z])


def _tokens_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """The analyzer's words of ``text`` with their character offsets in ``text``.

    The vectorizer lowercases the whole string, then finds :data:`TOKEN_PATTERN`.
    Lowercasing can lengthen a character (``"İ"`` becomes ``"i̇"``, two code points), so
    each lowered character is mapped back to the original character it came from.

    Returns:
        ``(word, start, end)`` per word, in text order: ``word`` is lowercase as the
        analyzer sees it, and ``text[start:end]`` is the original text it was read from.
    """
    parts = [char.lower() for char in text]
    lowered = text.lower()
    if len(lowered) != sum(len(part) for part in parts):  # context rules; not in CPython
        lowered = "".join(parts)
    origin = [i for i, part in enumerate(parts) for _ in part]
    return [
        (m.group(), origin[m.start()], origin[m.end() - 1] + 1) for m in _TOKEN_RE.finditer(lowered)
    ]


def ngram_spans(text: str, ngram: str) -> list[tuple[int, int]]:
    """Character spans of every occurrence of a TF-IDF n-gram in ``text``.

    Words are found as :class:`TfidfVectorizer` finds them (lowercase, then
    :data:`TOKEN_PATTERN`), so an n-gram matches wherever the model counted it: across
    any whitespace, punctuation or one-letter words between its words, and overlapping
    occurrences are all returned.

    Args:
        text: a model-input segment (``ModelInput.text`` or ``ModelInput.text_pair``).
        ngram: a feature's n-gram, its words separated by single spaces (as in
            :meth:`TfidfLogReg.feature_contributions`); case does not matter.

    Returns:
        ``(start, end)`` character offsets into ``text``, in text order; ``text[start:end]``
        runs from the first character of the first word to the last character of the
        last word. When the n-gram is not in ``text`` itself, it is looked up in the
        normalised text of :func:`normalized_lowercase` and each match is mapped back with
        ``NormalizedText.to_source_span`` (a span covering a rewritten phrase covers the
        whole original phrase). Empty when the n-gram occurs in neither.

    Raises:
        InvalidInputError: ``ngram`` holds no word of two or more word characters.
    """
    wanted = [word for word, _, _ in _tokens_with_offsets(ngram)]
    if not wanted:
        raise InvalidInputError(
            "ngram", f"expected words of two or more letters or digits, found {ngram!r}"
        )
    found = _find_words(text, wanted)
    if found:
        return found
    # A feature of a normalising model (model.normalize): find it in the normalised text
    # and map it back, so "patient" highlights the caller's "injured worker".
    normalized = normalize_text(text, dates=True, sex=True)
    if normalized.text == text:
        return []
    spans = {normalized.to_source_span(*span) for span in _find_words(normalized.text, wanted)}
    return sorted(spans)


def _find_words(text: str, wanted: list[str]) -> list[tuple[int, int]]:
    """Spans of every run of tokens of ``text`` equal to ``wanted``."""
    tokens = _tokens_with_offsets(text)
    words = [word for word, _, _ in tokens]
    n = len(wanted)
    return [
        (tokens[i][1], tokens[i + n - 1][2])
        for i in range(len(tokens) - n + 1)
        if words[i : i + n] == wanted
    ]


def _metadata_feature_name(column: str, category: object) -> str:
    """One-hot feature names ``"imr_type=Medical Necessity"`` (module level: picklable)."""
    return f"{column}={category}"


# ------------------------------------------------------------------------- shared base


class _SklearnClassifier:
    """Shared fitting, validation and persistence of the baselines.

    Subclasses set :attr:`kind`, build a fresh estimator, and turn inputs into the
    estimator's feature matrix. The fitted estimator is :attr:`estimator_` (None before
    :meth:`fit` or :meth:`load`).

    Args:
        model: the model section of the run config (n-gram range, ``min_df``, ``C``).
        training: the training section (``class_weighted_loss``, ``seed``).
    """

    kind: ClassVar[str]
    reads_request: ClassVar[bool] = True
    reads_summary: ClassVar[bool] = True
    #: No out-of-distribution detector for linear baselines.
    ood: MahalanobisOod | None = None
    #: Whether :meth:`fit` needs both labels present.
    _needs_both_classes: ClassVar[bool] = True
    #: The type :meth:`load` expects to unpickle.
    _estimator_type: ClassVar[type[Any]] = Pipeline

    def __init__(self, model: ModelConfig, training: TrainingConfig) -> None:
        self.model = model
        self.training = training
        self.estimator_: Any | None = None

    # -- to implement

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        raise NotImplementedError

    def _fit_estimator(self, features: Any, y: npt.NDArray[np.int64]) -> Any:
        raise NotImplementedError

    def _log_odds(self, estimator: Any, features: Any) -> FloatArray:
        return np.asarray(estimator.decision_function(features), dtype=np.float64)

    # -- the Classifier protocol

    def fit(
        self,
        inputs: Sequence[ModelInput],
        labels: npt.NDArray[np.int64],
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> Self:
        """Train on ``inputs`` with labels 0 (Upheld) / 1 (Overturned).

        Args:
            inputs: model inputs, length n >= 1.
            labels: shape (n,), values in {0, 1}; the logistic-regression kinds need both.
            metadata: length n pre-filing metadata dicts; only ``metadata_lr`` reads it.

        Returns:
            self, fitted (:attr:`estimator_` set).

        Raises:
            InvalidInputError: labels of the wrong length or values, one class only (for
                the logistic-regression kinds), or bad metadata / empty vocabulary.
        """
        y = _check_training_set(inputs, labels, both_classes=self._needs_both_classes)
        self.estimator_ = self._fit_estimator(self._features(inputs, metadata), y)
        logger.info("fitted %s on %d items (%d %s)", self.kind, y.size, int(y.sum()), LABELS[1])
        return self

    def logits(
        self,
        inputs: Sequence[ModelInput],
        metadata: Sequence[Mapping[str, Any]] | None = None,
    ) -> Logits:
        """Scores ``[0, log-odds of Overturned]``, shape (n, 2), float64.

        Softmax of a row is the raw (uncalibrated) ``[P(Upheld), P(Overturned)]``.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`load`.
            InvalidInputError: bad metadata (``metadata_lr``).
        """
        estimator = self._fitted()
        if len(inputs) == 0:
            return np.zeros((0, 2), dtype=np.float64)
        return _two_class_logits(self._log_odds(estimator, self._features(inputs, metadata)))

    def score_items(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> ItemScores:
        """:meth:`logits` with one window per item and no OOD distances."""
        return single_windows(self.logits(inputs, metadata))

    def save(self, directory: Path) -> None:
        """Write ``classifier.json`` and ``model.joblib`` into ``directory`` (created).

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        estimator = self._fitted()
        directory.mkdir(parents=True, exist_ok=True)
        description = {
            "kind": self.kind,
            "format_version": FORMAT_VERSION,
            "model": self.model.model_dump(mode="json"),
            "training": self.training.model_dump(mode="json"),
            "sklearn_version": sklearn.__version__,
        }
        (directory / CLASSIFIER_FILE).write_text(
            json.dumps(description, indent=2) + "\n", encoding="utf-8"
        )
        joblib.dump(estimator, directory / MODEL_FILE)
        logger.debug("saved %s classifier to %s", self.kind, directory)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a classifier written by :meth:`save`. Unpickles: trusted directories only.

        Raises:
            ModelNotFoundError: ``classifier.json`` or ``model.joblib`` is missing.
            IncompatibleModelError: unreadable files, another kind or format version,
                configs this code rejects, or an estimator of the wrong type; the message
                names ``directory`` and the reason.
        """
        for name in (CLASSIFIER_FILE, MODEL_FILE):
            if not (directory / name).is_file():
                raise ModelNotFoundError(
                    f"{directory}: no {name}; save a fitted classifier there first"
                )
        try:
            description = json.loads((directory / CLASSIFIER_FILE).read_text(encoding="utf-8"))
            kind, version = description["kind"], description["format_version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise IncompatibleModelError(
                f"{directory}: unreadable {CLASSIFIER_FILE} ({exc!r})"
            ) from exc
        if kind != cls.kind:
            raise IncompatibleModelError(
                f"{directory}: {CLASSIFIER_FILE} holds kind {kind!r}, expected {cls.kind!r}; "
                f"load it with the class registered for {kind!r}"
            )
        if version != FORMAT_VERSION:
            raise IncompatibleModelError(
                f"{directory}: {CLASSIFIER_FILE} has format version {version!r}, this code "
                f"reads {FORMAT_VERSION}; retrain or install the matching imr-outcome version"
            )
        try:
            model = model_config(description["model"])
            training = TrainingConfig.model_validate(description["training"])
        except (KeyError, ValidationError) as exc:
            raise IncompatibleModelError(
                f"{directory}: {CLASSIFIER_FILE} configs are not valid here ({exc})"
            ) from exc
        saved_version = description.get("sklearn_version")
        if saved_version != sklearn.__version__:
            logger.warning(
                "%s was saved with scikit-learn %s, this is %s; predictions may differ",
                directory,
                saved_version,
                sklearn.__version__,
            )
        try:
            estimator = joblib.load(directory / MODEL_FILE)
        except Exception as exc:  # unpickling can fail with any exception type
            raise IncompatibleModelError(
                f"{directory}: cannot unpickle {MODEL_FILE} ({exc!r})"
            ) from exc
        if not isinstance(estimator, cls._estimator_type):
            raise IncompatibleModelError(
                f"{directory}: {MODEL_FILE} holds a {type(estimator).__name__}, expected a "
                f"{cls._estimator_type.__name__}"
            )
        classifier = cls(model, training)
        classifier.estimator_ = estimator
        return classifier

    def _fitted(self) -> Any:
        if self.estimator_ is None:
            name = type(self).__name__
            raise NotFittedError(f"{name} is not fitted; call fit(...) or {name}.load(...)")
        return self.estimator_


# --------------------------------------------------------------------------- majority


class MajorityClassifier(_SklearnClassifier):
    """The training prior for every item (``DummyClassifier(strategy="prior")``).

    Logits are ``[0, log(p / (1 - p))]`` with ``p`` the training Overturned rate clipped to
    :data:`PRIOR_CLIP`, so softmax gives the prior. Fits on one class too.
    """

    kind: ClassVar[str] = "majority"
    reads_request: ClassVar[bool] = False
    reads_summary: ClassVar[bool] = False
    _needs_both_classes: ClassVar[bool] = False
    _estimator_type: ClassVar[type[Any]] = DummyClassifier

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        return np.zeros((len(inputs), 1))

    def _fit_estimator(self, features: Any, y: npt.NDArray[np.int64]) -> Any:
        return DummyClassifier(strategy="prior").fit(features, y)

    def _log_odds(self, estimator: Any, features: Any) -> FloatArray:
        p = float(np.clip(self.prior(), *PRIOR_CLIP))
        return np.full(features.shape[0], np.log(p / (1.0 - p)))

    def prior(self) -> float:
        """The training Overturned rate, in [0, 1] (unclipped).

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        estimator = self._fitted()
        classes = np.asarray(estimator.classes_)
        return float(np.asarray(estimator.class_prior_)[classes == 1].sum())


# ----------------------------------------------------------------------------- tf-idf


@functools.lru_cache(maxsize=8192)
def normalized_lowercase(text: str) -> str:
    """The TF-IDF preprocessor of ``model.normalize``: house style, date formats and the
    patient's sex normalised (:func:`imr_outcome.data.counterfactuals.normalize_text` with
    ``dates=True, sex=True``), then lowercased.

    The normalisation lives in the vectorizer, not in ``build_model_input``, so the text
    and offsets every other kind and the evidence code see are the caller's own. Evidence
    n-grams that exist only in normalised form (e.g. "patient" for "injured worker") are
    not found in the caller's text and give no span. Cached: cross-validation tokenizes
    the same items many times.
    """
    return normalize_text(text, dates=True, sex=True).text.lower()


#: Joins the request and the summary in the joint column; n-grams never cross it.
SEGMENT_SEPARATOR = "\x1e"


class JointAnalyzer:
    """Word 1..``ngram_max``-grams of each segment of a joined document, pooled.

    The segments (split on :data:`SEGMENT_SEPARATOR`) are analyzed exactly as a
    ``TfidfVectorizer`` with :data:`TOKEN_PATTERN` (lowercase, optionally
    :func:`normalized_lowercase`) would, so no n-gram spans the request/summary border
    and :func:`ngram_spans` finds every feature in one segment. Picklable.
    """

    def __init__(self, ngram_max: int, normalize: bool) -> None:
        self.ngram_max = ngram_max
        self.normalize = normalize

    def __getstate__(self) -> dict[str, Any]:
        return {"ngram_max": self.ngram_max, "normalize": self.normalize}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["ngram_max"], state["normalize"])  # type: ignore[misc]

    def __call__(self, document: str) -> list[str]:
        analyze = getattr(self, "_analyze", None)
        if analyze is None:
            analyze = self._analyze = TfidfVectorizer(
                lowercase=True,
                preprocessor=normalized_lowercase if self.normalize else None,
                token_pattern=TOKEN_PATTERN,
                ngram_range=(1, self.ngram_max),
            ).build_analyzer()
        return [gram for part in document.split(SEGMENT_SEPARATOR) for gram in analyze(part)]


class TfidfLogReg(_SklearnClassifier):
    """Word n-gram TF-IDF of the request and the summary, then logistic regression.

    ``segments: joint`` (default): one ``TfidfVectorizer`` over request + newline +
    summary; each feature is attributed to the segment it occurs in (the summary when in
    both). ``segments: separate``: each segment gets its own ``TfidfVectorizer`` (words
    1..``model.ngram_max``,
    ``min_df=model.min_df``, lowercase, ``tf = 1 + log(count)`` (``sublinear_tf``), smooth
    idf, rows L2-normalized; scikit-learn user guide §6.2.3.4), so "MRI" in the request and
    "MRI" in the summary are two features, ``request:mri`` and ``summary:mri``. The request
    segment is ``ModelInput.text``: the metadata prefix and the request. A segment empty in
    every training item (e.g. the summary of DMHC rows) is left out. The logistic
    regression is :func:`_logistic_regression` (``C=model.c``).

    Args:
        model: uses ``ngram_max``, ``min_df`` and ``c``.
        training: uses ``class_weighted_loss`` and ``seed``.
    """

    kind: ClassVar[str] = "tfidf_lr"

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        rows = np.empty((len(inputs), 3), dtype=object)
        rows[:, 0] = [item.text for item in inputs]
        rows[:, 1] = [item.text_pair for item in inputs]
        rows[:, 2] = [f"{item.text}{SEGMENT_SEPARATOR}{item.text_pair}" for item in inputs]
        return rows

    def _vectorizer(self) -> TfidfVectorizer:
        normalize = getattr(self.model, "normalize", False)  # False in older pickles
        return TfidfVectorizer(
            lowercase=True,
            preprocessor=normalized_lowercase if normalize else None,
            token_pattern=TOKEN_PATTERN,
            ngram_range=(1, cast(TfidfConfig, self.model).ngram_max),
            min_df=cast(TfidfConfig, self.model).min_df,
            sublinear_tf=True,
        )

    def _fit_estimator(self, features: Any, y: npt.NDArray[np.int64]) -> Any:
        if getattr(self.model, "segments", "separate") == "joint":
            model = cast(TfidfConfig, self.model)
            joint = TfidfVectorizer(
                analyzer=JointAnalyzer(model.ngram_max, model.normalize),
                min_df=model.min_df,
                sublinear_tf=True,
            )
            fields = [(JOINT, joint, 2)]
        else:
            fields = [
                (prefix, self._vectorizer(), column)
                for column, prefix in enumerate(SEGMENTS)
                if any(_TOKEN_RE.search(text) for text in features[:, column])
            ]
        if not fields:
            raise InvalidInputError(
                "inputs", "no request or summary holds a word; nothing to learn from"
            )
        tfidf = ColumnTransformer(
            fields,
            sparse_threshold=1.0,
            verbose_feature_names_out="{transformer_name}:{feature_name}",
        )
        try:
            matrix = tfidf.fit_transform(features)
        except ValueError as exc:  # empty vocabulary after min_df pruning
            raise InvalidInputError(
                "model.min_df",
                f"no n-gram is left in the vocabulary ({exc}); lower model.min_df "
                f"(now {cast(TfidfConfig, self.model).min_df}) or train on more items",
            ) from exc
        logreg = _logistic_regression(cast(TfidfConfig, self.model), self.training)
        logreg = logreg.fit(matrix, y)
        logger.debug("tf-idf vocabulary: %d features", matrix.shape[1])
        return Pipeline([("tfidf", tfidf), ("logreg", logreg)])

    def feature_names(self) -> list[str]:
        """Feature names in column order: ``"request:<n-gram>"`` then ``"summary:<n-gram>"``.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        return [str(name) for name in self._fitted()["tfidf"].get_feature_names_out()]

    @property
    def intercept(self) -> float:
        """The logistic regression's intercept, in log-odds of Overturned."""
        return float(self._fitted()["logreg"].intercept_[0])

    def feature_contributions(self, item: ModelInput) -> list[tuple[str, str, float]]:
        """Split one item's log-odds of Overturned into per-n-gram contributions.

        A contribution is coefficient x tf-idf weight; the contributions of the item's
        n-grams plus :attr:`intercept` sum to its logit ``logits([item])[0, 1]`` (up to
        rounding). Positive contributions push towards Overturned.

        Args:
            item: one model input.

        Returns:
            ``(segment, ngram, contribution)`` for every n-gram of the vocabulary present in
            ``item``, largest ``|contribution|`` first; ``segment`` is ``"text"`` or
            ``"text_pair"`` (the ModelInput field to pass to :func:`ngram_spans`),
            ``ngram`` its lowercase words joined by single spaces.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        pipeline = self._fitted()
        row = sparse.csr_matrix(pipeline["tfidf"].transform(self._features([item], None)))
        coefficients = np.asarray(pipeline["logreg"].coef_[0], dtype=np.float64)
        names = self.feature_names()
        found: list[tuple[str, str, float]] = []
        for column, weight in zip(row.indices, row.data, strict=True):
            prefix, _, ngram = names[column].partition(":")
            if prefix == JOINT:  # one vocabulary: the segment where the n-gram occurs
                prefix = "summary" if ngram_spans(item.text_pair, ngram) else "request"
            found.append((SEGMENTS[prefix], ngram, float(coefficients[column] * weight)))
        found.sort(key=lambda entry: abs(entry[2]), reverse=True)
        return found


# --------------------------------------------------------------------------- metadata


class MetadataLogReg(_SklearnClassifier):
    """One-hot pre-filing metadata and the request category, then logistic regression.

    Meant for the DMHC table, whose request is a category (``"TreatmentCategory:
    SubCategory"``) and which has no case text. Columns are :data:`METADATA_COLUMNS`: each
    pre-filing field (absent or None is ``"unknown"``; ages are categories too) and the
    request (``text[request_offset:]``, stripped). ``OneHotEncoder(handle_unknown="ignore")``
    encodes a category unseen in training as all zeros, so it adds nothing to the logit.

    Args:
        model: uses ``c``.
        training: uses ``class_weighted_loss`` and ``seed``.
    """

    kind: ClassVar[str] = "metadata_lr"
    reads_summary: ClassVar[bool] = False

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        if metadata is None:
            raise InvalidInputError(
                "metadata",
                f"the {self.kind} kind needs one pre-filing metadata dict per input; "
                "pass metadata=[...] or use a text kind",
            )
        if len(metadata) != len(inputs):
            raise InvalidInputError(
                "metadata",
                f"expected one metadata dict per input ({len(inputs)}), found {len(metadata)}",
            )
        rows = np.empty((len(inputs), len(METADATA_COLUMNS)), dtype=object)
        for i, (item, values) in enumerate(zip(inputs, metadata, strict=True)):
            unknown = sorted(set(values) - set(PREFILING_FIELDS))
            if unknown:
                raise InvalidInputError(
                    "metadata",
                    f"row {i}: unknown or post-filing field(s) {unknown}; allowed: "
                    f"{list(PREFILING_FIELDS)}",
                )
            rows[i, :-1] = [
                UNKNOWN if values.get(name) is None else str(values[name])
                for name in PREFILING_FIELDS
            ]
            rows[i, -1] = item.text[item.request_offset :].strip()
        return rows

    def _fit_estimator(self, features: Any, y: npt.NDArray[np.int64]) -> Any:
        encoder = OneHotEncoder(
            handle_unknown="ignore", feature_name_combiner=_metadata_feature_name
        )
        pipeline = Pipeline(
            [
                ("onehot", encoder),
                ("logreg", _logistic_regression(cast(MetadataConfig, self.model), self.training)),
            ]
        )
        return pipeline.fit(features, y)

    def feature_names(self) -> list[str]:
        """Feature names in column order, e.g. ``"imr_type=Medical Necessity"``.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        encoder = self._fitted()["onehot"]
        return [str(name) for name in encoder.get_feature_names_out(list(METADATA_COLUMNS))]
