"""Train and evaluate end to end, tracked in a temporary SQLite MLflow store."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from imr_outcome.data.model_input import build_model_input
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.hardware import cpu_flags
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.onnx_runtime import measured_speedups, read_parity
from imr_outcome.model.record import Record
from imr_outcome.model.scoring import OUTPUT_FIELDS
from imr_outcome.model.transformer import TransformerClassifier
from imr_outcome.train.config import RunConfig, load_config
from imr_outcome.train.evaluate import holdout_split
from imr_outcome.train.onnx_export import MAX_ABS_DP
from imr_outcome.train.run import evaluate, load_training_data, train, write_report
from imr_outcome.train.tracking import list_versions

from dataset_factory import write_dataset

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in a temp folder: the embedded store is ./mlflow.db there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield tmp_path
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _config(name: str, dataset_dir: Path, *overrides: str) -> RunConfig:
    return load_config(
        EXPERIMENTS / f"{name}.yaml",
        [f"data.dataset_dir={dataset_dir}", "evaluation.bootstrap=200", *overrides],
    )


def test_train_logs_everything_and_registers_the_first_version_as_champion(
    workdir: Path, dataset_dir: Path
) -> None:
    config = _config("tfidf_lr", dataset_dir, "model.min_df=1")

    result = train(config, models_dir=workdir / "models", register_model=True)

    assert (workdir / "mlflow.db").is_file()
    assert result.registration is not None and result.registration.champion
    assert result.registration.version == "1"
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.kind"] == "tfidf_lr"
    assert run.data.tags["data_fingerprint"] == result.model.info.data_fingerprint
    assert run.data.tags["git_commit"]
    assert {"test.auroc", "test.auroc.ci_low", "test.ece", "test.brier", "threshold"} <= set(
        run.data.metrics
    )
    assert run.data.metrics["test.auroc"] > 0.9  # the cue sentence is easy to learn
    artifacts = {a.path for a in MlflowClient().list_artifacts(result.run_id, "evaluation")}
    assert "evaluation/test_reliability.png" in artifacts
    assert {a.path for a in MlflowClient().list_artifacts(result.run_id, "dataset")} == {
        "dataset/card.json",
        "dataset/card.md",
    }
    assert run.inputs is not None
    assert [i.dataset.digest for i in run.inputs.dataset_inputs] == [
        result.model.info.data_fingerprint[:32]
    ]

    reloaded = OutcomeModel.load(result.model_dir)
    assert reloaded.threshold == result.model.threshold
    assert reloaded.info.labels == ("Upheld", "Overturned")
    # Registration saved the record of the training items only (issue 20).
    record = Record.load(result.model_dir)
    assert record.representation == "tfidf"
    assert record.rates.rates["source"]["all"].n == len(load_training_data(config).rows) - len(
        result.evaluation.ids
    )
    held_out = set(result.evaluation.ids)
    assert not {p.item_id for p in record.precedents.precedents} & held_out

    pyfunc = mlflow.pyfunc.load_model("models:/imr-outcome@champion")
    scored = pyfunc.predict(
        pd.DataFrame(
            {
                "request": ["Physical therapy 6 sessions", "Physical therapy 6 sessions"],
                "summary": [
                    "Low back pain. The physician documented functional improvement and "
                    "return to full duty.",
                    "Low back pain. There was no objective functional improvement after "
                    "prior sessions.",
                ],
            }
        )
    )
    assert list(scored.columns) == list(OUTPUT_FIELDS)
    model_id = pyfunc.metadata.model_id
    assert scored["error"].isna().all()
    assert (scored["model_version"] == f"model:{model_id}").all()
    np.testing.assert_allclose(scored["p_upheld"] + scored["p_overturned"], 1.0)
    assert scored["p_overturned"][0] > scored["p_overturned"][1]


def test_fine_tuned_transformer_end_to_end_with_a_tiny_bert(
    workdir: Path, dataset_dir: Path, tiny_bert: Path
) -> None:
    config = _config(
        "default",
        dataset_dir,
        f"model.base_model={tiny_bert}",
        "model.max_length=64",
        "model.stride=16",
        "training.epochs=1",
        "training.batch_size=8",
        "training.frozen_layers=1",
    )

    result = train(config, models_dir=workdir / "models", register_model=True)

    run = MlflowClient().get_run(result.run_id)
    assert "train.loss" in run.data.metrics
    assert run.data.params["model.base_model"] == str(tiny_bert)
    reloaded = OutcomeModel.load(result.model_dir, backend="torch")
    assert reloaded.info.kind == "transformer" and reloaded.info.max_length == 64
    inputs = [build_model_input("TENS unit", "Chronic knee pain after a fall. " * 40)]
    # Whatever precision trained it (bf16 where the CPU has it), the saved fp32 weights
    # score as the fitted model did, and the ONNX variant `auto` picks is within parity.
    np.testing.assert_allclose(
        reloaded.predict_proba(inputs), result.model.predict_proba(inputs), rtol=1e-6
    )
    served = OutcomeModel.load(result.model_dir)
    record = read_parity(result.model_dir / "classifier")
    speedups = measured_speedups(record, cpu_flags())
    assert speedups is not None and set(speedups) <= {"fp32", "int8"}, record
    # Parity read the held-out fold and the training folds: every item of the split.
    n_split = len(load_training_data(config).rows)
    assert {variant["n_items"] for variant in record["variants"]} == {n_split}
    fastest = min(speedups, key=speedups.__getitem__)
    assert served.backend == (f"onnx-{fastest}" if speedups[fastest] < 1 else "torch")
    np.testing.assert_allclose(
        served.predict_proba(inputs), result.model.predict_proba(inputs), atol=MAX_ABS_DP
    )
    scored = mlflow.pyfunc.load_model("models:/imr-outcome@champion").predict(
        pd.DataFrame({"request": ["TENS unit"], "summary": ["Chronic knee pain."]})
    )
    assert scored["p_upheld"][0] + scored["p_overturned"][0] == pytest.approx(1.0)
    # Cross-fitted: the OOD threshold is the 99% quantile of held-out items' distances
    # under inner detectors, above that of the final model's own training items, which
    # fine-tuning pulls together (a training-quantile threshold flags most new items).
    classifier = reloaded.classifier
    assert isinstance(classifier, TransformerClassifier) and classifier.ood is not None
    data = load_training_data(config)
    train_rows, _ = holdout_split(data.rows, data.folds, 0)
    own = classifier.ood.distances(classifier.item_embeddings(train_rows.inputs))
    assert classifier.ood.threshold > np.quantile(own, 0.99)
    # Every training row got an out-of-fold score: the bands' records count them all.
    decision = result.model.info.decision
    assert decision is not None
    assert sum(record["n"] for record in decision["records"].values()) == len(train_rows)


def test_a_second_registration_is_a_challenger(workdir: Path, dataset_dir: Path) -> None:
    config = _config("majority", dataset_dir)

    first = train(config, models_dir=workdir / "models", register_model=True)
    second = train(config, models_dir=workdir / "models", register_model=True)

    assert first.registration is not None and first.registration.champion
    assert second.registration is not None and not second.registration.champion
    versions = list_versions("imr-outcome")
    assert [(v["version"], v["aliases"]) for v in versions] == [("2", []), ("1", ["champion"])]
    assert versions[0]["data_fingerprint"] == first.model.info.data_fingerprint


def test_cross_validation_of_the_majority_baseline(workdir: Path, dataset_dir: Path) -> None:
    config = _config("majority", dataset_dir, "evaluation.folds=3", "evaluation.repeats=2")

    result = evaluate(config)
    evaluation, run_id = result.cv, result.run_id

    assert result.time_split is None
    assert evaluation.n_items == 60
    assert evaluation.metrics["auroc"][0] == pytest.approx(0.5)
    assert len(evaluation.thresholds) == 3
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert metrics["cv.auroc"] == pytest.approx(0.5)
    assert metrics["cv.n_items"] == 60
    # The similar-decisions check ran on every fold of the first repeat, without a leak.
    assert result.retrieval is not None
    assert (result.retrieval.n_items, result.retrieval.n_folds, result.retrieval.leaks) == (
        60,
        3,
        0,
    )
    assert metrics["retrieval.auroc"] == pytest.approx(result.retrieval.auroc)
    assert metrics["retrieval.category_share"] == 1.0
    # The invented letters hold one item each: no within-letter pair to rank (NaN, not
    # logged), and no spread.
    within = evaluation.within_letter
    assert (within["pairs"], within["letters"]) == (0.0, 0.0)
    assert math.isnan(within["concordance"])
    assert "cv.within_letter.concordance" not in metrics


def test_cross_validation_measures_the_explainer_s_faithfulness(
    workdir: Path, dataset_dir: Path
) -> None:
    config = _config(
        "tfidf_lr",
        dataset_dir,
        "model.min_df=1",
        "evaluation.folds=3",
        "evaluation.repeats=2",
        "evaluation.faithfulness_items=4",
    )

    result = evaluate(config)
    write_report(workdir / "report.json", config, result, wall_seconds=1.0)

    faithful = result.faithfulness
    assert faithful is not None
    assert faithful.n_items == 12  # 4 held-out items in each fold of the first repeat only
    # The cue sentence decides the label: removing the explainer's top words hurts more
    # than removing as many random words.
    assert faithful.comprehensiveness > faithful.random_comprehensiveness
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    assert metrics["faithfulness.n_items"] == 12
    assert metrics["faithfulness.comprehensiveness"] == pytest.approx(faithful.comprehensiveness)
    assert metrics["faithfulness.ratio"] == pytest.approx(faithful.ratio)
    report = json.loads((workdir / "report.json").read_text())
    assert report["faithfulness"]["sufficiency"] == pytest.approx(faithful.sufficiency)
    assert report["retrieval"]["retrieval.leaks"] == 0


def test_cross_validation_skips_faithfulness_unless_asked(workdir: Path, dataset_dir: Path) -> None:
    config = _config("tfidf_lr", dataset_dir, "model.min_df=1", "evaluation.repeats=1")

    result = evaluate(config)

    assert result.faithfulness is None
    assert not any(
        name.startswith("faithfulness.")
        for name in MlflowClient().get_run(result.run_id).data.metrics
    )


def test_time_split_evaluation_trains_on_the_earlier_letters(
    workdir: Path, dataset_dir: Path
) -> None:
    config = _config(
        "tfidf_lr",
        dataset_dir,
        "model.min_df=1",
        "evaluation.folds=2",
        "evaluation.repeats=1",
        "evaluation.time_split=true",
    )

    result = evaluate(config)

    assert result.time_split is not None
    # event dates run over the months of 2016; rows from July on are the test side
    assert result.time_split.n_items == 35
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    assert metrics["time_split.n_items"] == 35
    assert 0.0 <= metrics["time_split.auroc"] <= 1.0
    assert "time_split.auroc.ci_low" in metrics


def test_a_failing_run_is_ended_as_failed(
    workdir: Path, dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config("tfidf_lr", dataset_dir)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr("imr_outcome.train.run.fit_calibrated", broken)

    with pytest.raises(RuntimeError, match="out of memory"):
        train(config, models_dir=workdir / "models", register_model=True)

    assert mlflow.active_run() is None
    runs = MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("imr-outcome").experiment_id]  # type: ignore[union-attr]
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    assert list_versions("imr-outcome") == []


def test_missing_dataset_says_how_to_build_it(workdir: Path) -> None:
    config = _config("tfidf_lr", workdir / "nothing-here")

    with pytest.raises(InvalidInputError, match="run `imr-outcome data build` first"):
        train(config, models_dir=workdir / "models", register_model=False)


def test_a_split_the_dataset_lacks_is_named(workdir: Path, dataset_dir: Path) -> None:
    config = _config("tfidf_lr", dataset_dir, "data.split=dmhc")

    with pytest.raises(InvalidInputError, match="'dmhc' is not in"):
        train(config, models_dir=workdir / "models", register_model=False)


def test_train_and_models_list_commands(workdir: Path, dataset_dir: Path) -> None:
    from typer.testing import CliRunner

    from imr_outcome.cli import app

    runner = CliRunner()
    args = ["--config", str(EXPERIMENTS / "majority.yaml"), "--set"]

    trained = runner.invoke(app, ["train", *args, f"data.dataset_dir={dataset_dir}", "--register"])
    listed = runner.invoke(app, ["models", "list"])
    promoted = runner.invoke(app, ["models", "promote", "imr-outcome", "7"])

    assert trained.exit_code == 0, trained.output
    assert "registered models:/imr-outcome/1 @champion" in trained.output
    assert "auroc" in trained.output
    assert listed.exit_code == 0, listed.output
    assert "champion" in listed.output and "majority" in listed.output
    assert promoted.exit_code == 2
    assert "models:/imr-outcome/7 does not exist" in promoted.output
