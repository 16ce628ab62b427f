"""Experiment: which lever makes the estimate read the request (issue 22)?

Usage: python experiments/request_levers.py [--dataset artifacts/dataset] [--repeats 3]

Repeated 5-fold cross-validation grouped by letter (``fold_group``, as ``evaluate``), on
the DWC items of the built dataset (read from ``../shared`` by ``make dataset``; nothing is
copied into the repo). Every candidate is a plain scikit-learn pipeline; C is tuned by an
inner grouped GridSearchCV on the training folds only. Printed per candidate:

- pooled out-of-fold AUROC and AUPRC (mean over repeats, with the range over repeats);
- paired ΔAUROC against TF-IDF with a 95% letter-bootstrap interval (first repeat);
- within-letter concordance over the mixed letters, all repeats pooled, with a 95%
  letter-bootstrap interval, and the median within-letter spread of P.

Candidates:
  tfidf            TF-IDF (1-2 grams) of request + summary, style-normalised, logistic regression
  request_prior    logistic regression on request structure features only
  tfidf+request    both feature sets side by side in one logistic regression
  two_stage        a stack: out-of-fold logits of tfidf (the letter's score) and of
                   request_prior (the item's prior), combined by a logistic regression
  summary          TF-IDF (1-2 grams) of the summary alone (as tfidf_lr_summary)
  summary_char     TF-IDF of the summary's character 3-5 grams inside word boundaries
  summary_nblr     NB-LR on the summary: binary 1-3 grams scaled by their naive Bayes
                   log-count ratio, then logistic regression (Wang & Manning 2012,
                   "Baselines and bigrams", ACL; the NBSVM of short-text benchmarks)
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction import DictVectorizer
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import FunctionTransformer, Pipeline

from imr_outcome.data.counterfactuals import normalize_text
from imr_outcome.data.request_features import letter_request_features
from imr_outcome.model.baselines import NaiveBayesScaling
from imr_outcome.train.letter_concordance import within_letter_concordance, within_letter_spread

C_GRID = [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]


def _text(frame: pd.DataFrame) -> list[str]:
    return [
        normalize_text(f"{request}. {summary}", dates=True, sex=True).text.lower()
        for request, summary in zip(frame["request"], frame["summary"], strict=True)
    ]


def _summary_text(frame: pd.DataFrame) -> list[str]:
    return [
        normalize_text(str(summary), dates=True, sex=True).text.lower()
        for summary in frame["summary"]
    ]


def _features(frame: pd.DataFrame) -> list[dict[str, float]]:
    return letter_request_features(list(frame["request"]), list(frame["group_id"]))


def _tfidf() -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)


def _lr() -> LogisticRegression:
    return LogisticRegression(class_weight="balanced", max_iter=2000)


def candidate(name: str) -> Pipeline:
    """The unfitted pipeline of a candidate (input: the items DataFrame)."""
    text = FunctionTransformer(_text)
    features = FunctionTransformer(_features)
    if name == "tfidf":
        steps: list[tuple[str, Any]] = [("text", text), ("tfidf", _tfidf())]
    elif name == "request_prior":
        steps = [("features", features), ("vector", DictVectorizer())]
    elif name == "tfidf+request":
        both = ColumnTransformer(
            [
                ("tfidf", Pipeline([("text", text), ("tfidf", _tfidf())]), ["request", "summary"]),
                (
                    "request",
                    Pipeline([("features", features), ("vector", DictVectorizer())]),
                    ["request", "group_id"],
                ),
            ]
        )
        steps = [("features", both)]
    elif name == "summary":
        steps = [("text", FunctionTransformer(_summary_text)), ("tfidf", _tfidf())]
    elif name == "summary_char":
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, sublinear_tf=True)
        steps = [("text", FunctionTransformer(_summary_text)), ("tfidf", chars)]
    elif name == "summary_nblr":
        counts = CountVectorizer(ngram_range=(1, 3), min_df=2, binary=True)
        steps = [
            ("text", FunctionTransformer(_summary_text)),
            ("counts", counts),
            ("nb", NaiveBayesScaling()),
        ]
    else:
        raise ValueError(name)
    return Pipeline([*steps, ("lr", _lr())])


def tuned(name: str, groups: np.ndarray[Any, Any]) -> GridSearchCV:
    """``candidate(name)`` with C chosen by inner grouped 3-fold CV (AUROC)."""
    return GridSearchCV(
        candidate(name),
        {"lr__C": C_GRID},
        scoring="roc_auc",
        cv=StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0),
    )


def fit_predict(name: str, train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray[Any, Any]:
    """P(Overturned) of ``test`` from ``name`` fitted on ``train`` (grouped inner CV only)."""
    y, groups = train["label"].to_numpy(), train["fold_group"].to_numpy()
    if name != "two_stage":
        search = tuned(name, groups).fit(train, y, groups=groups)
        return np.asarray(search.predict_proba(test)[:, 1])
    inner = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=1)
    stack_train, stack_test = [], []
    for part in ("tfidf", "request_prior"):
        search = tuned(part, groups)
        oof = cross_val_predict(
            search, train, y, groups=groups, cv=inner, method="decision_function",
            params={"groups": groups},
        )  # fmt: skip
        stack_train.append(oof)
        stack_test.append(search.fit(train, y, groups=groups).decision_function(test))
    top = LogisticRegression(class_weight="balanced").fit(np.column_stack(stack_train), y)
    return np.asarray(top.predict_proba(np.column_stack(stack_test))[:, 1])


def paired_delta(
    labels: np.ndarray[Any, Any],
    groups: np.ndarray[Any, Any],
    p_a: np.ndarray[Any, Any],
    p_b: np.ndarray[Any, Any],
    n: int = 1000,
) -> tuple[float, float, float]:
    """AUROC(p_a) - AUROC(p_b) with a 95% interval resampling letters."""
    point = roc_auc_score(labels, p_a) - roc_auc_score(labels, p_b)
    letters = np.unique(groups)
    index = {letter: np.flatnonzero(groups == letter) for letter in letters}
    rng = np.random.default_rng(0)
    deltas = []
    for _ in range(n):
        rows = np.concatenate([index[letter] for letter in rng.choice(letters, len(letters))])
        if len(np.unique(labels[rows])) < 2:
            continue
        deltas.append(
            roc_auc_score(labels[rows], p_a[rows]) - roc_auc_score(labels[rows], p_b[rows])
        )
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(point), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=Path("artifacts/dataset"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--candidates", nargs="+", default=["tfidf", "request_prior", "tfidf+request", "two_stage"]
    )
    args = parser.parse_args()
    items = pd.read_parquet(args.dataset / "items-dwc.parquet").reset_index(drop=True)
    labels, groups = items["label"].to_numpy(), items["fold_group"].to_numpy()
    letters = items["group_id"].to_numpy()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"{len(items)} items, {len(np.unique(letters))} letters, "
        f"{labels.sum()} Overturned; commit {commit}"
    )
    oof: dict[str, list[np.ndarray[Any, Any]]] = {name: [] for name in args.candidates}
    started = time.perf_counter()
    for repeat in range(args.repeats):
        outer = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=100 + repeat)
        predictions = {name: np.zeros(len(items)) for name in args.candidates}
        for train_index, test_index in outer.split(items, labels, groups):
            train, test = items.iloc[train_index], items.iloc[test_index]
            for name in args.candidates:
                predictions[name][test_index] = fit_predict(name, train, test)
        for name in args.candidates:
            oof[name].append(predictions[name])
        print(f"repeat {repeat + 1}/{args.repeats} done ({time.perf_counter() - started:.0f} s)")
    print(
        "\n| candidate | AUROC | AUPRC | ΔAUROC vs tfidf [95% CI] | within-letter concordance "
        "[95% CI] (pairs, letters) | median spread | commit |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.candidates:
        aurocs = [roc_auc_score(labels, p) for p in oof[name]]
        auprcs = [average_precision_score(labels, p) for p in oof[name]]
        pooled_groups = [f"{r}:{g}" for r in range(args.repeats) for g in letters]
        pooled_p = np.concatenate(oof[name])
        pooled_y = np.tile(labels, args.repeats)
        conc, low, high, pairs, n_letters = within_letter_concordance(
            pooled_groups, pooled_y, pooled_p
        )
        spread = within_letter_spread(list(letters), oof[name][0])["median_spread"]
        if "tfidf" in oof and name != "tfidf":
            delta = paired_delta(labels, letters, oof[name][0], oof["tfidf"][0])
            delta_text = f"{delta[0]:+.3f} [{delta[1]:+.3f}, {delta[2]:+.3f}]"
        else:
            delta_text = "-"
        print(
            f"| {name} | {np.mean(aurocs):.3f} ({min(aurocs):.3f}-{max(aurocs):.3f}) "
            f"| {np.mean(auprcs):.3f} | {delta_text} | {conc:.3f} [{low:.3f}, {high:.3f}] "
            f"({pairs // args.repeats}, {n_letters // args.repeats}) | {spread:.4f} | {commit} |"
        )


if __name__ == "__main__":
    main()
