"""Derived probe (issue 22): where a letter-centred item stage gains and loses, fold by fold.

Fits the letter model (``--letter``, default ``tfidf_lr_summary_mtus``) and a two-stage
config with ``item_centring: letter`` (``--stack``) on the same letter-grouped folds
(scikit-learn's ``StratifiedGroupKFold``, 5 folds, ``random_state`` = the config's seed)
and prints, per held-out fold, from the raw (uncalibrated) log-odds:

- AUROC of the letter model, of the stack, and of the stack's own letter stage (equal to
  the letter model's when they share a config: centring leaves each letter's mean to it);
- the stack's weights (letter, item) as fitted on the training folds;
- the standard deviation of the stack's log-odds inside letters (the item stage's spread
  plus what the letter stage itself tells apart) and of the letter stage's term across
  items: a spread near the letter term's moves items across letters.

    .venv/bin/python experiments/letter_centring_folds.py \\
        [--stack experiments/summary_mpnet_centred_mtus.yaml] \\
        [--set model.item_encoder=DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.data.model_input import build_model_input
from imr_outcome.model.base import frame_inputs, model_frame
from imr_outcome.model.two_stage import SUMMARY_COLUMN, TwoStageLogReg, letter_means
from imr_outcome.train.config import load_config
from imr_outcome.train.pipeline import sklearn_estimator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--letter", type=Path, default=Path("experiments/tfidf_lr_summary_mtus.yaml")
    )
    parser.add_argument(
        "--stack", type=Path, default=Path("experiments/summary_mpnet_centred_mtus.yaml")
    )
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    parser.add_argument("--dataset", type=Path, default=Path("artifacts/dataset"))
    args = parser.parse_args()
    items = pd.read_parquet(args.dataset / "items-dwc.parquet")
    labels = items["label"].to_numpy().astype(int)
    frame = model_frame(
        [
            build_model_input(r, s, {})
            for r, s in zip(items["request"], items["summary"], strict=True)
        ]
    )
    letter_model = sklearn_estimator(load_config(args.letter))
    config = load_config(args.stack, args.overrides)
    stack = sklearn_estimator(config)
    if not isinstance(stack, TwoStageLogReg) or stack.item_centring != "letter":
        raise SystemExit(f"{args.stack}: expected a two_stage config with item_centring: letter")
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=config.training.seed)
    columns = (
        "fold", "AUROC letter model", "AUROC stack", "AUROC its letter stage",
        "weights (letter, item)", "sd inside letters", "sd of letter term",
    )  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for fold, (train, test) in enumerate(folds.split(frame, labels, items["group_id"])):
        fitted_letter = clone(letter_model).fit(frame.iloc[train], labels[train])
        fitted = clone(stack).fit(frame.iloc[train], labels[train])
        y = labels[test]
        features = fitted._features(*frame_inputs(frame.iloc[test]))
        z = fitted.decision_function(frame.iloc[test])
        letter_term = np.asarray(fitted._letter_pipeline().decision_function(features))
        w, beta = fitted.stage_weights
        inside = z - letter_means(z, features[:, SUMMARY_COLUMN])
        print(
            f"| {fold} | {roc_auc_score(y, fitted_letter.decision_function(frame.iloc[test])):.3f} "
            f"| {roc_auc_score(y, z):.3f} | {roc_auc_score(y, letter_term):.3f} "
            f"| {w:.2f}, {beta:.3f} | {inside.std():.3f} | {(w * letter_term).std():.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
