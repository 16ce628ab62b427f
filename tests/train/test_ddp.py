"""`imr-outcome train` as a 2-process gloo DDP job under torchrun, on CPU.

The real console command is launched by ``torch.distributed.run`` with the tiny BERT, the
invented dataset and a temporary SQLite MLflow store. Only rank 0 may track and register.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from imr_outcome.train.config import load_config
from imr_outcome.train.evaluate import holdout_split
from imr_outcome.train.run import load_training_data
from imr_outcome.train.training_windows import group_by_length

from dataset_factory import write_dataset

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
BIN = Path(sys.executable).parent

OVERRIDES = [
    "model.max_length=64",
    "model.stride=16",
    "training.epochs=6",
    "training.batch_size=4",
    "training.learning_rate=1e-3",
    # fp32 on every CPU: bf16 (auto on AVX512-BF16) made the loss check below flaky there;
    # bf16 training has its own tests.
    "training.precision=fp32",
    "training.windows_per_item=null",
    # Every layer trains (the GPU configs' path; one tuned layer of a random tiny BERT
    # learns too little for the loss check), with 2 inner cross-fitting folds.
    "training.frozen_layers=0",
    "training.crossfit_folds=2",
    "evaluation.bootstrap=100",
]


def test_two_process_ddp_train_logs_and_registers_once(tiny_bert: Path, tmp_path: Path) -> None:
    dataset = write_dataset(tmp_path / "dataset")
    overrides = [f"model.base_model={tiny_bert}", f"data.dataset_dir={dataset}", *OVERRIDES]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"}
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",
        str(BIN / "imr-outcome"),
        "train",
        "--config",
        str(EXPERIMENTS / "default.yaml"),
        "--register",
        "--models-dir",
        str(tmp_path / "models"),
    ]
    for override in overrides:
        command += ["--set", override]

    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )

    assert done.returncode == 0, done.stderr[-4000:] + done.stdout[-3000:]
    assert "rank 1: training done" in done.stderr
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    (version,) = client.search_model_versions("name='imr-outcome'")
    assert version.run_id == run.info.run_id
    assert [p.name for p in (tmp_path / "models").iterdir()] == [run.info.run_id]
    params = run.data.params
    assert params["resolved.world_size"] == "2"
    assert params["resolved.ddp_backend"] == "gloo"
    assert params["resolved.effective_batch_size"] == "8"  # 4 per process x 2 x 1
    assert float(params["resolved.learning_rate"]) == pytest.approx(1e-3)
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train.loss")]
    assert len(losses) >= 3
    assert losses[-1] < 0.8 * losses[0]
    # The held-out fold is the one a single process holds out.
    config = load_config(EXPERIMENTS / "default.yaml", overrides)
    data = load_training_data(config)
    _, test_rows = holdout_split(data.rows, data.folds, config.data.holdout_fold)
    assert run.data.metrics["test.n_items"] == len(test_rows)
    assert run.data.metrics["test.n_letters"] == len(set(test_rows.groups))


def test_length_grouping_keeps_the_windows_and_the_label_mix_of_each_step() -> None:
    rng = np.random.default_rng(0)
    labels = (np.arange(400) % 4 == 0).astype(np.int64)  # a quarter positive
    # Length goes with the label, as in the invented data: positives are short.
    lengths = np.where(labels == 1, rng.integers(20, 60, 400), rng.integers(40, 256, 400))
    order = rng.permutation(400)

    grouped = group_by_length(order, lengths, labels, step_size=8, seed=1)

    assert sorted(grouped.tolist()) == sorted(order.tolist())
    steps = grouped.reshape(-1, 8)
    positives = labels[steps].sum(axis=1)
    assert set(positives.tolist()) <= {1, 2, 3}  # never a single-label step

    def padded(o: np.ndarray) -> int:
        return int(lengths[o.reshape(-1, 8)].max(axis=1).sum())

    assert padded(grouped) < 0.9 * padded(order)
    np.testing.assert_array_equal(
        grouped, group_by_length(order, lengths, labels, step_size=8, seed=1)
    )
