"""The two-stage kind (``two_stage``): a letter score, then an item-level adjustment from
what was requested.

Every item of a letter shares one case summary, so a text model scores them nearly alike
(issue 22: within-letter spread 0.0075). The request is what tells them apart, and words
alone teach that poorly on a few hundred items. This kind stacks two logistic regressions
(Wolpert 1992, "Stacked generalization", Neural Networks 5(2)) with scikit-learn's
``StackingClassifier``:

- the **letter stage**: :class:`~imr_outcome.model.baselines.TfidfLogReg`'s pipeline over
  request + summary (the same vectorizer and settings);
- the **item stage**, one of (``item_stage``):

  - ``"request_features"``: the request structure features of
    :func:`~imr_outcome.data.request_features.request_features` (request category, drug
    class, relation to surgery, retrospective), one-hot by ``DictVectorizer``, then a
    logistic regression: a guideline-shaped prior for the kind of item requested;
  - ``"encoder"``: frozen mean-pooled sentence embeddings of request + summary
    (:class:`~imr_outcome.model.frozen_encoder.FrozenEmbeddings`, e.g.
    all-mpnet-base-v2), standardized, then a logistic regression. With the letter stage
    on the summary alone (``segments: summary``), every item of a letter shares the
    letter score and only this stage orders them;
- a logistic regression over the two stages' out-of-fold log-odds, its weights held
  non-negative (:class:`NonNegativeLogisticRegression`; Breiman 1996, "Stacked
  regressions", Machine Learning 24(1): unconstrained stacking weights are unstable on
  correlated inputs). The inner folds are grouped by case summary (the items of one letter
  share it), so no letter's items score each other's stage inputs.

With ``item_centring="letter"`` the item stage's log-odds are centred on the mean over the
items of the same letter (same case summary) scored in one call, not on the training
mean: the item stage then only reorders a letter's items, as the conditional fit of its
weight assumes, and cannot move one letter against another. Every item of a letter must
then be scored in one call (``evaluate``'s held-out folds, ``predict --letter``, ``POST
/v1/letters``, the pyfunc given a letter's rows); a lone item gets the letter stage's
score. Batch files (32 rows a call) and Spark (Arrow batches) score in slices that can
split a letter, so this option is for measuring, not yet for those paths.

Evidence stays the letter stage's n-gram contributions, scaled by its stacking weight
(:meth:`TwoStageLogReg.feature_contributions`); the request stage's share of the log-odds
is :meth:`TwoStageLogReg.request_share`. Only pre-filing text is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import StackingClassifier
from sklearn.feature_extraction import DictVectorizer
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import FunctionTransformer, Pipeline
from sklearn.preprocessing import StandardScaler

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.request_features import request_features
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.baselines import TfidfLogReg, _logistic_regression
from imr_outcome.model.frozen_encoder import FrozenEmbeddings
from imr_outcome.model.settings import OFFLINE_MINILM

#: Column of the feature rows that holds the caller's request (after TF-IDF's three).
REQUEST_COLUMN = 3
#: Column that holds the case summary: the inner folds group by it.
SUMMARY_COLUMN = 1


def request_feature_dicts(rows: npt.NDArray[Any]) -> list[dict[str, float]]:
    """The request structure features of each feature row (module level: picklable)."""
    return [request_features(str(request)) for request in rows[:, REQUEST_COLUMN]]


class NonNegativeLogisticRegression(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Binary logistic regression whose feature weights are held >= 0 (the intercept is
    free): the stacking regression of :class:`TwoStageLogReg`, so that a stage can only
    add its own ordering, never reverse it (Breiman 1996, see the module docstring).

    Minimizes the (class-weighted) log loss plus ``||w||^2 / (2 C)`` with L-BFGS-B bounds
    (scipy.optimize.minimize). Classes must be 0 and 1.

    Args:
        c: inverse L2 regularization strength, > 0.
        class_weighted: weight class k by ``n / (2 n_k)`` (scikit-learn's "balanced").

    Attributes (after fit):
        coef_: shape ``(1, d)``, every entry >= 0.
        intercept_: shape ``(1,)``.
        classes_: ``array([0, 1])``.
    """

    def __init__(self, c: float = 1.0, class_weighted: bool = True) -> None:
        self.c = c
        self.class_weighted = class_weighted

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> NonNegativeLogisticRegression:
        """Fit on ``X`` of shape ``(n, d)`` and 0/1 labels ``y`` of shape ``(n,)``; returns
        self. Raises ValueError when ``y`` holds one class only."""
        features = np.asarray(X, dtype=np.float64)
        labels = np.asarray(y, dtype=np.int64)
        counts = np.bincount(labels, minlength=2)
        if labels.size == 0 or counts.min() == 0:
            raise ValueError("NonNegativeLogisticRegression needs both classes 0 and 1")
        weights = (
            (labels.size / (2.0 * counts))[labels] if self.class_weighted else np.ones(labels.size)
        )
        signs = 2.0 * labels - 1.0
        d = features.shape[1]

        def loss(theta: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
            margin = signs * (features @ theta[:d] + theta[d])
            residual = weights * signs * expit(-margin)
            value = -(weights * log_expit(margin)).sum() + theta[:d] @ theta[:d] / (2 * self.c)
            gradient = np.append(-features.T @ residual + theta[:d] / self.c, -residual.sum())
            return float(value), gradient

        bounds = [(0.0, None)] * d + [(None, None)]
        found = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", bounds=bounds)
        self.coef_ = found.x[:d].reshape(1, d)
        self.intercept_ = found.x[d:]
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Log-odds of class 1, shape ``(n,)``."""
        log_odds = np.asarray(X, dtype=np.float64) @ self.coef_[0] + self.intercept_[0]
        return np.asarray(log_odds, dtype=np.float64)

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Shape ``(n, 2)``: P(class 0), P(class 1)."""
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """0/1 labels at log-odds 0, shape ``(n,)``."""
        return (self.decision_function(X) > 0).astype(np.int64)


def letter_means(values: npt.ArrayLike, letters: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Each row's mean of ``values`` over the rows of its letter, shape ``(n,)``.

    Args:
        values: shape ``(n,)``, floats.
        letters: shape ``(n,)``, any hashable key per row (here the case summary).
    """
    _, letter, counts = np.unique(
        np.asarray(letters, dtype=str), return_inverse=True, return_counts=True
    )
    totals = np.bincount(letter, weights=np.asarray(values, dtype=np.float64))
    return np.asarray(totals[letter] / counts[letter], dtype=np.float64)


class WithinLetterStack(NonNegativeLogisticRegression):
    """The stacking regression over (letter-stage, item-stage) log-odds, each weight fitted
    where its stage carries information:

    - the letter stage's weight and the intercept: :class:`NonNegativeLogisticRegression`
      on the letter-stage log-odds, across all training items;
    - the item stage's weight ``beta >= 0``: conditional logistic regression (Breslow &
      Day 1980, "Statistical Methods in Cancer Research I", ch. 7) over the letters with
      mixed outcomes, which conditions each letter's shared part away. It therefore
      measures only how well the item stage orders the items of one letter, and is 0 when
      no training letter is mixed.

    Log-odds: ``intercept + w_letter * letter + beta * (item - mean item)``; scoring is
    :class:`NonNegativeLogisticRegression`'s.

    With ``item_weight="joint"`` both weights and the intercept are instead one
    :class:`NonNegativeLogisticRegression` over (letter, item less its letter's mean)
    across all training items: the spread the item stage puts inside letters whose items
    share one outcome then costs likelihood too, so ``beta`` is not fitted on the mixed
    letters alone. ``item_mean_`` is 0 then: the item score is meant to be centred on its
    letter when scored (:class:`TwoStageLogReg` with ``item_centring="letter"``).

    Args:
        groups: the letter (case summary) of every row the stack is fitted on, in order.
        c: inverse L2 regularization of both fits, > 0.
        class_weighted: class-balanced weights in the letter fit.
        item_weight: ``"conditional"`` or ``"joint"`` (above).
    """

    def __init__(
        self,
        groups: npt.ArrayLike = (),
        c: float = 1.0,
        class_weighted: bool = True,
        item_weight: Literal["conditional", "joint"] = "conditional",
    ) -> None:
        self.groups = groups
        self.c = c
        self.class_weighted = class_weighted
        self.item_weight = item_weight

    def fit(self, X: npt.ArrayLike, y: npt.ArrayLike) -> WithinLetterStack:
        """Fit on ``X`` of shape ``(n, 2)`` (letter, item log-odds) and 0/1 labels ``y``.

        Raises:
            ValueError: ``groups`` does not have one entry per row, or a single class.
        """
        scores = np.asarray(X, dtype=np.float64)
        labels = np.asarray(y, dtype=np.int64)
        groups = np.asarray(self.groups, dtype=object)
        if groups.shape != labels.shape:
            raise ValueError(f"groups has {groups.size} entries for {labels.size} rows")
        if self.item_weight == "joint":
            centred = scores[:, 1] - letter_means(scores[:, 1], groups)
            joint = NonNegativeLogisticRegression(self.c, self.class_weighted)
            joint.fit(np.column_stack([scores[:, 0], centred]), labels)
            self.item_mean_ = 0.0
            self.mixed_letters_ = sum(
                0 < labels[groups == g].sum() < (groups == g).sum() for g in np.unique(groups)
            )
            self.coef_, self.intercept_ = joint.coef_, joint.intercept_
            self.classes_ = np.array([0, 1])
            return self
        letter = NonNegativeLogisticRegression(self.c, self.class_weighted)
        letter.fit(scores[:, :1], labels)
        self.item_mean_ = float(scores[:, 1].mean())
        item = scores[:, 1] - self.item_mean_
        sets = [
            (item[groups == g], labels[groups == g])
            for g in np.unique(groups)
            if 0 < labels[groups == g].sum() < (groups == g).sum()
        ]

        def loss(beta: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
            value, gradient = beta[0] ** 2 / (2 * self.c), beta[0] / self.c
            for z, outcome in sets:
                e = beta[0] * z
                p = np.exp(e - e.max())
                p /= p.sum()
                value -= outcome @ e - outcome.sum() * (e.max() + np.log(np.exp(e - e.max()).sum()))
                gradient -= outcome @ z - outcome.sum() * (p @ z)
            return float(value), np.array([gradient])

        found = minimize(loss, np.zeros(1), jac=True, method="L-BFGS-B", bounds=[(0.0, None)])
        self.mixed_letters_ = len(sets)
        self.coef_ = np.array([[letter.coef_[0, 0], found.x[0]]])
        self.intercept_ = letter.intercept_ - found.x[0] * self.item_mean_
        self.classes_ = np.array([0, 1])
        return self


class TwoStageLogReg(TfidfLogReg):
    """A stack of the TF-IDF letter stage and a request-structure prior.

    Args:
        c, ngram_max, min_df, segments, normalize, weighting, guideline_prior: the letter
            stage, as :class:`~imr_outcome.model.baselines.TfidfLogReg`.
        request_c: inverse L2 regularization of the item stage, > 0.
        item_stage: ``"request_features"`` or ``"encoder"`` (module docstring).
        item_encoder, item_max_length, item_stride: the frozen encoder of the ``encoder``
            item stage and its windows (as ``model.base_model``, ``max_length``,
            ``stride``).
        stack_folds: inner folds (grouped by case summary) whose out-of-fold log-odds fit
            the stacking regression, >= 2.
        class_weighted: ``class_weight="balanced"`` in all three regressions.
        seed: ``random_state`` of the regressions and the inner folds.
        item_centring: how a scored item's item-stage log-odds are centred. ``"training"``:
            on the training items' mean, so the item stage also moves letters against
            each other; ``"letter"``: on the mean over the items of its letter scored in
            the same call (the rows sharing its case summary), so the item stage only
            orders a letter's items and a letter's mean log-odds are the letter stage's
            (the conditional model its weight was fitted as). A lone item then gets the
            letter stage's score.
        item_weight: how the item stage's stacking weight is fitted: ``"conditional"``
            (on the mixed letters alone) or ``"joint"`` (with the letter weight over all
            training items; needs ``item_centring="letter"``); :class:`WithinLetterStack`.
    """

    kind: ClassVar[str] = "two_stage"

    def __init__(
        self,
        c: float = 1.0,
        ngram_max: int = 2,
        min_df: int = 2,
        segments: Literal["joint", "separate", "summary"] = "joint",
        normalize: bool = True,
        request_c: float = 1.0,
        stack_folds: int = 3,
        item_stage: Literal["request_features", "encoder"] = "request_features",
        item_encoder: str = OFFLINE_MINILM,
        item_max_length: int = 256,
        item_stride: int = 64,
        class_weighted: bool = True,
        seed: int = 13,
        weighting: Literal["tfidf", "nb"] = "tfidf",
        guideline_prior: bool = False,
        item_centring: Literal["training", "letter"] = "training",
        item_weight: Literal["conditional", "joint"] = "conditional",
    ) -> None:
        super().__init__(
            c,
            ngram_max,
            min_df,
            segments,
            normalize,
            class_weighted,
            seed,
            weighting,
            guideline_prior,
        )
        self.request_c = request_c
        self.stack_folds = stack_folds
        self.item_stage = item_stage
        self.item_encoder = item_encoder
        self.item_max_length = item_max_length
        self.item_stride = item_stride
        self.item_centring = item_centring
        self.item_weight = item_weight

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        rows = super()._features(inputs, metadata)
        requests = np.array([item.text[item.request_offset :] for item in inputs], dtype=object)
        return np.column_stack([rows, requests])

    def _make_estimator(self, features: Any) -> Any:
        if self.item_weight == "joint" and self.item_centring != "letter":
            raise InvalidInputError(
                "model.item_weight",
                "'joint' fits the item weight on scores centred on their letter; set "
                "model.item_centring to 'letter' or model.item_weight to 'conditional'",
            )
        letter = super()._make_estimator(features)
        logreg = _logistic_regression(self.request_c, self.class_weighted, self.seed)
        if self.item_stage == "encoder":
            embeddings = FrozenEmbeddings(self.item_encoder, self.item_max_length, self.item_stride)
            request = Pipeline(
                [("embed", embeddings), ("scale", StandardScaler()), ("logreg", logreg)]
            )
        else:
            request = Pipeline(
                [
                    ("features", FunctionTransformer(request_feature_dicts)),
                    ("vector", DictVectorizer()),
                    ("logreg", logreg),
                ]
            )
        splitter = GroupKFold(n_splits=self.stack_folds, shuffle=True, random_state=self.seed)
        splits = list(splitter.split(features, groups=features[:, SUMMARY_COLUMN]))
        return StackingClassifier(
            [("letter", letter), ("request", request)],
            final_estimator=WithinLetterStack(
                features[:, SUMMARY_COLUMN], 1.0, self.class_weighted, self.item_weight
            ),
            cv=splits,
            stack_method="decision_function",
        )

    def _log_odds(self, features: Any) -> npt.NDArray[np.float64]:
        if self.item_centring == "training":
            return super()._log_odds(features)
        letter_weight, beta = self.stage_weights
        letter = np.asarray(self._letter_pipeline().decision_function(features))
        return self.stack_intercept + letter_weight * letter + self._item_share(features, beta)

    def _item_share(self, features: Any, beta: float) -> npt.NDArray[np.float64]:
        """``beta`` times the item stage's log-odds, centred as ``item_centring`` says."""
        fitted = self._fitted()
        item = np.asarray(fitted.named_estimators_["request"].decision_function(features))
        if self.item_centring == "training":
            centre: Any = fitted.final_estimator_.item_mean_
        else:
            centre = letter_means(item, features[:, SUMMARY_COLUMN])
        return np.asarray(beta * (item - centre), dtype=np.float64)

    def _letter_pipeline(self) -> Any:
        return self._fitted().named_estimators_["letter"]

    @property
    def stage_weights(self) -> tuple[float, float]:
        """The stacking regression's weights of (letter, request) log-odds."""
        weights = np.asarray(self._fitted().final_estimator_.coef_[0], dtype=np.float64)
        return float(weights[0]), float(weights[1])

    @property
    def intercept(self) -> float:
        """The letter stage's intercept times its stacking weight."""
        return self.stage_weights[0] * super().intercept

    @property
    def stack_intercept(self) -> float:
        """The stacking regression's intercept for an item whose item stage scores the
        average (of the training items, or of its letter): the letter fit's intercept."""
        stack = self._fitted().final_estimator_
        return float(stack.intercept_[0] + self.stage_weights[1] * stack.item_mean_)

    def feature_contributions(self, item: ModelInput) -> list[tuple[str, str, float]]:
        """The letter stage's per-n-gram contributions times its stacking weight.

        They sum, with :attr:`intercept`, :meth:`request_share` and
        :attr:`stack_intercept`, to the item's log-odds of Overturned. See
        :meth:`~imr_outcome.model.baselines.TfidfLogReg.feature_contributions`.
        """
        weight = self.stage_weights[0]
        return [
            (segment, ngram, weight * value)
            for segment, ngram, value in super().feature_contributions(item)
        ]

    def request_share(self, inputs: Sequence[ModelInput]) -> npt.NDArray[np.float64]:
        """The item stage's share of each item's log-odds, shape ``(n,)``: its log-odds less
        their mean (over the training items, or over the item's letter among ``inputs``;
        ``item_centring``), times its stacking weight. Positive pushes towards Overturned."""
        return self._item_share(self._features(inputs, None), self.stage_weights[1])
