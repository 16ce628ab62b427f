"""Load a trained model once, then predict single items or batches with warnings.

:meth:`Predictor.load` accepts every model URI :meth:`OutcomeModel.load
<imr_outcome.model.model.OutcomeModel.load>` does (registry alias or version, logged
model, run, local folder). The label map, threshold, calibrator and window length are
read from the artifact only. Warnings are listed in :mod:`imr_outcome.model.warnings`;
an optional :data:`OodDetector` adds a caller's own check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError
from imr_outcome.model.decision import DecisionRule
from imr_outcome.model.defaults import MAX_TEXT_CHARS, TOP_K
from imr_outcome.model.inputs import PredictInput, check_length
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.prediction import EvidenceSpan, Prediction
from imr_outcome.model.scoring import OodDetector, predict_items, saved_rule
from imr_outcome.model.warnings import (
    WARN_DMHC_MODEL_ON_DWC,
    WARN_DWC_MODEL_ON_DMHC,
    WARN_REQUEST_VOCABULARY,
    WARN_SHORT_SUMMARY,
    WARN_SUMMARY_VOCABULARY,
    Source,
    clinical_terms,
    encoder_ood_warning,
    input_source,
    windows_warning,
)
from imr_outcome.serve import evidence

logger = logging.getLogger(__name__)

__all__ = [
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
        self.decision: DecisionRule | None = saved_rule(model)

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
            backend: what scoring runs on: ``auto`` (of torch and the exported variants
                that passed parity, the one timed fastest at registration on a CPU with
                this one's flags), ``torch`` or ``onnx``; see
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
        top_k: int = TOP_K,
        source: Source | None = None,
        deadline: float | None = None,
        similar_k: int = 0,
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
            similar_k: similar past decisions to return in full (see :meth:`predict_batch`).

        Returns:
            The calibrated prediction with warnings (and evidence when asked).

        Raises:
            InvalidInputError: invalid input, naming the field.
            DeadlineExceededError: ``deadline`` passed while computing evidence.
        """
        item = PredictInput.of(request, summary, metadata, source=source, max_chars=self.max_chars)
        return self.predict_batch(
            [item], explain=explain, top_k=top_k, deadline=deadline, similar_k=similar_k
        )[0]

    def predict_batch(
        self,
        items: Sequence[PredictInput],
        *,
        explain: bool = False,
        top_k: int = TOP_K,
        deadline: float | None = None,
        similar_k: int = 0,
        exclude_groups: Sequence[str | None] | None = None,
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
            similar_k: similar past decisions to return in full per item (``similar``);
                every prediction has the ids of the top 3 (``similar_ids``) regardless.
            exclude_groups: per item, a letter's case number whose decisions are never
                returned as similar (the item's own letter).

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
        predictions: list[Prediction] = []
        for prediction, model_input in predict_items(
            self.model,
            items,
            ood_detector=self.ood_detector,
            model_name=self.model_name,
            model_version=self.model_version,
            similar_k=similar_k,
            exclude_groups=exclude_groups,
        ):
            item = items[len(predictions)]
            if explain:
                spans = self._evidence(item, model_input, top_k, deadline)
                prediction = prediction.model_copy(update={"evidence": spans})
            predictions.append(prediction)
        logger.debug("scored %d item(s) with %s", len(items), self.model_name)
        return predictions

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
