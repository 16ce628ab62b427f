"""Benchmark: wall time of fine-tuning a config's classifier on every item of a split.

Usage: python experiments/bench_train.py [--config experiments/default.yaml] [--set k=v ...]

Fits the classifier alone (no calibration, no tracking) on all rows of the configured
split of the built dataset and prints items, windows, wall time and peak memory.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from imr_outcome.data.dataset import load_dataset
from imr_outcome.model.base import model_frame
from imr_outcome.train.config import load_config
from imr_outcome.train.pipeline import new_classifier, rows_from_dataset, sklearn_estimator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("experiments/default.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    split = load_dataset(config.data.dataset_dir)[config.data.split]
    rows = rows_from_dataset(split)
    started = time.perf_counter()
    if config.model.kind == "transformer":
        new_classifier(config).fit(rows.inputs, rows.labels, rows.metadata)
    else:
        sklearn_estimator(config).fit(model_frame(rows.inputs, rows.metadata), rows.labels)
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{config.name}: fitted {config.model.kind} ({config.model.base_model}) on "
        f"{len(rows)} items in {wall / 60:.2f} min, torch threads {torch.get_num_threads()}, "
        f"precision {config.training.precision}, peak RSS {peak_mib:.0f} MiB"
    )


if __name__ == "__main__":
    main()
