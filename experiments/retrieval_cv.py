"""The similar-decisions check (issue 20) on the real dataset, without fitting classifiers.

All folds of one repeat of grouped CV (the first repeat of ``imr-outcome evaluate``):
each held-out item retrieves its k most similar decisions from its training folds only;
prints the k-NN vote AUROC, the share of the top k sharing the query's request category,
and the leak count (always 0, else the check raises). Representations: TF-IDF cosine
(scikit-learn kinds) and, with ``--frozen-minilm``, the frozen offline MiniLM's
mean-pooled embeddings (the ``frozen_encoder_lr`` kind's own vectors).

    .venv/bin/python experiments/retrieval_cv.py artifacts/dataset --split dwc [--frozen-minilm]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from imr_outcome.data.dataset import load_dataset, records_from_split
from imr_outcome.data.model_input import record_model_input
from imr_outcome.model.record import EmbedFn, record_items
from imr_outcome.train.retrieval_eval import (
    TARGET_AUROC,
    TARGET_CATEGORY_SHARE,
    RetrievalReport,
    retrieval_cv,
)


def _frozen_minilm() -> EmbedFn:
    from imr_outcome.model.frozen_encoder import FrozenEncoderLogReg
    from imr_outcome.train.config import load_config

    config = load_config(Path("experiments/frozen_minilm_lr.yaml"))
    encoder = FrozenEncoderLogReg(config.model, config.training)  # type: ignore[arg-type]
    return encoder.embed


def _row(name: str, report: RetrievalReport, seconds: float) -> str:
    return (
        f"| {name} | {report.k} | {report.n_items} | {report.n_folds} | {report.auroc:.3f} | "
        f"{report.auroc_weighted:.3f} | {report.category_share:.1%} | {report.leaks} | "
        f"{seconds:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--split", default="dwc")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--frozen-minilm", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    split = load_dataset(args.dataset)[args.split]
    items = record_items(split)
    inputs = [record_model_input(record) for record in records_from_split(split)]
    runs: list[tuple[str, EmbedFn | None]] = [("TF-IDF cosine", None)]
    if args.frozen_minilm:
        runs.append(("frozen MiniLM cosine", _frozen_minilm()))
    print(f"targets: AUROC >= {TARGET_AUROC:.2f}, category share >= {TARGET_CATEGORY_SHARE:.0%}")
    print(
        "| representation | k | items | folds | k-NN vote AUROC | weighted | same category "
        "| leaks | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, embed in runs:
        start = time.perf_counter()
        report = retrieval_cv(
            items, inputs, folds=args.folds, seed=args.seed, k=args.k, embed=embed
        )
        print(_row(name, report, time.perf_counter() - start), flush=True)


if __name__ == "__main__":
    main()
