"""Why the bootstrap keeps its vectorised metrics: time 1,000 cluster-bootstrap resamples.

Compares :func:`imr_outcome.train.bootstrap.bootstrap_ci` (the 14 metrics as weight-matrix
products) with scikit-learn's metrics called once per resample with ``sample_weight`` (the
plain path), on invented data shaped like one DWC held-out fold (450 items, 150 letters,
12% Overturned). Run: ``.venv/bin/python experiments/bench_metrics.py [--resamples N]``.
Measured on a 2-core AMD EPYC (avx2, no avx512*, no amx), shared with other jobs, with
``--resamples 50``: vectorised 0.74 s per 1,000 resamples; sklearn 235 s per 1,000 (and a
5x5 cross-validation runs 25 of them).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn import metrics as skm

from imr_outcome.train.bootstrap import bootstrap_ci


def _sklearn_resample(y: np.ndarray, p: np.ndarray, pred: np.ndarray, w: np.ndarray) -> None:
    skm.roc_auc_score(y, p, sample_weight=w)
    skm.average_precision_score(y, p, sample_weight=w)
    skm.brier_score_loss(y, p, sample_weight=w)
    skm.log_loss(y, p, sample_weight=w, labels=[0, 1])
    skm.confusion_matrix(y, pred, labels=[0, 1], sample_weight=w)
    skm.f1_score(y, pred, labels=[0, 1], average=None, sample_weight=w, zero_division=np.nan)
    skm.balanced_accuracy_score(y, pred, sample_weight=w)
    skm.precision_score(y, pred, sample_weight=w, zero_division=np.nan)
    skm.recall_score(y, pred, sample_weight=w, zero_division=np.nan)


def main() -> None:
    """Print seconds per 1,000 resamples for both paths."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resamples", type=int, default=100, help="sklearn resamples timed")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, n_groups = 450, 150
    y = (rng.random(n) < 0.12).astype(np.int64)
    p = np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1)
    groups = rng.integers(0, n_groups, n)

    started = time.perf_counter()
    bootstrap_ci(y, p, groups, 0.3, n_boot=1000, seed=0)
    vectorised = time.perf_counter() - started

    pred = (p >= 0.3).astype(np.int64)
    started = time.perf_counter()
    for _ in range(args.resamples):
        counts = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups))
        _sklearn_resample(y, p, pred, counts[groups].astype(np.float64))
    plain = (time.perf_counter() - started) * 1000 / args.resamples

    print(f"vectorised bootstrap_ci: {vectorised:.2f} s per 1,000 resamples")
    print(f"sklearn + sample_weight: {plain:.1f} s per 1,000 resamples (from {args.resamples})")


if __name__ == "__main__":
    main()
