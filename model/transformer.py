"""A fine-tuned BERT-style sequence-pair classifier over summary windows: inference,
save and load.

Each item becomes one or more windows (request + a chunk of the summary, see
:mod:`imr_outcome.model.encoders`); every window is trained with its item's label, and
at inference the window logits are combined per item (``model.aggregation``). Fitting
lives in training: :class:`imr_outcome.train.fine_tune.TrainableTransformer` is this class
with ``fit`` (the training loop), so loading a model never imports it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import torch
from pydantic import ValidationError
from sklearn.exceptions import NotFittedError
from transformers import PreTrainedTokenizerBase

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, ModelNotFoundError
from imr_outcome.model.base import ItemScores, Logits
from imr_outcome.model.encoders import (
    Windows,
    encode_windows,
    for_inference,
    from_pretrained,
    iter_batches,
    load_tokenizer,
)
from imr_outcome.model.hardware import machine_precision
from imr_outcome.model.onnx_runtime import Backend, OnnxSession, open_session
from imr_outcome.model.ood import MahalanobisOod
from imr_outcome.model.pooling import aggregate, masked_mean, mean_by_item
from imr_outcome.model.settings import TrainingConfig, TransformerConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: File beside the Hugging Face files that records how windows were built.
SETTINGS_FILE = "transformer.json"
#: The out-of-distribution detector beside the weights (absent in older models).
OOD_FILE = "ood.npz"
#: Bump when :data:`SETTINGS_FILE` changes incompatibly.
FORMAT_VERSION = 1


# -------------------------------------------------------------------- long requests


def request_budget(tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int) -> int:
    """Tokens the metadata prefix + request may take in a window: half of the room left by
    the special tokens, and always fewer than ``room - stride`` so a window holds more than
    ``stride`` summary tokens (what :func:`~imr_outcome.model.encoders.encode_windows`
    needs to slide over the summary)."""
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    return max(1, min(room // 2, room - stride - 1))


def fit_requests(
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[ModelInput],
    max_length: int,
    stride: int,
) -> list[ModelInput]:
    """``inputs`` with every request too long for a window cut to :func:`request_budget`
    tokens (a prefix of the text, so offsets into it stay valid), each logged as a warning
    naming ``request``; the summary is windowed as usual and never cut.

    A request that leaves the summary more than ``stride`` tokens of a window, or whose
    item's summary fits beside it, is kept whole.
    """
    budget = request_budget(tokenizer, max_length, stride)
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    encoded = tokenizer(
        [item.text for item in inputs], add_special_tokens=False, return_offsets_mapping=True
    )
    fitted = list(inputs)
    for index, (item, offsets) in enumerate(zip(inputs, encoded["offset_mapping"], strict=True)):
        n_text = len(offsets)
        if room - n_text > stride:
            continue
        n_summary = len(tokenizer(item.text_pair, add_special_tokens=False)["input_ids"])
        if room - n_text >= 0 and n_summary <= room - n_text:
            continue
        cut = int(offsets[budget - 1][1])
        fitted[index] = ModelInput(item.text[:cut], item.text_pair, min(item.request_offset, cut))
        logger.warning(
            "request of item %d: %d tokens (with the metadata prefix) leave no room in a "
            "%d-token window for the summary; the model reads its first %d tokens (%d of %d "
            "characters)",
            index,
            n_text,
            max_length,
            budget,
            cut - min(item.request_offset, cut),
            len(item.text) - item.request_offset,
        )
    return fitted


# ------------------------------------------------------------------------ classifier


class TransformerClassifier:
    """Fine-tuned encoder + classification head over (request, summary-window) pairs.

    Args:
        model: the encoder (``base_model``), window size and aggregation.
        training: optimization settings; ``precision`` applies to fine-tuning only, torch
            inference runs in fp32 on every machine.
    """

    kind: ClassVar[str] = "transformer"
    reads_request: ClassVar[bool] = True
    reads_summary: ClassVar[bool] = True
    #: Windows per forward pass at inference.
    inference_batch_size: ClassVar[int] = 32

    def __init__(self, model: TransformerConfig, training: TrainingConfig) -> None:
        self.model_config = model
        self.training_config = training
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        #: Subtracted from the Overturned item logit: log(w1 / w0) of the training loss
        #: weights, 0 without class weighting (see :meth:`logits`).
        self.logit_offset = 0.0
        #: Out-of-distribution detector fitted on the training items' embeddings (None
        #: for fewer than :data:`~imr_outcome.model.ood.MIN_ITEMS` items or a model saved
        #: without one).
        self.ood: MahalanobisOod | None = None
        #: The ONNX Runtime session scoring runs on, or None for torch (see
        #: :meth:`select_backend`); evidence always runs on :attr:`model`.
        self.session: OnnxSession | None = None
        #: The folder the classifier was loaded from (None when fitted in memory).
        self.directory: Path | None = None
        #: The fast (Rust) tokenizer sets truncation state on every call, and two threads
        #: calling it at once fail with "Already borrowed"; :meth:`encode` holds this lock.
        self._tokenizer_lock = threading.Lock()
        #: A loaded classifier reads its network on first use (:attr:`model`): scoring on
        #: ONNX Runtime needs only the tokenizer and the session.
        self._network_lock = threading.Lock()
        #: ``hidden_size`` of the network, from ``config.json`` when loaded.
        self._hidden_size: int | None = None

    def encode(self, inputs: Sequence[ModelInput]) -> Windows:
        """The windows of ``inputs`` (requests over a window's budget cut, see
        :func:`fit_requests`); thread-safe.

        Raises:
            InvalidInputError: see :func:`~imr_outcome.model.encoders.encode_windows`.
            NotFittedError: before fitting or :meth:`load`.
        """
        tokenizer, config = self.tokenizer, self.model_config
        with self._tokenizer_lock:
            fitted = fit_requests(tokenizer, inputs, config.max_length, config.stride)
            return encode_windows(tokenizer, fitted, config.max_length, config.stride)

    @property
    def backend(self) -> str:
        """What scoring runs on: ``"torch"``, ``"onnx-fp32"`` or ``"onnx-int8"``."""
        if self.session is None:
            return "torch"
        return "onnx-int8" if self.session.path.name.endswith(".int8.onnx") else "onnx-fp32"

    def select_backend(self, backend: Backend) -> str:
        """Score with ONNX Runtime or torch (see
        :func:`~imr_outcome.model.onnx_runtime.open_session`); returns :attr:`backend`.

        ``auto`` and ``onnx`` use an exported variant that passed its parity check and
        fall back to torch otherwise (``onnx`` logs that as a warning).
        """
        self.session = None if self.directory is None else open_session(self.directory, backend)
        if self.directory is None and backend == "onnx":
            logger.warning("backend onnx: the model was not loaded from a folder; using torch")
        if self.session is None:
            _ = self.model  # torch scores: read the network now, so broken weights fail the load
        return self.backend

    @property
    def model(self) -> PreTrainedModel:
        """The fitted sequence-classification model (scoring on torch, explainers such as
        Captum); a loaded classifier reads it from its folder on first use.

        Raises:
            NotFittedError: before fitting or :meth:`load`.
            ModelNotFoundError, IncompatibleModelError: the saved weights are missing or
                unreadable (see :func:`~imr_outcome.model.encoders.from_pretrained`).
        """
        if self._model is None and self.directory is not None:
            with self._network_lock:
                if self._model is None:
                    self._model = _read_network(self.directory)
        if self._model is None:
            raise NotFittedError("TransformerClassifier is not fitted; call fit() or load()")
        return self._model

    @property
    def hidden_size(self) -> int:
        """Width of the network's hidden states (the pooled embedding's ``d``)."""
        if self._model is None and self._hidden_size is not None:
            return self._hidden_size
        return int(self.model.config.hidden_size)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The fitted model's tokenizer (``model_max_length == model.max_length``)."""
        if self._tokenizer is None:
            raise NotFittedError("TransformerClassifier is not fitted; call fit() or load()")
        return self._tokenizer

    def window_logits(
        self, inputs: Sequence[ModelInput], *, batch_size: int | None = None
    ) -> tuple[Windows, FloatArray]:
        """Logits of every window of ``inputs``.

        Args:
            inputs: n model inputs.
            batch_size: windows per forward pass (default :attr:`inference_batch_size`).

        Returns:
            The windows and their logits, shape ``(w, 2)``, float64, [Upheld, Overturned].

        Raises:
            NotFittedError: before fitting or :meth:`load`.
        """
        windows, scores, _ = self._window_outputs(inputs, batch_size, pooled=False)
        return windows, scores

    def _window_outputs(
        self, inputs: Sequence[ModelInput], batch_size: int | None, *, pooled: bool
    ) -> tuple[Windows, FloatArray, FloatArray | None]:
        """Window logits ``(w, 2)`` and, when ``pooled``, the last hidden state mean-pooled
        over each window's real tokens ``(w, d)`` from the same forward passes."""
        windows = self.encode(inputs)
        scores = np.zeros((len(windows), len(LABELS)), dtype=np.float64)
        hidden = np.zeros((len(windows), self.hidden_size)) if pooled else None
        pad_id = int(self.tokenizer.pad_token_id or 0)
        size = batch_size or self.inference_batch_size
        if self.session is not None:
            per_item = self.backend == "onnx-int8"  # see iter_batches
            for chosen, batch in iter_batches(windows, size, pad_id, per_item=per_item):
                logits, pooled_hidden = self.session.run(batch)
                scores[chosen] = logits
                if hidden is not None:
                    hidden[chosen] = pooled_hidden
            return windows, scores, hidden
        model = self.model
        device = next(model.parameters()).device
        model.train(False)
        # fp32 whatever trained the weights: scores must not depend on the CPU that serves
        # them (bf16 autocast reorders near-tied items), and ONNX Runtime beats bf16 autocast
        # where speed matters (issue 18: ORT fp32 0.52x, bf16 autocast 0.78x torch fp32).
        with torch.no_grad():
            for chosen, batch in iter_batches(windows, size, pad_id):
                batch = {key: value.to(device) for key, value in batch.items()}
                output = model(**batch, output_hidden_states=pooled)
                scores[chosen] = output.logits.float().cpu().numpy()
                if hidden is not None:
                    hidden[chosen] = masked_mean(output.hidden_states[-1], batch["attention_mask"])
        return windows, scores, hidden

    def score_items(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> ItemScores:
        """Item logits (as :meth:`logits`), windows per item, the item embeddings (as
        :meth:`item_embeddings`) and, when the classifier has an OOD detector
        (:attr:`ood`), each item's Mahalanobis distance from the training items, all from
        one set of forward passes (the record retrieves with the embeddings, so a batch
        runs the encoder once).

        Raises:
            NotFittedError: before fitting or :meth:`load`.
        """
        windows, scores, hidden = self._window_outputs(inputs, None, pooled=True)
        assert hidden is not None
        items = aggregate(scores, windows.item_index, len(inputs), self.model_config.aggregation)
        items[:, 1] -= self.logit_offset
        counts = np.bincount(windows.item_index, minlength=len(inputs)).astype(np.int64)
        embeddings = mean_by_item(hidden, windows.item_index, len(inputs))
        distances = None if self.ood is None else self.ood.distances(embeddings)
        return ItemScores(items, counts, distances, embeddings)

    def calibrate_ood(self, inputs: Sequence[ModelInput]) -> None:
        """Set the OOD threshold from items the encoder was not trained on (a validation
        slice); a no-op without a detector or inputs. See
        :meth:`~imr_outcome.model.ood.MahalanobisOod.with_threshold_from`."""
        if self.ood is not None and len(inputs) > 0:
            self.ood = self.ood.with_threshold_from(self.item_embeddings(inputs))

    def item_embeddings(self, inputs: Sequence[ModelInput]) -> FloatArray:
        """Each item's embedding, shape ``(n, d)``: the mean over its windows of the
        mean-pooled last hidden state (what :class:`~imr_outcome.model.ood.MahalanobisOod`
        scores).

        Raises:
            NotFittedError: before fitting or :meth:`load`.
        """
        windows, _, hidden = self._window_outputs(inputs, None, pooled=True)
        assert hidden is not None
        return mean_by_item(hidden, windows.item_index, len(inputs))

    def logits(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> Logits:
        """Item logits, shape ``(n, 2)``, float64: window logits aggregated per item.

        A class-weighted loss inflates the odds of Overturned by ``w1 / w0`` (the
        minimizer of a weighted log loss; Elkan 2001, "The foundations of cost-sensitive
        learning"), so ``log(w1 / w0)`` (:attr:`logit_offset`) is subtracted from the
        Overturned logit: the item logits estimate the unweighted odds, which temperature
        scaling (one scale, no shift) can then calibrate.

        Args:
            inputs: n model inputs.
            metadata: ignored.

        Raises:
            NotFittedError: before fitting or :meth:`load`.
        """
        windows, scores = self.window_logits(inputs)
        items = aggregate(scores, windows.item_index, len(inputs), self.model_config.aggregation)
        items[:, 1] -= self.logit_offset
        return items

    def save(self, directory: Path) -> None:
        """Write the model and tokenizer (``save_pretrained``) and ``transformer.json``.

        ``config.json`` carries the label map (``id2label``); ``transformer.json`` the
        window settings, the configured ``base_model`` name and the precision.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        config = self.model_config
        settings = {
            "format_version": FORMAT_VERSION,
            "base_model": config.base_model,
            "max_length": config.max_length,
            "stride": config.stride,
            "aggregation": config.aggregation,
            "precision": machine_precision(self.training_config.precision),
            "logit_offset": self.logit_offset,
        }
        (directory / SETTINGS_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
        if self.ood is not None:
            self.ood.save(directory / OOD_FILE)

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a classifier written by :meth:`save`, from local files only.

        Raises:
            ModelNotFoundError: ``directory`` or one of its files is missing.
            IncompatibleModelError: another format version, invalid settings, or a label
                map in ``config.json`` that is not :data:`LABELS`.
        """
        directory = Path(directory)
        settings = _read_json(directory, SETTINGS_FILE)
        if settings.get("format_version") != FORMAT_VERSION:
            raise IncompatibleModelError(
                f"{directory / SETTINGS_FILE}: format_version {settings.get('format_version')!r}"
                f", this version reads {FORMAT_VERSION}; retrain the model"
            )
        network_config = check_label_map(directory)
        try:
            model = TransformerConfig(
                base_model=settings["base_model"],
                max_length=settings["max_length"],
                stride=settings["stride"],
                aggregation=settings["aggregation"],
            )
            training = TrainingConfig(precision="auto")  # resolved on this machine
        except (KeyError, ValidationError) as exc:
            raise IncompatibleModelError(
                f"{directory / SETTINGS_FILE}: invalid settings ({exc}); retrain the model"
            ) from exc
        classifier = cls(model, training)
        classifier.directory = directory
        classifier.logit_offset = float(settings.get("logit_offset", 0.0))
        classifier._tokenizer = load_tokenizer(str(directory), model.max_length)
        hidden_size = network_config.get("hidden_size")
        classifier._hidden_size = hidden_size if isinstance(hidden_size, int) else None
        if (directory / OOD_FILE).is_file():
            classifier.ood = MahalanobisOod.load(directory / OOD_FILE)
        return classifier


def _read_network(directory: Path) -> PreTrainedModel:
    """The fp32 sequence-classification network saved in ``directory``, in eval mode."""
    from transformers import AutoModelForSequenceClassification

    network: PreTrainedModel = from_pretrained(
        AutoModelForSequenceClassification.from_pretrained,
        str(directory),
        "model",
        local_files_only=True,
        dtype=torch.float32,
    )
    return for_inference(network)


def _read_json(directory: Path, name: str) -> dict[str, Any]:
    path = directory / name
    if not path.is_file():
        raise ModelNotFoundError(
            f"{directory}: no {name}; expected a directory written by save() of a "
            "transformer classifier"
        )
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise IncompatibleModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise IncompatibleModelError(f"{path}: expected a JSON object")
    return loaded


def check_label_map(directory: Path) -> dict[str, Any]:
    """Check that ``directory/config.json`` maps label ids to :data:`LABELS`; returns
    that config.

    Raises:
        ModelNotFoundError: no ``config.json``.
        IncompatibleModelError: ``id2label`` differs from ``{0: "Upheld", 1: "Overturned"}``.
    """
    config = _read_json(directory, "config.json")
    raw = config.get("id2label") or {}
    try:
        found = {int(key): value for key, value in raw.items()}
    except (AttributeError, ValueError):
        found = raw
    expected = dict(enumerate(LABELS))
    if found != expected:
        raise IncompatibleModelError(
            f"{directory}: config.json id2label is {found}, expected {expected}; this model "
            "was trained with another label map - retrain it with this version"
        )
    return config
