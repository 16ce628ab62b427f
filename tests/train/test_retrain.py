"""Retraining end to end: champion/challenger in a temporary SQLite MLflow store."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from imr_outcome.cli import app
from imr_outcome.console import console
from imr_outcome.data.dataset import load_dataset
from imr_outcome.errors import InvalidInputError, ModelNotFoundError
from imr_outcome.model.onnx_runtime import read_parity
from imr_outcome.serve.predictor import Predictor
from imr_outcome.train.config import RunConfig, load_config
from imr_outcome.train.retrain import TRAINING_GROUPS_ARTIFACT, RetrainResult, retrain
from imr_outcome.train.run import train
from imr_outcome.train.tracking import register_version, set_alias

from dataset_factory import OVERTURNED_CUE, UPHELD_CUE, learnable_records, write_dataset

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
#: Cues the snapshot never had: a champion trained on it cannot rank letters by them.
NEW_OVERTURNED_CUE = "A completed conservative trial produced measurable gains at work."
NEW_UPHELD_CUE = "Records lacked any measurement from the earlier conservative trial."

_LETTER = """Case Number: {case}
Date Assigned: 11/14/2016 Date of Injury:  10/21/2016
Decision Date: 12/12/2016 UR Denial Date:  11/02/2016
Priority:  Standard Application
Received:
11/08/2016

HOW THE IMR FINAL DETERMINATION WAS MADE
MAXIMUS Federal Services sent the complete case file to an expert reviewer. He/she has no
affiliation with the employer, employee, providers or the claims administrator.

The Expert Reviewer has the following credentials:
State(s) of Licensure: California
Certification(s)/Specialty: Family Practice

CLINICAL CASE SUMMARY
The expert reviewer developed the following clinical case summary based on a review of the
case file, including all medical records:

{summary}

IMR ISSUES, DECISIONS AND RATIONALES
The Final Determination was based on decisions for the disputed items/services set forth below:

{request}: {decision}

Claims Administrator guideline: Decision based on MTUS Chronic Pain Medical Treatment 2016.

MAXIMUS guideline: Decision based on MTUS Chronic Pain Medical Treatment 2016.

Decision rationale: The guidelines were applied to the documented findings in this case.
"""


def write_letters(
    folder: Path, first: int, count: int, *, new_cues: bool, prefix: str = "CM98"
) -> list[str]:
    """Write ``count`` invented one-item letters (every third Overturned); returns ids."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for n in range(first, first + count):
        overturned = n % 3 == 0
        if new_cues:
            cue = NEW_OVERTURNED_CUE if overturned else NEW_UPHELD_CUE
        else:
            cue = OVERTURNED_CUE if overturned else UPHELD_CUE
        words = " ".join(f"v{n}y{k}" for k in range(30))
        summary = (
            f"The injured worker is a {30 + n % 30} year old {'female' if n % 2 else 'male'}, "
            f"who sustained an industrial injury on 03-18-2013. Case detail {n}: {words}. {cue}"
        )
        case = f"{prefix}-{n:07d}"
        text = _LETTER.format(
            case=case,
            summary="\n".join(textwrap.wrap(summary, 95)),
            request=f"Physical therapy {n % 7 + 2} sessions for the lumbar spine",
            decision="Overturned" if overturned else "Upheld",
        )
        (folder / f"letter-{prefix}-{n}.txt").write_text(text, encoding="utf-8")
        ids.append(case)
    return ids


@dataclass(frozen=True)
class Base:
    """One SQLite store for the module, with a tf-idf model logged (and registered) once."""

    root: Path
    snapshot: Path
    model_uri: str
    fingerprint: str


@dataclass(frozen=True)
class Store:
    """A registered model ``name`` whose @champion (v1) is the base model."""

    root: Path
    snapshot: Path
    fingerprint: str
    name: str
    work: Path


def _config(snapshot: Path, *overrides: str, config: str = "tfidf_lr") -> RunConfig:
    return load_config(
        EXPERIMENTS / f"{config}.yaml",
        [
            f"data.dataset_dir={snapshot}",
            "evaluation.bootstrap=100",
            "promotion.bootstrap=200",
            "model.min_df=1",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The existing dataset snapshot: 40 invented letters (CM99-...) with the old cues."""
    return write_dataset(tmp_path_factory.mktemp("snapshot"), learnable_records(40))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, snapshot: Path) -> Iterator[Base]:
    """Train the champion model once, with `imr-outcome train`'s code path."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        result = train(_config(snapshot), models_dir=root / "models", register_model=True)
        while mlflow.active_run() is not None:
            mlflow.end_run()
        yield Base(root, snapshot, result.model_uri, result.model.info.data_fingerprint)
        while mlflow.active_run() is not None:
            mlflow.end_run()


def _champion_store(base: Base, name: str, work: Path) -> Store:
    """Register the base model as v1 @champion of a new registered model ``name``, as
    `imr-outcome train --register` does (same tags)."""
    version = register_version(
        base.model_uri,
        name,
        tags={"data_fingerprint": base.fingerprint, "config": "tfidf_lr", "trained_at": ""},
    )
    set_alias(name, version, "champion")
    return Store(base.root, base.snapshot, base.fingerprint, name, work)


@pytest.fixture
def store(base: Base, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A registered model of its own for each test: v1 @champion trained on the snapshot."""
    name = f"rt-{re.sub(r'[^a-z0-9]+', '-', request.node.name)[:60]}"
    return _champion_store(base, name, tmp_path)


@pytest.fixture(scope="module")
def shared_store(base: Base) -> Store:
    """One registered model for the failure paths: each must leave it unchanged."""
    return _champion_store(base, "rt-failures", base.root / "failures")


def _registry(name: str) -> tuple[list[str], dict[str, str]]:
    """(version numbers, aliases) of the registered model."""
    client = MlflowClient()
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    aliases = client.get_registered_model(name).aliases
    return [str(v) for v in versions], {k: str(v) for k, v in aliases.items()}


def _retrain(store: Store, sources: list[Path], *overrides: str, **kwargs: Any) -> RetrainResult:
    return retrain(
        _config(store.snapshot, f"tracking.model_name={store.name}", *overrides),
        sources,
        models_dir=store.work / "models",
        datasets_dir=store.work / "datasets",
        **kwargs,
    )


# ----------------------------------------------------------------------------- decisions


def test_a_better_challenger_is_promoted_with_the_decision_on_record(store: Store) -> None:
    letters = store.work / "new"
    new_ids = write_letters(letters, 0, 60, new_cues=True)
    # a re-ingested snapshot letter and one new letter given twice must count once
    write_letters(letters / "again", 1, 1, new_cues=False, prefix="CM99")
    shutil.copy(letters / "letter-CM98-5.txt", letters / "again" / "copy-of-5.txt")

    result = _retrain(store, [letters])

    assert result.decision.outcome == "promote"
    assert result.decision.passed and result.promoted
    assert result.challenger_version == "2"
    assert result.comparison.auroc_delta > 0
    assert result.comparison.p_value < 0.05
    assert result.comparison.ece_delta <= 0.01
    assert result.new_letters == new_ids
    assert result.duplicate_letters == ["CM98-0000005", "CM99-0000001"]
    assert set(result.held_out_letters) < set(new_ids)
    assert _registry(store.name) == (["1", "2"], {"champion": "2"})
    # the rebuilt dataset holds each letter once and has a new fingerprint
    rebuilt = load_dataset(result.dataset_dir)["dwc"]
    assert len(set(rebuilt["group_id"])) == 40 + 60
    assert len(rebuilt) == len(learnable_records(40)) + 60
    assert result.fingerprint != store.fingerprint
    # registry tags and the run carry the decision, figures and training letters
    tags = MlflowClient().get_model_version(store.name, "2").tags
    assert tags["retrain.decision"] == "promote"
    assert tags["retrain.reason"].startswith("passed: AUROC")
    assert tags["retrain.champion_version"] == "1"
    assert tags["data_fingerprint"] == result.fingerprint
    assert float(tags["retrain.auroc_delta"]) == pytest.approx(result.comparison.auroc_delta, 1e-3)
    run = MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["retrain.decision"] == "promote"
    assert run.data.metrics["comparison.p_value"] == result.comparison.p_value
    recorded = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=result.run_id, artifact_path=TRAINING_GROUPS_ARTIFACT
            )
        ).read_text()
    )
    assert not set(recorded["group_ids"]) & set(result.held_out_letters)
    assert len(recorded["group_ids"]) == result.train_letters == 100 - len(result.held_out_letters)
    # serving picks up the promoted model on (re)load, with a record of its training
    # letters only (rates and similar decisions, never a held-out letter)
    served = Predictor.load(f"models:/{store.name}@champion")
    assert served.model_version == "2"
    assert served.model.record is not None
    indexed = {p.case_number for p in served.model.record.precedents.precedents}
    assert indexed == set(recorded["group_ids"])


def test_a_retrained_champion_is_compared_on_letters_it_never_saw(store: Store) -> None:
    first = _retrain(store, [_folder(store, "batch1", 0, 60)])
    assert first.promoted

    # the snapshot is still the original one, so the batch-1 letters count as new again;
    # only the recorded training letters tell which of them champion v2 saw
    second = _retrain(store, [store.work / "batch1", _folder(store, "batch2", 100, 24)])

    trained_on = set(_training_letters(first.run_id))
    assert second.champion.version == "2"
    assert second.held_out_letters
    assert not set(second.held_out_letters) & trained_on


def _folder(store: Store, name: str, first: int, count: int) -> Path:
    write_letters(store.work / name, first, count, new_cues=True)
    return store.work / name


def _training_letters(run_id: str) -> list[str]:
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=TRAINING_GROUPS_ARTIFACT
    )
    return list(json.loads(Path(path).read_text())["group_ids"])


def test_a_challenger_that_is_not_better_is_registered_and_the_champion_stays(
    store: Store,
) -> None:
    # the same cues as the snapshot: the champion already ranks these letters perfectly
    letters = store.work / "new"
    write_letters(letters, 0, 36, new_cues=False)

    result = _retrain(store, [letters])

    assert result.decision.outcome == "keep"
    assert not result.decision.passed and not result.promoted
    assert result.decision.reason.startswith("failed (AUROC not better at p < 0.05)")
    assert _registry(store.name) == (["1", "2"], {"champion": "1"})
    tags = MlflowClient().get_model_version(store.name, "2").tags
    assert tags["retrain.decision"] == "keep"
    assert tags["retrain.passed"] == "false"
    assert Predictor.load(f"models:/{store.name}@champion").model_version == "1"


def test_dry_run_reports_the_decision_and_changes_no_registry_entry(store: Store) -> None:
    letters = store.work / "new"
    write_letters(letters, 0, 60, new_cues=True)

    result = _retrain(store, [letters], dry_run=True)

    assert result.decision.outcome == "promote"
    assert result.challenger_version is None and not result.promoted
    assert _registry(store.name) == (["1"], {"champion": "1"})
    run = MlflowClient().get_run(result.run_id)
    assert run.data.tags["retrain.dry_run"] == "true"
    assert "retrain.registered_version" not in run.data.tags


# ------------------------------------------------------------------------- failure paths


def _unchanged(store: Store) -> None:
    assert _registry(store.name) == (["1"], {"champion": "1"})


def test_sources_with_no_new_items_are_refused(shared_store: Store, tmp_path: Path) -> None:
    known = tmp_path / "known"
    write_letters(known, 0, 3, new_cues=False, prefix="CM99")  # all in the snapshot
    (known / "README.md").write_text("not a letter")

    with pytest.raises(InvalidInputError, match=r"no new dwc items: 3 file\(s\) read, 0 failed"):
        _retrain(shared_store, [known])
    _unchanged(shared_store)


def test_a_config_for_another_label_set_is_refused(shared_store: Store, tmp_path: Path) -> None:
    write_letters(tmp_path / "new", 0, 12, new_cues=True)

    with pytest.raises(InvalidInputError) as caught:
        _retrain(shared_store, [tmp_path / "new"], "data.split=dmhc")
    assert caught.value.field == "data.split"
    assert "predicts 'dwc'" in caught.value.reason
    _unchanged(shared_store)


def test_a_champion_trained_on_another_snapshot_is_named(
    shared_store: Store, tmp_path: Path
) -> None:
    other = write_dataset(tmp_path / "other", learnable_records(24))
    write_letters(tmp_path / "new", 0, 12, new_cues=True)
    config = _config(other, f"tracking.model_name={shared_store.name}")

    with pytest.raises(InvalidInputError, match=r"point --set data\.dataset_dir at the snapshot"):
        retrain(config, [tmp_path / "new"], models_dir=tmp_path, datasets_dir=tmp_path)
    _unchanged(shared_store)


def test_a_champion_whose_artifact_is_missing_is_refused(
    shared_store: Store, tmp_path: Path
) -> None:
    write_letters(tmp_path / "new", 0, 12, new_cues=True)
    models = shared_store.root / "mlartifacts" / "models"
    moved = shared_store.root / "moved-away"
    models.rename(moved)
    try:
        with pytest.raises(
            ModelNotFoundError, match=r"champion models:/rt-failures/1: its artifact is missing"
        ):
            _retrain(shared_store, [tmp_path / "new"])
    finally:
        moved.rename(models)
    _unchanged(shared_store)


def test_a_crash_before_the_alias_moves_leaves_the_registry_unchanged(
    shared_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_letters(tmp_path / "new", 0, 60, new_cues=True)

    def crash(name: str, version: str, alias: str) -> None:
        raise RuntimeError("registry went away")

    monkeypatch.setattr("imr_outcome.train.retrain.set_alias", crash)
    with pytest.raises(RuntimeError, match="registry went away"):
        _retrain(shared_store, [tmp_path / "new"])
    _unchanged(shared_store)
    runs = mlflow.search_runs(
        filter_string=f"params.`tracking.model_name` = '{shared_store.name}'",
        output_format="list",
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def test_no_champion_is_a_clear_error(shared_store: Store, tmp_path: Path) -> None:
    write_letters(tmp_path / "new", 0, 12, new_cues=True)
    config = _config(shared_store.snapshot, "tracking.model_name=never-registered")

    with pytest.raises(ModelNotFoundError, match=r"models:/never-registered@champion does not"):
        retrain(config, [tmp_path / "new"], models_dir=tmp_path, datasets_dir=tmp_path)


# ------------------------------------------------------------------ the CLI, tiny model


def test_cli_retrain_with_a_tiny_bert_force_and_models_list(
    store: Store, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one table line per model version, whatever the terminal
    monkeypatch.setattr(console, "_width", 200)
    monkeypatch.setattr(console, "_height", 50)
    letters = store.work / "new"
    write_letters(letters, 0, 24, new_cues=False)
    runner = CliRunner()
    args = [
        "retrain",
        "--sources",
        str(letters),
        "--config",
        str(EXPERIMENTS / "default.yaml"),
        *("--set", f"data.dataset_dir={store.snapshot}"),
        *("--set", f"model.base_model={tiny_bert}"),
        *("--set", "model.max_length=64", "--set", "model.stride=16"),
        *("--set", "training.epochs=1", "--set", "training.batch_size=8"),
        *("--set", "training.frozen_layers=1"),
        *("--set", "evaluation.bootstrap=100", "--set", "promotion.bootstrap=100"),
        *("--set", f"tracking.model_name={store.name}"),
    ]

    refused = runner.invoke(app, [*args, "--reason", "why"])
    forced = runner.invoke(app, [*args, "--force", "--reason", "new reviewer guidance"])
    listed = runner.invoke(app, ["models", "list", "--name", store.name])

    assert refused.exit_code == 2 and "--reason: only with --force" in refused.output
    assert forced.exit_code == 0, forced.output
    assert "champion v1 vs challenger" in forced.output
    assert "@champion v1 -> v2" in forced.output
    tags = MlflowClient().get_model_version(store.name, "2").tags
    assert tags["retrain.forced"] == "true"
    assert tags["retrain.decision"] in ("force", "promote")
    if tags["retrain.passed"] == "false":
        assert tags["retrain.decision"] == "force"
        assert tags["retrain.reason"].endswith("reason given: new reviewer guidance")
    assert _registry(store.name) == (["1", "2"], {"champion": "2"})
    predictor = Predictor.load(f"models:/{store.name}@champion")
    assert predictor.model_version == "2" and predictor.model.info.kind == "transformer"
    # The challenger was exported to ONNX and parity-checked on every item it was fitted
    # or compared on: the snapshot's items and the 24 new one-item letters.
    assert predictor.model.directory is not None
    parity = read_parity(predictor.model.directory / "classifier")
    n_items = len(load_dataset(store.snapshot)["dwc"]) + 24
    assert parity.get("variants"), parity
    assert {variant["n_items"] for variant in parity["variants"]} == {n_items}
    assert listed.exit_code == 0, listed.output
    assert tags["data_fingerprint"][:12] in listed.output
    assert tags["retrain.decision"] in listed.output
