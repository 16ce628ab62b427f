"""Derived probe (issue 22, "sampling balanced by letter"): fit a TF-IDF config with every
letter weighing the same, and compare it with the usual fit on the same folds.

A letter with seven disputed items counts seven times in the usual fit, so its summary's
words are learned as if seven letters had used them. Here each training item gets the
sample weight ``1 / (items of its letter)``, rescaled to mean 1 so the regularization
strength is unchanged (the logistic regression's ``class_weight="balanced"`` still
applies on top). Both fits read the config's fixed ``model.c`` (configs with ``c_grid``
are refused: the inner search would need the weights too).

Folds: scikit-learn's ``StratifiedGroupKFold`` (5 folds, grouped by letter), repeated
with seeds 0..``--repeats``-1. Prints the mean over folds of the held-out AUROC of the raw
log-odds for each fit, their paired difference with a 95% t-interval over the folds
(folds of one repeat share letters, so the interval is optimistic), and the within-letter
concordance of each over the mixed letters of every repeat with a letter-bootstrap 95%
interval (:func:`~imr_outcome.train.letter_concordance.within_letter_concordance`).

    .venv/bin/python experiments/letter_balanced_probe.py \\
        [--config experiments/tfidf_lr_summary_mtus.yaml] [--repeats 5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.data.model_input import build_model_input
from imr_outcome.model.baselines import TfidfLogReg
from imr_outcome.train.config import load_config
from imr_outcome.train.letter_concordance import within_letter_concordance
from imr_outcome.train.pipeline import sklearn_estimator


def letter_weights(groups: np.ndarray) -> np.ndarray:
    """``1 / (rows of the row's letter)`` per row, rescaled to mean 1, shape ``(n,)``."""
    _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[index]
    return np.asarray(weights / weights.mean(), dtype=np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=Path("experiments/tfidf_lr_summary_mtus.yaml")
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dataset", type=Path, default=Path("artifacts/dataset"))
    args = parser.parse_args()
    config = load_config(args.config)
    template = sklearn_estimator(config)
    if not isinstance(template, TfidfLogReg) or getattr(config.model, "c_grid", []):
        raise SystemExit(f"{args.config}: expected a tfidf_lr config with a fixed C (no c_grid)")
    items = pd.read_parquet(args.dataset / "items-dwc.parquet")
    labels = items["label"].to_numpy().astype(int)
    groups = items["group_id"].astype(str).to_numpy()
    inputs = [
        build_model_input(r, s, {}) for r, s in zip(items["request"], items["summary"], strict=True)
    ]
    features = template._features(inputs, None)
    aurocs: dict[str, list[float]] = {"usual": [], "letter-balanced": []}
    pooled: dict[str, list[tuple[str, int, float]]] = {"usual": [], "letter-balanced": []}
    for repeat in range(args.repeats):
        folds = StratifiedGroupKFold(5, shuffle=True, random_state=repeat)
        for train, test in folds.split(features, labels, groups):
            for name, weights in (
                ("usual", None),
                ("letter-balanced", letter_weights(groups[train])),
            ):
                pipeline = template._make_estimator(features[train])
                pipeline.fit(features[train], labels[train], logreg__sample_weight=weights)
                z = pipeline.decision_function(features[test])
                aurocs[name].append(roc_auc_score(labels[test], z))
                pooled[name] += [
                    (f"{repeat}:{g}", int(y), float(p))
                    for g, y, p in zip(groups[test], labels[test], expit(z), strict=True)
                ]
    difference = np.array(aurocs["letter-balanced"]) - np.array(aurocs["usual"])
    half = stats.t.ppf(0.975, difference.size - 1) * difference.std(ddof=1)
    half /= np.sqrt(difference.size)
    print(f"{args.config.stem}: {args.repeats}x5 grouped folds, {len(labels)} items")
    print("| fit | mean fold AUROC | within-letter concordance [95% CI] (pairs) |")
    print("|---|---|---|")
    for name, scores in aurocs.items():
        g, y, p = zip(*pooled[name], strict=True)
        conc, low, high, pairs, _ = within_letter_concordance(list(g), np.array(y), np.array(p))
        print(f"| {name} | {np.mean(scores):.3f} | {conc:.3f} [{low:.3f}, {high:.3f}] ({pairs}) |")
    print(
        f"paired dAUROC (letter-balanced - usual): {difference.mean():+.3f} "
        f"[{difference.mean() - half:+.3f}, {difference.mean() + half:+.3f}]"
    )


if __name__ == "__main__":
    main()
