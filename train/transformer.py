"""A fine-tuned BERT-style sequence-pair classifier over summary windows.

Each item becomes one or more windows (request + a chunk of the summary, see
:mod:`imr_outcome.train.encoders`); every window is trained with its item's label, and
at inference the window logits are combined per item (``model.aggregation``). Training
runs the Hugging Face :class:`~transformers.Trainer`; tracking and progress are left to
the ``callbacks`` the caller passes in.

To bound CPU training time, ``training.windows_per_item`` = k samples k windows per item
and epoch (seeded) instead of using every window; inference always uses every window.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from sklearn.exceptions import NotFittedError
from torch.utils.data import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.train.base import Logits
from imr_outcome.train.config import ModelConfig, TrainingConfig
from imr_outcome.train.encoders import (
    Windows,
    aggregate,
    autocast,
    collate,
    encode_windows,
    for_inference,
    from_pretrained,
    iter_batches,
    load_tokenizer,
    masked_mean,
    mean_by_item,
)
from imr_outcome.train.metrics import as_labels
from imr_outcome.train.ood import MIN_ITEMS as OOD_MIN_ITEMS
from imr_outcome.train.ood import MahalanobisOod

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: File beside the Hugging Face files that records how windows were built.
SETTINGS_FILE = "transformer.json"
#: The out-of-distribution detector beside the weights (absent in older models).
OOD_FILE = "ood.npz"
#: Bump when :data:`SETTINGS_FILE` changes incompatibly.
FORMAT_VERSION = 1
#: Optimizer steps between training-loss log lines (sent to the callbacks).
LOGGING_STEPS = 10


# ------------------------------------------------------------------ loss and sampling


def class_weights(labels: npt.ArrayLike) -> FloatArray:
    """Inverse-frequency class weights ``n / (2 * count_c)`` (balanced weighting).

    Args:
        labels: item labels, shape ``(n,)``, values 0 (Upheld) / 1 (Overturned).

    Returns:
        Shape ``(2,)``, [weight of Upheld, weight of Overturned]; their label-frequency
        weighted mean is 1, so the loss keeps the scale of unweighted cross-entropy.

    Raises:
        InvalidInputError: bad labels, or a class without examples.
    """
    y = as_labels(labels, "labels")
    counts = np.bincount(y, minlength=len(LABELS))
    if (counts == 0).any():
        found = dict(zip(LABELS, counts.tolist(), strict=True))
        raise InvalidInputError(
            "labels",
            f"class-weighted loss needs both classes, found counts {found}"
            "; add examples of the missing class or set training.class_weighted_loss=false",
        )
    weights: FloatArray = len(y) / (len(LABELS) * counts.astype(np.float64))
    return weights


def window_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of window logits, optionally class-weighted.

    With weights the loss is ``mean_i(w[y_i] * CE_i)``, not torch's ``weight=`` form
    ``sum_i(w[y_i] * CE_i) / sum_i(w[y_i])``: that form renormalizes each batch, so a
    batch with no Overturned window would lose the weighting altogether.

    Args:
        logits: shape ``(b, 2)``.
        labels: shape ``(b,)``, int64 in {0, 1}.
        weights: shape ``(2,)`` from :func:`class_weights`, or None for plain
            cross-entropy.

    Returns:
        A scalar tensor (float32).
    """
    losses = F.cross_entropy(logits.float(), labels, reduction="none")
    if weights is not None:
        losses = losses * weights.to(device=losses.device, dtype=losses.dtype)[labels]
    return losses.mean()


def sample_training_windows(
    item_index: npt.ArrayLike, windows_per_item: int, epochs: float, seed: int
) -> IntArray:
    """Window indices for a one-pass training set of ``epochs`` sampled epochs.

    Each epoch draws ``windows_per_item`` windows per item without replacement (all of
    an item's windows when it has fewer). A fractional last epoch keeps that fraction of
    its (shuffled) draws. The epochs are concatenated and shuffled.

    Args:
        item_index: shape ``(w,)``, the item of each window.
        windows_per_item: k >= 1.
        epochs: > 0; e.g. 2.5 is two full epochs and half of a third.
        seed: the same seed gives the same indices.

    Returns:
        Shape ``(m,)``, indices into the windows (repeats across epochs).
    """
    if windows_per_item < 1 or epochs <= 0:
        raise InvalidInputError(
            "training",
            f"need windows_per_item >= 1 and epochs > 0, found {windows_per_item} and {epochs}",
        )
    index = np.asarray(item_index, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = np.argsort(index, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(index))[:-1])
    drawn: list[IntArray] = []
    for epoch in range(math.ceil(epochs)):
        picks = np.concatenate(
            [
                group
                if len(group) <= windows_per_item
                else rng.choice(group, size=windows_per_item, replace=False)
                for group in groups
                if len(group)
            ]
        )
        fraction = epochs - epoch
        if fraction < 1:
            picks = rng.permutation(picks)[: max(1, round(fraction * len(picks)))]
        drawn.append(picks.astype(np.int64))
    result: IntArray = rng.permutation(np.concatenate(drawn))
    return result


class _WindowDataset(Dataset[dict[str, Any]]):
    """Training windows with their items' labels, in the order of ``selected``."""

    def __init__(self, windows: Windows, window_labels: IntArray, selected: IntArray) -> None:
        self._windows = windows
        self._labels = window_labels
        self._selected = selected

    def __len__(self) -> int:
        return len(self._selected)

    def __getitem__(self, position: int) -> dict[str, Any]:
        window = int(self._selected[position])
        features: dict[str, Any] = dict(self._windows.features(window))
        features["labels"] = int(self._labels[window])
        return features


class WeightedLossTrainer(Trainer):
    """A :class:`~transformers.Trainer` whose loss is :func:`window_loss`.

    Args:
        *args: passed to ``Trainer``.
        class_weights: shape ``(2,)`` or None (plain cross-entropy).
        **kwargs: passed to ``Trainer``.
    """

    def __init__(self, *args: Any, class_weights: torch.Tensor | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The class-weighted window loss (see :func:`window_loss`)."""
        features = {key: value for key, value in inputs.items() if key != "labels"}
        outputs = model(**features)
        loss = window_loss(outputs.logits, inputs["labels"], self.class_weights)
        return (loss, outputs) if return_outputs else loss


def _warmup(ratio: float) -> dict[str, Any]:
    # transformers 5 dropped ``warmup_ratio``; a float ``warmup_steps`` below 1 is a ratio.
    names = {field.name for field in dataclasses.fields(TrainingArguments)}
    return {"warmup_ratio": ratio} if "warmup_ratio" in names else {"warmup_steps": ratio}


def _training_arguments(training: TrainingConfig, output_dir: str, epochs: float) -> Any:
    use_cpu = not torch.cuda.is_available()
    return TrainingArguments(
        output_dir=output_dir,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=LOGGING_STEPS,
        per_device_train_batch_size=training.batch_size,
        num_train_epochs=epochs,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        seed=training.seed,
        data_seed=training.seed,
        bf16=training.precision == "bf16",
        use_cpu=use_cpu,
        # Windows are tokenized up front; worker processes would only compete with the
        # compute threads on a small CPU.
        dataloader_num_workers=0,
        dataloader_pin_memory=not use_cpu,
        remove_unused_columns=False,
        **_warmup(training.warmup_ratio),
    )


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------ classifier


class TransformerClassifier:
    """Fine-tuned encoder + classification head over (request, summary-window) pairs.

    Args:
        model: the encoder (``base_model``), window size and aggregation.
        training: optimization settings; ``precision`` also applies at inference.
        callbacks: Trainer callbacks (tracking, progress), passed through unchanged.
    """

    kind: ClassVar[str] = "transformer"
    #: Windows per forward pass at inference.
    inference_batch_size: ClassVar[int] = 32

    def __init__(
        self,
        model: ModelConfig,
        training: TrainingConfig,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        self.model_config = model
        self.training_config = training
        self.callbacks = list(callbacks or [])
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        #: Subtracted from the Overturned item logit: log(w1 / w0) of the training loss
        #: weights, 0 without class weighting (see :meth:`logits`).
        self.logit_offset = 0.0
        #: Out-of-distribution detector fitted on the training items' embeddings (None
        #: for fewer than ``OOD_MIN_ITEMS`` items or a model saved without one).
        self.ood: MahalanobisOod | None = None

    @property
    def model(self) -> PreTrainedModel:
        """The fitted sequence-classification model (for explainers such as Captum)."""
        if self._model is None:
            raise NotFittedError("TransformerClassifier is not fitted; call fit() or load()")
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The fitted model's tokenizer (``model_max_length == model.max_length``)."""
        if self._tokenizer is None:
            raise NotFittedError("TransformerClassifier is not fitted; call fit() or load()")
        return self._tokenizer

    def fit(
        self,
        inputs: Sequence[ModelInput],
        labels: npt.NDArray[np.int64],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Self:
        """Fine-tune ``model.base_model`` on the windows of ``inputs``.

        Args:
            inputs: n model inputs.
            labels: shape ``(n,)``, 0 (Upheld) / 1 (Overturned); each window gets its
                item's label.
            metadata: ignored (the metadata prefix is already in ``inputs``).

        Returns:
            self, fitted.

        Raises:
            InvalidInputError: bad labels or inputs (see :func:`encode_windows`).
            ModelNotFoundError: ``model.base_model`` cannot be found.
        """
        config, training = self.model_config, self.training_config
        y = as_labels(labels, "labels")
        if len(y) != len(inputs):
            raise InvalidInputError(
                "labels", f"expected one label per input ({len(inputs)}), found {len(y)}"
            )
        _set_threads(training.torch_threads)
        set_seed(training.seed)
        tokenizer = load_tokenizer(config.base_model, config.max_length)
        windows = encode_windows(tokenizer, inputs, config.max_length, config.stride)
        if training.windows_per_item is None:
            selected = np.arange(len(windows), dtype=np.int64)
            epochs = training.epochs
        else:
            selected = sample_training_windows(
                windows.item_index, training.windows_per_item, training.epochs, training.seed
            )
            epochs = 1.0
        weights = (
            torch.tensor(class_weights(y), dtype=torch.float32)
            if training.class_weighted_loss
            else None
        )
        # Loaded last: bad inputs or labels fail before the slow part.
        network: PreTrainedModel = from_pretrained(
            AutoModelForSequenceClassification.from_pretrained,
            config.base_model,
            "model",
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={label: index for index, label in enumerate(LABELS)},
            dtype=torch.float32,
        )
        logger.info(
            "fine-tuning %s on %d items, %d windows (%d training samples, %.2f passes)",
            config.base_model,
            len(inputs),
            len(windows),
            len(selected),
            epochs,
        )
        dataset = _WindowDataset(windows, y[windows.item_index], selected)
        with tempfile.TemporaryDirectory(prefix="imr-trainer-") as output_dir:
            trainer = WeightedLossTrainer(
                model=network,
                args=_training_arguments(training, output_dir, epochs),
                train_dataset=dataset,
                data_collator=partial(collate, pad_token_id=int(tokenizer.pad_token_id or 0)),
                callbacks=self.callbacks,
                class_weights=weights,
            )
            trainer.train()
        self._model, self._tokenizer = for_inference(network), tokenizer
        self.logit_offset = (
            float(np.log(weights[1].item() / weights[0].item())) if weights is not None else 0.0
        )
        self.ood = (
            MahalanobisOod.fit(self.item_embeddings(inputs))
            if len(inputs) >= OOD_MIN_ITEMS
            else None
        )
        return self

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
            NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        windows, scores, _ = self._window_outputs(inputs, batch_size, pooled=False)
        return windows, scores

    def _window_outputs(
        self, inputs: Sequence[ModelInput], batch_size: int | None, *, pooled: bool
    ) -> tuple[Windows, FloatArray, FloatArray | None]:
        """Window logits ``(w, 2)`` and, when ``pooled``, the last hidden state mean-pooled
        over each window's real tokens ``(w, d)`` from the same forward passes."""
        model, tokenizer, config = self.model, self.tokenizer, self.model_config
        windows = encode_windows(tokenizer, inputs, config.max_length, config.stride)
        scores = np.zeros((len(windows), len(LABELS)), dtype=np.float64)
        hidden = np.zeros((len(windows), model.config.hidden_size)) if pooled else None
        device = next(model.parameters()).device
        model.train(False)
        pad_id = int(tokenizer.pad_token_id or 0)
        with torch.no_grad(), autocast(self.training_config.precision, device):
            for chosen, batch in iter_batches(
                windows, batch_size or self.inference_batch_size, pad_id
            ):
                batch = {key: value.to(device) for key, value in batch.items()}
                output = model(**batch, output_hidden_states=pooled)
                scores[chosen] = output.logits.float().cpu().numpy()
                if hidden is not None:
                    hidden[chosen] = masked_mean(output.hidden_states[-1], batch["attention_mask"])
        return windows, scores, hidden

    def logits_and_ood_distances(
        self, inputs: Sequence[ModelInput]
    ) -> tuple[Logits, FloatArray | None]:
        """Item logits (as :meth:`logits`) and, when the classifier has an OOD detector
        (:attr:`ood`), each item's Mahalanobis distance from the training items, shape
        ``(n,)``, from one set of forward passes; None without a detector.

        Raises:
            NotFittedError: before :meth:`fit` or :meth:`load`.
        """
        windows, scores, hidden = self._window_outputs(inputs, None, pooled=self.ood is not None)
        items = aggregate(scores, windows.item_index, len(inputs), self.model_config.aggregation)
        items[:, 1] -= self.logit_offset
        if hidden is None or self.ood is None:
            return items, None
        return items, self.ood.distances(mean_by_item(hidden, windows.item_index, len(inputs)))

    def calibrate_ood(self, inputs: Sequence[ModelInput]) -> None:
        """Set the OOD threshold from items the encoder was not trained on (a validation
        slice); a no-op without a detector or inputs. See
        :meth:`~imr_outcome.train.ood.MahalanobisOod.with_threshold_from`."""
        if self.ood is not None and len(inputs) > 0:
            self.ood = self.ood.with_threshold_from(self.item_embeddings(inputs))

    def item_embeddings(self, inputs: Sequence[ModelInput]) -> FloatArray:
        """Each item's embedding, shape ``(n, d)``: the mean over its windows of the
        mean-pooled last hidden state (what :class:`~imr_outcome.train.ood.MahalanobisOod`
        scores).

        Raises:
            NotFittedError: before :meth:`fit` or :meth:`load`.
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
            NotFittedError: before :meth:`fit` or :meth:`load`.
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
            "precision": self.training_config.precision,
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
        check_label_map(directory)
        try:
            model = ModelConfig(
                kind="transformer",
                base_model=settings["base_model"],
                max_length=settings["max_length"],
                stride=settings["stride"],
                aggregation=settings["aggregation"],
            )
            training = TrainingConfig(precision=settings["precision"])
        except (KeyError, ValidationError) as exc:
            raise IncompatibleModelError(
                f"{directory / SETTINGS_FILE}: invalid settings ({exc}); retrain the model"
            ) from exc
        classifier = cls(model, training)
        classifier.logit_offset = float(settings.get("logit_offset", 0.0))
        classifier._tokenizer = load_tokenizer(str(directory), model.max_length)
        network: PreTrainedModel = from_pretrained(
            AutoModelForSequenceClassification.from_pretrained,
            str(directory),
            "model",
            local_files_only=True,
            dtype=torch.float32,
        )
        classifier._model = for_inference(network)
        if (directory / OOD_FILE).is_file():
            classifier.ood = MahalanobisOod.load(directory / OOD_FILE)
        return classifier


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


def check_label_map(directory: Path) -> None:
    """Check that ``directory/config.json`` maps label ids to :data:`LABELS`.

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
