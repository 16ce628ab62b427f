"""Baseline classifiers: the training prior, TF-IDF + logistic regression, metadata only.

Every deep model has to beat these. Each is a scikit-learn estimator
(:class:`~imr_outcome.model.base.SklearnKind`: ``fit(X, y)`` on a DataFrame of request,
summary and metadata, ``predict_proba``, ``get_params``/``clone``) composed of
scikit-learn's own parts:

- ``"majority"`` (:class:`MajorityClassifier`): ``DummyClassifier(strategy="prior")``, the
  Overturned rate of the training set for every item. Its AUROC is 0.5 by construction;
  its Brier score is the floor a useful model must get under.
- ``"tfidf_lr"`` (:class:`TfidfLogReg`): word n-gram TF-IDF (Salton & Buckley 1988,
  "Term-weighting approaches in automatic text retrieval", Information Processing &
  Management 24(5)) of the request and the case summary, then an L2-regularized logistic
  regression. Linear, so every prediction splits exactly into per-n-gram contributions
  (:meth:`TfidfLogReg.feature_contributions`), which the evidence module maps to character
  spans with :func:`imr_outcome.model.ngrams.ngram_spans`.
  With ``weighting="nb"`` the n-grams are binary and scaled by their naive Bayes
  log-count ratio before the regression (NB-LR, :class:`NaiveBayesScaling`). With
  ``guideline_prior=True`` one more feature, ``guideline:mtus_restricted``, says whether
  the request names a drug of a class the MTUS guidelines restrict
  (:func:`~imr_outcome.data.drugs.mtus_restricted_drug`); the regression fits its weight.
- ``"metadata_lr"`` (:class:`MetadataLogReg`): for the DMHC table, which has no case
  text: one-hot pre-filing metadata and the request category, then logistic regression.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from imr_outcome.data.drugs import mtus_restricted_drug
from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import PREFILING_FIELDS
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.base import SklearnKind
from imr_outcome.model.ngrams import (
    _TOKEN_RE,
    SEGMENT_SEPARATOR,
    TOKEN_PATTERN,
    JointAnalyzer,
    ngram_spans,
    normalized_lowercase,
)

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: Majority-class probabilities are clipped to this range so the log-odds stay finite
#: when the training set holds one class only.
PRIOR_CLIP: tuple[float, float] = (1e-6, 1.0 - 1e-6)

#: TF-IDF fields: feature-name prefix -> the ModelInput segment it reads. "request" is
#: segment A (the metadata prefix followed by the request), "summary" is segment B.
SEGMENTS: dict[str, str] = {"request": "text", "summary": "text_pair"}
#: Feature-name prefix of the one vocabulary over request + summary (``segments: joint``).
JOINT = "text"
#: Feature-name prefix of the guideline prior (``guideline_prior``), read from the request.
GUIDELINE = "guideline"
#: The guideline prior's one feature name (after its prefix).
MTUS_RESTRICTED_FEATURE = "mtus_restricted"

#: Columns of the metadata model: the pre-filing fields, then the request category.
METADATA_COLUMNS: tuple[str, ...] = (*PREFILING_FIELDS, "request")

#: The value a missing (None or absent) metadata field is encoded as.
UNKNOWN = "unknown"


def _logistic_regression(c: float, class_weighted: bool, seed: int) -> LogisticRegression:
    """L2-regularized logistic regression (lbfgs), see the scikit-learn user guide §1.1.11.

    ``class_weight="balanced"`` weights class k by ``n / (2 * n_k)``, so both classes
    carry equal total weight (King & Zeng 2001, "Logistic Regression in Rare Events Data").
    """
    return LogisticRegression(
        C=c,
        class_weight="balanced" if class_weighted else None,
        max_iter=5000,
        random_state=seed,
    )


def _metadata_feature_name(column: str, category: object) -> str:
    """One-hot feature names ``"imr_type=Medical Necessity"`` (module level: picklable)."""
    return f"{column}={category}"


class MajorityClassifier(SklearnKind):
    """The training prior for every item (``DummyClassifier(strategy="prior")``).

    The log-odds are ``log(p / (1 - p))`` with ``p`` the training Overturned rate clipped
    to :data:`PRIOR_CLIP`, so softmax of the logits gives the prior. Fits on one class too.
    """

    kind: ClassVar[str] = "majority"
    reads_request: ClassVar[bool] = False
    reads_summary: ClassVar[bool] = False
    _needs_both_classes: ClassVar[bool] = False

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        return np.zeros((len(inputs), 1))

    def _make_estimator(self, features: Any) -> Any:
        return DummyClassifier(strategy="prior")

    def _log_odds(self, features: Any) -> FloatArray:
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


class NaiveBayesScaling(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Scale features by their naive Bayes log-count ratio (the NB in NB-LR).

    ``r = log((p / |p|_1) / (q / |q|_1))`` with ``p = alpha +`` the feature sums over the
    Overturned rows and ``q`` the same over the Upheld rows: Wang & Manning (2012),
    "Baselines and Bigrams: Simple, Good Sentiment and Topic Classification", ACL,
    section 2.1, who feed binary n-grams scaled by ``r`` to a linear classifier.

    Args:
        alpha: additive smoothing of the counts, > 0.

    Attributes:
        ratio_: ``r``, shape ``(n_features,)``, set by :meth:`fit`.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, X: Any, y: npt.ArrayLike) -> Self:
        """Compute ``ratio_`` from ``X`` (shape ``(n, n_features)``, >= 0) and 0/1 ``y``."""
        labels = np.asarray(y)
        p = self.alpha + np.asarray(X[labels == 1].sum(axis=0)).ravel()
        q = self.alpha + np.asarray(X[labels == 0].sum(axis=0)).ravel()
        self.ratio_ = np.log((p / p.sum()) / (q / q.sum()))
        return self

    def transform(self, X: Any) -> sparse.csr_matrix:
        """``X * ratio_`` column-wise, as a sparse matrix of ``X``'s shape."""
        return sparse.csr_matrix(X).multiply(self.ratio_).tocsr()


#: scikit-learn's ValueErrors for a vocabulary that min_df (or no words at all) emptied.
_EMPTY_VOCABULARY = re.compile(r"empty vocabulary|no terms remain", re.IGNORECASE)


def mtus_restricted_column(requests: npt.NDArray[Any]) -> sparse.csr_matrix:
    """1.0 where a request names an MTUS-restricted drug, else 0.0: shape ``(n, 1)``
    (module level, so a fitted pipeline pickles)."""
    flags = [float(mtus_restricted_drug(str(request)) is not None) for request in requests]
    return sparse.csr_matrix(np.asarray(flags, dtype=np.float64).reshape(-1, 1))


def _mtus_restricted_name(transformer: Any, names: Any) -> list[str]:
    return [MTUS_RESTRICTED_FEATURE]


class TfidfLogReg(SklearnKind):
    """Word n-gram TF-IDF of the request and the summary, then logistic regression.

    ``segments="joint"`` (default): one ``TfidfVectorizer`` over request + summary (split
    by :class:`~imr_outcome.model.ngrams.JointAnalyzer`, so no n-gram crosses them); each
    feature is attributed to the segment it occurs in (the summary when in both).
    ``segments="separate"``: each segment gets its own ``TfidfVectorizer``, so "MRI" in
    the request and in the summary are two features, ``request:mri`` and ``summary:mri``;
    a segment empty in every training item (e.g. the summary of DMHC rows) is left out.
    ``segments="summary"``: the summary alone, so every item of one letter gets the same
    score (the letter stage of ``two_stage``, where another stage reads the request).
    Vectorizers: words 1..``ngram_max``, ``min_df``, lowercase, ``tf = 1 + log(count)``
    (``sublinear_tf``), smooth idf, rows L2-normalized (scikit-learn user guide §6.2.3.4);
    with ``weighting="nb"`` binary presence instead, scaled by :class:`NaiveBayesScaling`.
    ``guideline_prior=True`` adds the column of :func:`mtus_restricted_column` (feature
    ``guideline:mtus_restricted``), so that items of one letter differ by what was
    requested even when ``segments="summary"``.

    Args:
        c: inverse L2 regularization strength of the logistic regression, > 0.
        ngram_max: longest word n-gram, 1-3.
        min_df: minimum document frequency of an n-gram, >= 1.
        segments: ``"joint"``, ``"separate"`` or ``"summary"``.
        normalize: read text through
            :func:`~imr_outcome.model.ngrams.normalized_lowercase` (house style, dates, sex).
        class_weighted: ``class_weight="balanced"``.
        seed: the logistic regression's ``random_state``.
        weighting: ``"tfidf"`` or ``"nb"`` (binary n-grams times their NB log-count ratio).
        guideline_prior: add the MTUS restricted-drug feature of the request.
    """

    kind: ClassVar[str] = "tfidf_lr"

    def __init__(
        self,
        c: float = 1.0,
        ngram_max: int = 2,
        min_df: int = 2,
        segments: Literal["joint", "separate", "summary"] = "joint",
        normalize: bool = True,
        class_weighted: bool = True,
        seed: int = 13,
        weighting: Literal["tfidf", "nb"] = "tfidf",
        guideline_prior: bool = False,
    ) -> None:
        self.c = c
        self.ngram_max = ngram_max
        self.min_df = min_df
        self.segments = segments
        self.normalize = normalize
        self.class_weighted = class_weighted
        self.seed = seed
        self.weighting = weighting
        self.guideline_prior = guideline_prior

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        rows = np.empty((len(inputs), 3), dtype=object)
        rows[:, 0] = [item.text for item in inputs]
        rows[:, 1] = [item.text_pair for item in inputs]
        rows[:, 2] = [f"{item.text}{SEGMENT_SEPARATOR}{item.text_pair}" for item in inputs]
        return rows

    def _make_estimator(self, features: Any) -> Any:
        if self.segments == "joint":
            joint = self._vectorizer(analyzer=JointAnalyzer(self.ngram_max, self.normalize))
            fields = [(JOINT, joint, 2)]
        else:
            read = ("summary",) if self.segments == "summary" else tuple(SEGMENTS)
            fields = [
                (prefix, self._vectorizer(), column)
                for column, prefix in enumerate(SEGMENTS)
                if prefix in read and any(_TOKEN_RE.search(text) for text in features[:, column])
            ]
        if not fields:
            raise InvalidInputError(
                "inputs", "no request or summary holds a word; nothing to learn from"
            )
        if self.guideline_prior:
            prior = FunctionTransformer(
                mtus_restricted_column, feature_names_out=_mtus_restricted_name
            )
            fields.append((GUIDELINE, prior, 0))
        tfidf = ColumnTransformer(
            fields,
            sparse_threshold=1.0,
            verbose_feature_names_out="{transformer_name}:{feature_name}",
        )
        logreg = _logistic_regression(self.c, self.class_weighted, self.seed)
        scaling = [("nb", NaiveBayesScaling())] if self.weighting == "nb" else []
        return Pipeline([("tfidf", tfidf), *scaling, ("logreg", logreg)])

    def fit(self, X: pd.DataFrame, y: npt.ArrayLike) -> Self:
        """See :meth:`~imr_outcome.model.base.SklearnKind.fit`; the vocabulary comes from X.

        Raises:
            InvalidInputError: no word in any request or summary, or ``min_df`` prunes
                every n-gram (field ``model.min_df``), besides the base class's errors.
        """
        try:
            return super().fit(X, y)
        except InvalidInputError:
            raise
        except ValueError as exc:
            if not _EMPTY_VOCABULARY.search(str(exc)):
                raise
            raise InvalidInputError(
                "model.min_df",
                f"no n-gram is left in the vocabulary ({exc}); lower model.min_df "
                f"(now {self.min_df}) or train on more items",
            ) from exc

    def _vectorizer(self, analyzer: JointAnalyzer | None = None) -> CountVectorizer:
        """TF-IDF (or, for NB-LR, binary counts) of words, or of ``analyzer``'s n-grams."""
        if analyzer is not None:
            words: dict[str, Any] = {"analyzer": analyzer}
        else:
            words = {
                "preprocessor": normalized_lowercase if self.normalize else None,
                "token_pattern": TOKEN_PATTERN,
                "ngram_range": (1, self.ngram_max),
            }
        if self.weighting == "nb":
            return CountVectorizer(min_df=self.min_df, binary=True, **words)
        return TfidfVectorizer(min_df=self.min_df, sublinear_tf=True, **words)

    def feature_names(self) -> list[str]:
        """Feature names in column order: ``"request:<n-gram>"`` then ``"summary:<n-gram>"``.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        return [str(name) for name in self._letter_pipeline()["tfidf"].get_feature_names_out()]

    def _letter_pipeline(self) -> Any:
        """The fitted TF-IDF -> logistic regression pipeline (a stage of ``two_stage``)."""
        return self._fitted()

    @property
    def intercept(self) -> float:
        """The logistic regression's intercept, in log-odds of Overturned."""
        return float(self._letter_pipeline()["logreg"].intercept_[0])

    def feature_contributions(self, item: ModelInput) -> list[tuple[str, str, float]]:
        """Split one item's log-odds of Overturned into per-n-gram contributions.

        A contribution is coefficient x tf-idf weight (x the NB ratio under NB-LR); the
        contributions of the item's n-grams plus :attr:`intercept` sum to its logit
        ``logits([item])[0, 1]`` (up to rounding). Positive contributions push towards Overturned.

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
        pipeline = self._letter_pipeline()
        row = sparse.csr_matrix(pipeline[:-1].transform(self._features([item], None)))
        coefficients = np.asarray(pipeline["logreg"].coef_[0], dtype=np.float64)
        names = self.feature_names()
        found: list[tuple[str, str, float]] = []
        for column, weight in zip(row.indices, row.data, strict=True):
            prefix, _, ngram = names[column].partition(":")
            if prefix == GUIDELINE:  # the drug name that set the feature
                drug = mtus_restricted_drug(item.text)
                ngram = " ".join(_TOKEN_RE.findall(drug.group().lower())) if drug else ngram
                prefix = "request"
            elif prefix == JOINT:  # one vocabulary: the segment where the n-gram occurs
                prefix = "summary" if ngram_spans(item.text_pair, ngram) else "request"
            found.append((SEGMENTS[prefix], ngram, float(coefficients[column] * weight)))
        found.sort(key=lambda entry: abs(entry[2]), reverse=True)
        return found


class MetadataLogReg(SklearnKind):
    """One-hot pre-filing metadata and the request category, then logistic regression.

    Meant for the DMHC table, whose request is a category (``"TreatmentCategory:
    SubCategory"``) and which has no case text. Columns are :data:`METADATA_COLUMNS`: each
    pre-filing field (absent or None is ``"unknown"``; ages are categories too) and the
    request (``text[request_offset:]``, stripped). ``OneHotEncoder(handle_unknown="ignore")``
    encodes a category unseen in training as all zeros, so it adds nothing to the logit.

    Args:
        c: inverse L2 regularization strength, > 0.
        class_weighted: ``class_weight="balanced"``.
        seed: the logistic regression's ``random_state``.
    """

    kind: ClassVar[str] = "metadata_lr"
    reads_summary: ClassVar[bool] = False

    def __init__(self, c: float = 1.0, class_weighted: bool = True, seed: int = 13) -> None:
        self.c = c
        self.class_weighted = class_weighted
        self.seed = seed

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

    def _make_estimator(self, features: Any) -> Any:
        encoder = OneHotEncoder(
            handle_unknown="ignore", feature_name_combiner=_metadata_feature_name
        )
        logreg = _logistic_regression(self.c, self.class_weighted, self.seed)
        return Pipeline([("onehot", encoder), ("logreg", logreg)])

    def feature_names(self) -> list[str]:
        """Feature names in column order, e.g. ``"imr_type=Medical Necessity"``.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        encoder = self._fitted()["onehot"]
        return [str(name) for name in encoder.get_feature_names_out(list(METADATA_COLUMNS))]
