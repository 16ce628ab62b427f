"""Experiment (issue 22): would more letters lift the model towards AUROC 0.75 / 0.80?

Usage:
    .venv/bin/python experiments/learning_curve.py --config experiments/tfidf_lr_summary.yaml
        [--set key=value ...] [--repeats 3] [--fractions 0.2 0.4 0.6 0.8 1.0]

The outer folds are ``evaluate``'s (``StratifiedGroupKFold(evaluation.folds, shuffle=True,
random_state=training.seed + repeat)`` on ``fold_group``), so the held-out letters of every
point are the ones the CV table scores. Inside each outer fold the training letters are
shuffled once, letters with an Overturned item and letters without separately (so every
subset keeps the base rate), and the first ``fraction`` of each is kept: the subsets are
nested, and a point differs from the next only by the letters added. Each subset is fitted
exactly as a CV fold is (``fit_calibrated``: C by inner grouped CV, cross-fitted
calibration), and the held-out fold is scored whole. Printed per fraction: training letters
and items (mean over folds); AUROC as the CV table gives it (the mean over folds; mean over
repeats and its range), pooled out-of-fold AUROC and AUPRC; and how many fold fits scored
every held-out item alike (the calibrator's guard against an inverted ranking gives the base
rate, which happens on the smallest subsets).

The gain of the full training set over each smaller subset is also printed as a paired
difference of pooled AUROC (every repeat's out-of-fold P stacked) with a 95% interval from
resampling (repeat, letter) clusters (``paired_difference`` of ``cv_table.py``; Efron &
Tibshirani 1993, ch. 16): the same held-out items score both, so the interval says whether
the added letters helped.

Then an inverse power law is fitted to the fold-mean AUROC against the mean number of
training letters n, ``AUROC(n) = a - b * n ** -c`` (Figueroa et al. 2012, "Predicting sample size
required for classification performance", BMC Med Inform Decis Mak 12:8; weighted by the
inverse variance over repeats), and the script prints its asymptote ``a`` and the number of
letters at which the curve reaches 0.75 and 0.80 (None when the asymptote is below). Five
points from one small corpus extrapolate loosely: read the fit as the direction and rough
size of the gain, and the per-repeat fits as its spread.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.optimize import curve_fit
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.train.config import RunConfig, load_config
from imr_outcome.train.pipeline import Rows, fit_calibrated
from imr_outcome.train.run import load_training_data

FloatArray = npt.NDArray[np.float64]
TARGETS = (0.75, 0.80)


def nested_subsets(
    rows: Rows, train_idx: npt.NDArray[np.int64], fractions: list[float], seed: int
) -> list[npt.NDArray[np.int64]]:
    """For each fraction, the training rows of the first ``fraction`` of the training
    letters with an Overturned item and of those without (each shuffled once by ``seed``,
    at least 2 of each kept); nested, since every fraction takes a prefix of one order."""
    groups = np.asarray(rows.groups, dtype=object)[train_idx]
    labels = rows.labels[train_idx]
    positive = sorted({g for g, y in zip(groups, labels, strict=True) if y == 1})
    negative = sorted(set(groups) - set(positive))
    rng = np.random.default_rng(seed)
    orders = [list(rng.permutation(positive)), list(rng.permutation(negative))]
    subsets = []
    for fraction in fractions:
        kept = {g for order in orders for g in order[: max(2, math.ceil(fraction * len(order)))]}
        subsets.append(train_idx[np.isin(groups, list(kept))])
    return subsets


def inverse_power_law(n: FloatArray, a: float, b: float, c: float) -> FloatArray:
    """``a - b * n ** -c`` (Figueroa et al. 2012, eq. 1)."""
    return np.asarray(a - b * np.power(n, -c), dtype=np.float64)


def fit_curve(n: FloatArray, auroc: FloatArray, sd: FloatArray | None) -> tuple[float, ...]:
    """``(a, b, c)`` of :func:`inverse_power_law`, a in [0.5, 1], b and c >= 0."""
    sigma = None if sd is None else np.maximum(sd, 1e-3)
    params, _ = curve_fit(
        inverse_power_law,
        n,
        auroc,
        p0=(min(float(auroc.max()) + 0.05, 1.0), 1.0, 0.5),
        bounds=([0.5, 0.0, 0.0], [1.0, 100.0, 3.0]),
        sigma=sigma,
        maxfev=20000,
    )
    return tuple(float(v) for v in params)


def letters_needed(a: float, b: float, c: float, target: float) -> float | None:
    """Training letters at which the fitted curve reaches ``target``; None if never."""
    if a <= target or b <= 0 or c <= 0:
        return None
    return float((b / (a - target)) ** (1 / c))


def _spread(values: FloatArray) -> str:
    return f"{values.mean():.3f} ({values.min():.3f}-{values.max():.3f})"


def _print_gains(rows: Rows, oof: FloatArray, fractions: list[float]) -> None:
    """Pooled AUROC of the full training set minus each smaller one, on the same held-out
    items of every repeat, with a 95% paired interval resampling (repeat, letter)."""
    # a sibling script: experiments/ is on sys.path when this runs as a script
    from cv_table import paired_difference

    repeats = oof.shape[0]
    common = {
        "ids": list(range(repeats * len(rows))),
        "labels": np.tile(rows.labels, repeats),
        "groups": [f"{r}:{g}" for r in range(repeats) for g in rows.groups],
    }
    full = {**common, "p_overturned": oof[:, -1].ravel()}
    print(f"\npooled AUROC gain of {fractions[-1]:.1f} over each smaller subset [95% CI]:")
    for k, fraction in enumerate(fractions[:-1]):
        gain = paired_difference({**common, "p_overturned": oof[:, k].ravel()}, full)
        if gain is not None:
            print(
                f"  {fractions[-1]:.1f} - {fraction:.1f}: {gain[0]:+.3f} "
                f"[{gain[1]:+.3f}, {gain[2]:+.3f}]"
            )


def run(config: RunConfig, fractions: list[float], repeats: int) -> None:
    data = load_training_data(config)
    rows = data.rows
    n_folds, seed = config.evaluation.folds, config.training.seed
    auroc = np.zeros((repeats, len(fractions)))
    pooled = np.zeros((repeats, len(fractions)))
    constant = np.zeros(len(fractions), dtype=int)
    auprc = np.zeros((repeats, len(fractions)))
    n_letters = np.zeros((repeats, len(fractions)))
    n_items = np.zeros((repeats, len(fractions)))
    oof = np.zeros((repeats, len(fractions), len(rows)))
    for repeat in range(repeats):
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed + repeat)
        p = np.zeros((len(fractions), len(rows)))
        fold_auroc = np.zeros((len(fractions), n_folds))
        for fold, (train_idx, test_idx) in enumerate(
            splitter.split(np.zeros(len(rows)), rows.labels, rows.groups)
        ):
            test = rows.subset(test_idx)
            subsets = nested_subsets(rows, train_idx, fractions, seed=1000 * repeat + fold)
            for k, subset in enumerate(subsets):
                sub = rows.subset(subset)
                model = fit_calibrated(config, sub, data_fingerprint=data.fingerprint)
                p[k, test_idx] = model.predict_proba(test.inputs, test.metadata)[:, 1]
                fold_auroc[k, fold] = roc_auc_score(test.labels, p[k, test_idx])
                constant[k] += int(np.ptp(p[k, test_idx]) == 0)
                n_letters[repeat, k] += len(set(sub.groups)) / n_folds
                n_items[repeat, k] += len(sub) / n_folds
            print(f"repeat {repeat} fold {fold} done ({time.strftime('%X')})", flush=True)
        oof[repeat] = p
        for k in range(len(fractions)):
            auroc[repeat, k] = fold_auroc[k].mean()
            pooled[repeat, k] = roc_auc_score(rows.labels, p[k])
            auprc[repeat, k] = average_precision_score(rows.labels, p[k])

    print(
        f"\n{config.name}: {len(rows)} items, {len(set(rows.groups))} letters, "
        f"{int(rows.labels.sum())} Overturned; {n_folds} folds x {repeats} repeats"
    )
    print(
        "| fraction | training letters | training items | AUROC, mean over folds (range) "
        "| pooled AUROC | AUPRC (range) | fold fits scoring all alike |"
    )
    print("|---|---|---|---|---|---|---|")
    for k, fraction in enumerate(fractions):
        print(
            f"| {fraction:.1f} | {n_letters[:, k].mean():.0f} | {n_items[:, k].mean():.0f} | "
            f"{_spread(auroc[:, k])} | {pooled[:, k].mean():.3f} | {_spread(auprc[:, k])} | "
            f"{constant[k]} of {repeats * n_folds} |"
        )
    _print_gains(rows, oof, fractions)
    n = n_letters.mean(axis=0)
    sd = auroc.std(axis=0, ddof=1) if repeats > 1 else None
    fits = [("mean", fit_curve(n, auroc.mean(axis=0), sd))]
    fits += [(f"repeat {r}", fit_curve(n_letters[r], auroc[r], None)) for r in range(repeats)]
    print("\ninverse power law AUROC(n) = a - b * n^-c, n = training letters:")
    for name, (a, b, c) in fits:
        needed = [letters_needed(a, b, c, t) for t in TARGETS]
        reach = ", ".join(
            f"{t:.2f} at {'never' if m is None else f'{m:,.0f} letters'}"
            for t, m in zip(TARGETS, needed, strict=True)
        )
        print(f"  {name}: a={a:.3f} b={b:.3f} c={c:.3f}; {reach}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    args = parser.parse_args()
    if not all(0 < f <= 1 for f in args.fractions):
        raise SystemExit("--fractions: each must be in (0, 1]")
    started = time.time()
    run(load_config(args.config, args.overrides), sorted(args.fractions), args.repeats)
    print(f"\n{(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
