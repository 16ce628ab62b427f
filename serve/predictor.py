"""Load a trained model once, then predict single items or batches with warnings.

:meth:`Predictor.load` accepts every model URI :meth:`OutcomeModel.load
<imr_outcome.model.model.OutcomeModel.load>` does (registry alias or version, logged
model, run, local folder). The label map, threshold, calibrator and window length are
read from the artifact only. Warnings are listed in :mod:`imr_outcome.serve.warnings`;
an optional :data:`OodDetector` adds a caller's own check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from imr_outcome.data.model_input import ModelInput, build_model_input
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError
from imr_outcome.model.attribution_tokens import IG_STEPS
from imr_outcome.model.decision import DecisionRule
from imr_outcome.model.model import OutcomeModel
from imr_outcome.serve import evidence
from imr_outcome.serve.inputs import MAX_TEXT_CHARS, PredictInput, check_length
from imr_outcome.serve.schemas import Direction, EvidenceSpan, Prediction
from imr_outcome.serve.warnings import (
    MIN_REQUEST_CLINICAL_TERMS,
    MIN_SUMMARY_CLINICAL_TERMS,
    MIN_SUMMARY_WORDS,
    WARN_DMHC_MODEL_ON_DWC,
    WARN_DWC_MODEL_ON_DMHC,
    WARN_REQUEST_VOCABULARY,
    WARN_SHORT_SUMMARY,
    WARN_SUMMARY_VOCABULARY,
    Source,
    WarningDetail,
    clinical_terms,
    custom_warning,
    encoder_ood_warning,
    input_source,
    short_summary_warning,
    source_warning,
    vocabulary_warning,
    windows_warning,
)

logger = logging.getLogger(__name__)

#: Integrated-gradients quadrature points when neither the caller nor the artifact says.
EXPLAIN_STEPS = IG_STEPS

#: Out-of-distribution hook: given the model input, return a warning or None.
OodDetector = Callable[[ModelInput], str | None]

__all__ = [
    "EXPLAIN_STEPS",
    "MAX_TEXT_CHARS",
    "WARN_DMHC_MODEL_ON_DWC",
    "WARN_DWC_MODEL_ON_DMHC",
    "WARN_REQUEST_VOCABULARY",
    "WARN_SHORT_SUMMARY",
    "WARN_SUMMARY_VOCABULARY",
    "OodDetector",
    "PredictInput",
    "Predictor",
    "Source",
    "check_length",
    "clinical_terms",
    "encoder_ood_warning",
    "input_source",
    "windows_warning",
]


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
            (ignored by other explainers); default the artifact's ``ig_steps``.
        ood_detector: an extra out-of-distribution check per input, returning a warning
            or None (see :data:`OodDetector`); the encoder distance of transformer models
            saved with a detector is checked regardless.
    """

    def __init__(
        self,
        model: OutcomeModel,
        *,
        model_name: str,
        model_version: str,
        max_chars: int = MAX_TEXT_CHARS,
        explain_steps: int | None = None,
        ood_detector: OodDetector | None = None,
    ) -> None:
        if model.info.labels != LABELS:
            raise IncompatibleModelError(
                f"{model_name}: label map {list(model.info.labels)} differs from {list(LABELS)}"
            )
        if max_chars < 1:
            raise InvalidInputError("max_chars", f"expected a positive number, got {max_chars}")
        if explain_steps is None:
            explain_steps = model.info.ig_steps
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
        self.decision = DecisionRule.from_dict(model.info.decision) if model.info.decision else None
        self._overturned = model.info.labels.index(LABELS[1])
        self._upheld = model.info.labels.index(LABELS[0])

    @classmethod
    def load(
        cls,
        uri: str,
        *,
        cache_dir: Path | None = None,
        max_chars: int = MAX_TEXT_CHARS,
        explain_steps: int | None = None,
        ood_detector: OodDetector | None = None,
        backend: str = "auto",
    ) -> Predictor:
        """Load a model from the registry, a run, or a local folder.

        Args:
            uri: see :meth:`OutcomeModel.load <imr_outcome.model.model.OutcomeModel.load>`.
            cache_dir: where to download registry/run models; by default a ``file:``
                artifact store is read in place and other stores are downloaded to a
                temporary folder.
            max_chars: the longest accepted request or summary, in characters.
            explain_steps: see :class:`Predictor`.
            ood_detector: see :class:`Predictor`.
            backend: what scoring runs on: ``auto`` (ONNX Runtime where the artifact has
                an export that passed parity, else torch), ``torch`` or ``onnx``; see
                :meth:`OutcomeModel.select_backend
                <imr_outcome.model.model.OutcomeModel.select_backend>`. Evidence always
                runs on torch.

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
            InvalidInputError: ``backend`` is not auto, torch or onnx.
        """
        model = OutcomeModel.load(uri, cache_dir=cache_dir, backend=backend)
        return cls(
            model,
            model_name=model.name,
            model_version=model.version,
            max_chars=max_chars,
            explain_steps=explain_steps,
            ood_detector=ood_detector,
        )

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
        deadline: float | None = None,
    ) -> Prediction:
        """Predict one item.

        Args:
            request: the disputed request, non-empty, at most :attr:`max_chars` characters.
            summary: the case summary (``""`` when there is none).
            metadata: pre-filing metadata (see :class:`PredictInput`), or None.
            explain: also compute evidence spans (offsets into ``request`` / ``summary``).
            top_k: evidence spans per direction, >= 1.
            source: the data source if known (``"dwc"`` for a letter), else inferred.
            deadline: a :func:`time.monotonic` value by which the evidence must be done,
                or None for no limit (see :meth:`predict_batch`).

        Returns:
            The calibrated prediction with warnings (and evidence when asked).

        Raises:
            InvalidInputError: invalid input, naming the field.
            DeadlineExceededError: ``deadline`` passed while computing evidence.
        """
        item = PredictInput.of(request, summary, metadata, source=source, max_chars=self.max_chars)
        return self.predict_batch([item], explain=explain, top_k=top_k, deadline=deadline)[0]

    def predict_batch(
        self,
        items: Sequence[PredictInput],
        *,
        explain: bool = False,
        top_k: int = 5,
        deadline: float | None = None,
    ) -> list[Prediction]:
        """Predict many items with one batched probability computation.

        Args:
            items: n validated inputs (see :meth:`PredictInput.of`).
            explain: also compute evidence spans, one item at a time.
            top_k: evidence spans per direction, >= 1.
            deadline: a :func:`time.monotonic` value handed to
                :meth:`OutcomeModel.explain <imr_outcome.model.model.OutcomeModel.explain>`,
                which stops between batches of integrated-gradients windows once it has
                passed; None for no limit. Scoring itself is not interrupted.

        Returns:
            n predictions, in input order.

        Raises:
            InvalidInputError: an item's text is longer than :attr:`max_chars` (named
                ``items[i].request`` / ``items[i].summary``), or the model rejects an
                input (e.g. a request too long for a transformer window).
            DeadlineExceededError: ``deadline`` passed while computing evidence.
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
        scores = self.model.score(inputs, metadata)
        proba, distances = scores.proba, scores.ood_distance
        logger.debug("scored %d item(s) with %s", len(items), self.model_name)
        predictions = []
        for index, (item, model_input) in enumerate(zip(items, inputs, strict=True)):
            p_overturned = min(max(float(proba[index, self._overturned]), 0.0), 1.0)
            p_upheld = min(max(float(proba[index, self._upheld]), 0.0), 1.0)
            label = cast(Direction, scores.labels[index])
            distance = None if distances is None else float(distances[index])
            predictions.append(
                Prediction(
                    p_overturned=p_overturned,
                    p_upheld=p_upheld,
                    label=label,
                    threshold=self.threshold,
                    **self.decision_fields(item, p_overturned, distance),
                    model_name=self.model_name,
                    model_version=self.model_version,
                    evidence=(
                        self._evidence(item, model_input, top_k, deadline) if explain else []
                    ),
                    **Prediction.warning_fields(
                        self.warnings(
                            item,
                            model_input,
                            int(scores.windows[index]),
                            None if distances is None else float(distances[index]),
                        )
                    ),
                )
            )
        return predictions

    def decision_fields(
        self, item: PredictInput, p_overturned: float, ood_distance: float | None = None
    ) -> dict[str, Any]:
        """The ``Prediction`` fields of the artifact's band rule for one item.

        Args:
            item: the validated input.
            p_overturned: its calibrated P(Overturned).
            ood_distance: its encoder distance (models with an OOD detector), else None.

        Returns:
            ``base_rate``, ``relative_risk``, ``band``, ``band_reason``, ``band_accuracy``
            and ``band_support``; ``{}`` for a model saved without a rule.
        """
        rule = self.decision
        if rule is None:
            return {}
        classifier = self.model.classifier
        detector = classifier.ood
        band, reason = rule.decide(
            p_overturned,
            summary_words=len(item.summary.split()) if classifier.reads_summary else None,
            clinical_terms=len(clinical_terms(item.request) | clinical_terms(item.summary)),
            out_of_distribution=(
                ood_distance is not None
                and detector is not None
                and ood_distance >= detector.threshold
            ),
        )
        record = rule.records.get(band)
        return {
            "base_rate": rule.base_rate,
            "relative_risk": rule.relative_risk(p_overturned),
            "band": band,
            "band_reason": reason,
            "band_accuracy": record.accuracy if record else None,
            "band_support": record.n if record and record.accuracy is not None else None,
        }

    def warnings(
        self,
        item: PredictInput,
        model_input: ModelInput,
        n_windows: int = 1,
        ood_distance: float | None = None,
    ) -> list[WarningDetail]:
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
        classifier = self.model.classifier
        found: list[WarningDetail] = []
        summary_words = len(item.summary.split())
        if classifier.reads_summary and summary_words < MIN_SUMMARY_WORDS:
            found.append(short_summary_warning(summary_words))
        if n_windows > 1:
            found.append(windows_warning(n_windows))
        request_terms = len(clinical_terms(item.request))
        if classifier.reads_request and request_terms < MIN_REQUEST_CLINICAL_TERMS:
            found.append(vocabulary_warning("request", request_terms))
        if classifier.reads_summary and item.summary.strip():
            summary_terms = len(clinical_terms(item.summary))
            if summary_terms < MIN_SUMMARY_CLINICAL_TERMS:
                found.append(vocabulary_warning("summary", summary_terms))
        source = input_source(item.metadata, item.source)
        trained_on = self.model.info.split
        if source is not None and trained_on in ("dwc", "dmhc") and source != trained_on:
            found.append(source_warning(source, cast(Source, trained_on)))
        detector = classifier.ood
        if ood_distance is not None and detector is not None and ood_distance >= detector.threshold:
            found.append(encoder_ood_warning(ood_distance, detector.threshold, detector.quantile))
        if self.ood_detector is not None and (ood := self.ood_detector(model_input)):
            found.append(custom_warning(ood))
        return found

    def _evidence(
        self, item: PredictInput, model_input: ModelInput, top_k: int, deadline: float | None
    ) -> list[EvidenceSpan]:
        """Evidence spans from :func:`imr_outcome.serve.evidence.explain`."""
        return evidence.explain(
            self.model,
            model_input,
            item.request,
            item.summary,
            top_k=top_k,
            n_steps=self.explain_steps,
            deadline=deadline,
        )
