"""The model object: load any model URI, score, explain, save (setfit's ``SetFitModel``).

:class:`OutcomeModel` is a classifier with its calibrator, decision threshold and
provenance (:class:`~imr_outcome.model.artifact.ModelInfo`, with the label map). The
predictor, the pyfunc, batch scoring, the HTTP API and the evaluation code all call it;
training (:mod:`imr_outcome.train.pipeline`) builds one and saves it.

Layout of a model directory: see :mod:`imr_outcome.model.artifact`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, ModelNotFoundError
from imr_outcome.model import attribution
from imr_outcome.model.artifact import (
    CALIBRATOR_FILE,
    FORMAT_VERSION,
    RETRAIN,
    ModelInfo,
    SavedModel,
)
from imr_outcome.model.attribution_spans import Attribution
from imr_outcome.model.base import Classifier, classifier_class
from imr_outcome.model.calibration import Calibrator, threshold_rule
from imr_outcome.model.model_uri import resolve
from imr_outcome.model.onnx_runtime import Backend, check_backend
from imr_outcome.model.record import RECORD_DIR, Record

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Scores:
    """One scoring pass over n items.

    Attributes:
        proba: calibrated probabilities, shape ``(n, 2)`` in the label-map order
            (``info.labels``); rows sum to 1.
        labels: the label at the saved threshold, from the artifact's label map.
        windows: token windows per item, shape ``(n,)`` (1 for kinds that do not window);
            a caller can bound evidence work with it.
        ood_distance: each item's encoder distance from the training items, shape
            ``(n,)``, for models saved with an OOD detector; else None.
        embeddings: the encoder kinds' item embeddings, shape ``(n, d)``, from the same
            forward passes (see :class:`~imr_outcome.model.base.ItemScores`); else None.
    """

    proba: FloatArray
    labels: list[str]
    windows: IntArray
    ood_distance: FloatArray | None
    embeddings: FloatArray | None = None


@dataclass
class OutcomeModel:
    """A classifier with its calibrator, decision threshold and provenance.

    Attributes:
        classifier: the fitted classifier (raw logits).
        calibrator: maps logits to calibrated probabilities.
        threshold: P(Overturned) at or above which the label is Overturned, in [0, 1];
            chosen on out-of-fold scores of inner folds of the training rows.
        info: provenance, settings and the label map.
        name: registry name, or the URI / path it was loaded from (``""`` when built
            in memory).
        version: registry version, ``"local"``, ``"run:<id>"`` or ``"model:<id>"``.
        record: the outcome rates and similar past decisions of its training items
            (:mod:`imr_outcome.model.record`), saved in ``record/``; None for models
            registered before the record existed.
        directory: the model directory it was read from (None when built in memory):
            its files, ONNX exports and their timings included, can be shipped as they
            are (Spark scoring) instead of saved again.
    """

    classifier: Classifier
    calibrator: Calibrator
    threshold: float
    info: ModelInfo
    name: str = ""
    version: str = "local"
    record: Record | None = None
    directory: Path | None = None

    # ------------------------------------------------------------------ inference

    def labels_at(self, p_overturned: npt.ArrayLike) -> list[str]:
        """Label names at the saved threshold, from the artifact's label map.

        Args:
            p_overturned: calibrated P(Overturned), shape ``(n,)``.

        Returns:
            ``info.labels[1]`` where ``p >= threshold``, else ``info.labels[0]``
            (:func:`~imr_outcome.model.calibration.threshold_rule`, scikit-learn's
            ``FixedThresholdClassifier``).
        """
        p = np.asarray(p_overturned, dtype=np.float64).reshape(-1, 1)
        if p.size == 0:
            return []
        predicted = threshold_rule(float(self.threshold)).predict(p)
        return [self.info.labels[int(x)] for x in predicted]

    def score(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> Scores:
        """Calibrated probabilities, labels, windows and OOD distances in one pass.

        Args:
            inputs: n model inputs.
            metadata: per-item pre-filing metadata (metadata-only kinds read it), or None.

        Returns:
            The :class:`Scores` of the n items (empty arrays for n = 0).
        """
        if not inputs:
            return Scores(np.zeros((0, 2)), [], np.zeros(0, dtype=np.int64), None)
        scored = self.classifier.score_items(inputs, metadata)
        proba = self.calibrator.predict_proba(scored.logits)
        return Scores(
            proba,
            self.labels_at(proba[:, 1]),
            scored.windows,
            scored.ood_distance,
            scored.embeddings,
        )

    def predict_proba(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> FloatArray:
        """Calibrated probabilities, shape ``(n, 2)`` in :data:`LABELS` order; rows sum to 1."""
        if not inputs:
            return np.zeros((0, 2))
        return self.calibrator.predict_proba(self.classifier.logits(inputs, metadata))

    def predict(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> list[str]:
        """Predicted label names at the saved threshold."""
        return self.labels_at(self.predict_proba(inputs, metadata)[:, 1])

    def explain(
        self,
        model_input: ModelInput,
        request: str,
        summary: str,
        *,
        top_k: int = 5,
        n_steps: int | None = None,
        deadline: float | None = None,
    ) -> list[Attribution]:
        """The strongest stretches of one item with the explainer saved in the artifact.

        Args:
            model_input: ``build_model_input(request, summary, metadata)``.
            request: the request string exactly as the caller sent it.
            summary: the summary string exactly as the caller sent it.
            top_k: most stretches per direction, >= 1.
            n_steps: integrated-gradients quadrature points; default ``info.ig_steps``.
            deadline: a :func:`time.monotonic` value checked between batches of windows.

        Returns:
            See :func:`imr_outcome.model.attribution.explain` (positive scores push toward
            Overturned); offsets index ``request`` / ``summary``.

        Raises:
            IncompatibleModelError: the explainer does not fit the classifier kind.
            InvalidInputError: bad ``top_k`` / ``n_steps`` or a mismatched ``model_input``.
            DeadlineExceededError: ``deadline`` passed before the work finished.
        """
        return attribution.explain(
            self,
            model_input,
            request,
            summary,
            top_k=top_k,
            n_steps=self.info.ig_steps if n_steps is None else n_steps,
            deadline=deadline,
        )

    # -------------------------------------------------------------------- backend

    @property
    def backend(self) -> str:
        """What scoring runs on: ``"torch"``, ``"onnx-fp32"`` or ``"onnx-int8"``
        (``"torch"`` also for kinds without a network, e.g. TF-IDF)."""
        return str(getattr(self.classifier, "backend", "torch"))

    def select_backend(self, backend: Backend | str) -> str:
        """Score with ONNX Runtime (``onnx``), torch (``torch``) or what this CPU and the
        artifact allow (``auto``: of torch and the exported variants that passed parity,
        the one timed fastest at registration; see
        :func:`~imr_outcome.model.onnx_runtime.open_session`). Evidence always runs on torch.

        Returns:
            :attr:`backend`.

        Raises:
            InvalidInputError: ``backend`` is not auto, torch or onnx.
        """
        chosen = check_backend(str(backend))
        select = getattr(self.classifier, "select_backend", None)
        if select is not None:
            select(chosen)
        return self.backend

    # ---------------------------------------------------------------- persistence

    def save(self, directory: Path) -> Path:
        """Write the model directory (see :mod:`imr_outcome.model.artifact`); returns it."""
        directory.mkdir(parents=True, exist_ok=True)
        self.classifier.save(directory / "classifier")
        if self.record is not None:
            self.record.save(directory)
        joblib.dump(self.calibrator, directory / CALIBRATOR_FILE)
        SavedModel(FORMAT_VERSION, self.threshold, self.info).write(directory)
        return directory

    @classmethod
    def load(
        cls, uri: str | Path, *, cache_dir: Path | None = None, backend: Backend | str = "auto"
    ) -> OutcomeModel:
        """Load a model from the registry, a run, a logged model or a local folder.

        Args:
            uri: ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
                ``models:/<model_id>``, ``runs:/<run_id>/<path>`` (resolved with MLflow
                against :func:`~imr_outcome.model.model_uri.default_tracking_uri`), or a
                local folder: a model directory (``imr_model.json``) or a logged pyfunc
                model folder (see :mod:`imr_outcome.model.model_uri`).
            cache_dir: where to download registry/run models (default: a ``file:`` store
                is read in place, others go to a temporary folder).
            backend: ``auto`` (default), ``torch`` or ``onnx``; see :meth:`select_backend`.

        Returns:
            The model, with :attr:`name` / :attr:`version` set.

        Raises:
            ModelNotFoundError: nothing at ``uri``; the message starts with ``uri``.
            IncompatibleModelError: the artifact exists but this code cannot use it
                (format version, label map, unknown kind, unreadable files, a threshold
                outside [0, 1]); the message starts with ``uri``.
            InvalidInputError: ``backend`` is not auto, torch or onnx.
        """
        uri = str(uri)
        check_backend(str(backend))
        resolved = resolve(uri, cache_dir)
        directory = resolved.directory

        def reason(exc: Exception) -> str:
            # "<directory>: <reason>" -> "<reason>", with paths inside it made relative
            return str(exc).removeprefix(f"{directory}: ").replace(f"{directory}{os.sep}", "")

        try:
            model = cls._read(directory)
            # The backend decides whether a transformer reads its torch network now.
            model.select_backend(backend)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"{uri}: {reason(exc)}") from exc
        except IncompatibleModelError as exc:
            raise IncompatibleModelError(f"{uri}: {reason(exc)}") from exc
        except Exception as exc:  # unpickling, bad calibrator state, missing weights, ...
            raise IncompatibleModelError(
                f"{uri}: cannot load the model ({type(exc).__name__}: {reason(exc)}); "
                "retrain it or install the imr-outcome version that wrote it"
            ) from exc
        if not 0.0 <= model.threshold <= 1.0:
            raise IncompatibleModelError(f"{uri}: threshold {model.threshold} is outside [0, 1]")
        model.name, model.version = resolved.name, resolved.version
        if (directory / RECORD_DIR).is_dir():
            model.record = Record.load(directory)
        logger.info(
            "loaded %s model %s version %s (split %s, threshold %.3f, backend %s)",
            model.info.kind,
            model.name,
            model.version,
            model.info.split,
            model.threshold,
            model.backend,
        )
        return model

    @classmethod
    def _read(cls, directory: Path) -> OutcomeModel:
        """Read a model directory written by :meth:`save` (format 2), or a format-1
        transformer / frozen-encoder model (see :mod:`imr_outcome.model.artifact`).

        Raises:
            ModelNotFoundError: no ``imr_model.json`` in ``directory``.
            IncompatibleModelError: another format version, a format-1 model of a kind
                whose files changed, unknown kind, or a label map other than
                :data:`LABELS`; the message names the directory and the reason.
        """
        saved = SavedModel.read(directory)
        info = saved.info
        if info.labels != LABELS:
            raise IncompatibleModelError(
                f"{directory}: label map {list(info.labels)} differs from {list(LABELS)}"
            )
        if saved.format_version == 1:
            calibrator = _format_1_calibrator(directory, info.kind, saved.calibrator or {})
        else:
            calibrator = joblib.load(directory / CALIBRATOR_FILE)
            if not isinstance(calibrator, Calibrator):
                raise IncompatibleModelError(
                    f"{directory}: {CALIBRATOR_FILE} holds a {type(calibrator).__name__}, "
                    "expected a Calibrator"
                )
        try:
            classifier = classifier_class(info.kind).load(directory / "classifier")
        except IncompatibleModelError as exc:
            raise IncompatibleModelError(f"{directory}: {exc}") from exc
        return cls(
            classifier, calibrator, saved.threshold, info, name=str(directory), directory=directory
        )


#: Kinds whose ``classifier/`` files are the same in format 1 and 2.
_FORMAT_1_KINDS = ("transformer", "frozen_encoder_lr")


def _format_1_calibrator(directory: Path, kind: str, state: Mapping[str, Any]) -> Calibrator:
    """The JSON calibrator of a format-1 model as a log-odds :class:`Calibrator`:
    ``none`` is ``sigmoid(z)``, ``temperature`` T is ``sigmoid(z / T)`` and ``platt`` is
    ``sigmoid(slope * z + intercept)``.

    Raises:
        IncompatibleModelError: a kind whose files changed, or another calibrator (the
            message names format 1, format 2 and the fix).
    """
    method = state.get("method")
    try:
        if kind in _FORMAT_1_KINDS and method == "none":
            return Calibrator("none")
        if kind in _FORMAT_1_KINDS and method == "temperature":
            return Calibrator.linear("temperature", 1.0 / float(state["temperature"]), 0.0)
        if kind in _FORMAT_1_KINDS and method == "platt":
            return Calibrator.linear("platt", float(state["slope"]), float(state["intercept"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise IncompatibleModelError(
            f"{directory}: unreadable format-1 calibrator {state}"
        ) from exc
    raise IncompatibleModelError(
        f"{directory}: a {kind} model with a {method} calibrator saved in format 1, this code "
        f"reads format {FORMAT_VERSION} (format 1 only for {' and '.join(_FORMAT_1_KINDS)} "
        f"models calibrated by none, temperature or platt); {RETRAIN}"
    )


#: The name of :class:`OutcomeModel` before it owned loading and scoring; other branches
#: still import it.
CalibratedModel = OutcomeModel
