from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score

from imr_outcome.data.model_input import ModelInput, build_model_input
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.base import SklearnKind, frame_inputs, model_frame
from imr_outcome.model.baselines import (
    MajorityClassifier,
    MetadataLogReg,
    NaiveBayesScaling,
    TfidfLogReg,
)
from imr_outcome.model.ngrams import TOKEN_PATTERN, ngram_spans
from imr_outcome.train.config import load_config
from imr_outcome.train.pipeline import sklearn_estimator

Labels = npt.NDArray[np.int64]

# Invented DWC-style items: the Overturned summaries document functional improvement.
_REQUESTS = [
    "Physical therapy 2 times a week for 6 weeks for the lumbar spine",
    "Norco 10/325mg #60",
    "MRI of the right shoulder without contrast",
    "Acupuncture 6 sessions for the cervical spine",
    "Gabapentin 600mg #90",
    "Chiropractic manipulation 8 visits",
]
_OVERTURNED_SUMMARY = (
    "The injured worker has chronic low back pain. Progress notes show documented "
    "functional improvement with prior sessions and reduced medication use."
)
_UPHELD_SUMMARY = (
    "The injured worker has chronic low back pain. Prior treatment was completed and "
    "no objective gains in function were reported at the last visit."
)


def _params(**overrides: Any) -> dict[str, Any]:
    return {"min_df": 1, "ngram_max": 2, **overrides}


_CLASSES: dict[str, type[SklearnKind]] = {
    "majority": MajorityClassifier,
    "tfidf_lr": TfidfLogReg,
    "metadata_lr": MetadataLogReg,
}


def _new(kind: str) -> SklearnKind:
    return _CLASSES[kind](**_params()) if kind == "tfidf_lr" else _CLASSES[kind]()


def _estimator(classifier: TfidfLogReg | MetadataLogReg) -> Any:
    assert classifier.estimator_ is not None
    return classifier.estimator_


def _toy_set() -> tuple[list[ModelInput], Labels]:
    """12 items, half Overturned; only the summaries tell the classes apart."""
    inputs = [
        build_model_input(request, summary, {"patient_age": 40 + i, "patient_sex": "female"})
        for i, request in enumerate(_REQUESTS)
        for summary in (_OVERTURNED_SUMMARY, _UPHELD_SUMMARY)
    ]
    return inputs, np.array([1, 0] * len(_REQUESTS), dtype=np.int64)


def _softmax_overturned(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(exp[:, 1] / exp.sum(axis=1), dtype=np.float64)


def _fitted(kind: str) -> tuple[SklearnKind, list[ModelInput], list[dict[str, Any]]]:
    inputs, labels = _toy_set()
    metadata: list[dict[str, Any]] = [
        {"imr_type": "Medical Necessity", "diagnosis_category": ["Cancer", "Orthopedic"][i % 2]}
        for i in range(len(inputs))
    ]
    classifier = _new(kind).fit(model_frame(inputs, metadata), labels)
    return classifier, inputs, metadata


# --------------------------------------------------------------------------- majority


def test_majority_softmax_is_the_training_prior() -> None:
    inputs, _ = _toy_set()
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0], dtype=np.int64)  # 3 of 12

    classifier = MajorityClassifier().fit(model_frame(inputs), labels)
    unseen = [build_model_input("Lumbar epidural steroid injection", "")]

    np.testing.assert_allclose(_softmax_overturned(classifier.logits(inputs)), 0.25, rtol=1e-12)
    np.testing.assert_allclose(_softmax_overturned(classifier.logits(unseen)), 0.25, rtol=1e-12)
    assert classifier.logits(inputs).shape == (12, 2)
    assert np.all(classifier.logits(inputs)[:, 0] == 0.0)


def test_majority_fits_one_class_with_a_clipped_prior() -> None:
    inputs, _ = _toy_set()

    classifier = MajorityClassifier().fit(model_frame(inputs), np.zeros(12, dtype=np.int64))
    logits = classifier.logits(inputs)

    assert classifier.prior() == 0.0
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(_softmax_overturned(logits), 1e-6, rtol=1e-9)


# ----------------------------------------------------------------------------- tf-idf


def test_tfidf_separates_documented_functional_improvement() -> None:
    inputs, labels = _toy_set()

    classifier = TfidfLogReg(**_params(segments="separate")).fit(model_frame(inputs), labels)
    scores = classifier.logits(inputs)[:, 1]
    coefficients = dict(
        zip(classifier.feature_names(), _estimator(classifier)["logreg"].coef_[0], strict=True)
    )

    assert roc_auc_score(labels, scores) == 1.0
    assert coefficients["summary:functional improvement"] > 0
    assert coefficients["summary:no objective"] < 0
    assert "request:functional improvement" not in coefficients


def test_the_same_word_in_request_and_summary_gives_two_features() -> None:
    inputs = [
        build_model_input("MRI of the knee", "A prior MRI showed a meniscal tear."),
        build_model_input("Physical therapy", "No imaging on file."),
    ]

    classifier = TfidfLogReg(**_params(segments="separate")).fit(
        model_frame(inputs), np.array([1, 0], dtype=np.int64)
    )
    names = classifier.feature_names()

    assert {"request:mri", "summary:mri"} <= set(names)
    assert all(name.startswith(("request:", "summary:")) for name in names)


def test_a_summary_empty_everywhere_is_left_out() -> None:
    inputs = [build_model_input(r, "") for r in ("Infertility: IVF", "Mental Health: ABA")]

    classifier = TfidfLogReg(**_params(segments="separate")).fit(
        model_frame(inputs), np.array([0, 1], dtype=np.int64)
    )

    assert classifier.feature_names() == [
        "request:aba",
        "request:health",
        "request:health aba",
        "request:infertility",
        "request:infertility ivf",
        "request:ivf",
        "request:mental",
        "request:mental health",
    ]
    assert classifier.logits(inputs).shape == (2, 2)


@pytest.mark.parametrize(("weighted", "expected"), [(True, "balanced"), (False, None)])
def test_class_weight_follows_the_training_config(weighted: bool, expected: str | None) -> None:
    inputs, labels = _toy_set()
    classifier = TfidfLogReg(**_params(class_weighted=weighted))
    classifier.fit(model_frame(inputs), labels)

    assert _estimator(classifier)["logreg"].class_weight == expected


def test_balanced_class_weight_raises_scores_of_the_rare_class() -> None:
    inputs, _ = _toy_set()
    labels = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], dtype=np.int64)  # 2 of 12
    balanced = TfidfLogReg(**_params(class_weighted=True)).fit(model_frame(inputs), labels)
    plain = TfidfLogReg(**_params(class_weighted=False)).fit(model_frame(inputs), labels)

    assert balanced.logits(inputs)[:, 1].mean() > plain.logits(inputs)[:, 1].mean() + 0.5


@pytest.mark.parametrize(
    ("segments", "weighting"),
    [("joint", "tfidf"), ("joint", "nb"), ("summary", "nb"), ("separate", "nb")],
)
def test_feature_contributions_and_intercept_sum_to_the_logit(
    segments: str, weighting: str
) -> None:
    inputs, labels = _toy_set()
    classifier = TfidfLogReg(**_params(segments=segments, weighting=weighting)).fit(
        model_frame(inputs), labels
    )
    logits = classifier.logits(inputs)[:, 1]

    for item, logit in zip(inputs, logits, strict=True):
        contributions = classifier.feature_contributions(item)
        magnitudes = [abs(value) for _, _, value in contributions]

        assert sum(v for _, _, v in contributions) + classifier.intercept == pytest.approx(logit)
        assert magnitudes == sorted(magnitudes, reverse=True)
        for segment, ngram, _ in contributions:
            assert ngram_spans(getattr(item, segment), ngram), (segment, ngram)


def test_nb_scaling_is_the_smoothed_log_count_ratio() -> None:
    # Wang & Manning (2012), section 2.1, alpha = 1: feature 0 occurs in both Overturned
    # rows and no Upheld row, feature 1 in one row of each class.
    present = np.array([[1, 1], [1, 0], [0, 1], [0, 0]])
    labels = np.array([1, 1, 0, 0])

    scaling = NaiveBayesScaling().fit(present, labels)

    p, q = np.array([3.0, 2.0]), np.array([1.0, 2.0])
    expected = np.log((p / p.sum()) / (q / q.sum()))
    np.testing.assert_allclose(scaling.ratio_, expected)
    np.testing.assert_allclose(scaling.transform(present).toarray(), present * expected)


def test_nb_weighting_separates_the_classes_on_binary_ngrams() -> None:
    inputs, labels = _toy_set()
    classifier = TfidfLogReg(**_params(weighting="nb", segments="summary")).fit(
        model_frame(inputs), labels
    )

    steps = [name for name, _ in _estimator(classifier).steps]
    assert steps == ["tfidf", "nb", "logreg"]
    assert roc_auc_score(labels, classifier.logits(inputs)[:, 1]) == 1.0
    # Binary presence: the vectorizer's values are 0/1 before the NB scaling.
    features = _estimator(classifier)["tfidf"].transform(classifier._features(inputs, None))
    assert set(np.unique(features.toarray())) == {0.0, 1.0}


def test_the_top_contribution_of_an_overturned_item_is_in_the_summary() -> None:
    inputs, labels = _toy_set()
    classifier = TfidfLogReg(**_params()).fit(model_frame(inputs), labels)

    segment, ngram, value = classifier.feature_contributions(inputs[0])[0]

    assert segment == "text_pair"
    assert value > 0
    assert ngram_spans(_OVERTURNED_SUMMARY, ngram)


def test_tfidf_needs_both_classes() -> None:
    inputs, _ = _toy_set()

    with pytest.raises(InvalidInputError) as raised:
        TfidfLogReg(**_params()).fit(model_frame(inputs), np.ones(12, dtype=np.int64))

    assert str(raised.value) == (
        "labels: expected both Upheld (0) and Overturned (1) to fit a logistic regression, "
        "found only 1; use the majority kind or more data"
    )


def test_labels_must_match_inputs() -> None:
    inputs, labels = _toy_set()

    with pytest.raises(InvalidInputError, match=r"^labels: expected one label per input \(12\)"):
        TfidfLogReg(**_params()).fit(model_frame(inputs), labels[:-1])


def test_min_df_that_prunes_everything_is_reported() -> None:
    inputs = [build_model_input("Norco", ""), build_model_input("Soma", "")]

    with pytest.raises(InvalidInputError, match=r"^model\.min_df: no n-gram is left"):
        TfidfLogReg(**_params(min_df=2)).fit(model_frame(inputs), np.array([0, 1], dtype=np.int64))


def test_another_fit_error_is_not_blamed_on_min_df(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs, labels = _toy_set()

    def fails(self: Any, X: Any, y: Any) -> Any:
        raise ValueError("Input contains NaN")

    monkeypatch.setattr(SklearnKind, "fit", fails)

    with pytest.raises(ValueError, match=r"^Input contains NaN$"):
        TfidfLogReg(**_params()).fit(model_frame(inputs), labels)


@pytest.mark.parametrize("kind", ["majority", "tfidf_lr", "metadata_lr"])
def test_logits_before_fit_raise_not_fitted(kind: str) -> None:
    inputs, _ = _toy_set()

    with pytest.raises(NotFittedError, match="is not fitted; call fit"):
        _new(kind).logits(inputs, [{}] * len(inputs))


# ------------------------------------------------------------------------ ngram_spans


def test_ngram_spans_cross_odd_whitespace_and_punctuation() -> None:
    text = "Physical  Therapy,\u00a0physical\n\ttherapy; PHYSICAL therapy"

    spans = ngram_spans(text, "physical therapy")

    assert spans == [(0, 17), (19, 36), (38, 54)]
    assert [text[s:e] for s, e in spans] == [
        "Physical  Therapy",
        "physical\n\ttherapy",
        "PHYSICAL therapy",
    ]


def test_ngram_spans_unicode_offsets_index_the_original_text() -> None:
    text = "Ärztin: Überprüfung\u2003der Lendenwirbelsäule 🙂 İstanbul ΟΔΟΣ x-ray"

    assert [text[s:e] for s, e in ngram_spans(text, "überprüfung der")] == ["Überprüfung\u2003der"]
    assert [text[s:e] for s, e in ngram_spans(text, "lendenwirbelsäule")] == ["Lendenwirbelsäule"]
    # "İ" lowercases to "i" + U+0307 (not a word character), so the analyzer sees "stanbul".
    assert [text[s:e] for s, e in ngram_spans(text, "stanbul")] == ["stanbul"]
    # Whole-string lowercasing gives a final sigma, as in the vectorizer.
    assert [text[s:e] for s, e in ngram_spans(text, "οδος")] == ["ΟΔΟΣ"]
    # One-letter words are not tokens: "x-ray" is the single word "ray".
    assert [text[s:e] for s, e in ngram_spans(text, "ray")] == ["ray"]
    assert ngram_spans(text, "mri") == []


def test_ngram_spans_agree_with_the_vectorizer_analyzer() -> None:
    text = (
        "Request: MRI\u00a0lumbar spine, MRI lumbar  spine again.\n"
        "Ärztin notes İstanbul trip; ΟΔΟΣ ΟΔΟΣ. Pt's pain 7/10 → 4/10 with PT-PT."
    )
    analyzer = TfidfVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, 3)).build_analyzer()
    ngrams: list[str] = analyzer(text)

    for ngram in set(ngrams):
        spans = ngram_spans(text, ngram)
        assert len(spans) == ngrams.count(ngram), ngram
        for start, end in spans:
            assert analyzer(text[start:end])[-1] == ngram  # the longest n-gram of the span


@pytest.mark.parametrize("ngram", ["", "a", " - "])
def test_ngram_spans_reject_ngrams_without_words(ngram: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^ngram: expected words"):
        ngram_spans("MRI of the knee", ngram)


# --------------------------------------------------------------------------- metadata


def _dmhc_rows() -> tuple[list[ModelInput], list[dict[str, Any]], Labels]:
    """Cancer cases are Overturned, orthopedic ones Upheld; the other fields vary."""
    requests = ["Pharmacy: Oncology drug", "Diagnostic Imaging: MRI", "Surgery: Spine"]
    inputs, metadata, labels = [], [], []
    for i in range(12):
        category = ("Cancer", "Orthopedic")[i % 2]
        values = {
            "age_range": ("21-30", "41-50", "65+")[i % 3],
            "patient_sex": ("female", "male", None)[i % 3],
            "imr_type": "Medical Necessity",
            "diagnosis_category": category,
        }
        inputs.append(build_model_input(requests[i % 3], "", values))
        metadata.append(values)
        labels.append(int(category == "Cancer"))
    return inputs, metadata, np.array(labels, dtype=np.int64)


def test_metadata_model_learns_a_rule_on_metadata() -> None:
    inputs, metadata, labels = _dmhc_rows()

    classifier = MetadataLogReg().fit(model_frame(inputs, metadata), labels)
    scores = classifier.logits(inputs, metadata)[:, 1]

    assert roc_auc_score(labels, scores) == 1.0
    assert "diagnosis_category=Cancer" in classifier.feature_names()
    assert "request=Surgery: Spine" in classifier.feature_names()
    assert "age_range=unknown" not in classifier.feature_names()
    assert "patient_sex=unknown" in classifier.feature_names()


def test_metadata_model_ignores_unseen_categories() -> None:
    inputs, metadata, labels = _dmhc_rows()
    classifier = MetadataLogReg().fit(model_frame(inputs, metadata), labels)
    known = {"age_range": "21-30", "patient_sex": "female", "imr_type": "Medical Necessity"}
    unseen = {"age_range": "0-10", "patient_sex": "other", "imr_type": "Experimental"}

    with_category = classifier.logits(
        [build_model_input("Surgery: Spine", "")], [{**known, "diagnosis_category": "Cancer"}]
    )
    with_unseen_category = classifier.logits(
        [build_model_input("Surgery: Spine", "")], [{**known, "diagnosis_category": "Neurology"}]
    )
    all_unseen = classifier.logits(
        [build_model_input("Transplant: Kidney", "")],
        [{**unseen, "diagnosis_category": "Neurology", "diagnosis_subcategory": "ALS"}],
    )
    logreg = _estimator(classifier)["logreg"]
    onehot = _estimator(classifier)["onehot"]
    cancer_column = classifier.feature_names().index("diagnosis_category=Cancer")

    # Only the diagnosis column changed: the unseen value contributes nothing.
    assert with_category[0, 1] - with_unseen_category[0, 1] == pytest.approx(
        logreg.coef_[0, cancer_column]
    )
    # Every value unseen (a seen "unknown" subcategory would count): the intercept alone.
    assert onehot.transform([["x"] * 7]).nnz == 0
    assert all_unseen[0, 1] == pytest.approx(logreg.intercept_[0])


def test_metadata_model_scores_need_one_metadata_dict_per_input() -> None:
    inputs, metadata, labels = _dmhc_rows()
    classifier = MetadataLogReg()

    classifier.fit(model_frame(inputs, metadata), labels)
    with pytest.raises(InvalidInputError, match=r"^metadata: the metadata_lr kind needs"):
        classifier.logits(inputs)
    with pytest.raises(InvalidInputError, match=re.escape("found 11")):
        classifier.logits(inputs, metadata[:-1])


def test_metadata_model_rejects_post_filing_fields() -> None:
    inputs, metadata, labels = _dmhc_rows()
    leaked = [*metadata[:-1], {**metadata[-1], "reviewer_specialty": "Oncology"}]

    with pytest.raises(InvalidInputError, match=r"^metadata: row 11: unknown or post-filing"):
        MetadataLogReg().fit(model_frame(inputs, metadata), labels).logits(inputs, leaked)
    frame = model_frame(inputs, metadata).assign(reviewer_specialty="Oncology")
    with pytest.raises(InvalidInputError) as raised:
        MetadataLogReg().fit(frame, labels)
    assert str(raised.value).startswith(
        "X: unknown or post-filing column(s) ['reviewer_specialty']; allowed: ['request', "
    )


# ------------------------------------------------------------------------ persistence


@pytest.mark.parametrize("kind", ["majority", "tfidf_lr", "metadata_lr"])
def test_save_then_load_gives_identical_logits(kind: str, tmp_path: Path) -> None:
    classifier, inputs, metadata = _fitted(kind)

    classifier.save(tmp_path / "classifier")
    loaded = type(classifier).load(tmp_path / "classifier")

    assert np.array_equal(loaded.logits(inputs, metadata), classifier.logits(inputs, metadata))


def test_load_rejects_another_kind(tmp_path: Path) -> None:
    majority, _, _ = _fitted("majority")
    majority.save(tmp_path)

    with pytest.raises(IncompatibleModelError) as raised:
        TfidfLogReg.load(tmp_path)

    assert str(raised.value) == (
        f"{tmp_path}: model.joblib holds a MajorityClassifier, expected a TfidfLogReg"
    )


def test_load_of_a_missing_file_raises_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as raised:
        TfidfLogReg.load(tmp_path)

    assert str(raised.value) == f"{tmp_path}: no model.joblib"


def test_save_before_fit_raises_not_fitted(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError, match=r"^TfidfLogReg is not fitted"):
        TfidfLogReg(**_params()).save(tmp_path)

    assert not (tmp_path / "model.joblib").exists()


# ------------------------------------------------------------- scikit-learn estimator


@pytest.mark.parametrize("kind", ["majority", "tfidf_lr", "metadata_lr"])
def test_every_kind_is_a_scikit_learn_estimator(kind: str) -> None:
    classifier, inputs, metadata = _fitted(kind)
    frame = model_frame(inputs, metadata)
    labels = _toy_set()[1]

    twin = clone(classifier)
    params = classifier.get_params()

    assert twin is not classifier and twin.get_params() == params
    assert not hasattr(twin, "estimator_")  # clone copies the parameters, not the fit
    proba = twin.fit(frame, labels).predict_proba(frame)
    assert proba.shape == (len(inputs), 2)
    np.testing.assert_allclose(proba, classifier.predict_proba(frame))
    logits = classifier.logits(*frame_inputs(frame))  # serving's path: the same numbers
    np.testing.assert_allclose(proba[:, 1], _softmax_overturned(logits))


def test_set_params_changes_the_fitted_hyper_parameters() -> None:
    inputs, labels = _toy_set()
    classifier = TfidfLogReg(**_params()).set_params(c=0.01, ngram_max=1)

    classifier.fit(model_frame(inputs), labels)

    assert _estimator(classifier)["logreg"].C == 0.01
    assert all(" " not in name for name in classifier.feature_names())


def test_a_normalised_ngram_is_found_in_the_caller_s_house_style() -> None:
    text = "The injured worker has low back pain since 3/17/14."
    # "patient has" exists only in the normalised text; its span covers the original phrase
    (span,) = ngram_spans(text, "patient has")
    assert text[span[0] : span[1]] == "injured worker has"
    assert ngram_spans(text, "back pain") == [(text.index("back"), text.index(" since"))]
    assert ngram_spans(text, "knee") == []


def _letters_split_by_drug_class() -> tuple[list[ModelInput], Labels]:
    """Eight letters of two items each, both items on the letter's one summary: the
    opioid or muscle relaxant Upheld, the therapy or imaging Overturned (as in letters
    whose surgery or diagnostics were overturned and whose medications were not)."""
    restricted = ["Norco 10/325mg #60", "Flexeril 7.5mg #30", "Tramadol ER 150mg #30"]
    other = ["Physical therapy 2x6 for the lumbar spine", "MRI of the right shoulder"]
    inputs, labels = [], []
    for letter in range(8):
        summary = f"The injured worker, letter {letter}, has chronic pain after a fall at work."
        inputs += [
            build_model_input(restricted[letter % 3], summary),
            build_model_input(other[letter % 2], summary),
        ]
        labels += [0, 1]
    return inputs, np.array(labels, dtype=np.int64)


def test_the_guideline_prior_tells_the_items_of_one_letter_apart(tmp_path: Path) -> None:
    inputs, labels = _letters_split_by_drug_class()
    frame = model_frame(inputs)

    summary_only = TfidfLogReg(**_params(segments="summary")).fit(frame, labels)
    with_prior = TfidfLogReg(**_params(segments="summary", guideline_prior=True)).fit(frame, labels)
    tied = summary_only.logits(inputs)[:, 1].reshape(8, 2)
    scores = with_prior.logits(inputs)[:, 1].reshape(8, 2)
    weights = dict(
        zip(with_prior.feature_names(), _estimator(with_prior)["logreg"].coef_[0], strict=True)
    )

    np.testing.assert_allclose(tied[:, 0], tied[:, 1])
    assert np.all(scores[:, 1] > scores[:, 0])
    assert weights["guideline:mtus_restricted"] < 0
    assert clone(with_prior).get_params()["guideline_prior"] is True

    norco = inputs[0]
    contributions = with_prior.feature_contributions(norco)
    (prior,) = [entry for entry in contributions if entry[1] == "norco"]
    assert prior[0] == "text" and prior[2] < 0
    assert ngram_spans(norco.text, "norco")
    total = sum(value for _, _, value in contributions) + with_prior.intercept
    assert total == pytest.approx(with_prior.logits([norco])[0, 1])

    with_prior.save(tmp_path)
    np.testing.assert_array_equal(
        TfidfLogReg.load(tmp_path).logits(inputs), with_prior.logits(inputs)
    )


def test_the_shipped_guideline_config_builds_the_summary_model_with_the_prior() -> None:
    experiments = Path(__file__).resolve().parents[2] / "experiments"
    config = load_config(experiments / "tfidf_lr_summary_mtus.yaml")

    estimator = sklearn_estimator(config)

    assert isinstance(estimator, TfidfLogReg)
    assert (estimator.segments, estimator.guideline_prior) == ("summary", True)
