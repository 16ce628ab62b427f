"""Logistic regression on frozen, mean-pooled encoder embeddings.

A cheap transformer baseline: the encoder is never trained, so fitting costs one
forward pass per window. Item embeddings are mean-pooled over tokens and windows
(Reimers & Gurevych 2019, see :func:`imr_outcome.model.pooling.mean_pooled_embeddings`),
standardized, and fed to an L2-regularized logistic regression.

Embeddings are cached in memory per process, keyed by the encoder settings and a SHA-256
of the item text (:data:`_EMBEDDINGS`): the encoder is frozen, so an item embedded for one
cross-validation fold is reused by every other fold and inner cross-fitting fold.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import joblib
import numpy as np
import numpy.typing as npt
import torch
from pydantic import ValidationError
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from transformers import PreTrainedTokenizerBase

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.arrays import as_labels
from imr_outcome.model.base import ItemScores, Logits, single_windows
from imr_outcome.model.encoders import load_encoder, load_tokenizer
from imr_outcome.model.hardware import machine_precision
from imr_outcome.model.pooling import pooled_embeddings
from imr_outcome.model.settings import OFFLINE_MINILM, FrozenEncoderConfig, TrainingConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from imr_outcome.model.ood import MahalanobisOod

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Encoder settings (JSON) and the fitted scaler + logistic regression (joblib pickle).
SETTINGS_FILE = "encoder.json"
PIPELINE_FILE = "pipeline.joblib"
#: Bump when the saved layout changes incompatibly.
FORMAT_VERSION = 1

#: (base_model, max_length, stride, precision, sha256 of text + text_pair) ->
#: (embedding, windows). Bounded by :data:`_CACHE_LIMIT` items (cleared when full).
_EMBEDDINGS: dict[tuple[str, int, int, str, str], tuple[FloatArray, int]] = {}
_CACHE_LIMIT = 50_000


def _text_key(item: ModelInput) -> str:
    return hashlib.sha256(f"{item.text}\x00{item.text_pair}".encode()).hexdigest()


class FrozenEncoderLogReg:
    """``StandardScaler`` + ``LogisticRegression`` on frozen mean-pooled embeddings.

    Args:
        model: ``base_model`` (the frozen encoder), ``max_length``, ``stride`` and ``c``
            (inverse regularization strength).
        training: ``class_weighted_loss`` (balanced class weights), ``precision``,
            ``seed`` and ``torch_threads``.
    """

    kind: ClassVar[str] = "frozen_encoder_lr"
    reads_request: ClassVar[bool] = True
    reads_summary: ClassVar[bool] = True
    ood: MahalanobisOod | None = None
    #: Windows per encoder forward pass.
    batch_size: ClassVar[int] = 32

    def __init__(self, model: FrozenEncoderConfig, training: TrainingConfig) -> None:
        self.model_config = model
        self.training_config = training
        self._encoder: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._pipeline: Pipeline | None = None

    @property
    def pipeline(self) -> Pipeline:
        """The fitted scaler + logistic regression."""
        if self._pipeline is None:
            raise NotFittedError("FrozenEncoderLogReg is not fitted; call fit() or load()")
        return self._pipeline

    def embed(self, inputs: Sequence[ModelInput]) -> FloatArray:
        """Item embeddings, shape ``(n, hidden_size)``; loads the encoder on first use.

        Raises:
            ModelNotFoundError, IncompatibleModelError: the encoder cannot be loaded.
        """
        return self._embed_and_count(inputs)[0]

    def _embed_and_count(self, inputs: Sequence[ModelInput]) -> tuple[FloatArray, IntArray]:
        """Item embeddings ``(n, hidden_size)`` and windows per item ``(n,)``.

        Raises:
            ModelNotFoundError, IncompatibleModelError: the encoder cannot be loaded.
        """
        config, training = self.model_config, self.training_config
        settings = (config.base_model, config.max_length, config.stride, training.precision)
        keys = [(*settings, _text_key(item)) for item in inputs]
        missing = [i for i, key in enumerate(keys) if key not in _EMBEDDINGS]
        if missing:
            if training.torch_threads is not None:
                torch.set_num_threads(training.torch_threads)
            if self._encoder is None or self._tokenizer is None:
                self._tokenizer = load_tokenizer(config.base_model, config.max_length)
                self._encoder = load_encoder(config.base_model)
            embedded, counts = pooled_embeddings(
                self._encoder,
                self._tokenizer,
                [inputs[i] for i in missing],
                max_length=config.max_length,
                stride=config.stride,
                batch_size=self.batch_size,
                precision=training.precision,
            )
            if len(_EMBEDDINGS) + len(missing) > _CACHE_LIMIT:
                _EMBEDDINGS.clear()
            for row, i in enumerate(missing):
                _EMBEDDINGS[keys[i]] = (
                    np.asarray(embedded[row], dtype=np.float64),
                    int(counts[row]),
                )
        if not keys:
            return np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
        cached = [_EMBEDDINGS[key] for key in keys]
        return (
            np.stack([embedding for embedding, _ in cached]),
            np.asarray([count for _, count in cached], dtype=np.int64),
        )

    def fit(
        self,
        inputs: Sequence[ModelInput],
        labels: npt.NDArray[np.int64],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Self:
        """Embed ``inputs`` and fit the scaler and logistic regression.

        Args:
            inputs: n model inputs.
            labels: shape ``(n,)``, 0 (Upheld) / 1 (Overturned), both classes present.
            metadata: ignored.

        Returns:
            self, fitted.

        Raises:
            InvalidInputError: bad labels, or a single class.
        """
        y = as_labels(labels, "labels")
        if len(y) != len(inputs):
            raise InvalidInputError(
                "labels", f"expected one label per input ({len(inputs)}), found {len(y)}"
            )
        if np.unique(y).size < 2:
            raise InvalidInputError("labels", "expected both classes (0 and 1), found one")
        features = self.embed(inputs)
        logistic = LogisticRegression(
            C=self.model_config.c,
            class_weight="balanced" if self.training_config.class_weighted_loss else None,
            max_iter=2000,
            random_state=self.training_config.seed,
        )
        self._pipeline = Pipeline([("scale", StandardScaler()), ("logreg", logistic)])
        self._pipeline.fit(features, y)
        logger.info("fitted logistic regression on %d x %d embeddings", *features.shape)
        return self

    def logits(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> Logits:
        """Shape ``(n, 2)``: ``[0, decision_function]``; the softmax is the LR probability.

        Raises:
            NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        return self.score_items(inputs).logits

    def score_items(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> ItemScores:
        """:meth:`logits`, the windows per item and the item embeddings (as :meth:`embed`)
        from one encoder pass; no OOD detector.

        Raises:
            NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        pipeline = self.pipeline
        if not inputs:
            return single_windows(np.zeros((0, 2), dtype=np.float64))
        embeddings, counts = self._embed_and_count(inputs)
        scores = np.asarray(pipeline.decision_function(embeddings), dtype=np.float64)
        logits: Logits = np.column_stack([np.zeros_like(scores), scores])
        return ItemScores(logits, counts, None, embeddings)

    def save(self, directory: Path) -> None:
        """Write ``encoder.json`` (encoder name and window settings) and the pipeline.

        The encoder weights are not copied: :meth:`load` needs ``base_model`` to be
        resolvable again (``offline:minilm``, the same local path, or the hub).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.model_config
        settings = {
            "format_version": FORMAT_VERSION,
            "base_model": config.base_model,
            "max_length": config.max_length,
            "stride": config.stride,
            "c": config.c,
            "precision": machine_precision(self.training_config.precision),
        }
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        joblib.dump(self.pipeline, directory / PIPELINE_FILE)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a classifier written by :meth:`save` (the encoder loads on first use).

        The pipeline is a pickle: load only directories you trust.

        Raises:
            ModelNotFoundError: a missing file.
            IncompatibleModelError: another format version or invalid settings.
        """
        directory = Path(directory)
        paths = [directory / SETTINGS_FILE, directory / PIPELINE_FILE]
        for path in paths:
            if not path.is_file():
                raise ModelNotFoundError(
                    f"{directory}: no {path.name}; expected a directory written by save() "
                    "of a frozen_encoder_lr classifier"
                )
        try:
            settings = json.loads(paths[0].read_text(encoding="utf-8"))
            if settings.get("format_version") != FORMAT_VERSION:
                raise IncompatibleModelError(
                    f"{paths[0]}: format_version {settings.get('format_version')!r}, this "
                    f"version reads {FORMAT_VERSION}; retrain the model"
                )
            model = FrozenEncoderConfig(
                base_model=settings["base_model"],
                max_length=settings["max_length"],
                stride=settings["stride"],
                c=settings["c"],
            )
            training = TrainingConfig(precision="auto")  # resolved on this machine
        except (json.JSONDecodeError, AttributeError, KeyError, ValidationError) as exc:
            raise IncompatibleModelError(
                f"{paths[0]}: invalid settings ({exc}); retrain the model"
            ) from exc
        pipeline = joblib.load(paths[1])
        if not isinstance(pipeline, Pipeline):
            raise IncompatibleModelError(f"{paths[1]}: expected a scikit-learn Pipeline")
        classifier = cls(model, training)
        classifier._pipeline = pipeline
        return classifier


class FrozenEmbeddings(TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """A scikit-learn transformer: rows of (text, text_pair) -> frozen mean-pooled item
    embeddings, shape ``(n, hidden_size)`` (:meth:`FrozenEncoderLogReg.embed`, with its
    per-process cache). Nothing is learned; the encoder loads on first use and is never
    pickled (a saved pipeline keeps ``base_model``, which must resolve again on load).

    Args:
        base_model: the encoder, as ``model.base_model`` (hub name, local path or
            ``offline:minilm``).
        max_length: tokens per window, 16-512.
        stride: tokens of overlap between summary windows, below ``max_length // 2``.
        text_column, pair_column: the columns of the feature rows holding segment A
            (request) and segment B (summary).
    """

    def __init__(
        self,
        base_model: str = OFFLINE_MINILM,
        max_length: int = 256,
        stride: int = 64,
        text_column: int = 0,
        pair_column: int = 1,
    ) -> None:
        self.base_model = base_model
        self.max_length = max_length
        self.stride = stride
        self.text_column = text_column
        self.pair_column = pair_column

    def fit(self, rows: npt.NDArray[Any], y: object = None) -> Self:
        """Nothing to learn; returns self."""
        return self

    def transform(self, rows: npt.NDArray[Any]) -> FloatArray:
        """Embeddings of ``rows``, shape ``(n, hidden_size)``.

        Raises:
            ModelNotFoundError, IncompatibleModelError: the encoder cannot be loaded.
        """
        embedder = self.__dict__.get("_embedder")
        if embedder is None:
            config = FrozenEncoderConfig(
                base_model=self.base_model, max_length=self.max_length, stride=self.stride
            )
            embedder = FrozenEncoderLogReg(config, TrainingConfig(precision="auto"))
            self.__dict__["_embedder"] = embedder
        inputs = [
            ModelInput(
                text=str(row[self.text_column]),
                text_pair=str(row[self.pair_column]),
                request_offset=0,
            )
            for row in rows
        ]
        return embedder.embed(inputs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_embedder", None)  # the encoder's weights never go into the pickle
        return state
