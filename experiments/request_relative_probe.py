"""Probe (issue 22): can a letter's items be ordered one row at a time, without siblings?

``experiments/letter_centred_probe.py`` orders a letter's items by an item model's score
minus its mean over the letter: it needs every item of the letter scored together, which
the one-row paths (batch, Spark, the pyfunc) do not have. This probe replaces the letter
mean by something one row has: the same item model's score for the case summary with no
request,

    adjustment = w . (e(request, summary) - e(no request, summary))

where e is the frozen encoder's mean-pooled item embedding (as ``frozen_encoder_lr``,
style-normalised model input; "no request" keeps the metadata prefix) and w the standardised
logistic regression fitted on e(request, summary) of the training folds (class-balanced, C by
inner grouped 5-fold GridSearchCV over ``model.c_grid``). The subtracted term is the same for
every item of a letter, so the within-letter order is the item model's; what it leaves is the
letter-level noise that lowers AUROC. Scored as ``logit(P_letter) + beta * adjustment`` with
P_letter the out-of-fold P of ``--letter`` (``artifacts/oof``, repeat 0, the same folds as
``evaluate``: ``StratifiedGroupKFold(5, shuffle=True, random_state=training.seed)``), beta
fixed in advance. Prints AUROC, the paired difference against ``--reference`` (1,000 letter
resamples; Efron & Tibshirani 1993, ch. 16) and the within-letter concordance, for each beta
and for the sibling-centred score.

    .venv/bin/python experiments/request_relative_probe.py \\
        --set model.base_model=DIR/all-mpnet-base-v2   # weights: see frozen_mpnet_lr.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from imr_outcome.model.frozen_encoder import FrozenEncoderLogReg
from imr_outcome.model.settings import FrozenEncoderConfig
from imr_outcome.train.config import load_config
from imr_outcome.train.letter_concordance import within_letter_concordance
from imr_outcome.train.run import load_training_data

FloatArray = npt.NDArray[np.float64]
BETAS = (0.25, 0.5, 1.0, 2.0)


def _log_odds(folder: Path, config: str, ids: list[str]) -> FloatArray:
    data = json.loads((folder / f"{config}.json").read_text())
    if [str(i) for i in data["ids"]] != ids:
        raise SystemExit(f"{folder}/{config}.json holds other items; re-run evaluate")
    return np.asarray(logit(np.clip(np.asarray(data["p_overturned"], float), 1e-6, 1 - 1e-6)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("experiments/frozen_mpnet_lr.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--oof", type=Path, default=Path("artifacts/oof"))
    parser.add_argument("--letter", default="tfidf_lr_summary")
    parser.add_argument("--reference", default="tfidf_lr")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    rows = load_training_data(config).rows
    ids = [str(i) for i in rows.ids]
    if not isinstance(config.model, FrozenEncoderConfig):
        raise SystemExit(f"{args.config}: model.kind must be frozen_encoder_lr")
    encoder = FrozenEncoderLogReg(config.model, config.training)
    with_request = encoder.embed(rows.inputs)
    without = encoder.embed(
        [dataclasses.replace(x, text=x.text[: x.request_offset]) for x in rows.inputs]
    )
    y = np.asarray(rows.labels, dtype=np.int64)
    groups = np.asarray([str(g) for g in rows.groups])
    seed = config.training.seed
    decision, adjustment = np.zeros(len(y)), np.zeros(len(y))
    outer = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    for train, test in outer.split(np.zeros(len(y)), y, groups):
        inner = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
        logistic = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
        search = GridSearchCV(
            Pipeline([("scale", StandardScaler()), ("logreg", logistic)]),
            {"logreg__C": list(config.model.c_grid) or [config.model.c]},
            scoring="roc_auc",
            cv=list(inner.split(with_request[train], y[train], groups[train])),
        ).fit(with_request[train], y[train])
        decision[test] = search.decision_function(with_request[test])
        adjustment[test] = decision[test] - search.decision_function(without[test])
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    letters = list(members.values())
    centred = decision.copy()
    for indices in letters:
        centred[indices] -= decision[indices].mean()
    base = _log_odds(args.oof, args.letter, ids)
    reference = _log_odds(args.oof, args.reference, ids)
    rng = np.random.default_rng(0)
    draws = [
        np.concatenate([letters[j] for j in rng.integers(0, len(letters), len(letters))])
        for _ in range(1000)
    ]
    draws = [d for d in draws if 0 < y[d].sum() < len(d)]
    between = np.std([adjustment[m].mean() for m in letters])
    within = np.mean([adjustment[m].std() for m in letters if len(m) > 1])
    print(
        f"{len(y)} items, {len(letters)} letters; adjustment sd between letters {between:.2f}, "
        f"within letters {within:.2f}; letter log-odds sd {base.std():.2f}"
    )
    print("| score | AUROC | dAUROC vs reference [95% CI] | within-letter concordance [95% CI] |")
    print("|---|---|---|---|")
    scores = [(args.letter, base), ("adjustment alone", adjustment)]
    scores += [(f"{args.letter} + {beta} x adjustment", base + beta * adjustment) for beta in BETAS]
    scores += [(f"{args.letter} + 1 x sibling-centred (needs the letter)", base + centred)]
    for name, score in scores:
        auroc = roc_auc_score(y, score)
        deltas = [roc_auc_score(y[d], score[d]) - roc_auc_score(y[d], reference[d]) for d in draws]
        low, high = np.percentile(deltas, [2.5, 97.5])
        conc, c_low, c_high, pairs, _ = within_letter_concordance(list(groups), y, expit(score))
        print(
            f"| {name} | {auroc:.3f} | {auroc - roc_auc_score(y, reference):+.3f} "
            f"[{low:+.3f}, {high:+.3f}] | {conc:.3f} [{c_low:.3f}, {c_high:.3f}] ({pairs} pairs) |"
        )


if __name__ == "__main__":
    main()
