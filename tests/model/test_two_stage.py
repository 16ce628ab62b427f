"""The two-stage kind: TF-IDF letter stage stacked with a request-structure prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from imr_outcome.data.model_input import ModelInput, build_model_input
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.base import classifier_class, model_frame
from imr_outcome.model.two_stage import (
    SUMMARY_COLUMN,
    NonNegativeLogisticRegression,
    TwoStageLogReg,
    WithinLetterStack,
)
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
    logits = fitted.logits(inputs)[:, 1]

    for item, logit, share in zip(inputs, logits, fitted.request_share(inputs), strict=True):
        letter = sum(value for _, _, value in fitted.feature_contributions(item))
        assert letter + fitted.intercept + share + fitted.stack_intercept == pytest.approx(logit)


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


def test_a_summary_letter_stage_scores_every_item_of_a_letter_alike() -> None:
    inputs, labels = _letters()
    letter_stage = classifier_class("tfidf_lr")(c=1.0, min_df=1, segments="summary")
    letter_stage.fit(model_frame(inputs), labels)
    summary = inputs[0].text_pair
    items = [build_model_input(request, summary, {}) for request in REQUESTS]

    z = letter_stage.logits(items)[:, 1]

    assert np.ptp(z) == 0.0
    assert all(name.startswith("summary:") for name in letter_stage.feature_names())


def _encoder_stack(encoder: Path, **options: str) -> TwoStageLogReg:
    """The summary letter stage and a tiny-BERT item stage, fitted on :func:`_letters`."""
    inputs, labels = _letters()
    stack = TwoStageLogReg(
        c=1.0,
        min_df=1,
        segments="summary",
        request_c=1.0,
        item_stage="encoder",
        item_encoder=str(encoder),
        item_max_length=64,
        item_stride=16,
        **options,  # type: ignore[arg-type]
    )
    return stack.fit(model_frame(inputs), labels)


@pytest.fixture(scope="module")
def fitted_with_encoder(tiny_bert: Path) -> TwoStageLogReg:
    return _encoder_stack(tiny_bert)


def test_the_encoder_item_stage_orders_the_items_of_one_letter(
    fitted_with_encoder: TwoStageLogReg,
) -> None:
    summary = "Case 99. The injured worker reports chronic left knee pain; surgery is planned."
    items = [build_model_input(request, summary, {}) for request in REQUESTS]

    z = fitted_with_encoder.logits(items)[:, 1]
    letter = [sum(v for _, _, v in fitted_with_encoder.feature_contributions(i)) for i in items]

    assert np.ptp(letter) == pytest.approx(0.0, abs=1e-12)  # the letter stage cannot tell them
    assert np.ptp(z) > 0.0  # the embedding stage does
    np.testing.assert_allclose(
        np.array(letter)
        + fitted_with_encoder.intercept
        + fitted_with_encoder.request_share(items)
        + fitted_with_encoder.stack_intercept,
        z,
    )


def test_a_saved_encoder_stack_keeps_the_encoder_name_not_its_weights(
    fitted_with_encoder: TwoStageLogReg, tiny_bert: Path, tmp_path: Path
) -> None:
    inputs, _ = _letters(4, seed=2)
    fitted_with_encoder.logits(inputs)  # loads the encoder
    fitted_with_encoder.save(tmp_path)
    saved = sum(path.stat().st_size for path in tmp_path.rglob("*") if path.is_file())
    weights = sum(path.stat().st_size for path in tiny_bert.rglob("*.safetensors"))

    loaded = classifier_class("two_stage").load(tmp_path)

    assert saved < weights
    np.testing.assert_allclose(loaded.logits(inputs), fitted_with_encoder.logits(inputs))


def test_the_shipped_summary_mpnet_config_builds_an_encoder_stack() -> None:
    config = load_config(EXPERIMENTS / "summary_mpnet_stack.yaml")

    estimator = sklearn_estimator(config)

    assert isinstance(estimator, TwoStageLogReg)
    assert (estimator.segments, estimator.item_stage) == ("summary", "encoder")
    assert estimator.item_encoder == "sentence-transformers/all-mpnet-base-v2"


def test_the_stacking_weights_never_reverse_a_stage() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    helpful = y + rng.normal(0, 1.0, 400)
    harmful = -y + rng.normal(0, 1.0, 400)  # unconstrained, it would get a negative weight
    X = np.column_stack([helpful, harmful])

    stack = NonNegativeLogisticRegression(c=1.0).fit(X, y)

    assert stack.coef_[0, 0] > 0.5
    assert stack.coef_[0, 1] == 0.0
    np.testing.assert_allclose(stack.predict_proba(X).sum(axis=1), 1.0)


def _letters_of_scores(within: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """40 letters of 3 items; the letter score sets the letter's risk, the item score is
    noise across letters and, in mixed letters, ``within`` higher on the Overturned item."""
    rng = np.random.default_rng(seed)
    rows, labels, groups = [], [], []
    for letter in range(40):
        letter_score = rng.normal()
        outcomes = [1, 0, 0] if letter % 4 == 0 else [0, 0, 0]
        offset = rng.normal(0, 2.0)  # what the item stage says about the whole letter
        for outcome in outcomes:
            rows.append([letter_score, offset + within * outcome + rng.normal(0, 0.3)])
            labels.append(outcome)
            groups.append(f"letter {letter}")
    return np.array(rows), np.array(labels), np.array(groups, dtype=object)


def test_the_item_weight_is_learned_from_the_items_of_mixed_letters_only() -> None:
    X, y, groups = _letters_of_scores(within=1.0)
    ordering = WithinLetterStack(groups).fit(X, y)
    X, y, groups = _letters_of_scores(within=-1.0)
    reversing = WithinLetterStack(groups).fit(X, y)

    assert ordering.mixed_letters_ == reversing.mixed_letters_ == 10
    assert ordering.coef_[0, 1] > 0.5
    assert reversing.coef_[0, 1] == 0.0


def test_the_within_letter_stack_names_a_groups_mismatch() -> None:
    X, y, groups = _letters_of_scores(within=1.0)

    with pytest.raises(ValueError, match="groups has 3 entries"):
        WithinLetterStack(groups[:3]).fit(X, y)


def test_an_item_stride_past_half_the_window_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"model\.item_stride"):
        load_config(
            EXPERIMENTS / "summary_mpnet_stack.yaml",
            ["model.item_max_length=64", "model.item_stride=32"],
        )


@pytest.fixture(scope="module")
def letter_centred(tiny_bert: Path) -> TwoStageLogReg:
    return _encoder_stack(tiny_bert, item_centring="letter")


def _letter_of(requests: list[str], case: int) -> list[ModelInput]:
    summary = f"Case {case}. The injured worker reports chronic left knee pain; surgery is planned."
    return [build_model_input(request, summary, {}) for request in requests]


def test_letter_centring_keeps_the_order_and_leaves_the_letter_mean_to_the_letter_stage(
    letter_centred: TwoStageLogReg,
) -> None:
    items = _letter_of(REQUESTS, 99)
    letter_alone = [
        letter_centred.stack_intercept
        + letter_centred.intercept
        + sum(v for _, _, v in letter_centred.feature_contributions(i))
        for i in items
    ]

    z = letter_centred.logits(items)[:, 1]
    uncentred = clone(letter_centred).set_params(item_centring="training")
    uncentred.estimator_ = letter_centred.estimator_

    assert z.mean() == pytest.approx(letter_alone[0])
    np.testing.assert_allclose(
        z - z.mean(), uncentred.logits(items)[:, 1] - uncentred.logits(items)[:, 1].mean()
    )
    np.testing.assert_allclose(letter_centred.request_share(items), z - z.mean(), atol=1e-12)
    assert letter_centred.stage_weights[1] > 0.0  # so the order is not all ties


def test_a_letter_centred_item_is_scored_against_its_own_letter_only(
    letter_centred: TwoStageLogReg,
) -> None:
    first = _letter_of(REQUESTS[:3], 98)
    second = _letter_of(REQUESTS[3:], 97)

    together = letter_centred.logits(first + second)[:, 1]
    apart = np.concatenate(
        [letter_centred.logits(first)[:, 1], letter_centred.logits(second)[:, 1]]
    )
    alone = letter_centred.logits(first[:1])[:, 1]

    np.testing.assert_allclose(together, apart)
    assert np.ptp(together[:3]) > 0.0
    letter_stage = (
        letter_centred.stack_intercept
        + letter_centred.intercept
        + sum(v for _, _, v in letter_centred.feature_contributions(first[0]))
    )
    assert alone[0] == pytest.approx(letter_stage)  # a lone item: the letter stage's score


def test_a_joint_item_weight_pays_for_the_spread_inside_letters_of_one_outcome() -> None:
    rng = np.random.default_rng(3)
    rows, labels, groups = [], [], []
    for letter in range(60):
        outcomes = [1, 0, 0] if letter % 4 == 0 else [0, 0, 0]
        for outcome in outcomes:  # orders mixed letters, but spreads every letter widely
            rows.append([rng.normal(), 1.0 * outcome + rng.normal(0, 1.0)])
            labels.append(outcome)
            groups.append(f"letter {letter}")
    X, y = np.array(rows), np.array(labels)

    conditional = WithinLetterStack(np.array(groups, dtype=object)).fit(X, y)
    joint = WithinLetterStack(np.array(groups, dtype=object), item_weight="joint").fit(X, y)

    assert joint.mixed_letters_ == conditional.mixed_letters_ == 15
    assert 0.0 < joint.coef_[0, 1] < conditional.coef_[0, 1]
    assert joint.item_mean_ == 0.0


def test_a_joint_item_weight_without_letter_centring_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInputError, match=r"model\.item_weight"):
        load_config(EXPERIMENTS / "summary_mpnet_stack.yaml", ["model.item_weight=joint"])
    inputs, labels = _letters(6)
    with pytest.raises(InvalidInputError, match=r"model\.item_weight"):
        TwoStageLogReg(min_df=1, item_weight="joint").fit(model_frame(inputs), labels)
