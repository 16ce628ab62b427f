"""Fine-tuning of :class:`~imr_outcome.model.transformer.TransformerClassifier`: the
Hugging Face Trainer and its arguments, and :class:`TrainableTransformer`, the classifier
with ``fit`` that training builds. The loss and the training order live in
:mod:`imr_outcome.train.training_windows`.

Serving never imports this module (an import-layer test checks it): a loaded model only
needs :mod:`imr_outcome.model.transformer`. Tracking and progress are left to the
``callbacks`` the caller passes in.

The Trainer reads the seeded order of :func:`~imr_outcome.train.training_windows.training_order`
in sequence, and gives each process of a data-parallel launch
(:mod:`imr_outcome.train.distributed`) its share of every optimizer step. Windows are padded
per batch (``DataCollatorWithPadding``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self, cast

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset, SequentialSampler
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.arrays import as_labels
from imr_outcome.model.encoders import (
    Windows,
    encode_windows,
    for_inference,
    from_pretrained,
    load_tokenizer,
)
from imr_outcome.model.hardware import machine_precision
from imr_outcome.model.ood import MIN_ITEMS as OOD_MIN_ITEMS
from imr_outcome.model.ood import MahalanobisOod
from imr_outcome.model.settings import TrainingConfig, TransformerConfig
from imr_outcome.model.transformer import TransformerClassifier
from imr_outcome.train.distributed import check_same_on_every_rank, world_size
from imr_outcome.train.frozen_layers import (
    PREFIX_CACHE,
    TopLayers,
    freeze_lower,
    pad_states,
    top_outputs,
)
from imr_outcome.train.training_windows import (
    class_weights,
    training_digest,
    training_order,
    window_loss,
)

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Optimizer steps between training-loss log lines (sent to the callbacks).
LOGGING_STEPS = 10

#: Pad to a multiple of this on GPUs (fp16/bf16 tensor cores work on multiples of 8).
GPU_PAD_MULTIPLE = 8


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


class _StateDataset(Dataset[dict[str, Any]]):
    """Cached lower-layer states of training windows (``training.frozen_layers``), with
    their items' labels, in the order of ``selected``."""

    def __init__(
        self, states: list[torch.Tensor], window_labels: IntArray, selected: IntArray
    ) -> None:
        self._states = states
        self._labels = window_labels
        self._selected = selected

    def __len__(self) -> int:
        return len(self._selected)

    def __getitem__(self, position: int) -> dict[str, Any]:
        window = int(self._selected[position])
        return {"hidden_states": self._states[window], "labels": int(self._labels[window])}


def _collate_states(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    batch = pad_states([feature["hidden_states"] for feature in features])
    batch["labels"] = torch.tensor([feature["labels"] for feature in features])
    return batch


class WeightedLossTrainer(Trainer):
    """A :class:`~transformers.Trainer` whose loss is
    :func:`~imr_outcome.train.training_windows.window_loss`.

    Args:
        *args: passed to ``Trainer``.
        class_weights: shape ``(2,)`` or None (plain cross-entropy).
        **kwargs: passed to ``Trainer``.
    """

    def __init__(self, *args: Any, class_weights: torch.Tensor | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights

    def _get_train_sampler(self, train_dataset: Any = None) -> SequentialSampler:
        """In order: the order is :func:`training_order`'s, the same on every rank."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        assert isinstance(dataset, _WindowDataset | _StateDataset)
        return SequentialSampler(dataset)

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


def _training_arguments(training: TrainingConfig, output_dir: str) -> Any:
    """The Trainer's arguments; building them sets up DDP when launched on several
    processes (gloo on CPUs, NCCL on GPUs)."""
    use_cpu = not torch.cuda.is_available()
    precision = machine_precision(training.precision)
    return TrainingArguments(
        output_dir=output_dir,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=LOGGING_STEPS,
        per_device_train_batch_size=training.batch_size,
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        # One pass over training_order, which holds every epoch.
        num_train_epochs=1.0,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        seed=training.seed,
        data_seed=training.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=use_cpu,
        # gloo between CPU processes (accelerate would take MPI where torch has it);
        # NCCL, accelerate's choice, between GPUs.
        ddp_backend="gloo" if use_cpu and world_size() > 1 else None,
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
    window_labels = y[windows.item_index]
    with tempfile.TemporaryDirectory(prefix="imr-trainer-") as output_dir:
        args = _training_arguments(training, output_dir)
        step_size = args.per_device_train_batch_size * args.world_size
        step_size *= args.gradient_accumulation_steps
        order = training_order(windows, window_labels, training, step_size)
        check_same_on_every_rank("training windows", training_digest(windows, window_labels, order))
        logger.info(
            "fine-tuning %s on %d items, %d windows (%d training samples over %g epochs); "
            "%d processes x %d windows x %d accumulation = %d windows per step, "
            "learning rate %g, precision %s, %d lower layers frozen",
            config.base_model,
            len(inputs),
            len(windows),
            len(order),
            training.epochs,
            args.world_size,
            args.per_device_train_batch_size,
            args.gradient_accumulation_steps,
            step_size,
            args.learning_rate,
            machine_precision(training.precision),
            training.frozen_layers,
        )
        frozen = training.frozen_layers
        if frozen:
            # Only the upper layers train, on lower-layer states computed once per process.
            freeze_lower(network, frozen)
            states = PREFIX_CACHE.states(network, windows, frozen)
            trained: torch.nn.Module = TopLayers(network, frozen)
            dataset: Dataset[dict[str, Any]] = _StateDataset(states, window_labels, order)
            collator: Any = _collate_states
        else:
            trained, dataset = network, _WindowDataset(windows, window_labels, order)
            collator = DataCollatorWithPadding(
                tokenizer, pad_to_multiple_of=None if args.use_cpu else GPU_PAD_MULTIPLE
            )
        trainer = WeightedLossTrainer(
            model=trained,
            args=args,
            train_dataset=dataset,
            data_collator=collator,
            callbacks=list(callbacks or []),
            class_weights=weights,
        )
        # The Trainer prints each log dict to stdout when its tqdm bar is off (PrinterCallback);
        # the losses reach MLflow and the INFO log through our callbacks instead.
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        # Drop the autocast wrapper accelerate puts around forward() for bf16/fp16 training:
        # inference and the ONNX export trace plain fp32 weights.
        unwrapped = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        if not frozen:
            network = unwrapped
        for parameter in network.parameters():
            parameter.requires_grad_(True)
        cast(Any, network).float()
    return FineTuned(
        network,
        tokenizer,
        float(np.log(weights[1].item() / weights[0].item())) if weights is not None else 0.0,
    )


# ------------------------------------------------------------------- the classifier


class TrainableTransformer(TransformerClassifier):
    """A :class:`~imr_outcome.model.transformer.TransformerClassifier` that fits itself
    with :func:`fine_tune`: what training builds for ``kind: transformer``. Saved, it loads
    as a plain ``TransformerClassifier`` (same files, same kind).

    Args:
        model: the encoder (``base_model``), window size and aggregation.
        training: optimization settings; ``precision`` applies to fine-tuning only, torch
            inference runs in fp32 on every machine.
        callbacks: Trainer callbacks (tracking, progress), passed through unchanged.
    """

    def __init__(
        self,
        model: TransformerConfig,
        training: TrainingConfig,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        super().__init__(model, training)
        self.callbacks = list(callbacks or [])

    def fit(
        self,
        inputs: Sequence[ModelInput],
        labels: npt.NDArray[np.int64],
        metadata: Sequence[dict[str, Any]] | None = None,
    ) -> Self:
        """Fine-tune ``model.base_model`` on the windows of ``inputs`` (:func:`fine_tune`)
        and fit the OOD detector on the training items' embeddings.

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
        tuned = fine_tune(self.model_config, self.training_config, inputs, labels, self.callbacks)
        self._model, self._tokenizer = for_inference(tuned.model), tuned.tokenizer
        self.logit_offset = tuned.logit_offset
        self.ood = (
            MahalanobisOod.fit(self.item_embeddings(inputs))
            if len(inputs) >= OOD_MIN_ITEMS
            else None
        )
        return self

    def _window_outputs(
        self, inputs: Sequence[ModelInput], batch_size: int | None, *, pooled: bool
    ) -> tuple[Windows, FloatArray, FloatArray | None]:
        """As the full forward pass; with ``training.frozen_layers`` the lower layers'
        states come from the process cache (the same numbers, computed once)."""
        frozen = self.training_config.frozen_layers
        if not frozen or self.session is not None:
            return super()._window_outputs(inputs, batch_size, pooled=pooled)
        windows = self.encode(inputs)
        size = batch_size or self.inference_batch_size
        scores, hidden = top_outputs(self.model, windows, frozen, batch_size=size, pooled=pooled)
        return windows, scores, hidden
