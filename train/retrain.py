"""Retraining: rebuild the data, train a challenger, compare it fairly, promote or keep.

The flow of ``imr-outcome retrain`` (:func:`retrain`):

1. Find ``@champion`` of ``tracking.model_name`` and load its artifact; check it predicts
   the configured split with the project's label map.
2. Load the dataset snapshot (``data.dataset_dir``), ingest the new sources, drop letters
   already in the snapshot or given twice (by case number), rebuild the dataset with the
   snapshot's build settings (new fingerprint) and save it under ``datasets_dir``.
3. Work out which letters the champion saw (below), hold out part of the new letters it
   never saw (:func:`~imr_outcome.train.retrain_data.comparison_split`) and train the
   challenger on everything else.
4. Score both models on the held-out letters; the rule in ``promotion`` decides
   (:mod:`imr_outcome.train.promotion`).
5. Log a ``retrain`` run (figures, decision, challenger model, its training letters; a
   transformer challenger is exported to ONNX and parity-checked on the held-out and
   training items, as ``train`` does), register the challenger with the decision in its
   version tags and, on a pass or with ``force``, move ``@champion`` to it.
   ``dry_run`` stops after logging the run.

Every check that can fail on bad input runs before anything is registered, and the alias
moves last: if anything fails after the registration, the new version is deleted again,
so the registry is as before.

Which letters the champion saw. Its registry tags and artifact hold the fingerprint of
its training data, but a fingerprint cannot be inverted into letter ids, so:

* a champion registered by ``retrain`` has its training letter ids logged as the run
  artifact ``retrain/training_groups.json`` (written by this module), which is read back;
* for a champion registered by ``imr-outcome train`` the letters are recovered: its
  fingerprint must equal the snapshot's, and it trained on every fold of the snapshot
  except ``data.holdout_fold`` of the config saved beside it (``config.yaml``). A
  fingerprint that matches neither is an error naming the snapshot to point at.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from imr_outcome.data.card import build_card, write_card
from imr_outcome.data.dataset import BuiltDataset, save_dataset
from imr_outcome.data.dataset_build import build_dataset
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.model_uri import resolve
from imr_outcome.model.record import record_items
from imr_outcome.train.config import RunConfig, load_config
from imr_outcome.train.evaluate import Evaluation, evaluate_model
from imr_outcome.train.metrics import flatten_metrics
from imr_outcome.train.pipeline import Rows, rows_from_dataset
from imr_outcome.train.promotion import Comparison, Decision, compare, decide, describe_rule
from imr_outcome.train.retrain_data import (
    ComparisonSplit,
    NewRecords,
    Snapshot,
    comparison_split,
    load_snapshot,
    new_records,
)
from imr_outcome.train.retrieval_eval import record_for_model
from imr_outcome.train.run import fit_and_log, log_inputs, save_and_log
from imr_outcome.train.tracking import (
    CHAMPION,
    VersionRef,
    champion_version,
    configure,
    delete_version,
    log_metrics,
    register_version,
    set_alias,
    tracked_run,
)

logger = logging.getLogger(__name__)

#: Run artifact with the letter ids a retrained model was fitted and calibrated on.
TRAINING_GROUPS_ARTIFACT = "retrain/training_groups.json"


@dataclass(frozen=True)
class Champion:
    """The current champion: its registry entry, loaded model and the letters it saw."""

    ref: VersionRef
    model: OutcomeModel
    letters: frozenset[str]


def _load_champion_model(ref: VersionRef, target: Path) -> tuple[OutcomeModel, Path]:
    """Download the champion's artifact into ``target`` (:func:`model_uri.resolve`);
    returns the model and its folder.

    Raises:
        ModelNotFoundError: the artifact is missing or holds no imr-outcome model.
        IncompatibleModelError: the artifact cannot be used by this code.
    """
    uri = f"models:/{ref.name}/{ref.version}"
    fix = (
        "point @champion at a version whose artifact exists with `imr-outcome models "
        "promote`, or register a new one with `imr-outcome train --register`"
    )
    try:
        directory = resolve(uri, cache_dir=target).directory
        return OutcomeModel.load(directory), directory
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"champion {uri}: its artifact is missing ({exc}); {fix}") from exc
    except IncompatibleModelError as exc:
        raise IncompatibleModelError(f"champion {uri}: {exc}") from exc


def _champion_letters(
    ref: VersionRef, model_dir: Path, model: OutcomeModel, snapshot: Snapshot
) -> frozenset[str]:
    """The letter ids the champion was fitted and calibrated on (see the module docstring).

    Raises:
        InvalidInputError: a champion trained by ``imr-outcome train`` on a dataset other
            than the snapshot.
    """
    client = MlflowClient()
    if ref.run_id:
        try:
            listed = {f.path for f in client.list_artifacts(ref.run_id, "retrain")}
        except MlflowException:
            listed = set()
        if TRAINING_GROUPS_ARTIFACT in listed:
            with tempfile.TemporaryDirectory() as tmp:
                path = mlflow.artifacts.download_artifacts(
                    run_id=ref.run_id, artifact_path=TRAINING_GROUPS_ARTIFACT, dst_path=tmp
                )
                return frozenset(json.loads(Path(path).read_text())["group_ids"])
    fingerprint = ref.tags.get("data_fingerprint") or model.info.data_fingerprint
    if fingerprint != snapshot.fingerprint:
        raise InvalidInputError(
            "data.dataset_dir",
            f"champion models:/{ref.name}/{ref.version} was trained on dataset "
            f"{fingerprint[:12]}, but {snapshot.directory} is {snapshot.fingerprint[:12]}; "
            "point --set data.dataset_dir at the snapshot the champion was trained on",
        )
    config_path = model_dir / "config.yaml"
    holdout = load_config(config_path).data.holdout_fold if config_path.is_file() else 0
    split = snapshot.dataset[model.info.split]
    return frozenset(
        g for g, f in zip(split["group_id"], split["fold"], strict=True) if f != holdout
    )


def _fingerprint_at(dataset_dir: Path) -> str | None:
    """The fingerprint in ``dataset_dir/card.json``, None when there is none."""
    try:
        return str(json.loads((dataset_dir / "card.json").read_text())["fingerprint"])
    except (OSError, ValueError, KeyError):
        return None


def _check_task(config: RunConfig, ref: VersionRef, model: OutcomeModel) -> None:
    if model.info.split != config.data.split or tuple(model.info.labels) != LABELS:
        raise InvalidInputError(
            "data.split",
            f"the config trains {config.data.split!r} with labels {list(LABELS)}, but "
            f"champion models:/{ref.name}/{ref.version} predicts {model.info.split!r} with "
            f"labels {list(model.info.labels)}: a different task; use a config with "
            f"data.split={model.info.split} or another tracking.model_name",
        )


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain produced.

    Attributes:
        decision: the rule's outcome and reason.
        comparison: the figures on the held-out new letters.
        champion: the champion version compared against.
        champion_eval / challenger_eval: full evaluations (95% CIs by letter).
        challenger_version: the registered version, None on a dry run.
        promoted: whether ``@champion`` now points at the challenger.
        run_id: the ``retrain`` MLflow run.
        dataset_dir / fingerprint: the rebuilt dataset.
        new_letters / duplicate_letters: letter ids added / skipped as duplicates.
        held_out_letters: ids of the letters both models were scored on.
        train_letters: how many letters the challenger was fitted and calibrated on.
        failed_files: how many source files failed to parse.
    """

    decision: Decision
    comparison: Comparison
    champion: VersionRef
    champion_eval: Evaluation
    challenger_eval: Evaluation
    challenger_version: str | None
    promoted: bool
    run_id: str
    dataset_dir: Path
    fingerprint: str
    new_letters: list[str]
    duplicate_letters: list[str]
    held_out_letters: list[str]
    train_letters: int
    failed_files: int


def _version_tags(
    config: RunConfig,
    fingerprint: str,
    trained_at: str,
    champion: VersionRef,
    decision: Decision,
    comparison: Comparison,
    run_id: str,
    force: bool,
) -> dict[str, str]:
    figures = {
        f"retrain.{k}": f"{v:.4f}" if isinstance(v, float) else str(v)
        for k, v in comparison.as_dict().items()
    }
    return {
        "data_fingerprint": fingerprint,
        "config": config.name,
        "trained_at": trained_at,
        "retrain.decision": decision.outcome,
        "retrain.passed": str(decision.passed).lower(),
        "retrain.forced": str(force).lower(),
        "retrain.reason": decision.reason,
        "retrain.rule": describe_rule(config.promotion),
        "retrain.champion_version": champion.version,
        "retrain.run_id": run_id,
        **figures,
    }


def retrain(
    config: RunConfig,
    sources: Sequence[Path],
    *,
    models_dir: Path,
    datasets_dir: Path,
    dry_run: bool = False,
    force: bool = False,
    force_reason: str | None = None,
) -> RetrainResult:
    """Rebuild the data with ``sources``, train a challenger, compare, promote or keep.

    Args:
        config: the challenger's run config (with the ``promotion`` rule).
        sources: new letter files or folders.
        models_dir: where the challenger's model directory is written (``<run_id>``).
        datasets_dir: where the rebuilt dataset is written (``dataset-<fingerprint[:12]>``).
        dry_run: log the run but register nothing and move no alias.
        force: promote even when the rule fails (recorded in the reason and tags).
        force_reason: why ``force`` was used, recorded verbatim.

    Returns:
        The :class:`RetrainResult`.

    Raises:
        ModelNotFoundError: no ``@champion``, or its artifact is missing.
        IncompatibleModelError: the champion's artifact cannot be used.
        InvalidInputError: a config for another split/label set, no or a mismatching
            snapshot, sources with zero new items, too few new letters to compare on.
        LeakageError: the rebuilt dataset fails the leakage audit.
    """
    configure(config.tracking.experiment)
    with tempfile.TemporaryDirectory(prefix="imr-champion-") as tmp:
        # the champion's files stay until both models have been scored
        prepared = _prepare(config, sources, datasets_dir, Path(tmp))
        return _train_and_decide(
            config,
            prepared,
            models_dir=models_dir,
            dry_run=dry_run,
            force=force,
            force_reason=force_reason,
        )


@dataclass(frozen=True)
class _Prepared:
    """Everything checked and built before a run starts."""

    champion: Champion
    sources: list[Path]
    added: NewRecords
    built: BuiltDataset
    dataset_dir: Path
    parts: ComparisonSplit
    train_rows: Rows
    held_rows: Rows
    train_letters: list[str]


def _prepare(
    config: RunConfig, sources: Sequence[Path], datasets_dir: Path, workdir: Path
) -> _Prepared:
    """Steps 1-3 of the module docstring; touches neither the tracking store nor the
    registry beyond reading them."""
    split_name = config.data.split
    ref = champion_version(config.tracking.model_name)
    champion_model, champion_dir = _load_champion_model(ref, workdir)
    _check_task(config, ref, champion_model)
    snapshot = load_snapshot(config.data.dataset_dir, split_name)
    champion = Champion(
        ref, champion_model, _champion_letters(ref, champion_dir, champion_model, snapshot)
    )
    added = new_records(sources, snapshot, split_name)
    built = build_dataset([*snapshot.records, *added.records], snapshot.build_config)
    dataset_dir = datasets_dir / f"dataset-{built.fingerprint[:12]}"
    if _fingerprint_at(dataset_dir) != built.fingerprint:  # else the same rebuild exists
        save_dataset(built, dataset_dir)
        card_sources = [str(snapshot.directory), *(str(s) for s in sources)]
        write_card(build_card(built, added.report, card_sources), dataset_dir)
        added.report.write(dataset_dir / "ingest_report.json")
    split = built.dataset[split_name]
    parts = comparison_split(
        split,
        added.letters,
        champion.letters,
        fraction=config.promotion.eval_fraction,
        seed=config.training.seed,
    )
    rows = rows_from_dataset(split, context_columns=config.evaluation.subgroups)
    return _Prepared(
        champion=champion,
        sources=list(sources),
        added=added,
        built=built,
        dataset_dir=dataset_dir,
        parts=parts,
        train_rows=rows.subset(parts.train),
        held_rows=rows.subset(parts.held_out),
        train_letters=sorted({str(g) for g in split.select(parts.train)["group_id"]}),
    )


def _train_and_decide(
    config: RunConfig,
    prepared: _Prepared,
    *,
    models_dir: Path,
    dry_run: bool,
    force: bool,
    force_reason: str | None,
) -> RetrainResult:
    """Steps 4-5 of the module docstring, in one ``retrain`` run."""
    p = prepared
    name, split_name, ref = config.tracking.model_name, config.data.split, p.champion.ref
    sources, added, built, parts = p.sources, p.added, p.built, p.parts
    train_rows, held_rows, train_letters = p.train_rows, p.held_rows, p.train_letters
    dataset_dir, champion = p.dataset_dir, p.champion
    split = built.dataset[split_name]
    with tracked_run(config, "retrain") as run:
        run_id = run.info.run_id
        mlflow.set_tags(
            {
                "retrain.dry_run": str(dry_run).lower(),
                "retrain.champion_version": ref.version,
                "retrain.sources": ", ".join(str(s) for s in sources)[:500],
            }
        )
        log_inputs(config, split, dataset_dir, built.fingerprint)
        challenger = fit_and_log(config, train_rows, fingerprint=built.fingerprint)
        champion_eval = evaluate_model(config, champion.model, held_rows)
        challenger_eval = evaluate_model(config, challenger, held_rows)
        comparison = compare(
            held_rows.labels,
            champion_eval.p_overturned,
            challenger_eval.p_overturned,
            held_rows.groups,
            config.promotion,
            seed=config.training.seed,
        )
        decision = decide(comparison, config.promotion, force=force, force_reason=force_reason)
        for prefix, evaluation in (
            ("champion", champion_eval),
            ("challenger", challenger_eval),
            ("test", challenger_eval),
        ):
            log_metrics(flatten_metrics(prefix, evaluation.metrics))
        log_metrics({f"comparison.{k}": float(v) for k, v in comparison.as_dict().items()})
        log_metrics(
            {
                "retrain.new_letters": len(added.letters),
                "retrain.duplicate_letters": len(added.duplicates),
                "retrain.train_letters": len(train_letters),
                "retrain.held_out_letters": len(parts.held_out_letters),
                "threshold": challenger.threshold,
            }
        )
        tags = _version_tags(
            config,
            built.fingerprint,
            challenger.info.created,
            ref,
            decision,
            comparison,
            run_id,
            force,
        )
        mlflow.set_tags({k: v for k, v in tags.items() if k.startswith("retrain.")})
        record = {
            "decision": decision.outcome,
            "passed": decision.passed,
            "reason": decision.reason,
            "rule": describe_rule(config.promotion),
            "dry_run": dry_run,
            "champion": {"name": name, "version": ref.version, "run_id": ref.run_id},
            "comparison": comparison.as_dict(),
            "data_fingerprint": built.fingerprint,
            "held_out_letters": parts.held_out_letters,
            "new_letters": added.letters,
            "duplicate_letters": added.duplicates,
        }
        mlflow.log_dict(record, "retrain/decision.json")
        mlflow.log_dict(
            {
                "data_fingerprint": built.fingerprint,
                "split": split_name,
                "group_ids": train_letters,
            },
            TRAINING_GROUPS_ARTIFACT,
        )
        train_ids = set(train_rows.ids)
        items = [item for item in record_items(split) if item.item_id in train_ids]
        by_id = dict(zip(train_rows.ids, train_rows.inputs, strict=True))
        past = record_for_model(challenger, items, [by_id[item.item_id] for item in items])
        _, model_uri = save_and_log(
            challenger,
            config,
            models_dir,
            run_id,
            parity_rows=(held_rows, train_rows),
            record=past,
        )
        version = None if dry_run else _register(name, model_uri, tags, decision)
    return RetrainResult(
        decision=decision,
        comparison=comparison,
        champion=ref,
        champion_eval=champion_eval,
        challenger_eval=challenger_eval,
        challenger_version=version,
        promoted=version is not None and decision.moves_champion,
        run_id=run_id,
        dataset_dir=dataset_dir,
        fingerprint=built.fingerprint,
        new_letters=added.letters,
        duplicate_letters=added.duplicates,
        held_out_letters=parts.held_out_letters,
        train_letters=len(train_letters),
        failed_files=len(added.report.failures),
    )


def _register(name: str, model_uri: str, tags: dict[str, str], decision: Decision) -> str:
    """Register the challenger, then (last) move ``@champion`` if the decision says so.

    A failure after the registration deletes the new version again, so the registry is
    left as it was.
    """
    version = register_version(model_uri, name, tags=tags)
    try:
        mlflow.set_tag("retrain.registered_version", version)
        if decision.moves_champion:
            set_alias(name, version, CHAMPION)
    except BaseException:
        logger.error("moving @%s failed; deleting version %s again", CHAMPION, version)
        delete_version(name, version)
        raise
    return version
