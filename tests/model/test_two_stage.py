"""The two-stage kind: TF-IDF letter stage stacked with a request-structure prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from imr_outcome.data.model_input import ModelInput, build_model_input
from imr_outcome.model.base import classifier_class, model_frame
from imr_outcome.model.two_stage import SUMMARY_COLUMN, TwoStageLogReg
from imr_outcome.train.config import load_config
from imr_outcome.train.pipeline import sklearn_estimator

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"

REQUESTS = [
    "Norco 10/325 mg #60",
    "Left knee arthroscopy with meniscectomy",
    "Post-operative physical therapy x 12 visits",
    "Cyclobenzaprine 7.5 mg #90",
    "Pre-operative EKG",
    "Lidoderm 5% patch #30",
]


def _letters(n_letters: int = 36, seed: int = 0) -> tuple[list[ModelInput], np.ndarray]:
    """Invented letters of three items each; in letters that plan surgery the surgery and
    its pre-operative test are Overturned and the drugs Upheld (issue 22's pattern)."""
    rng = np.random.default_rng(seed)
    inputs: list[ModelInput] = []
    labels: list[int] = []
    for letter in range(n_letters):
        surgical = letter % 3 == 0
        summary = (
            f"Case {letter}. The injured worker reports chronic left knee pain after a fall. "
            + ("MRI shows a meniscal tear; surgery is planned." if surgical else "Pain persists.")
        )
        for request in rng.choice(REQUESTS, 3, replace=False):
            inputs.append(build_model_input(str(request), summary, {}))
            labels.append(int(surgical and ("arthroscopy" in request or "EKG" in request)))
    return inputs, np.array(labels)


@pytest.fixture(scope="module")
def fitted() -> TwoStageLogReg:
    inputs, labels = _letters()
    return TwoStageLogReg(c=1.0, min_df=1).fit(model_frame(inputs), labels)


def test_the_stacked_logit_splits_into_letter_evidence_request_share_and_intercepts(
    fitted: TwoStageLogReg,
) -> None:
    inputs, _ = _letters(6, seed=1)
    stack = fitted.estimator_.final_estimator_

    logits = fitted.logits(inputs)[:, 1]

    for item, logit, share in zip(inputs, logits, fitted.request_share(inputs), strict=True):
        letter = sum(value for _, _, value in fitted.feature_contributions(item))
        assert letter + fitted.intercept + share + stack.intercept_[0] == pytest.approx(logit)


def test_items_of_one_letter_get_different_estimates_by_what_was_requested(
    fitted: TwoStageLogReg,
) -> None:
    summary = "Case 99. The injured worker reports chronic left knee pain; surgery is planned."
    items = [build_model_input(request, summary, {}) for request in REQUESTS]

    z = dict(zip(REQUESTS, fitted.logits(items)[:, 1], strict=True))

    assert z["Left knee arthroscopy with meniscectomy"] > z["Norco 10/325 mg #60"]
    assert z["Pre-operative EKG"] > z["Cyclobenzaprine 7.5 mg #90"]


def test_the_inner_folds_keep_a_letter_s_items_together(fitted: TwoStageLogReg) -> None:
    inputs, _ = _letters()
    summaries = np.array([item.text_pair for item in inputs])

    for train, test in fitted.estimator_.cv:
        assert not set(summaries[train]) & set(summaries[test])
    assert SUMMARY_COLUMN == 1


def test_save_then_load_scores_alike(fitted: TwoStageLogReg, tmp_path: Path) -> None:
    inputs, _ = _letters(4, seed=2)
    fitted.save(tmp_path)

    loaded = classifier_class("two_stage").load(tmp_path)

    np.testing.assert_array_equal(loaded.logits(inputs), fitted.logits(inputs))


def test_the_shipped_config_builds_the_kind_as_a_scikit_learn_estimator() -> None:
    config = load_config(EXPERIMENTS / "two_stage.yaml")

    estimator = sklearn_estimator(config)

    assert isinstance(estimator, TwoStageLogReg)
    assert (estimator.c, estimator.request_c, estimator.stack_folds) == (0.1, 1.0, 3)
    assert clone(estimator).get_params() == estimator.get_params()
