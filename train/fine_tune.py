"""Fine-tuning of :class:`~imr_outcome.train.transformer.TransformerClassifier`: the
class-weighted loss, the window sampler, the Hugging Face Trainer and its arguments.

Serving never imports this module (an import-layer test checks it): a loaded model only
needs :mod:`imr_outcome.train.transformer`. Tracking and progress are left to the
``callbacks`` the caller passes in.

To bound CPU training time, ``training.windows_per_item`` = k samples k windows per item
and epoch (seeded) instead of using every window; inference always uses every window.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
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
from imr_outcome.errors import InvalidInputError
from imr_outcome.train.config import TrainingConfig, TransformerConfig
from imr_outcome.train.encoders import (
    Windows,
    collate,
    encode_windows,
    from_pretrained,
    load_tokenizer,
)
from imr_outcome.train.hardware import machine_precision
from imr_outcome.train.metrics import as_labels

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

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
        bf16=machine_precision(training.precision) == "bf16",
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


# ------------------------------------------------------------------------ the loop


@dataclass(frozen=True)
class FineTuned:
    """A fine-tuned network, its tokenizer and the logit offset of its weighted loss.

    Attributes:
        model: the sequence-classification model (fp32, training mode not reset).
        tokenizer: its tokenizer (``model_max_length == model.max_length``).
        logit_offset: ``log(w1 / w0)`` of the loss weights, 0 without class weighting.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    logit_offset: float


def fine_tune(
    config: TransformerConfig,
    training: TrainingConfig,
    inputs: Sequence[ModelInput],
    labels: npt.NDArray[np.int64],
    callbacks: Sequence[TrainerCallback] | None = None,
) -> FineTuned:
    """Fine-tune ``config.base_model`` on the windows of ``inputs``.

    Args:
        config: the transformer model settings (base model, window, stride).
        training: optimization settings; ``precision`` resolves per machine.
        inputs: n model inputs.
        labels: shape ``(n,)``, 0 (Upheld) / 1 (Overturned); each window gets its
            item's label.
        callbacks: Trainer callbacks (tracking, progress), passed through unchanged.

    Returns:
        The network, tokenizer and logit offset.

    Raises:
        InvalidInputError: bad labels or inputs (see :func:`encode_windows`).
        ModelNotFoundError: ``config.base_model`` cannot be found.
    """
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
            callbacks=list(callbacks or []),
            class_weights=weights,
        )
        trainer.train()
    return FineTuned(
        network,
        tokenizer,
        float(np.log(weights[1].item() / weights[0].item())) if weights is not None else 0.0,
    )
