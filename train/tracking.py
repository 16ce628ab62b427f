"""MLflow tracking and the model registry, in one place.

Embedded default: a SQLite store in the project (``sqlite:///<cwd>/mlflow.db``) with
artifacts under ``<cwd>/mlartifacts``; set ``MLFLOW_TRACKING_URI`` for a server. Never the
deprecated file store. Every run started here is ended, also on failure.
"""

from __future__ import annotations

import logging
import math
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from imr_outcome.errors import ModelNotFoundError
from imr_outcome.model.model_uri import ARTIFACT_KEY, default_tracking_uri
from imr_outcome.model.pyfunc import PYFUNC_CODE, SIGNATURE
from imr_outcome.train.config import RunConfig, flatten

logger = logging.getLogger(__name__)

CHAMPION = "champion"
#: The models-from-code file that defines the pyfunc model (no pickle in the artifact),
#: beside :mod:`imr_outcome.model.pyfunc`.
#: Packages the pyfunc model needs, pinned to the installed versions (MLflow's inferred
#: defaults for torch models add torchvision, which has no CPU build here).
_PYFUNC_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "scikit-learn",
    "scipy",
    "numpy",
    "pandas",
    "joblib",
    "pyyaml",
    "pydantic",
    "datasets",
    "mlflow",
)


def configure(experiment: str) -> str:
    """Point MLflow at the tracking store and select (or create) the experiment.

    Returns:
        The experiment id.
    """
    uri = default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        mlflow.set_experiment(experiment)
        return str(existing.experiment_id)
    artifact_location = None
    if uri.startswith("sqlite:"):
        artifact_location = Path("mlartifacts").resolve().as_uri()
    experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    return str(experiment_id)


#: What the figures of a training or evaluation run depend on (git pathspecs from the
#: repository root): the package folders below serving, the project file and the run
#: configs. ``serve/`` is left out because the layers contract (pyproject.toml, checked
#: by lint-imports) keeps train/, model/ and data/ from importing it. Reports, docs,
#: tests, serving and the table scripts may change while evaluations run without marking
#: them ``-dirty``; the same paths decide when ``experiments/cv_table.py`` calls a report
#: stale.
CODE_PATHSPECS = (
    ":(top)core",
    ":(top)data",
    ":(top)model",
    ":(top)train",
    ":(top)pyproject.toml",
    ":(top,glob)experiments/*.yaml",
)


def git_commit() -> str:
    """The current git commit of the working directory, with ``-dirty`` appended when
    tracked files under :data:`CODE_PATHSPECS` differ from it (the code that runs is then
    not the commit's); ``"unknown"`` outside a repo."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        clean = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", *CODE_PATHSPECS],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("" if clean.returncode == 0 else "-dirty")


@contextmanager
def tracked_run(config: RunConfig, run_kind: str) -> Iterator[Run]:
    """Start an MLflow run for ``config``; it is always ended, with FAILED on error.

    Logs the flattened config as params and tags ``run_kind`` and ``git_commit``.
    """
    configure(config.tracking.experiment)
    run = mlflow.start_run(run_name=f"{config.name}-{run_kind}")
    status = "FAILED"
    try:
        mlflow.set_tags({"run_kind": run_kind, "git_commit": git_commit(), "config": config.name})
        mlflow.log_params(flatten(config))
        mlflow.log_dict(config.model_dump(mode="json"), "config.json")
        yield run
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log scalar metrics; NaN values are skipped (undefined, e.g. AUROC on one class)."""
    finite = {k: float(v) for k, v in metrics.items() if not math.isnan(float(v))}
    mlflow.log_metrics(finite, step=step)


def log_dataset(frame: pd.DataFrame, *, name: str, source: str, fingerprint: str) -> None:
    """Record the training data (``mlflow.data``) with its fingerprint as digest."""
    with warnings.catch_warnings():
        # MLflow guesses among equivalent local sources and hints about integer columns;
        # both are noise for a frozen local snapshot with no missing values.
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(
            frame, source=source, targets="label", name=name, digest=fingerprint[:32]
        )
        mlflow.log_input(dataset, context="training")  # infers the schema: the int hint
    mlflow.set_tag("data_fingerprint", fingerprint)


def pip_requirements() -> list[str]:
    """Exact pins of the installed packages the pyfunc model needs."""
    pins = []
    for package in _PYFUNC_PACKAGES:
        try:
            pins.append(f"{package}=={importlib_metadata.version(package)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return pins


def log_model(model_dir: Path) -> str:
    """Log the model directory as a pyfunc model of the active run.

    The model is defined by code (``pyfunc_model.py``), not pickled; no ``input_example``
    (it would make MLflow load and pickle the model into the artifact); the signature is
    explicit.

    Returns:
        The model URI (``runs:/<run_id>/model``).
    """
    with warnings.catch_warnings():
        # The signature is explicit, so MLflow's hint to give an input example is noise.
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={ARTIFACT_KEY: str(model_dir)},
            signature=SIGNATURE,
            pip_requirements=pip_requirements(),
        )
    run = mlflow.active_run()
    assert run is not None
    return f"runs:/{run.info.run_id}/model" if info is None else str(info.model_uri)


@dataclass(frozen=True)
class Registration:
    """A registered model version and whether it became champion."""

    name: str
    version: str
    champion: bool


def register(model_uri: str, name: str, *, tags: Mapping[str, str]) -> Registration:
    """Register ``model_uri`` under ``name``; the first version becomes ``@champion``.

    Later versions are challengers: the alias moves only through a promotion
    (champion/challenger comparison) or ``models promote``.
    """
    version = mlflow.register_model(model_uri, name, tags=dict(tags))
    client = MlflowClient()
    try:
        client.get_model_version_by_alias(name, CHAMPION)
        became_champion = False
    except MlflowException:
        client.set_registered_model_alias(name, CHAMPION, str(version.version))
        became_champion = True
    return Registration(name, str(version.version), became_champion)


@dataclass(frozen=True)
class VersionRef:
    """A registered model version: its name, number, run and tags."""

    name: str
    version: str
    run_id: str
    tags: dict[str, str]


def champion_version(name: str) -> VersionRef:
    """The version ``@champion`` of registered model ``name`` points at.

    Raises:
        ModelNotFoundError: no such registered model or no ``@champion`` alias.
    """
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"models:/{name}@{CHAMPION} does not exist; register a first model with "
            "`imr-outcome train --register` or set one with `imr-outcome models promote`"
        ) from exc
    return VersionRef(name, str(version.version), str(version.run_id or ""), dict(version.tags))


def register_version(model_uri: str, name: str, *, tags: Mapping[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name`` with ``tags``; moves no alias.

    Returns:
        The new version number.
    """
    version = mlflow.register_model(model_uri, name, tags=dict(tags))
    return str(version.version)


def delete_version(name: str, version: str) -> None:
    """Delete a registered version (used to undo a registration whose run failed)."""
    MlflowClient().delete_model_version(name, version)


def set_alias(name: str, version: str, alias: str) -> None:
    """Point ``alias`` of registered model ``name`` at ``version``.

    Raises:
        ModelNotFoundError: when the model or version does not exist.
    """
    client = MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelNotFoundError(f"models:/{name}/{version} does not exist") from exc
    client.set_registered_model_alias(name, alias, version)


def list_versions(name: str) -> list[dict[str, Any]]:
    """Every registered version of ``name``, newest first, with aliases and headline metrics.

    Returns:
        Dicts with ``version``, ``aliases``, ``run_id``, ``created`` (ms since epoch),
        ``data_fingerprint``, ``config``, ``trained_at`` (ISO 8601 UTC, "" if untagged),
        ``decision`` (a retrain's ``retrain.decision`` tag, "" otherwise), ``tags`` (all
        version tags) and ``metrics`` (the run's ``test.*`` means).
    """
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{name}'")
        # search results do not carry aliases on every store; the registered model does.
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return []
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version), reverse=True):
        metrics: dict[str, float] = {}
        if v.run_id:
            try:
                run_metrics = client.get_run(v.run_id).data.metrics
            except MlflowException:
                run_metrics = {}
            metrics = {k: val for k, val in run_metrics.items() if k.startswith("test.")}
        rows.append(
            {
                "version": str(v.version),
                "aliases": sorted(a for a, ver in aliases.items() if str(ver) == str(v.version)),
                "run_id": v.run_id,
                "created": v.creation_timestamp,
                "data_fingerprint": v.tags.get("data_fingerprint", ""),
                "config": v.tags.get("config", ""),
                "trained_at": v.tags.get("trained_at", ""),
                "decision": v.tags.get("retrain.decision", ""),
                "tags": dict(v.tags),
                "metrics": metrics,
            }
        )
    return rows
