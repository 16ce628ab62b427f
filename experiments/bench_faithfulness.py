"""Faithfulness of a trained model's evidence on real held-out DWC items (ERASER AOPC).

Usage:
    python experiments/bench_faithfulness.py [--model models:/imr-outcome@champion]
        [--config experiments/default.yaml] [--items 40] [--steps 16 32]

Scores items of the config's held-out fold (``data.holdout_fold``: the fold ``imr-outcome
train`` kept out of training) with :func:`imr_outcome.train.faithfulness.faithfulness`,
once per integrated-gradients quadrature setting in ``--steps``, and prints
comprehensiveness and sufficiency against the random-word baseline with the wall time.
The model must have been trained on the same dataset build (its data fingerprint is
checked), or the held-out items would not be held out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from imr_outcome.serve.predictor import Predictor
from imr_outcome.train.config import load_config
from imr_outcome.train.evaluate import holdout_split
from imr_outcome.train.faithfulness import faithfulness, items_of
from imr_outcome.train.run import load_training_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/imr-outcome@champion")
    parser.add_argument("--config", type=Path, default=Path("experiments/default.yaml"))
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    data = load_training_data(config)
    predictor = Predictor.load(args.model)
    model = predictor.model
    if model.info.data_fingerprint != data.fingerprint:
        raise SystemExit(
            f"{args.model} was trained on dataset {model.info.data_fingerprint[:12]}, not "
            f"{data.fingerprint[:12]} in {config.data.dataset_dir}: its held-out fold is unknown"
        )
    _, test = holdout_split(data.rows, data.folds, config.data.holdout_fold)
    items = items_of(test, args.items, args.seed)
    print(
        f"{predictor.model_name} v{predictor.model_version} ({model.info.kind}, explainer "
        f"{model.info.explainer}): {len(items)} of {len(test)} items of held-out fold "
        f"{config.data.holdout_fold}, torch threads {torch.get_num_threads()}"
    )
    for steps in args.steps:
        started = time.perf_counter()
        report = faithfulness(model, items, seed=args.seed, n_steps=steps)
        wall = time.perf_counter() - started
        print(
            f"n_steps {steps}: comprehensiveness {report.comprehensiveness:.3f} "
            f"(random {report.random_comprehensiveness:.3f}, ratio {report.ratio:.2f}), "
            f"sufficiency {report.sufficiency:.3f} (random {report.random_sufficiency:.3f}); "
            f"{wall:.0f} s"
        )


if __name__ == "__main__":
    main()
