"""Find the model directory behind a model URI, with MLflow's own resolution.

Accepted forms: ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
``models:/<model_id>`` (a logged model), ``runs:/<run_id>/<path>`` and a local folder (a
model directory holding ``imr_model.json``, or a logged pyfunc model folder whose
``MLmodel`` names the ``imr_model`` artifact). Registry and run URIs are read from
:func:`default_tracking_uri`; the files come from
:func:`mlflow.artifacts.download_artifacts`, which reads a ``file:`` store in place.
The registry is asked only to name the version an alias points at and to turn MLflow's
errors into messages that say what is missing.

A registry or run URI resolved against the embedded SQLite store is remembered (the
directory, name and version, in ``resolved-models.json`` under :func:`resolution_cache_dir`)
together with the store file's size and modification time. While the store is unchanged the
next :func:`resolve` of that URI returns the remembered answer without importing MLflow
(about 2 s of a 2-core machine's CLI call: the import and opening the store); any write to
the store (a new run, a version, an alias moved) makes it ask MLflow again. Stores behind
a server are asked every time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from imr_outcome.errors import IncompatibleModelError, ModelNotFoundError
from imr_outcome.model.artifact import ARTIFACT_FILE

logger = logging.getLogger(__name__)

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
    models, runs = _MODELS_RE.match(uri), _RUNS_RE.match(uri)
    if models is None and runs is None:
        if uri.startswith(("models:", "runs:")):
            raise ModelNotFoundError(
                f"{uri}: expected models:/<name>@<alias>, models:/<name>/<version> or "
                "runs:/<run_id>/<path>"
            )
        folder = Path(uri).expanduser()
        return ResolvedModel(model_dir_in(uri, folder), str(folder), "local")
    tracking = default_tracking_uri()
    key = f"{tracking}|{uri}|{cache_dir or ''}"
    store_state = _store_state(tracking)
    remembered = _recall(key, store_state)
    if remembered is not None:
        return remembered
    from mlflow.exceptions import MlflowException

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
    resolved = ResolvedModel(model_dir_in(uri, local), name, version)
    if store_state is not None and _store_state(tracking) == store_state:
        _remember(key, store_state, resolved)
    return resolved


# ----------------------------------------------------------- remembered resolutions

#: Overrides where resolutions are remembered (default ``$XDG_CACHE_HOME/imr-outcome``).
CACHE_DIR_ENV = "IMR_OUTCOME_CACHE_DIR"
#: Resolutions kept; the oldest are dropped beyond this.
MAX_REMEMBERED = 64


def resolution_cache_dir() -> Path:
    """``$IMR_OUTCOME_CACHE_DIR``, else ``$XDG_CACHE_HOME/imr-outcome``, else
    ``~/.cache/imr-outcome``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imr-outcome"


def _store_state(tracking: str) -> list[list[Any]] | None:
    """``[path, size, mtime_ns]`` of a local SQLite store's file and of its journal or
    write-ahead log where present; None for any other store (or a missing file)."""
    if not tracking.startswith("sqlite:///"):
        return None
    database = Path(tracking.removeprefix("sqlite:///").partition("?")[0]).resolve()
    state = []
    for path in (database, *(database.with_name(database.name + s) for s in ("-wal", "-journal"))):
        try:
            stat = path.stat()
        except OSError:
            if path == database:
                return None
            continue
        state.append([str(path), stat.st_size, stat.st_mtime_ns])
    return state


def _read_remembered() -> dict[str, Any]:
    try:
        loaded = json.loads((resolution_cache_dir() / "resolved-models.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _recall(key: str, store_state: list[list[Any]] | None) -> ResolvedModel | None:
    """The remembered resolution of ``key`` if the store is as it was then and the model
    directory is still there."""
    if store_state is None:
        return None
    entry = _read_remembered().get(key)
    if not isinstance(entry, dict) or entry.get("store") != store_state:
        return None
    directory = Path(str(entry.get("directory")))
    if not (directory / ARTIFACT_FILE).is_file():
        return None
    return ResolvedModel(directory, str(entry["name"]), str(entry["version"]))


def _remember(key: str, store_state: list[list[Any]], resolved: ResolvedModel) -> None:
    """Write ``resolved`` to the cache file; a cache that cannot be written is skipped."""
    remembered = _read_remembered()
    remembered.pop(key, None)
    remembered[key] = {
        "store": store_state,
        "directory": str(resolved.directory),
        "name": resolved.name,
        "version": resolved.version,
    }
    kept = dict(list(remembered.items())[-MAX_REMEMBERED:])
    folder = resolution_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        scratch = folder / f"resolved-models.json.{os.getpid()}"
        scratch.write_text(json.dumps(kept, indent=1), encoding="utf-8")
        scratch.replace(folder / "resolved-models.json")
    except OSError as exc:
        logger.debug("model resolution not remembered (%s)", exc)


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
