from __future__ import annotations

import math
import time

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.calibration import calibration_curve

from imr_outcome.errors import InvalidInputError
from imr_outcome.train.bootstrap import _weighted_metrics, bootstrap_ci, paired_bootstrap_auroc
from imr_outcome.train.metrics import (
    METRIC_NAMES,
    binary_metrics,
    expected_calibration_error,
    flatten_metrics,
    reliability_curve,
    subgroup_metrics,
)

# Six items, threshold 0.6 (predicted Overturned when p >= 0.6):
#   item   p     y   predicted   cell
#   a    0.05    0       0        TN
#   b    0.15    0       0        TN
#   c    0.25    1       0        FN
#   d    0.55    0       0        TN
#   e    0.65    1       1        TP
#   f    0.85    1       1        TP
Y = [0, 0, 1, 0, 1, 1]
P = [0.05, 0.15, 0.25, 0.55, 0.65, 0.85]


def _scored(
    n: int, n_groups: int, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """n items in n_groups letters, ~30% Overturned, p informative but noisy."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n)
    y = (rng.random(n) < 0.3).astype(np.int64)
    p = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0.0, 0.15, n), 0.0, 1.0)
    return y, p, groups


# ------------------------------------------------------------------ binary_metrics


def test_binary_metrics_match_hand_computed_values() -> None:
    m = binary_metrics(Y, P, threshold=0.6)

    assert list(m) == list(METRIC_NAMES)
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (3.0, 0.0, 1.0, 2.0)
    # AUROC: positives {.25, .65, .85} vs negatives {.05, .15, .55}: .25 beats 2 of 3,
    # .65 and .85 beat all 3 -> 8 of 9 pairs.
    assert m["auroc"] == pytest.approx(8 / 9)
    # AP, descending: .85 (P=1/1, R=1/3), .65 (P=2/2, R=2/3), .55 (neg), .25 (P=3/4, R=1)
    # -> 1/3 * 1 + 1/3 * 1 + 1/3 * 3/4 = 11/12.
    assert m["auprc"] == pytest.approx(11 / 12)
    # Brier: (.05² + .15² + .75² + .55² + .35² + .15²) / 6
    #      = (.0025 + .0225 + .5625 + .3025 + .1225 + .0225) / 6 = 1.035 / 6.
    assert m["brier"] == pytest.approx(1.035 / 6)
    # Log loss: mean of -log p(y): .95, .85, .25, .45, .65, .85.
    nll = -sum(math.log(q) for q in (0.95, 0.85, 0.25, 0.45, 0.65, 0.85)) / 6
    assert m["log_loss"] == pytest.approx(nll)
    # ECE: every item has its own bin (0, 1, 2, 5, 6, 8), so ECE = mean |y - p|
    #      = (.05 + .15 + .75 + .55 + .35 + .15) / 6 = 2 / 6.
    assert m["ece"] == pytest.approx(2 / 6)
    # Recall(Overturned) = 2/3, recall(Upheld) = 3/3 -> balanced accuracy 5/6.
    assert m["balanced_accuracy"] == pytest.approx(5 / 6)
    assert m["precision_overturned"] == pytest.approx(1.0)  # 2 / (2 + 0)
    assert m["recall_overturned"] == pytest.approx(2 / 3)  # 2 / (2 + 1)
    assert m["f1_overturned"] == pytest.approx(4 / 5)  # 2*2 / (2*2 + 0 + 1)
    # F1(Upheld) = 2*3 / (2*3 + 1 + 0) = 6/7; macro = (4/5 + 6/7) / 2 = 29/35.
    assert m["macro_f1"] == pytest.approx(29 / 35)


def test_an_item_exactly_at_the_threshold_is_predicted_overturned() -> None:
    m = binary_metrics(Y, P, threshold=0.55)

    # d (p = .55, Upheld) now crosses: one false positive.
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (2.0, 1.0, 1.0, 2.0)


def test_one_class_gives_nan_for_undefined_metrics_not_an_exception() -> None:
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.7], threshold=0.5)

    for name in ("auroc", "auprc", "balanced_accuracy", "recall_overturned"):
        assert math.isnan(m[name]), name
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.49) / 3)
    assert m["precision_overturned"] == 0.0  # 0 TP of 1 flagged
    assert m["f1_overturned"] == 0.0  # 0 / (0 + 1 + 0)


@pytest.mark.parametrize(
    ("y", "p", "threshold", "message"),
    [
        (
            [0, 1],
            [0.5],
            0.5,
            "p_overturned: expected one probability per label (2 labels), found 1",
        ),
        (
            [0, 2],
            [0.5, 0.5],
            0.5,
            "y_true: expected labels 0 (Upheld) or 1 (Overturned), found [2]",
        ),
        (
            [0, 1],
            [0.5, 1.2],
            0.5,
            "p_overturned: expected probabilities in [0, 1], found values from 0.5 to 1.2; "
            "pass probabilities (predict_proba), not logits",
        ),
        (
            [0, 1],
            [0.5, float("nan")],
            0.5,
            "p_overturned: expected finite probabilities, found nan at index 1",
        ),
        (
            [0, 1],
            [[0.5, 0.5], [0.2, 0.8]],
            0.5,
            "p_overturned: expected a 1-D array of Overturned probabilities, found shape (2, 2); "
            "pass the Overturned column, e.g. proba[:, 1]",
        ),
        ([], [], 0.5, "y_true: expected at least one label, found none"),
        ([0, 1], [0.5, 0.5], 1.5, "threshold: expected a number in [0, 1], found 1.5"),
        ([0, 1], [0.5, 0.5], None, "threshold: expected a number in [0, 1], found None"),
    ],
)
def test_bad_inputs_are_rejected_naming_the_argument(
    y: list[int], p: list[float], threshold: float, message: str
) -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        binary_metrics(y, p, threshold)

    assert str(excinfo.value) == message


def test_string_labels_are_rejected_with_the_fix() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        binary_metrics(["Upheld", "Overturned"], [0.2, 0.8], 0.5)

    assert excinfo.value.field == "y_true"
    assert "map label names to ids with imr_outcome.data.schema.LABELS" in excinfo.value.reason


# ------------------------------------------------------------------------ calibration

# ECE example with shared bins (10 bins, bin k = (k/10, (k+1)/10]):
#   bin 1: p .12 .18     y 0 1   -> mean p .15,  frac .5,  gap .35, weight 2/6
#   bin 6: p .62 .68 .64 y 1 1 0 -> mean p 1.94/3, frac 2/3, gap .02, weight 3/6
#   bin 9: p .95         y 1     -> mean p .95,  frac 1,   gap .05, weight 1/6
#   ECE = (2 * .35 + 3 * .02 + 1 * .05) / 6 = .81 / 6 = .135
ECE_Y = [0, 1, 1, 1, 0, 1]
ECE_P = [0.12, 0.18, 0.62, 0.68, 0.64, 0.95]


def test_ece_matches_hand_computed_value() -> None:
    assert expected_calibration_error(ECE_Y, ECE_P) == pytest.approx(0.135)
    # One bin: |mean y - mean p| = |4/6 - 3.19/6| = .81/6, the same, because all three gaps
    # above have the same sign (y above p), so pooling the bins cancels nothing.
    assert expected_calibration_error(ECE_Y, ECE_P, n_bins=1) == pytest.approx(abs(4 - 3.19) / 6)


def test_reliability_curve_returns_every_bin_with_nan_for_empty_ones() -> None:
    mean_p, frac_pos, count = reliability_curve(ECE_Y, ECE_P)

    assert count.tolist() == [0, 2, 0, 0, 0, 0, 3, 0, 0, 1]
    assert mean_p[[1, 6, 9]] == pytest.approx([0.15, 1.94 / 3, 0.95])
    assert frac_pos[[1, 6, 9]] == pytest.approx([0.5, 2 / 3, 1.0])
    assert np.isnan(mean_p[[0, 2, 3, 4, 5, 7, 8]]).all()
    assert np.isnan(frac_pos[[0, 2, 3, 4, 5, 7, 8]]).all()


def test_bins_are_closed_on_the_right_like_sklearn() -> None:
    # An edge belongs to the bin below it: .1 to [0, .1] (bin 0), .5 to (.4, .5] (bin 4);
    # 0 is in bin 0 and 1 in bin 9.
    _, _, count = reliability_curve([0, 1, 1, 0], [0.1, 0.5, 0.0, 1.0])
    assert count.tolist() == [2, 0, 0, 0, 1, 0, 0, 0, 0, 1]

    y, p, _ = _scored(500, 100, seed=1)
    mean_p, frac_pos, count = reliability_curve(y, p)
    sk_frac, sk_mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    assert mean_p[count > 0] == pytest.approx(sk_mean)
    assert frac_pos[count > 0] == pytest.approx(sk_frac)


def test_bad_n_bins_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match=r"^n_bins: expected a positive integer, found 0$"):
        expected_calibration_error(ECE_Y, ECE_P, n_bins=0)


# ------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.45, 1.0])
def test_weighted_metrics_equal_sklearn_on_the_repeated_items(threshold: float) -> None:
    # The bootstrap computes metrics from item weights; weight w must mean "w copies".
    y, p, _ = _scored(300, 300, seed=2)
    p[:40] = np.round(p[:40], 1)  # ties in p exercise the tie handling of AUROC and AP
    copies = np.random.default_rng(3).integers(0, 4, y.size)

    weighted = _weighted_metrics(y, p, threshold, copies[None, :].astype(np.float64))
    expected = binary_metrics(np.repeat(y, copies), np.repeat(p, copies), threshold)

    for name in METRIC_NAMES:
        assert weighted[name][0] == pytest.approx(expected[name], rel=1e-12, nan_ok=True), name


def test_bootstrap_ci_contains_the_point_estimate() -> None:
    y, p, groups = _scored(400, 250, seed=4)

    ci = bootstrap_ci(y, p, groups, threshold=0.4, n_boot=500)

    assert set(ci) == set(METRIC_NAMES)
    point = binary_metrics(y, p, 0.4)
    for name in ("auroc", "auprc", "brier", "log_loss", "balanced_accuracy", "f1_overturned"):
        estimate, lower, upper = ci[name]
        assert estimate == point[name]
        assert lower < estimate < upper, name


def test_bootstrap_ci_narrows_with_more_data() -> None:
    def auroc_width(n: int) -> float:
        y, p, groups = _scored(n, n // 2, seed=5)
        _, lower, upper = bootstrap_ci(y, p, groups, threshold=0.4, n_boot=400)["auroc"]
        return upper - lower

    # Width shrinks like 1/sqrt(n): 16x the items should roughly quarter it.
    assert auroc_width(3200) < 0.5 * auroc_width(200)


def test_bootstrap_resamples_whole_groups() -> None:
    # 40 letters with one item each, then the same letters each holding 5 identical items.
    # Resampling letters draws the same letters for both (same seed), so every ratio metric
    # and its interval is unchanged; the counts are 5x. Resampling items instead would
    # treat the 200 copies as independent evidence and narrow the interval.
    y, p, _ = _scored(40, 40, seed=6)
    letters = np.arange(40)
    single = bootstrap_ci(y, p, letters, threshold=0.4, n_boot=300, seed=7)
    grouped = bootstrap_ci(
        np.repeat(y, 5), np.repeat(p, 5), np.repeat(letters, 5), 0.4, n_boot=300, seed=7
    )
    as_items = bootstrap_ci(
        np.repeat(y, 5), np.repeat(p, 5), np.arange(200), 0.4, n_boot=300, seed=7
    )

    for name in ("auroc", "brier", "ece", "f1_overturned"):
        assert grouped[name] == pytest.approx(single[name], rel=1e-9), name
    assert grouped["tp"] == pytest.approx(tuple(5 * v for v in single["tp"]))
    width = {k: r["auroc"][2] - r["auroc"][1] for k, r in (("g", grouped), ("i", as_items))}
    assert width["i"] < 0.7 * width["g"]


def test_resamples_without_both_classes_are_skipped_per_metric() -> None:
    # Two of eight letters hold all the Overturned items; many resamples miss both.
    y = np.array([1, 1, 1, 0] + [0] * 12)
    p = np.linspace(0.9, 0.1, 16)
    groups = np.repeat(np.arange(8), 2)

    ci = bootstrap_ci(y, p, groups, threshold=0.5, n_boot=300)

    assert all(math.isfinite(v) for v in ci["auroc"])
    assert all(math.isfinite(v) for v in ci["brier"])

    upheld_only = bootstrap_ci(np.zeros(16, dtype=int), p, groups, threshold=0.5, n_boot=50)
    assert all(math.isnan(v) for v in upheld_only["auroc"])
    assert math.isfinite(upheld_only["brier"][1])


def test_bootstrap_is_reproducible_from_its_seed() -> None:
    y, p, groups = _scored(200, 100, seed=8)

    first = bootstrap_ci(y, p, groups, 0.4, n_boot=200, seed=1)

    assert bootstrap_ci(y, p, groups, 0.4, n_boot=200, seed=1) == first
    assert bootstrap_ci(y, p, groups, 0.4, n_boot=200, seed=2)["auroc"] != first["auroc"]


def test_bootstrap_of_1000_resamples_of_439_items_takes_under_3_seconds() -> None:
    y, p, groups = _scored(439, 300, seed=9)

    start = time.perf_counter()
    bootstrap_ci(y, p, groups, threshold=0.4, n_boot=1000)

    assert time.perf_counter() - start < 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"groups": [0, 1]},
            "groups: expected one group id per label, shape (6,), found shape (2,)",
        ),
        ({"n_boot": 0}, "n_boot: expected a positive integer, found 0"),
        ({"alpha": 1.0}, "alpha: expected a number in (0, 1), found 1.0"),
    ],
)
def test_bad_bootstrap_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"groups": [0, 0, 1, 1, 2, 2]} | kwargs
    with pytest.raises(InvalidInputError) as excinfo:
        bootstrap_ci(Y, P, threshold=0.5, **args)  # type: ignore[arg-type]

    assert str(excinfo.value) == message


# ------------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap_finds_a_clearly_better_challenger() -> None:
    y, _, groups = _scored(300, 150, seed=10)
    rng = np.random.default_rng(11)
    weak = np.clip(0.5 + 0.1 * (y - 0.5) + rng.normal(0, 0.2, y.size), 0, 1)
    strong = np.clip(0.5 + 0.4 * (y - 0.5) + rng.normal(0, 0.1, y.size), 0, 1)

    delta, p_value = paired_bootstrap_auroc(y, weak, strong, groups, n_boot=500)

    assert delta == pytest.approx(
        binary_metrics(y, strong, 0.5)["auroc"] - binary_metrics(y, weak, 0.5)["auroc"]
    )
    assert delta > 0.2
    assert p_value < 0.01
    _, reversed_p = paired_bootstrap_auroc(y, strong, weak, groups, n_boot=500)
    assert reversed_p > 0.99


def test_paired_bootstrap_of_a_model_against_itself_is_never_significant() -> None:
    y, p, groups = _scored(100, 50, seed=12)

    # Every resample has delta exactly 0, and "not better" includes 0.
    assert paired_bootstrap_auroc(y, p, p, groups, n_boot=100) == (0.0, 1.0)


def test_paired_bootstrap_on_one_class_is_nan() -> None:
    delta, p_value = paired_bootstrap_auroc([0, 0, 0], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0, 1, 2])

    assert math.isnan(delta)
    assert math.isnan(p_value)


# -------------------------------------------------------------------------- subgroups


def test_subgroup_metrics_match_hand_computed_values() -> None:
    # Items 0-3: surgery; 4-6: no category (None); 7: imaging.
    y = [0, 1, 0, 1, 0, 0, 0, 1]
    p = [0.2, 0.8, 0.4, 0.6, 0.1, 0.3, 0.7, 0.9]
    labels = ["surgery"] * 4 + [None] * 3 + ["imaging"]

    result = subgroup_metrics(y, p, labels, threshold=0.5, min_size=3)

    assert list(result) == ["imaging", "surgery", "unknown"]
    assert result["imaging"] == {"n": 1.0}  # below min_size: n only
    # surgery: positives {.8, .6} beat negatives {.2, .4}: AUROC 1; both flagged, none missed.
    # Brier (.04 + .04 + .16 + .16) / 4 = .1; each item its own bin: ECE = mean|y - p| = .3.
    assert result["surgery"] == pytest.approx(
        {
            "n": 4.0,
            "n_overturned": 2.0,
            "auroc": 1.0,
            "brier": 0.1,
            "ece": 0.3,
            "precision_overturned": 1.0,
            "recall_overturned": 1.0,
        }
    )
    # unknown (None): one class -> AUROC and recall NaN; Brier (.01 + .09 + .49) / 3;
    # ECE (.1 + .3 + .7) / 3; .7 is flagged and wrong -> precision 0.
    unknown = result["unknown"]
    assert math.isnan(unknown["auroc"])
    assert math.isnan(unknown["recall_overturned"])
    assert (unknown["n"], unknown["n_overturned"], unknown["precision_overturned"]) == (3, 0, 0)
    assert unknown["brier"] == pytest.approx(0.59 / 3)
    assert unknown["ece"] == pytest.approx(1.1 / 3)


def test_subgroup_labels_must_match_the_items() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        subgroup_metrics(Y, P, ["a"] * 5, threshold=0.5)

    assert str(excinfo.value) == "subgroup_labels: expected one subgroup per label (6), found 5"


# --------------------------------------------------------------------------- flatten


def test_flatten_metrics_makes_flat_float_mlflow_keys() -> None:
    flat = flatten_metrics(
        "test",
        {
            "auroc": (0.8, 0.7, 0.9),
            "tp": 3,
            "subgroup": {"physical medicine": {"n": 12.0}, "DME (rental)": {"auroc": math.nan}},
        },
    )

    assert list(flat) == [
        "test.auroc",
        "test.auroc.ci_low",
        "test.auroc.ci_high",
        "test.tp",
        "test.subgroup.physical medicine.n",
        "test.subgroup.DME _rental_.auroc",
    ]
    assert all(type(v) is float for v in flat.values())
    assert [flat[k] for k in list(flat)[:5]] == [0.8, 0.7, 0.9, 3.0, 12.0]
    assert math.isnan(flat["test.subgroup.DME _rental_.auroc"])


def test_flatten_metrics_covers_a_whole_bootstrap_result() -> None:
    y, p, groups = _scored(100, 50, seed=13)

    flat = flatten_metrics("val", bootstrap_ci(y, p, groups, 0.4, n_boot=20))

    assert len(flat) == 3 * len(METRIC_NAMES)
    assert "val.ece.ci_high" in flat


def test_flatten_metrics_rejects_lists() -> None:
    with pytest.raises(InvalidInputError) as excinfo:
        flatten_metrics("test", {"auroc": [0.8, 0.7]})

    assert str(excinfo.value) == (
        "test.auroc: expected a number, a (point, lower, upper) triple or a mapping, found list"
    )
