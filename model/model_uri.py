"""Find the model directory behind a model URI, with MLflow's own resolution.

Accepted forms: ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
``models:/<model_id>`` (a logged model), ``runs:/<run_id>/<path>`` and a local folder (a
model directory holding ``imr_model.json``, or a logged pyfunc model folder whose
``MLmodel`` names the ``imr_model`` artifact). Registry and run URIs are read from
:func:`default_tracking_uri`; the files come from
:func:`mlflow.artifacts.download_artifacts`, which reads a ``file:`` store in place.
The registry is asked only to name the version an alias points at and to turn MLflow's
errors into messages that say what is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imr_outcome.errors import IncompatibleModelError, ModelNotFoundError
from imr_outcome.model.artifact import ARTIFACT_FILE

#: Name of the pyfunc artifact that holds the model directory (see :mod:`imr_outcome.model.pyfunc`).
ARTIFACT_KEY = "imr_model"


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store in the project."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


_MODELS_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))?$")
_RUNS_RE = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>[^@]+?)/?$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model directory on local disk and how to name it.

    Attributes:
        directory: the model directory (holds ``imr_model.json``).
        name: registry name, or the URI / local path for unregistered models.
        version: registry version, ``"local"``, ``"run:<run_id>"`` or ``"model:<model_id>"``.
    """

    directory: Path
    name: str
    version: str


def resolve(uri: str, cache_dir: Path | None = None) -> ResolvedModel:
    """Find (and if needed download) the model directory ``uri`` points at.

    Args:
        uri: one of the forms in the module docstring.
        cache_dir: where to download registry/run models; None lets MLflow read a
            ``file:`` store in place and download anything else to a temporary folder.

    Returns:
        The directory with its display name and version.

    Raises:
        ModelNotFoundError: unknown name, alias, version, run or logged model; a missing
            folder or tracking store. The message starts with ``uri``.
        IncompatibleModelError: a pyfunc folder without the ``imr_model`` artifact.
    """
    from mlflow.exceptions import MlflowException

    models, runs = _MODELS_RE.match(uri), _RUNS_RE.match(uri)
    if models is None and runs is None:
        if uri.startswith(("models:", "runs:")):
            raise ModelNotFoundError(
                f"{uri}: expected models:/<name>@<alias>, models:/<name>/<version> or "
                "runs:/<run_id>/<path>"
            )
        folder = Path(uri).expanduser()
        return ResolvedModel(model_dir_in(uri, folder), str(folder), "local")
    client, tracking = _client(uri)
    try:
        if models is not None:
            name, version = _registry_version(uri, client, models)
            source = f"models:/{name}/{version}" if version.isdigit() else uri
        else:
            assert runs is not None
            _check_run(uri, client, runs["run_id"])
            name, version, source = uri, f"run:{runs['run_id']}", uri
    except MlflowException as exc:
        raise ModelNotFoundError(f"{uri}: the tracking store could not be read ({exc})") from exc
    local = _download(uri, source, tracking, cache_dir, runs)
    return ResolvedModel(model_dir_in(uri, local), name, version)


def _client(uri: str) -> tuple[Any, str]:
    """An MLflow client on :func:`default_tracking_uri` (also the registry) and that URI.

    Raises:
        ModelNotFoundError: the embedded SQLite store does not exist (opening it would
            create an empty one).
    """
    from mlflow import MlflowClient

    tracking = default_tracking_uri()
    if tracking.startswith("sqlite:///"):
        # sqlite:///relative.db or sqlite:////absolute.db (SQLAlchemy URL form)
        database = Path(tracking.removeprefix("sqlite:///").partition("?")[0])
        if not database.is_file():
            raise ModelNotFoundError(
                f"{uri}: no tracking store at {database}; run from the project folder "
                "or set MLFLOW_TRACKING_URI"
            )
    return MlflowClient(tracking_uri=tracking, registry_uri=tracking), tracking


def _registry_version(uri: str, client: Any, match: re.Match[str]) -> tuple[str, str]:
    """``(name, version)`` of a ``models:/`` URI; a logged model is ``(uri, "model:<id>")``."""
    from mlflow.exceptions import MlflowException

    name, alias, version = match["name"], match["alias"], match["version"]
    if alias is None and version is None:
        try:
            client.get_logged_model(name)
        except MlflowException as exc:
            raise ModelNotFoundError(
                f"{uri}: no logged model with id {name!r}; expected models:/<name>@<alias>, "
                "models:/<name>/<version> or models:/<model_id>"
            ) from exc
        return uri, f"model:{name}"
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"{uri}: no registered model named {name!r}; train one with "
            "`imr-outcome train --register` or see `imr-outcome models list`"
        ) from exc
    if alias is not None:
        try:
            version = str(client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            known = sorted(registered.aliases) or "none"
            raise ModelNotFoundError(
                f"{uri}: registered model {name!r} has no alias {alias!r} (aliases: {known})"
            ) from exc
    if version is None or not version.isdigit():
        raise ModelNotFoundError(
            f"{uri}: version {version!r} is not a number; use models:/{name}/<version> "
            f"or models:/{name}@<alias>"
        )
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"{uri}: registered model {name!r} has no version {version}"
        ) from exc
    return name, version


def _check_run(uri: str, client: Any, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise ModelNotFoundError(f"{uri}: no run with id {run_id!r}") from exc


@contextlib.contextmanager
def _quiet_downloads() -> Iterator[None]:
    """No MLflow download progress bars (the CLI owns the console)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def _download(
    uri: str, source: str, tracking: str, cache_dir: Path | None, runs: re.Match[str] | None
) -> Path:
    """:func:`mlflow.artifacts.download_artifacts` of ``source`` with errors naming ``uri``."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    target = None
    if cache_dir is not None:
        target = cache_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", source)[-120:]
        target.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_downloads():
            local = download_artifacts(
                artifact_uri=source,
                dst_path=None if target is None else str(target),
                tracking_uri=tracking,
            )
    except (MlflowException, OSError) as exc:
        if runs is not None:
            raise ModelNotFoundError(
                f"{uri}: run {runs['run_id']} logged no model named {runs['path']!r}"
            ) from exc
        raise ModelNotFoundError(f"{uri}: cannot download the model ({exc})") from exc
    return Path(local)


def _imr_artifact(uri: str, mlmodel: Path) -> str:
    """The relative path of the ``imr_model`` artifact named in an ``MLmodel`` file."""
    try:
        spec = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
        path = spec["flavors"]["python_function"]["artifacts"][ARTIFACT_KEY]["path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise IncompatibleModelError(
            f"{uri}: MLmodel names no python_function artifact {ARTIFACT_KEY!r}; not an "
            "imr-outcome pyfunc model"
        ) from exc
    relative = Path(str(path))
    if relative.is_absolute() or ".." in relative.parts:
        raise IncompatibleModelError(
            f"{uri}: MLmodel artifact path {str(path)!r} leaves the model folder"
        )
    return str(relative)


def model_dir_in(uri: str, folder: Path) -> Path:
    """The model directory inside a local folder (itself, or a pyfunc model's artifact).

    Raises:
        ModelNotFoundError: no such folder, or neither ``imr_model.json`` nor ``MLmodel``.
        IncompatibleModelError: an ``MLmodel`` without the ``imr_model`` artifact.
    """
    if not folder.is_dir():
        where = "" if str(folder) == uri else f" {folder}"
        raise ModelNotFoundError(f"{uri}: no such model directory{where}")
    if (folder / ARTIFACT_FILE).is_file():
        return folder
    if (folder / "MLmodel").is_file():
        return folder / _imr_artifact(uri, folder / "MLmodel")
    raise ModelNotFoundError(
        f"{uri}: no {ARTIFACT_FILE} or MLmodel in {folder}; expected a model directory "
        "written by `imr-outcome train` or a logged pyfunc model"
    )
