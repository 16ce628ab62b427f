"""The fine-tuning loss and the training order of windows.

To bound CPU training time, ``training.windows_per_item`` = k samples k windows per item
and epoch (seeded) instead of using every window; inference always uses every window.

The training order is computed here, seeded, for all epochs at once
(:func:`training_order`): every process of a data-parallel launch
(:mod:`imr_outcome.train.distributed`) derives the same order. The Trainer's own shuffling
and ``group_by_length`` sampler are not used: in DDP they draw from each rank's global
torch generator, which drifts apart between ranks once dropout has consumed different
amounts of it on differently padded batches. With ``training.group_by_length`` each
optimizer step holds windows of similar length (:func:`group_by_length`).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from imr_outcome.data.schema import LABELS
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.arrays import as_labels
from imr_outcome.model.encoders import Windows
from imr_outcome.model.settings import TrainingConfig

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Optimizer steps per length-sorted block in :func:`group_by_length` (the Trainer's
#: ``LengthGroupedSampler`` uses megabatches of 50 batches too).
MEGABATCH_STEPS = 50


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
    item_index: npt.ArrayLike, windows_per_item: int | None, epochs: float, seed: int
) -> IntArray:
    """Window indices for a one-pass training set of ``epochs`` sampled epochs.

    Each epoch draws ``windows_per_item`` windows per item without replacement (all of
    an item's windows when it has fewer, or when ``windows_per_item`` is None). A
    fractional last epoch keeps that fraction of its (shuffled) draws. The epochs are
    concatenated and shuffled.

    Args:
        item_index: shape ``(w,)``, the item of each window.
        windows_per_item: k >= 1, or None for every window each epoch.
        epochs: > 0; e.g. 2.5 is two full epochs and half of a third.
        seed: the same seed gives the same indices.

    Returns:
        Shape ``(m,)``, indices into the windows (repeats across epochs).

    Raises:
        InvalidInputError: ``windows_per_item`` < 1 or ``epochs`` <= 0.
    """
    if windows_per_item is None:
        windows_per_item = max(1, len(np.asarray(item_index)))
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


def group_by_length(
    order: npt.ArrayLike,
    lengths: npt.ArrayLike,
    labels: npt.ArrayLike,
    step_size: int,
    seed: int,
) -> IntArray:
    """Reorder a training order so that each optimizer step holds windows of similar
    length, with the label mix of the whole order.

    The order is cut into blocks of :data:`MEGABATCH_STEPS` steps (as the Trainer's
    ``LengthGroupedSampler`` cuts megabatches). In each block the windows of each label are
    ranked by length, and the block is sorted by length quantile within the label, so
    consecutive windows are the same quantile of each label, in the block's label
    proportions; the block is then cut into steps of ``step_size``. The full steps are
    shuffled (an incomplete last step stays last); they do not run long to short.

    Why stratified: sorting by length alone makes single-label batches wherever length
    goes with the label (it does in the invented test data: the Overturned cue is
    shorter), and training then chases each batch's label (measured: a tiny BERT that
    learns a separable toy set at 100% fell to 50%). Stratified, each step keeps the label
    mix a shuffled step has on average, the windows of the order and the batch size are
    unchanged, and the loss is a mean over each batch, so every window keeps its weight;
    only which windows of a label share a step changes.

    Args:
        order: shape ``(m,)``, window indices (from :func:`sample_training_windows`).
        lengths: shape ``(w,)``, token count of every window.
        labels: shape ``(w,)``, label of every window.
        step_size: windows per optimizer step (per-process batch x processes x
            accumulation steps), >= 1.
        seed: the same seed gives the same order.

    Returns:
        Shape ``(m,)``, the same indices in the new order.

    Raises:
        InvalidInputError: ``step_size`` < 1.
    """
    if step_size < 1:
        raise InvalidInputError("training.batch_size", f"expected >= 1, found {step_size}")
    order = np.asarray(order, dtype=np.int64)
    sizes = np.asarray(lengths, dtype=np.int64)
    window_labels = np.asarray(labels, dtype=np.int64)
    block = step_size * MEGABATCH_STEPS
    steps: list[IntArray] = []
    for start in range(0, len(order), block):
        chunk = order[start : start + block]
        quantile = np.empty(len(chunk), dtype=np.float64)
        for label in np.unique(window_labels[chunk]):
            members = np.flatnonzero(window_labels[chunk] == label)
            ranked = members[np.argsort(-sizes[chunk[members]], kind="stable")]
            quantile[ranked] = (np.arange(len(ranked)) + 0.5) / len(ranked)
        chunk = chunk[np.argsort(quantile, kind="stable")]
        steps.extend(chunk[i : i + step_size] for i in range(0, len(chunk), step_size))
    full = [step for step in steps if len(step) == step_size]
    partial_steps = [step for step in steps if len(step) < step_size]
    rng = np.random.default_rng(seed)
    shuffled = [full[i] for i in rng.permutation(len(full))] + partial_steps
    result: IntArray = np.concatenate(shuffled) if shuffled else order
    return result


def training_order(
    windows: Windows, window_labels: IntArray, training: TrainingConfig, step_size: int
) -> IntArray:
    """The windows to train on, in order, for all epochs: sampled
    (:func:`sample_training_windows`), then with ``training.group_by_length`` grouped into
    steps of similar length (:func:`group_by_length`).

    Args:
        windows: the encoded training windows.
        window_labels: shape ``(w,)``, each window's label (its item's).
        training: ``windows_per_item``, ``epochs``, ``seed``, ``group_by_length``.
        step_size: windows per optimizer step (over all processes).

    Returns:
        Shape ``(m,)``, window indices; a function of the windows, the settings and
        ``step_size`` only, so every process of a launch computes the same.
    """
    order = sample_training_windows(
        windows.item_index, training.windows_per_item, training.epochs, training.seed
    )
    if not training.group_by_length:
        return order
    lengths = np.fromiter((len(ids) for ids in windows.input_ids), dtype=np.int64)
    return group_by_length(order, lengths, window_labels, step_size, training.seed)


def training_digest(windows: Windows, labels: IntArray, order: IntArray) -> str:
    """sha256 hex digest (64 characters) of the training order, the window labels and the
    token ids: equal on every rank of a data-parallel launch, or the ranks would train on
    different windows."""
    sha = hashlib.sha256(order.tobytes())
    sha.update(np.asarray(labels, dtype=np.int64).tobytes())
    for ids in windows.input_ids:
        sha.update(np.asarray(ids, dtype=np.int64).tobytes())
    return sha.hexdigest()
