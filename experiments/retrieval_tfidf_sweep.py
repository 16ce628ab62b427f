"""Sweep the TF-IDF retrieval representation's settings by the similar-decisions check.

For each variant, the k-NN vote AUROC of ``experiments/retrieval_cv.py`` (TF-IDF cosine,
like-first, k = 5) on all folds of one repeat of 5-fold grouped CV, for the selection seeds
20-24 and for seed 13, the repeat ``evaluate`` reports. Choose on the mean of 20-24; read
13 off afterwards. The variants override ``TfidfRepresentation``'s vectorizer settings and
request weight in ``model.record``, for this process only.

    .venv/bin/python experiments/retrieval_tfidf_sweep.py artifacts/dataset [variant ...]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from imr_outcome.data.dataset import load_dataset, records_from_split
from imr_outcome.data.model_input import record_model_input
from imr_outcome.model import precedents, record
from imr_outcome.train.retrieval_eval import retrieval_cv

SELECTION_SEEDS = (20, 21, 22, 23, 24)
REPORT_SEED = 13
BASE: dict[str, Any] = {
    "ngram_range": (1, 2),
    "min_df": 2,
    "sublinear_tf": True,
    "stop_words": "english",
    "dtype": np.float32,
}
#: name -> (vectorizer settings over BASE, request weight, LSA components).
VARIANTS: dict[str, tuple[dict[str, Any], float, int | None]] = {
    "stop 34 (English stop list)": ({}, 0.25, None),
    "unigrams": ({"ngram_range": (1, 1)}, 0.25, None),
    "min_df 3": ({"min_df": 3}, 0.25, None),
    "min_df 1": ({"min_df": 1}, 0.25, None),
    "max_df 0.5": ({"max_df": 0.5}, 0.25, None),
    "raw tf": ({"sublinear_tf": False}, 0.25, None),
    "LSA 50": ({}, 0.25, 50),
    "LSA 100": ({}, 0.25, 100),
    "LSA 200": ({}, 0.25, 200),
    "stop words kept": ({"stop_words": None}, 0.25, None),
    "stop words kept, weight 0": ({"stop_words": None}, 0.0, None),
    "stop words kept, weight 0.15": ({"stop_words": None}, 0.15, None),
    "stop words kept, weight 0.35": ({"stop_words": None}, 0.35, None),
    "stop words kept, weight 0.5": ({"stop_words": None}, 0.5, None),
    "stop words kept, min_df 1": ({"stop_words": None, "min_df": 1}, 0.25, None),
    "stop words kept, 1-3-grams": ({"stop_words": None, "ngram_range": (1, 3)}, 0.25, None),
}


class _Variant(precedents.TfidfRepresentation):
    settings: dict[str, Any] = BASE
    weight = precedents.REQUEST_WEIGHT
    lsa: int | None = None

    def __init__(self, request_weight: float = 0.0, components: int | None = None) -> None:
        super().__init__(request_weight=self.weight, components=self.lsa)

    @staticmethod
    def _vectorizer() -> TfidfVectorizer:
        return TfidfVectorizer(**_Variant.settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("variants", nargs="*", help="names from VARIANTS; default all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    split = load_dataset(args.dataset)["dwc"]
    items = record.record_items(split)
    inputs = [record_model_input(record) for record in records_from_split(split)]
    record.TfidfRepresentation = _Variant  # type: ignore[attr-defined]
    seeds = (*SELECTION_SEEDS, REPORT_SEED)
    print("| variant | " + " | ".join(map(str, SELECTION_SEEDS)) + f" | mean | {REPORT_SEED} |")
    print("|---" * (len(seeds) + 2) + "|")
    for name in args.variants or VARIANTS:
        overrides, _Variant.weight, _Variant.lsa = VARIANTS[name]
        _Variant.settings = {**BASE, **overrides}
        aurocs = [retrieval_cv(items, inputs, folds=5, seed=seed).auroc for seed in seeds]
        selection = aurocs[: len(SELECTION_SEEDS)]
        cells = " | ".join(f"{value:.3f}" for value in selection)
        print(f"| {name} | {cells} | {np.mean(selection):.3f} | {aurocs[-1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
