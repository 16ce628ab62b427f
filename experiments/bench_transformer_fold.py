"""Benchmark: one outer fold of the fine-tuned transformer's grouped CV, as ``evaluate``
runs it (cross-fitted fit on the training folds, then the held-out fold scored).

Usage:
    python experiments/bench_transformer_fold.py [--config experiments/default.yaml]
        [--set section.field=value ...]

Prints the CPU flags torch sees, the resolved precision, the time to fill the lower-layer
cache, the time of the cross-fitted fit (inner fine-tunes + the final one) and of scoring
the held-out fold, and the fold's AUROC. Run it twice in one shell to compare CPUs on one
machine: the second time with an AVX2-only CPU emulated,

    IMR_CPU_FLAGS=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \\
        python experiments/bench_transformer_fold.py

(``IMR_CPU_FLAGS`` makes ``precision: auto`` resolve as on an AVX2-only CPU: fp32;
``ATEN_CPU_CAPABILITY`` and ``ONEDNN_MAX_CPU_ISA`` keep torch's kernels to AVX2). A 5xR CV
costs about 5R times the fold (plus the one cache fill). Uses ``artifacts/dataset``
(``make dataset``); nothing is logged to MLflow.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.model.encoders import encode_windows, from_pretrained, load_tokenizer
from imr_outcome.model.hardware import cpu_flags, machine_precision
from imr_outcome.train.config import load_config
from imr_outcome.train.frozen_layers import PREFIX_CACHE
from imr_outcome.train.pipeline import fit_calibrated
from imr_outcome.train.run import load_training_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("experiments/default.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    rows = load_training_data(config).rows
    splitter = StratifiedGroupKFold(
        n_splits=config.evaluation.folds, shuffle=True, random_state=config.training.seed
    )
    train_idx, test_idx = next(splitter.split(np.zeros(len(rows)), rows.labels, rows.groups))
    train_rows, test_rows = rows.subset(train_idx), rows.subset(test_idx)
    flags = cpu_flags()
    print(
        f"cpu: {flags}  torch {torch.__version__} capability "
        f"{torch.backends.cpu.get_cpu_capability()}  threads {torch.get_num_threads()}  "
        f"precision {config.training.precision} -> {machine_precision(config.training.precision)}"
        f"  (ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '-')}, "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')})"
    )
    frozen = config.training.frozen_layers
    fill = 0.0
    if frozen:
        from transformers import AutoModelForSequenceClassification

        model = config.model
        started = time.perf_counter()
        tokenizer = load_tokenizer(model.base_model, model.max_length)
        windows = encode_windows(tokenizer, rows.inputs, model.max_length, model.stride)
        network = from_pretrained(
            AutoModelForSequenceClassification.from_pretrained, model.base_model, "model",
            num_labels=2,
        )  # fmt: skip
        PREFIX_CACHE.states(network, windows, frozen)
        fill = time.perf_counter() - started
        print(f"cache fill: {len(windows)} windows of all {len(rows)} items in {fill:.1f} s")
    started = time.perf_counter()
    fitted = fit_calibrated(config, train_rows, data_fingerprint="bench")
    fit = time.perf_counter() - started
    started = time.perf_counter()
    p = fitted.predict_proba(test_rows.inputs, test_rows.metadata)[:, 1]
    score = time.perf_counter() - started
    auroc = roc_auc_score(test_rows.labels, p)
    folds, repeats = config.evaluation.folds, config.evaluation.repeats
    print(
        f"fold 0: cross-fitted fit on {len(train_rows)} items {fit:.1f} s "
        f"({config.training.crossfit_folds} inner + 1 final fine-tunes), scoring "
        f"{len(test_rows)} items {score:.1f} s, AUROC {auroc:.3f}"
    )
    total = fill + folds * repeats * (fit + score)
    print(f"estimate for {folds}x{repeats} CV (fits and scoring only): {total / 60:.1f} min")


if __name__ == "__main__":
    main()
