"""The two-stage kind (``two_stage``): a letter score, then an item-level adjustment from
what was requested.

Every item of a letter shares one case summary, so a text model scores them nearly alike
(issue 22: within-letter spread 0.0075). The request is what tells them apart, and words
alone teach that poorly on a few hundred items. This kind stacks two logistic regressions
(Wolpert 1992, "Stacked generalization", Neural Networks 5(2)) with scikit-learn's
``StackingClassifier``:

- the **letter stage**: :class:`~imr_outcome.model.baselines.TfidfLogReg`'s pipeline over
  request + summary (the same vectorizer and settings);
- the **request stage**: the request structure features of
  :func:`~imr_outcome.data.request_features.request_features` (request category, drug
  class, relation to surgery, retrospective), one-hot by ``DictVectorizer``, then a
  logistic regression: a guideline-shaped prior for the kind of item requested;
- a logistic regression over the two stages' out-of-fold log-odds. The inner folds are
  grouped by case summary (the items of one letter share it), so no letter's items score
  each other's stage inputs.

Evidence stays the letter stage's n-gram contributions, scaled by its stacking weight
(:meth:`TwoStageLogReg.feature_contributions`); the request stage's share of the log-odds
is :meth:`TwoStageLogReg.request_share`. Only pre-filing text is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import StackingClassifier
from sklearn.feature_extraction import DictVectorizer
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import FunctionTransformer, Pipeline

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.request_features import request_features
from imr_outcome.model.baselines import TfidfLogReg, _logistic_regression

#: Column of the feature rows that holds the caller's request (after TF-IDF's three).
REQUEST_COLUMN = 3
#: Column that holds the case summary: the inner folds group by it.
SUMMARY_COLUMN = 1


def request_feature_dicts(rows: npt.NDArray[Any]) -> list[dict[str, float]]:
    """The request structure features of each feature row (module level: picklable)."""
    return [request_features(str(request)) for request in rows[:, REQUEST_COLUMN]]


class TwoStageLogReg(TfidfLogReg):
    """A stack of the TF-IDF letter stage and a request-structure prior.

    Args:
        c, ngram_max, min_df, segments, normalize: the letter stage, as
            :class:`~imr_outcome.model.baselines.TfidfLogReg`.
        request_c: inverse L2 regularization of the request stage, > 0.
        stack_folds: inner folds (grouped by case summary) whose out-of-fold log-odds fit
            the stacking regression, >= 2.
        class_weighted: ``class_weight="balanced"`` in all three regressions.
        seed: ``random_state`` of the regressions and the inner folds.
    """

    kind: ClassVar[str] = "two_stage"

    def __init__(
        self,
        c: float = 1.0,
        ngram_max: int = 2,
        min_df: int = 2,
        segments: Literal["joint", "separate"] = "joint",
        normalize: bool = True,
        request_c: float = 1.0,
        stack_folds: int = 3,
        class_weighted: bool = True,
        seed: int = 13,
    ) -> None:
        super().__init__(c, ngram_max, min_df, segments, normalize, class_weighted, seed)
        self.request_c = request_c
        self.stack_folds = stack_folds

    def _features(
        self, inputs: Sequence[ModelInput], metadata: Sequence[Mapping[str, Any]] | None
    ) -> Any:
        rows = super()._features(inputs, metadata)
        requests = np.array([item.text[item.request_offset :] for item in inputs], dtype=object)
        return np.column_stack([rows, requests])

    def _make_estimator(self, features: Any) -> Any:
        letter = super()._make_estimator(features)
        request = Pipeline(
            [
                ("features", FunctionTransformer(request_feature_dicts)),
                ("vector", DictVectorizer()),
                ("logreg", _logistic_regression(self.request_c, self.class_weighted, self.seed)),
            ]
        )
        splitter = GroupKFold(n_splits=self.stack_folds, shuffle=True, random_state=self.seed)
        splits = list(splitter.split(features, groups=features[:, SUMMARY_COLUMN]))
        return StackingClassifier(
            [("letter", letter), ("request", request)],
            final_estimator=_logistic_regression(1.0, self.class_weighted, self.seed),
            cv=splits,
            stack_method="decision_function",
        )

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

    def feature_contributions(self, item: ModelInput) -> list[tuple[str, str, float]]:
        """The letter stage's per-n-gram contributions times its stacking weight.

        They sum, with :attr:`intercept` and :meth:`request_share`, plus the stacking
        intercept, to the item's log-odds of Overturned. See
        :meth:`~imr_outcome.model.baselines.TfidfLogReg.feature_contributions`.
        """
        weight = self.stage_weights[0]
        return [
            (segment, ngram, weight * value)
            for segment, ngram, value in super().feature_contributions(item)
        ]

    def request_share(self, inputs: Sequence[ModelInput]) -> npt.NDArray[np.float64]:
        """The request stage's share of each item's log-odds, shape ``(n,)``: its log-odds
        times its stacking weight (positive pushes towards Overturned)."""
        rows = self._features(inputs, None)
        request = self._fitted().named_estimators_["request"]
        return self.stage_weights[1] * np.asarray(request.decision_function(rows))
