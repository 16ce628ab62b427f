"""Derived probe (issue 22): a letter's score from one model, the order of its items from
another, with no refit.

Reads the pooled out-of-fold P(Overturned) of the first CV repeat that ``imr-outcome
evaluate --report`` wrote to ``artifacts/oof`` (same folds for every config) and scores

    logit(P_letter) + beta * (logit(P_item) - mean of logit(P_item) over the letter's items)

The second term sums to 0 over each letter, so it reorders a letter's items and leaves
the letter's mean log-odds to the letter model. It needs every item of a letter scored
together (``predict --letter``, ``POST /v1/letters``); a single item gets the letter
model's score. ``--no-centre`` adds ``beta * logit(P_item)`` as it is, which needs no
sibling (one row at a time) but also moves letters against each other. ``--exclude``
leaves the named letters (group ids) out of every figure.

``--item mtus_prior`` takes the item order from no model at all: a guideline prior fixed
before it was measured, -1 for a request of a drug class that the California MTUS chronic
pain guidelines (8 CCR 9792.24.2) recommend only short-term, second-line or not at all
(:data:`~imr_outcome.data.drugs.MTUS_RESTRICTED`), 0 for anything else.

Prints, per ``beta`` (fixed in advance, not tuned): pooled AUROC, the paired difference
against ``--reference`` with a 95% letter-bootstrap interval (1,000 resamples; Efron &
Tibshirani 1993, ch. 16), and the within-letter concordance over the letters with mixed
outcomes with its letter-bootstrap interval.

    .venv/bin/python experiments/letter_centred_probe.py \\
        [--letter tfidf_lr_summary] [--item frozen_mpnet_lr | mtus_prior]
        [--reference tfidf_lr] [--no-centre]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

from imr_outcome.data.drugs import mtus_restricted_drug
from imr_outcome.train.letter_concordance import within_letter_concordance

FloatArray = npt.NDArray[np.float64]
BETAS = (0.0, 0.5, 1.0, 2.0)


def mtus_prior(request: str) -> float:
    """-1.0 for a request naming a drug of an MTUS-restricted class, else 0.0."""
    return -1.0 if mtus_restricted_drug(request) else 0.0


def _oof(folder: Path, config: str) -> dict[str, list[object]]:
    data: dict[str, list[object]] = json.loads((folder / f"{config}.json").read_text())
    return data


def _requests(dataset: Path) -> tuple[list[str], list[str]]:
    items = pd.read_parquet(dataset / "items-dwc.parquet", columns=["id", "request"])
    return [str(i) for i in items["id"]], [str(r) for r in items["request"]]


def _log_odds(p: list[object]) -> FloatArray:
    return np.asarray(logit(np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oof", type=Path, default=Path("artifacts/oof"))
    parser.add_argument("--letter", default="tfidf_lr_summary")
    parser.add_argument("--item", default="frozen_mpnet_lr")
    parser.add_argument("--reference", default="tfidf_lr")
    parser.add_argument("--dataset", type=Path, default=Path("artifacts/dataset"))
    parser.add_argument("--no-centre", action="store_true")
    parser.add_argument("--exclude", nargs="*", default=[], help="letters (group ids) to leave out")
    args = parser.parse_args()
    letter, reference = (_oof(args.oof, c) for c in (args.letter, args.reference))
    if args.item == "mtus_prior":
        requests = dict(zip(*_requests(args.dataset), strict=True))
        item_ids = letter["ids"]
        item_log_odds = np.array([mtus_prior(requests[str(i)]) for i in item_ids])
    else:
        item = _oof(args.oof, args.item)
        item_ids, item_log_odds = item["ids"], _log_odds(item["p_overturned"])
    if not letter["ids"] == item_ids == reference["ids"]:
        raise SystemExit("the out-of-fold files hold different items; re-run evaluate")
    keep = np.array([str(g) not in set(args.exclude) for g in letter["groups"]])
    y = np.asarray(letter["labels"], dtype=np.int64)[keep]
    groups = [str(g) for g, kept in zip(letter["groups"], keep, strict=True) if kept]
    item_log_odds = item_log_odds[keep]
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    centred = item_log_odds.copy()
    for indices in members.values():
        centred[indices] -= 0.0 if args.no_centre else item_log_odds[indices].mean()
    base = _log_odds(letter["p_overturned"])[keep]
    ref = _log_odds(reference["p_overturned"])[keep]
    letters = list(members.values())
    rng = np.random.default_rng(0)
    draws = [
        np.concatenate([letters[j] for j in rng.integers(0, len(letters), len(letters))])
        for _ in range(1000)
    ]
    draws = [d for d in draws if 0 < y[d].sum() < len(d)]
    print(
        f"letter model {args.letter}, item order {args.item}"
        f"{' (not centred)' if args.no_centre else ''}, reference {args.reference}; "
        f"{len(y)} items, {len(letters)} letters"
    )
    print("| beta | AUROC | dAUROC vs reference [95% CI] | within-letter concordance [95% CI] |")
    print("|---|---|---|---|")
    for beta in BETAS:
        score = base + beta * centred
        auroc = roc_auc_score(y, score)
        deltas = [roc_auc_score(y[d], score[d]) - roc_auc_score(y[d], ref[d]) for d in draws]
        low, high = np.percentile(deltas, [2.5, 97.5])
        conc, c_low, c_high, pairs, mixed = within_letter_concordance(groups, y, expit(score))
        print(
            f"| {beta} | {auroc:.3f} | {auroc - roc_auc_score(y, ref):+.3f} "
            f"[{low:+.3f}, {high:+.3f}] | {conc:.3f} [{c_low:.3f}, {c_high:.3f}] "
            f"({pairs} pairs, {mixed} letters) |"
        )


if __name__ == "__main__":
    main()
