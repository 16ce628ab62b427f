"""Band rule, abstention edges and cross-fitting (issue 10)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from imr_outcome.data.model_input import build_model_input
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.baselines import TfidfLogReg
from imr_outcome.model.calibration import make_calibrator
from imr_outcome.model.decision import DecisionRule, compared_with_usual, headline_without_rule
from imr_outcome.model.frozen_encoder import FrozenEncoderLogReg
from imr_outcome.train import pipeline
from imr_outcome.train.bands import fit_decision_rule
from imr_outcome.train.config import DecisionConfig, load_config
from imr_outcome.train.evaluate import cross_validate
from imr_outcome.train.pipeline import Rows, fit_calibrated, inner_cv


def _rule(**overrides: Any) -> DecisionRule:
    values: dict[str, Any] = {
        "source": "dwc",
        "base_rate": 0.1,
        "upheld_edge": 0.05,
        "overturned_edge": 0.5,
        "min_summary_words": 20,
        "min_clinical_terms": 1,
    }
    return DecisionRule(**{**values, **overrides})


def test_band_edges_are_inclusive() -> None:
    rule = _rule()
    assert rule.band(0.05) == "likely upheld"
    assert rule.band(0.0501) == "uncertain"
    assert rule.band(0.4999) == "uncertain"
    assert rule.band(0.5) == "likely overturned"


def test_missing_edge_means_band_never_given() -> None:
    rule = _rule(upheld_edge=None, overturned_edge=None)
    assert {rule.band(p) for p in (0.0, 0.3, 1.0)} == {"uncertain"}


def test_relative_risk() -> None:
    rule = _rule(base_rate=0.11)
    assert rule.relative_risk(0.22) == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("words", "terms", "expected"),
    [
        (20, 1, None),  # exactly at both thresholds: informative
        (19, 1, "the case summary has 19 words; at least 20 are needed"),
        (0, 3, "there is no case summary, only the request"),
        (40, 0, "the request and summary use no clinical vocabulary"),
        (None, 1, None),  # a kind that reads no summary skips the word count
    ],
)
def test_insufficient_information_edges(
    words: int | None, terms: int, expected: str | None
) -> None:
    rule = _rule()
    assert rule.insufficient(summary_words=words, clinical_terms=terms) == expected
    band, reason = rule.decide(0.9, summary_words=words, clinical_terms=terms)
    if expected is None:
        assert band == "likely overturned" and "90%" in reason
    else:
        assert (band, reason) == ("insufficient information", expected)


def test_an_older_rule_with_abstain_on_ood_still_loads() -> None:
    state = {**_rule().to_dict(), "abstain_on_ood": True}
    assert DecisionRule.from_dict(state) == _rule()


def test_the_reason_compares_the_estimate_with_the_usual_rate() -> None:
    rule = _rule()
    band, reason = rule.decide((rule.upheld_edge or 0) + 0.001, summary_words=40, clinical_terms=3)
    assert band == "uncertain"
    assert "band edges" not in reason and f"usual {rule.base_rate:.0%}" in reason


@pytest.mark.parametrize(
    ("p", "headline", "reason"),
    [
        (
            0.03,
            "Likely upheld: less likely than usual to be overturned, 3% (usual: 10%).",
            "3% is well below the usual 10%",
        ),
        (
            0.07,
            "Uncertain: less likely than usual to be overturned, 7% (usual: 10%).",
            "7% is below the usual 10%, not far enough to call either way",
        ),
        (
            0.11,
            "Uncertain: about as likely as usual to be overturned, 11% (usual: 10%).",
            "11% is close to the usual 10%, not far enough to call either way",
        ),
        (
            0.3,
            "Uncertain: more likely than usual to be overturned, 30% (usual: 10%).",
            "30% is above the usual 10%, not far enough to call either way",
        ),
        (
            0.6,
            "Likely overturned: more likely than usual to be overturned, 60% (usual: 10%).",
            "60% is well above the usual 10%",
        ),
    ],
)
def test_the_headline_and_the_reason_say_the_same_thing(
    p: float, headline: str, reason: str
) -> None:
    rule = _rule()
    band, given = rule.decide(p, summary_words=40, clinical_terms=3)
    assert (rule.headline(p, band, given), given) == (headline, reason)


def test_an_abstention_headline_says_why() -> None:
    rule = _rule()
    band, reason = rule.decide(0.2, summary_words=0, clinical_terms=3)
    assert rule.headline(0.2, band, reason) == (
        "Not enough information to estimate: there is no case summary, only the request."
    )


@pytest.mark.parametrize(
    ("relative_risk", "words"),
    [
        (0.79, "less likely than usual"),
        (0.8, "about as likely as usual"),
        (1.25, "about as likely as usual"),
        (1.26, "more likely than usual"),
    ],
)
def test_compared_with_usual_edges(relative_risk: float, words: str) -> None:
    assert compared_with_usual(relative_risk) == words


def test_a_model_without_a_rule_heads_with_its_label() -> None:
    assert headline_without_rule("Upheld", 0.87) == "Likely upheld: 87%."
    assert headline_without_rule("Overturned", 0.42) == "Leaning overturned: 42%."


def test_fit_decision_rule_reaches_precision_targets() -> None:
    # 30 low scores all Upheld, 40 middle with 10% Overturned, 10 high with 6 Overturned.
    p = np.concatenate(
        [np.linspace(0.01, 0.04, 30), np.linspace(0.1, 0.3, 40), np.linspace(0.6, 0.9, 10)]
    )
    y = np.concatenate(
        [np.zeros(30), np.r_[np.ones(4), np.zeros(36)], np.r_[np.zeros(4), np.ones(6)]]
    )
    config = DecisionConfig(upheld_precision=0.95, overturned_precision=0.5, min_band_items=10)
    rule = fit_decision_rule(y.astype(np.int64), p, config, source="dwc")
    assert rule.base_rate == pytest.approx(10 / 80)
    # the 10 highest hold 6 Overturned (60% >= 50%); 11 would be 6/11 too, 12 -> 6/12.
    assert rule.overturned_edge is not None
    assert np.mean(y[p >= rule.overturned_edge]) >= 0.5
    assert (p >= rule.overturned_edge).sum() >= 10
    # every low score is Upheld; the edge stops before Upheld share drops under 95%.
    assert rule.upheld_edge is not None and rule.upheld_edge >= 0.04
    assert 1 - np.mean(y[p <= rule.upheld_edge]) >= 0.95
    assert rule.records["likely overturned"].accuracy == pytest.approx(
        float(np.mean(y[p >= rule.overturned_edge]))
    )
    assert DecisionRule.from_dict(rule.to_dict()) == rule


def test_fit_decision_rule_without_reachable_target() -> None:
    p = np.linspace(0.05, 0.2, 50)
    y = (np.arange(50) % 9 == 0).astype(np.int64)  # ~11% everywhere: no band is sure
    config = DecisionConfig(upheld_precision=0.99, overturned_precision=0.5, min_band_items=10)
    rule = fit_decision_rule(y, p, config, source="dwc")
    assert rule.overturned_edge is None and rule.upheld_edge is None
    assert rule.records["uncertain"].n == 50


# ------------------------------------------------------------------- cross-fitting


def _rows(n_groups: int = 40, per_group: int = 2) -> Rows:
    rng = np.random.default_rng(0)
    ids, groups, inputs, labels = [], [], [], []
    for g in range(n_groups):
        label = int(g % 4 == 0)
        for k in range(per_group):
            word = "arthroscopy denied" if label else "physical therapy"
            noise = " ".join(rng.choice(["knee", "pain", "report", "visit", "clinic"], 6))
            ids.append(f"L{g}-{k}")
            groups.append(f"L{g}")
            inputs.append(build_model_input("MRI lumbar spine", f"{word} {noise} {word}"))
            labels.append(label)
    return Rows(
        ids=ids,
        groups=groups,
        inputs=inputs,
        metadata=[{} for _ in ids],
        labels=np.asarray(labels, dtype=np.int64),
        context={},
    )


def test_inner_cv_covers_every_training_row_once_by_letter() -> None:
    rows = _rows()
    splits = list(inner_cv(rows, 5, seed=13).split(np.zeros(len(rows)), rows.labels, rows.groups))
    held = np.concatenate([val for _, val in splits])
    assert sorted(held.tolist()) == list(range(len(rows)))
    for fit_idx, val_idx in splits:
        assert not {rows.groups[i] for i in fit_idx} & {rows.groups[i] for i in val_idx}


def test_cross_fitted_calibration_never_sees_the_test_fold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _rows()
    calibrated_on: list[int] = []
    split_groups: list[set[str]] = []
    real_calibrator, real_cv = make_calibrator, pipeline.inner_cv

    class Recording:
        def __init__(self, method: str) -> None:
            self.inner = real_calibrator(method)

        def fit(self, logits: npt.ArrayLike, y: npt.ArrayLike) -> Any:
            calibrated_on.append(len(np.asarray(y)))
            self.inner.fit(logits, y)
            return self.inner

    def recording_cv(train_rows: Rows, n: int, seed: int) -> Any:
        split_groups.append(set(train_rows.groups))
        return real_cv(train_rows, n, seed)

    monkeypatch.setattr(pipeline, "make_calibrator", Recording)
    monkeypatch.setattr(pipeline, "inner_cv", recording_cv)
    config = load_config(
        None,
        [
            "model.kind=tfidf_lr",
            "model.min_df=1",
            "model.c_grid=[0.1, 1.0]",
            "explainer=none",
            "calibration.method=platt",
            "evaluation.folds=4",
            "evaluation.repeats=1",
            "evaluation.bootstrap=100",
            "evaluation.invariance=false",
        ],
    )
    fold_tests: list[set[str]] = []
    fold_sizes: list[int] = []

    def on_fold(repeat: int, fold: int, model: Any, test_rows: Rows) -> None:
        fold_tests.append(set(test_rows.groups))
        fold_sizes.append(len(rows) - len(test_rows))
        assert model.info.decision["base_rate"] == pytest.approx(0.25, abs=0.05)

    cross_validate(config, rows, data_fingerprint="t", on_fold_model=on_fold)
    assert len(fold_tests) == 4
    # calibrated on every training row of the fold, none of its test rows
    assert calibrated_on == fold_sizes
    for train_groups, test_groups in zip(split_groups, fold_tests, strict=True):
        assert not train_groups & test_groups
        assert train_groups | test_groups == set(rows.groups)


def _record_fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int, int]]:
    """Every TF-IDF fit of the pipeline (clones included) as (C, ngram_max, rows), in order."""
    fitted: list[tuple[float, int, int]] = []
    real = TfidfLogReg.fit

    def fit_and_record(self: TfidfLogReg, X: Any, y: Any) -> Any:
        fitted.append((self.c, self.ngram_max, len(X)))
        return real(self, X, y)

    monkeypatch.setattr(TfidfLogReg, "fit", fit_and_record)
    return fitted


def test_final_model_fits_on_all_training_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows()
    fitted = _record_fits(monkeypatch)
    config = load_config(
        None,
        ["model.kind=tfidf_lr", "model.min_df=1", "explainer=none", "calibration.method=platt"],
    )
    model = fit_calibrated(config, rows, data_fingerprint="t")
    assert fitted[-1][2] == len(rows)  # the final fit: every training row
    assert len(fitted) == 1 + 5  # five inner fits for the out-of-fold scores
    assert model.threshold == pytest.approx(0.5)  # objective bayes, cost ratio 1


def test_crossfit_needs_both_classes_in_each_part() -> None:
    rows = _rows(n_groups=8)
    rows = rows.subset([i for i, g in enumerate(rows.groups) if g not in {"L0"}])
    with pytest.raises(InvalidInputError):
        inner_cv(rows, 5, seed=13)


def test_inner_cv_tunes_every_pair_of_c_and_ngram_max(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows()
    fits = _record_fits(monkeypatch)
    config = load_config(
        None,
        [
            "model.kind=tfidf_lr",
            "model.min_df=1",
            "model.c_grid=[0.1, 1.0]",
            "model.ngram_max_grid=[1, 2]",
            "explainer=none",
            "calibration.method=platt",
        ],
    )
    fit_calibrated(config, rows, data_fingerprint="t")
    grid, cross_fit, (final_c, final_n, final_size) = fits[:20], fits[20:25], fits[-1]
    pairs = {(c, n) for c, n, _ in grid}
    assert pairs == {(0.1, 1), (0.1, 2), (1.0, 1), (1.0, 2)}  # GridSearchCV: every pair,
    assert len(fits) == 4 * 5 + 5 + 1  # five folds each, then cross_val_predict, then all
    assert all(size < len(rows) for _, _, size in grid + cross_fit)
    # cross_val_predict fits the chosen pair once per fold; the final fit uses it too
    assert {(c, n) for c, n, _ in cross_fit} == {(final_c, final_n)} <= pairs
    assert final_size == len(rows)


def test_the_frozen_encoder_is_tuned_and_cross_fitted_through_scikit_learn(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(n_groups=16)
    fitted_c: list[float] = []
    real = FrozenEncoderLogReg.fit

    def fit_and_record(self: FrozenEncoderLogReg, *args: Any) -> Any:
        fitted_c.append(self.model_config.c)
        return real(self, *args)

    monkeypatch.setattr(FrozenEncoderLogReg, "fit", fit_and_record)
    config = load_config(
        None,
        [
            "model.kind=frozen_encoder_lr",
            f"model.base_model={tiny_bert}",
            "model.max_length=64",
            "model.stride=16",
            "model.c_grid=[0.1, 10.0]",
            "training.crossfit_folds=2",
            "explainer=none",
            "calibration.method=platt",
        ],
    )

    model = fit_calibrated(config, rows, data_fingerprint="t")

    assert isinstance(model.classifier, FrozenEncoderLogReg)
    assert len(fitted_c) == 2 * 2 + 2 + 1  # grid (2 C x 2 folds), cross_val_predict, final
    assert set(fitted_c[:4]) == {0.1, 10.0}
    assert len(set(fitted_c[4:])) == 1  # the chosen C for the cross-fit and the final fit
    assert model.predict_proba(rows.inputs).shape == (len(rows), 2)


def test_a_metric_no_repeat_defines_is_nan_without_a_numpy_warning() -> None:
    config = load_config(
        None,
        [
            "model.kind=majority",
            "explainer=none",
            "evaluation.folds=4",
            "evaluation.repeats=2",
            "evaluation.bootstrap=100",
            "evaluation.invariance=false",
        ],
    )

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        summary, per_repeat = cross_validate(config, _rows(), data_fingerprint="t")

    assert len(per_repeat) == 2
    assert all(np.isnan(value) for value in summary.metrics["precision_overturned"])
    assert summary.metrics["auroc"] == pytest.approx((0.5, 0.5, 0.5))
