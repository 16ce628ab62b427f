"""Load a trained model once, then predict single items or batches with warnings.

:meth:`Predictor.load` accepts a registry alias or version (``models:/<name>@<alias>``,
``models:/<name>/<version>``), a logged model (``models:/<model_id>``), a run's model
(``runs:/<run_id>/model``) or a local folder (a model directory with ``imr_model.json``,
or a logged pyfunc model folder whose ``MLmodel`` names the ``imr_model`` artifact).
Registry and run URIs are resolved against :func:`default_tracking_uri`. The label map,
threshold, calibrator and window length are read from the artifact only.

Every :class:`~imr_outcome.serve.schemas.Prediction` carries warnings, stable
human-readable strings, where they apply:

- :data:`WARN_SHORT_SUMMARY`: the case summary has fewer than :data:`MIN_SUMMARY_WORDS`
  words (models that read the summary).
- ``"input split into N windows"`` (:func:`windows_warning`): transformer kinds only, the
  text does not fit one window of ``max_length`` tokens, so window logits are aggregated.
- :data:`WARN_REQUEST_VOCABULARY` / :data:`WARN_SUMMARY_VOCABULARY`: the text holds almost
  no clinical vocabulary (see :func:`clinical_terms`), so it is unlike any training text.
- :data:`WARN_DMHC_MODEL_ON_DWC` / :data:`WARN_DWC_MODEL_ON_DMHC`: the input comes from
  another source than the model was trained on (see :func:`input_source`).
- ``"text unlike the training items: encoder distance ..."`` (:func:`encoder_ood_warning`):
  transformer models saved with an out-of-distribution detector
  (:class:`~imr_outcome.train.ood.MahalanobisOod`), when the input's encoder embedding is at
  least the 99th percentile of the training items' Mahalanobis distances away.
- whatever an optional :data:`OodDetector` returns (a caller's own check).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import numpy.typing as npt
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from imr_outcome.data.model_input import (
    MetadataValue,
    ModelInput,
    build_model_input,
    metadata_prefix,
)
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import (
    IncompatibleModelError,
    InvalidInputError,
    ModelNotFoundError,
)
from imr_outcome.serve.schemas import Direction, EvidenceSpan, Prediction
from imr_outcome.train.artifact import ARTIFACT_FILE, CalibratedModel

logger = logging.getLogger(__name__)

#: Longest accepted request or summary, in characters (a long DWC case summary is about
#: 10,000 characters; 100,000 leaves room while bounding memory and time per item).
MAX_TEXT_CHARS = 100_000
#: Integrated-gradients quadrature points per explanation. Cost grows linearly (about
#: this many forward + backward passes per token window); 16 keeps the completeness error
#: of the fine-tuned MiniLM within tolerance on real items (experiments/README.md).
EXPLAIN_STEPS = 16
#: Summaries with fewer whitespace-separated words than this get :data:`WARN_SHORT_SUMMARY`.
MIN_SUMMARY_WORDS = 30
#: Distinct clinical terms (see :func:`clinical_terms`) a request needs; requests are short
#: ("Norco 10/325mg #90", "TENS unit"), so one is enough.
MIN_REQUEST_CLINICAL_TERMS = 1
#: Distinct clinical terms a non-empty summary needs.
MIN_SUMMARY_CLINICAL_TERMS = 2

WARN_SHORT_SUMMARY = "summary too short to be informative"
WARN_REQUEST_VOCABULARY = "request unlike training data: no clinical vocabulary"
WARN_SUMMARY_VOCABULARY = "summary unlike training data: almost no clinical vocabulary"
WARN_DMHC_MODEL_ON_DWC = (
    "model trained on DMHC health-plan cases, input looks like a DWC workers' compensation letter"
)
WARN_DWC_MODEL_ON_DMHC = (
    "model trained on DWC workers' compensation letters, input looks like a DMHC health-plan case"
)

#: Metadata fields only the DMHC table has; their presence marks an input as DMHC.
DMHC_ONLY_FIELDS: tuple[str, ...] = (
    "age_range",
    "imr_type",
    "diagnosis_category",
    "diagnosis_subcategory",
)
#: Metadata fields only DWC letters have (an exact age in years); they mark an input as DWC.
DWC_ONLY_FIELDS: tuple[str, ...] = ("patient_age",)

#: Which inputs each classifier kind reads: a warning about text a model ignores is noise.
_READS_REQUEST = {"tfidf_lr", "frozen_encoder_lr", "transformer", "metadata_lr"}
_READS_SUMMARY = {"tfidf_lr", "frozen_encoder_lr", "transformer"}
#: Kinds that cut text into token windows of ``info.max_length``.
_WINDOWED_KINDS = {"frozen_encoder_lr", "transformer"}

Source = Literal["dwc", "dmhc"]

#: Out-of-distribution hook: given the model input, return a warning or None.
OodDetector = Callable[[ModelInput], str | None]


def windows_warning(n_windows: int) -> str:
    """The warning for an input cut into ``n_windows`` (> 1) token windows."""
    return f"input split into {n_windows} windows"


def encoder_ood_warning(distance: float, threshold: float, quantile: float) -> str:
    """The warning for an input whose encoder embedding lies far from the training items
    (Mahalanobis ``distance`` at or above ``threshold``, the training ``quantile``)."""
    return (
        f"text unlike the training items: encoder distance {distance:.1f} >= {threshold:.1f} "
        f"(the {quantile:.0%} quantile of training items)"
    )


# ------------------------------------------------------------------ clinical vocabulary

#: A small clinical lexicon (lower case) drawn from the vocabulary of IMR requests and case
#: summaries: anatomy, findings, care, tests, equipment, common drugs in workers'
#: compensation (MTUS formulary), compounded products, and the DMHC treatment categories
#: (including the table's own spelling "Neurosugery"). It is a coarse
#: "is this clinical text at all" check, not a terminology: :func:`clinical_terms` adds
#: dose patterns and medical word endings for everything the list misses. On the project's
#: dataset (444 DWC items, 19,088 DMHC rows) the request check flags 1.1% / 0.2% of rows
#: (a shower chair, a surgical assistant; "Not Applicable") and the summary check none.
_LEXICON_WORDS = """
    abdomen abdominal ankle arm back bladder bone brain breast cartilage cervical chest
    colon cuff disc disk ear elbow extremity extremities eye foot feet finger hand head
    heart hip jaw joint joints kidney knee knees leg legs ligament liver lumbar lung
    meniscus muscle muscles neck nerve nerves paraspinal pelvic pelvis prostate rotator
    sacral sacroiliac shoulder shoulders skin spinal spine teeth tendon thoracic thumb tooth
    uterus vertebral wrist
    ache acute allergy anxiety asthma cancer chronic condition deficit depression diabetes
    diagnosis diagnoses diagnosed disease disorder dysfunction edema fatigue fever fracture
    headache herniation hypertension impairment infection inflammation injured injuries
    injury insomnia instability lesion migraine numbness obesity pain painful paresthesia
    radiating radiculopathy sciatica spasm spasms sprain stenosis stiffness strain swelling
    symptom symptoms syndrome tear tenderness tingling trauma tumor weakness
    ablation acupuncture admission anesthesia arthrogram arthroscopic arthroscopy assessment
    biofeedback biopsy block blocks brace braces care chiropractic chiropractor clinic
    clinical clinician cognitive compound compounded consult consultation counseling cream
    crutches decompression dental dermatology detox diagnostic dme dosage dose durable
    electrodiagnostic emg epidural evaluation exam examination exercise facet fusion gym
    health home hospice hospital imaging implant infusion inpatient injection injections
    lab laboratory medical medication medications medicine mri ncv neurology neurosurgery
    nurse nursing oncology operative orthopedic orthotic orthotics orthosis outpatient
    patch patches patient pharmacy physical physician podiatry postoperative prescribed
    prescription procedure program prosthesis prosthetic provider psychiatric psychiatry
    psychological psychologist psychotherapy radiofrequency radiograph radiographs
    referral rehab rehabilitation replacement rhizotomy screening session sessions sleep
    stimulator surgeon surgery surgical tablet tablets tens therapist therapy topical
    transplant treatment ultrasound urgent urine visits walker wheelchair xray
    acetaminophen alprazolam ambien amitriptyline anaprox baclofen botox buprenorphine
    butrans capsaicin carisoprodol celebrex clonazepam colace cyclobenzaprine cymbalta
    diazepam diclofenac dilaudid docusate duloxetine elavil fentanyl fioricet flexeril
    flurbiprofen gabapentin hydrocodone hydromorphone ibuprofen imitrex insulin ketoprofen
    ketorolac lidocaine lidoderm lyrica medrol meloxicam menthoderm metformin methadone
    mobic morphine naproxen neurontin norco nucynta omeprazole ondansetron opana opioid
    opioids oxycodone oxycontin pantoprazole percocet prednisone pregabalin prilosec
    ranitidine senna soma suboxone sumatriptan tapentadol terocin tizanidine topamax
    topiramate toradol tramadol trazodone tylenol ultram valium voltaren xanax zanaflex
    zofran zolpidem
    deprizine dicopanol etodolac fanatrex ketophene synapryn tabradol
    aba aids behavioral bypass cardiac cardio cardiology carpal cbc cesarean clearance cmp
    commode coronary ecg ekg electrical embolization estim fibroid followup gloves graft
    grip gyn hearing idet jamar labs lenses ligation lithotripsy magnetic neurosugery ob
    obgyn op ophthalmology pacemaker pillow postop preop ptt ray sensory shockwave stents
    stim stimulation transcranial tubal tunnel urinalysis urology uterine vascular vein
    vision visit wipes
"""
CLINICAL_LEXICON: frozenset[str] = frozenset(_LEXICON_WORDS.split())

#: Dose and supply patterns: "550mg", "10/325 mg", "5%", "#60", "x6" (counts of units).
_DOSE_RE = re.compile(
    r"\b\d+(?:[.,/]\d+)*\s?(?:mg|mcg|ml|gm|cc|units?|%)(?!\w)|#\s?\d+|\bx\s?\d+\b",
    re.IGNORECASE,
)
#: Medical word endings (procedures, conditions, drug classes); words of 6+ letters only.
_MEDICAL_SUFFIX_RE = re.compile(
    r"^[a-z]{2,}(?:itis|ectomy|otomy|ostomy|plasty|scopy|graphy|gram|algia|opathy|pathy"
    r"|ology|osis|emia|oma|plegia|therapy|profen|oxacin|cillin|azepam|azolam|prazole|sartan"
    r"|statin|olol|pril|dipine|triptan|codone|morphone|caine|tidine|barbital|zumab|ximab)$"
)
_WORD_RE = re.compile(r"[a-z]+")


def clinical_terms(text: str) -> set[str]:
    """The distinct clinical terms in ``text``.

    A term is a lower-cased word in :data:`CLINICAL_LEXICON`, a word of six or more letters
    with a medical ending (``-itis``, ``-ectomy``, ``-opathy``, ``-profen``, ``-codone``,
    ...), or a dose/supply pattern (``550mg``, ``5%``, ``#60``, ``x6``).

    Args:
        text: any text.

    Returns:
        The terms found (dose patterns as matched); empty for non-clinical text.
    """
    lowered = text.lower()
    terms = {m.group(0).replace(" ", "") for m in _DOSE_RE.finditer(lowered)}
    for word in _WORD_RE.findall(lowered):
        if word in CLINICAL_LEXICON or (len(word) >= 6 and _MEDICAL_SUFFIX_RE.match(word)):
            terms.add(word)
    return terms


def input_source(metadata: Mapping[str, MetadataValue], declared: Source | None) -> Source | None:
    """The data source an input comes from: declared, or inferred from its metadata.

    DMHC rows carry :data:`DMHC_ONLY_FIELDS` (age band, IMR type, diagnosis taxonomy) and
    never an exact age; DWC letters state an exact age (:data:`DWC_ONLY_FIELDS`) and have
    none of the DMHC fields.

    Args:
        metadata: the input's pre-filing metadata.
        declared: the source the caller states (e.g. ``"dwc"`` for a parsed letter).

    Returns:
        ``"dwc"``, ``"dmhc"``, or None when nothing tells.
    """
    if declared is not None:
        return declared
    present = {name for name, value in metadata.items() if value is not None and value != ""}
    if present & set(DMHC_ONLY_FIELDS):
        return "dmhc"
    if present & set(DWC_ONLY_FIELDS):
        return "dwc"
    return None


# ------------------------------------------------------------------------------ inputs


def _invalid(exc: ValidationError) -> InvalidInputError:
    """The first problem of a pydantic error as an :class:`InvalidInputError`."""
    error = exc.errors(include_url=False)[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidInputError):
        return InvalidInputError(cause.field, cause.reason)
    field = ".".join(str(part) for part in error["loc"]) or "input"
    if error["type"] in {"string_type", "dict_type"}:
        expected = "text" if error["type"] == "string_type" else "a mapping of field to value"
        reason = f"expected {expected}, got {type(error['input']).__name__}"
    else:
        reason = str(error["msg"])
    return InvalidInputError(field, reason)


class PredictInput(BaseModel):
    """One item to predict: pre-filing text and metadata only.

    Build it with :meth:`of` to get :class:`InvalidInputError` (naming the field) instead
    of pydantic's ``ValidationError``.

    Attributes:
        request: the disputed treatment request; non-empty, at most ``max_chars``.
        summary: the clinical case summary; ``""`` when the source has none.
        metadata: pre-filing metadata keyed by
            :data:`~imr_outcome.data.schema.PREFILING_FIELDS` (``patient_age`` an integer
            0-120 in years; the others text); None values mean unknown.
        source: the data source when the caller knows it (``"dwc"`` for a letter,
            ``"dmhc"`` for a DMHC table row); inferred from the metadata otherwise.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    request: str
    summary: str = ""
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    source: Source | None = None

    @field_validator("request")
    @classmethod
    def _request_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise InvalidInputError("request", "is empty; give the requested treatment or item")
        return value

    @field_validator("request", "summary")
    @classmethod
    def _not_too_long(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, Mapping) else {}
        limit = int(context.get("max_chars", MAX_TEXT_CHARS))
        field = str(info.field_name)
        check_length(field, value, limit)
        return value

    @field_validator("metadata")
    @classmethod
    def _prefiling_only(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        metadata_prefix(value)  # raises InvalidInputError naming the field
        return value

    @classmethod
    def of(
        cls,
        request: Any,
        summary: Any = "",
        metadata: Mapping[str, Any] | None = None,
        *,
        source: Source | None = None,
        max_chars: int = MAX_TEXT_CHARS,
    ) -> PredictInput:
        """Validate one item.

        Args:
            request: the request text.
            summary: the case summary text.
            metadata: pre-filing metadata, or None.
            source: the data source, if known.
            max_chars: the longest accepted request or summary, in characters.

        Returns:
            The validated input.

        Raises:
            InvalidInputError: an empty request, text that is not ``str`` or longer than
                ``max_chars``, or a metadata key outside ``PREFILING_FIELDS`` / an age
                outside 0-120; the field is named (``request``, ``metadata.patient_age``).
        """
        try:
            return cls.model_validate(
                {
                    "request": request,
                    "summary": summary,
                    "metadata": dict(metadata or {}),
                    "source": source,
                },
                context={"max_chars": max_chars},
            )
        except ValidationError as exc:
            raise _invalid(exc) from None


def check_length(field: str, text: str, max_chars: int) -> None:
    """Raise when ``text`` is longer than ``max_chars`` characters.

    Raises:
        InvalidInputError: naming ``field``, the length and the limit.
    """
    if len(text) > max_chars:
        raise InvalidInputError(
            field,
            f"{len(text)} characters, more than the limit of {max_chars}; shorten the text "
            "or raise the limit (max_chars)",
        )


# ----------------------------------------------------------------------- model loading

_MODELS_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))?$")
_RUNS_RE = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>[^@]+?)/?$")


@dataclass(frozen=True)
class _Resolved:
    """A model directory on local disk, how to name it, and what keeps it alive.

    Attributes:
        directory: the model directory (holds ``imr_model.json``).
        name / version: the predictor's ``model_name`` / ``model_version``.
        keep: a temporary download folder to keep as long as the predictor, or None.
    """

    directory: Path
    name: str
    version: str
    keep: object | None = None


def _client(uri: str) -> Any:
    """An MLflow client on :func:`default_tracking_uri` (also the registry).

    Raises:
        ModelNotFoundError: the embedded SQLite store does not exist (opening it would
            create an empty one).
    """
    from mlflow import MlflowClient

    from imr_outcome.train.tracking import default_tracking_uri

    tracking = default_tracking_uri()
    if tracking.startswith("sqlite:///"):
        # sqlite:///relative.db or sqlite:////absolute.db (SQLAlchemy URL form)
        database = Path(tracking.removeprefix("sqlite:///").partition("?")[0])
        if not database.is_file():
            raise ModelNotFoundError(
                f"{uri}: no tracking store at {database}; run from the project folder "
                "or set MLFLOW_TRACKING_URI"
            )
    return MlflowClient(tracking_uri=tracking, registry_uri=tracking)


def _registry_location(
    uri: str, client: Any, name: str, alias: str | None, version: str | None
) -> tuple[str, str]:
    """Artifact location and version number of a registered model version."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"{uri}: no registered model named {name!r}; train one with "
            "`imr-outcome train --register` or see `imr-outcome models list`"
        ) from exc
    if alias is not None:
        if alias not in registered.aliases:
            known = sorted(registered.aliases) or "none"
            raise ModelNotFoundError(
                f"{uri}: registered model {name!r} has no alias {alias!r} (aliases: {known})"
            )
        version = str(registered.aliases[alias])
    if version is None or not version.isdigit():
        raise ModelNotFoundError(
            f"{uri}: version {version!r} is not a number; use models:/{name}/<version> "
            f"or models:/{name}@<alias>"
        )
    try:
        client.get_model_version(name, version)
        location = str(client.get_model_version_download_uri(name, version))
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"{uri}: registered model {name!r} has no version {version}"
        ) from exc
    return location, version


def _run_location(uri: str, client: Any, run_id: str, path: str) -> str:
    """Artifact location of the model logged as ``path`` by run ``run_id``."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ModelNotFoundError(f"{uri}: no run with id {run_id!r}") from exc
    try:
        logged = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}'",
        )
    except MlflowException:
        logged = []
    for model in logged:
        if model.name == path:
            return str(model.artifact_location)
    try:
        files = {Path(f.path).name for f in client.list_artifacts(run_id, path)}
    except MlflowException:
        files = set()
    if "MLmodel" in files:
        return f"{run.info.artifact_uri}/{path}"
    raise ModelNotFoundError(f"{uri}: run {run_id} logged no model named {path!r}")


def _logged_model_location(uri: str, client: Any, model_id: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_logged_model(model_id).artifact_location)
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"{uri}: no logged model with id {model_id!r}; expected models:/<name>@<alias>, "
            "models:/<name>/<version> or models:/<model_id>"
        ) from exc


def _imr_artifact(uri: str, mlmodel: Path) -> str:
    """The relative path of the ``imr_model`` artifact named in an ``MLmodel`` file."""
    from imr_outcome.train.pyfunc import ARTIFACT_KEY

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


def _model_dir_in(uri: str, folder: Path) -> Path:
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


def _fetch(uri: str, location: str, cache_dir: Path | None) -> tuple[Path, object | None]:
    """A local folder holding the model directory of a logged pyfunc model.

    A ``file:`` location is read in place unless ``cache_dir`` is given; anything else
    (or with ``cache_dir``) is downloaded: ``MLmodel`` first, then only the ``imr_model``
    artifact, into ``cache_dir`` or a temporary folder kept alive by the returned handle.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    parsed = urlparse(location)
    if cache_dir is None and parsed.scheme in {"", "file"}:
        local = url2pathname(parsed.path) if parsed.scheme == "file" else location
        return _model_dir_in(uri, Path(local)), None
    keep: object | None = None
    if cache_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="imr-model-")
        keep, target = temporary, Path(temporary.name)
    else:
        target = cache_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", location.rstrip("/"))[-120:]
    target.mkdir(parents=True, exist_ok=True)
    base = location.rstrip("/")
    try:
        with _quiet_downloads():
            download_artifacts(artifact_uri=f"{base}/MLmodel", dst_path=str(target))
            relative = _imr_artifact(uri, target / "MLmodel")
            download_artifacts(
                artifact_uri=f"{base}/{relative}", dst_path=str((target / relative).parent)
            )
    except (MlflowException, OSError) as exc:
        raise ModelNotFoundError(
            f"{uri}: cannot download the model from {location} ({exc})"
        ) from exc
    return target / relative, keep


def _resolve(uri: str, cache_dir: Path | None) -> _Resolved:
    """Find the model directory for ``uri`` (see :meth:`Predictor.load`)."""
    from mlflow.exceptions import MlflowException

    try:
        if match := _MODELS_RE.match(uri):
            client = _client(uri)
            name, alias, version = match["name"], match["alias"], match["version"]
            if alias is None and version is None:
                location = _logged_model_location(uri, client, name)
                directory, keep = _fetch(uri, location, cache_dir)
                return _Resolved(directory, uri, f"model:{name}", keep)
            location, number = _registry_location(uri, client, name, alias, version)
            directory, keep = _fetch(uri, location, cache_dir)
            return _Resolved(directory, name, number, keep)
        if match := _RUNS_RE.match(uri):
            client = _client(uri)
            location = _run_location(uri, client, match["run_id"], match["path"])
            directory, keep = _fetch(uri, location, cache_dir)
            return _Resolved(directory, uri, f"run:{match['run_id']}", keep)
    except MlflowException as exc:
        raise ModelNotFoundError(f"{uri}: the tracking store could not be read ({exc})") from exc
    if uri.startswith(("models:", "runs:")):
        raise ModelNotFoundError(
            f"{uri}: expected models:/<name>@<alias>, models:/<name>/<version> or "
            "runs:/<run_id>/<path>"
        )
    folder = Path(uri).expanduser()
    return _Resolved(_model_dir_in(uri, folder), str(folder), "local")


def _load_model(uri: str, directory: Path) -> CalibratedModel:
    """:meth:`CalibratedModel.load` with errors that name ``uri`` instead of a cache path."""

    def reason(exc: Exception) -> str:
        # "<directory>: <reason>" -> "<reason>", with paths inside it made relative
        return str(exc).removeprefix(f"{directory}: ").replace(f"{directory}{os.sep}", "")

    try:
        model = CalibratedModel.load(directory)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"{uri}: {reason(exc)}") from exc
    except IncompatibleModelError as exc:
        raise IncompatibleModelError(f"{uri}: {reason(exc)}") from exc
    except Exception as exc:  # unpickling, bad calibrator state, missing weights, ...
        raise IncompatibleModelError(
            f"{uri}: cannot load the model ({type(exc).__name__}: {reason(exc)}); retrain it "
            "or install the imr-outcome version that wrote it"
        ) from exc
    if not 0.0 <= model.threshold <= 1.0:
        raise IncompatibleModelError(f"{uri}: threshold {model.threshold} is outside [0, 1]")
    return model


# ---------------------------------------------------------------------------- predictor


class Predictor:
    """A loaded model that predicts calibrated outcomes with warnings and evidence.

    Load once (:meth:`load`), then call :meth:`predict` / :meth:`predict_batch` as often
    as needed; nothing is reloaded between calls.

    Args:
        model: the calibrated model.
        model_name: registry name, or the local path / URI for unregistered models.
        model_version: registry version, ``"local"`` for a local directory,
            ``"run:<run_id>"`` for a run's model, ``"model:<model_id>"`` for a logged model.
        max_chars: the longest accepted request or summary, in characters.
        explain_steps: integrated-gradients quadrature points per explanation, >= 1
            (ignored by other explainers).
        ood_detector: an extra out-of-distribution check per input, returning a warning
            or None (see :data:`OodDetector`); the encoder distance of transformer models
            saved with a detector is checked regardless.
    """

    def __init__(
        self,
        model: CalibratedModel,
        *,
        model_name: str,
        model_version: str,
        max_chars: int = MAX_TEXT_CHARS,
        explain_steps: int = EXPLAIN_STEPS,
        ood_detector: OodDetector | None = None,
    ) -> None:
        if model.info.labels != LABELS:
            raise IncompatibleModelError(
                f"{model_name}: label map {list(model.info.labels)} differs from {list(LABELS)}"
            )
        if max_chars < 1:
            raise InvalidInputError("max_chars", f"expected a positive number, got {max_chars}")
        if explain_steps < 1:
            raise InvalidInputError(
                "explain_steps", f"expected at least 1 quadrature point, got {explain_steps}"
            )
        self.model = model
        self.model_name = model_name
        self.model_version = model_version
        self.max_chars = max_chars
        self.explain_steps = explain_steps
        self.ood_detector = ood_detector
        self._overturned = model.info.labels.index(LABELS[1])
        self._upheld = model.info.labels.index(LABELS[0])
        self._tokenizer: Any = None
        self._keep: object | None = None

    @classmethod
    def load(
        cls,
        uri: str,
        *,
        cache_dir: Path | None = None,
        max_chars: int = MAX_TEXT_CHARS,
        explain_steps: int = EXPLAIN_STEPS,
        ood_detector: OodDetector | None = None,
    ) -> Predictor:
        """Load a model from the registry, a run, or a local folder.

        Args:
            uri: ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
                ``models:/<model_id>``, ``runs:/<run_id>/<path>`` (resolved against
                :func:`~imr_outcome.train.tracking.default_tracking_uri`), or a local
                folder: a model directory (``imr_model.json``) or a logged pyfunc model
                folder (``MLmodel`` naming the ``imr_model`` artifact).
            cache_dir: where to download registry/run models; by default a ``file:``
                artifact store is read in place and other stores are downloaded to a
                temporary folder removed with the predictor.
            max_chars: the longest accepted request or summary, in characters.
            explain_steps: see :class:`Predictor`.
            ood_detector: see :class:`Predictor`.

        Returns:
            The predictor, named ``<registry name>`` / ``<version>`` (for an alias, the
            version it points at), ``<path>`` / ``"local"``, or ``<uri>`` / ``"run:<id>"``.

        Raises:
            ModelNotFoundError: unknown registered name, alias, version, run or logged
                model; a missing folder; an unreachable or absent tracking store. The
                message starts with ``uri`` and gives the reason.
            IncompatibleModelError: the artifact exists but this code cannot use it
                (format version, label map, unknown kind, unreadable files); the message
                starts with ``uri``.
        """
        resolved = _resolve(uri, cache_dir)
        model = _load_model(uri, resolved.directory)
        predictor = cls(
            model,
            model_name=resolved.name,
            model_version=resolved.version,
            max_chars=max_chars,
            explain_steps=explain_steps,
            ood_detector=ood_detector,
        )
        predictor._keep = resolved.keep
        logger.info(
            "loaded %s model %s version %s (split %s, threshold %.3f)",
            model.info.kind,
            resolved.name,
            resolved.version,
            model.info.split,
            model.threshold,
        )
        return predictor

    @property
    def threshold(self) -> float:
        """P(Overturned) at or above which the label is Overturned, from the artifact."""
        return self.model.threshold

    def predict(
        self,
        request: str,
        summary: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        explain: bool = True,
        top_k: int = 5,
        source: Source | None = None,
    ) -> Prediction:
        """Predict one item.

        Args:
            request: the disputed request, non-empty, at most :attr:`max_chars` characters.
            summary: the case summary (``""`` when there is none).
            metadata: pre-filing metadata (see :class:`PredictInput`), or None.
            explain: also compute evidence spans (offsets into ``request`` / ``summary``).
            top_k: evidence spans per direction, >= 1.
            source: the data source if known (``"dwc"`` for a letter), else inferred.

        Returns:
            The calibrated prediction with warnings (and evidence when asked).

        Raises:
            InvalidInputError: invalid input, naming the field.
        """
        item = PredictInput.of(request, summary, metadata, source=source, max_chars=self.max_chars)
        return self.predict_batch([item], explain=explain, top_k=top_k)[0]

    def predict_batch(
        self, items: Sequence[PredictInput], *, explain: bool = False, top_k: int = 5
    ) -> list[Prediction]:
        """Predict many items with one batched probability computation.

        Args:
            items: n validated inputs (see :meth:`PredictInput.of`).
            explain: also compute evidence spans, one item at a time.
            top_k: evidence spans per direction, >= 1.

        Returns:
            n predictions, in input order.

        Raises:
            InvalidInputError: an item's text is longer than :attr:`max_chars` (named
                ``items[i].request`` / ``items[i].summary``), or the model rejects an
                input (e.g. a request too long for a transformer window).
        """
        if top_k < 1:
            raise InvalidInputError("top_k", f"expected at least 1, got {top_k}")
        for index, item in enumerate(items):
            check_length(f"items[{index}].request", item.request, self.max_chars)
            check_length(f"items[{index}].summary", item.summary, self.max_chars)
        if not items:
            return []
        metadata = [
            {name: value for name, value in item.metadata.items() if value is not None}
            for item in items
        ]
        inputs = [
            build_model_input(item.request, item.summary, meta)
            for item, meta in zip(items, metadata, strict=True)
        ]
        proba, distances = self._probabilities(inputs, metadata)
        windows = self._window_counts(inputs)
        logger.debug("scored %d item(s) with %s", len(items), self.model_name)
        predictions = []
        for index, (item, model_input) in enumerate(zip(items, inputs, strict=True)):
            p_overturned = min(max(float(proba[index, self._overturned]), 0.0), 1.0)
            p_upheld = min(max(float(proba[index, self._upheld]), 0.0), 1.0)
            label = cast(Direction, LABELS[1] if p_overturned >= self.threshold else LABELS[0])
            predictions.append(
                Prediction(
                    p_overturned=p_overturned,
                    p_upheld=p_upheld,
                    label=label,
                    threshold=self.threshold,
                    model_name=self.model_name,
                    model_version=self.model_version,
                    evidence=self._evidence(item, model_input, top_k) if explain else [],
                    warnings=self.warnings(
                        item,
                        model_input,
                        windows[index] if windows else 1,
                        None if distances is None else float(distances[index]),
                    ),
                )
            )
        return predictions

    def warnings(
        self,
        item: PredictInput,
        model_input: ModelInput,
        n_windows: int = 1,
        ood_distance: float | None = None,
    ) -> list[str]:
        """The reasons to trust a prediction for ``item`` less (see the module docstring).

        Args:
            item: the validated input.
            model_input: its model input (for the out-of-distribution hook).
            n_windows: token windows the model cut the input into (1 for non-windowed kinds).
            ood_distance: the encoder's Mahalanobis distance of the input from the training
                items (transformer models saved with a detector), else None.

        Returns:
            Warnings in a fixed order: summary length, windows, vocabulary, source, OOD.
        """
        kind = self.model.info.kind
        found: list[str] = []
        if kind in _READS_SUMMARY and len(item.summary.split()) < MIN_SUMMARY_WORDS:
            found.append(WARN_SHORT_SUMMARY)
        if n_windows > 1:
            found.append(windows_warning(n_windows))
        if (
            kind in _READS_REQUEST
            and len(clinical_terms(item.request)) < MIN_REQUEST_CLINICAL_TERMS
        ):
            found.append(WARN_REQUEST_VOCABULARY)
        if (
            kind in _READS_SUMMARY
            and item.summary.strip()
            and len(clinical_terms(item.summary)) < MIN_SUMMARY_CLINICAL_TERMS
        ):
            found.append(WARN_SUMMARY_VOCABULARY)
        source = input_source(item.metadata, item.source)
        trained_on = self.model.info.split
        if source == "dwc" and trained_on == "dmhc":
            found.append(WARN_DMHC_MODEL_ON_DWC)
        elif source == "dmhc" and trained_on == "dwc":
            found.append(WARN_DWC_MODEL_ON_DMHC)
        detector = getattr(self.model.classifier, "ood", None)
        if ood_distance is not None and detector is not None and ood_distance >= detector.threshold:
            found.append(encoder_ood_warning(ood_distance, detector.threshold, detector.quantile))
        if self.ood_detector is not None and (ood := self.ood_detector(model_input)):
            found.append(ood)
        return found

    def _probabilities(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
        """Calibrated probabilities ``(n, 2)`` and, for a transformer saved with an OOD
        detector, the encoder distances ``(n,)`` from the same forward passes."""
        classifier: Any = self.model.classifier
        if getattr(classifier, "ood", None) is None:
            return self.model.predict_proba(inputs, metadata), None
        logits, distances = classifier.logits_and_ood_distances(inputs)
        return self.model.calibrator.predict_proba(logits), distances

    def _evidence(
        self, item: PredictInput, model_input: ModelInput, top_k: int
    ) -> list[EvidenceSpan]:
        """Evidence spans from :func:`imr_outcome.serve.evidence.explain` (imported lazily)."""
        evidence = importlib.import_module("imr_outcome.serve.evidence")
        spans: list[EvidenceSpan] = evidence.explain(
            self.model,
            model_input,
            item.request,
            item.summary,
            top_k=top_k,
            n_steps=self.explain_steps,
        )
        return spans

    def _window_counts(self, inputs: Sequence[ModelInput]) -> list[int] | None:
        """Token windows per input for windowed kinds, else None."""
        if self.model.info.kind not in _WINDOWED_KINDS:
            return None
        from imr_outcome.train.encoders import encode_windows, load_tokenizer

        classifier: Any = self.model.classifier
        config = classifier.model_config
        if self._tokenizer is None:
            self._tokenizer = getattr(classifier, "_tokenizer", None) or load_tokenizer(
                config.base_model, config.max_length
            )
        windows = encode_windows(self._tokenizer, inputs, config.max_length, config.stride)
        counts = [0] * len(inputs)
        for item in windows.item_index.tolist():
            counts[int(item)] += 1
        return counts
