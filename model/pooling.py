"""Combining window outputs into one row per item: logit aggregation and mean pooling.

:func:`~imr_outcome.model.encoders.encode_windows` cuts each item into overlapping
windows; the functions here turn per-window outputs back into per-item rows. Window
logits are combined by :func:`aggregate` (mean, or the most Overturned-looking window);
frozen sentence embeddings are mean-pooled over tokens and then windows by
:func:`mean_pooled_embeddings` (Reimers & Gurevych 2019, "Sentence-BERT").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt
import torch
from transformers import PreTrainedTokenizerBase

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.encoders import (
    autocast,
    encode_windows,
    iter_batches,
    load_encoder,
    load_tokenizer,
)
from imr_outcome.model.hardware import Precision

if TYPE_CHECKING:
    from transformers import PreTrainedModel

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Aggregation = Literal["mean", "max"]


def mean_by_item(values: FloatArray, item_index: IntArray, n_items: int) -> FloatArray:
    """Mean of window rows per item.

    Args:
        values: shape ``(w, k)``, one row per window.
        item_index: shape ``(w,)``, the item of each window, in ``[0, n_items)``.
        n_items: number of items; every item must own at least one window.

    Returns:
        Shape ``(n_items, k)``.
    """
    sums = np.zeros((n_items, values.shape[1]), dtype=np.float64)
    np.add.at(sums, item_index, values)
    counts = np.bincount(item_index, minlength=n_items).astype(np.float64)
    result: FloatArray = sums / counts[:, None]
    return result


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> FloatArray:
    """Mean of each window's hidden states over its real tokens (mask 1), as float64.

    Args:
        hidden: shape ``(b, t, d)``.
        attention_mask: shape ``(b, t)``, 1 for real tokens, 0 for padding.

    Returns:
        Shape ``(b, d)``.
    """
    mask = attention_mask.unsqueeze(-1).float()  # (b, t, 1)
    means = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    result: FloatArray = means.cpu().numpy().astype(np.float64)
    return result


def aggregate(
    window_logits: npt.ArrayLike, item_index: npt.ArrayLike, n_items: int, how: Aggregation
) -> FloatArray:
    """Combine window logits into one logit pair per item.

    Args:
        window_logits: shape ``(w, 2)``, [Upheld, Overturned] logits of each window.
        item_index: shape ``(w,)``, the item of each window, values in ``[0, n_items)``;
            every item needs at least one window.
        n_items: number of items n.
        how: ``"mean"``: the mean of an item's window logits; ``"max"``: the logits of
            the item's window with the largest Overturned-minus-Upheld margin (the most
            Overturned-looking chunk; ties go to the earliest window).

    Returns:
        Shape ``(n_items, 2)``, float64.

    Raises:
        InvalidInputError: mismatched shapes, an item index out of range, an item
            without windows, or an unknown ``how``.
    """
    logits = np.asarray(window_logits, dtype=np.float64)
    index = np.asarray(item_index, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[1] != 2 or index.shape != (logits.shape[0],):
        raise InvalidInputError(
            "window_logits",
            f"expected shapes (w, 2) and item_index (w,), found {logits.shape} and {index.shape}",
        )
    if index.size and (index.min() < 0 or index.max() >= n_items):
        raise InvalidInputError("item_index", f"expected values in [0, {n_items})")
    empty = np.flatnonzero(np.bincount(index, minlength=n_items) == 0)
    if empty.size:
        raise InvalidInputError("item_index", f"item {int(empty[0])} has no window")
    if how == "mean":
        return mean_by_item(logits, index, n_items)
    if how == "max":
        margin = logits[:, 1] - logits[:, 0]
        order = np.lexsort((-margin, index))  # by item, then margin descending (stable)
        _, first = np.unique(index[order], return_index=True)
        best: FloatArray = logits[order[first]]
        return best
    raise InvalidInputError("model.aggregation", f"expected 'mean' or 'max', found {how!r}")


def pooled_embeddings(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[ModelInput],
    *,
    max_length: int,
    stride: int,
    batch_size: int = 32,
    precision: Precision = "auto",
) -> tuple[FloatArray, IntArray]:
    """Mean-pooled embeddings of items from an already loaded, frozen encoder, and the
    number of windows of each item.

    See :func:`mean_pooled_embeddings`; this variant lets a caller keep the encoder
    loaded between calls.

    Returns:
        Embeddings ``(n, hidden_size)`` and windows per item ``(n,)``.
    """
    windows = encode_windows(tokenizer, inputs, max_length, stride)
    hidden_size = int(encoder.config.hidden_size)
    pooled = np.zeros((len(windows), hidden_size), dtype=np.float64)
    device = next(encoder.parameters()).device
    encoder.train(False)
    pad_id = int(tokenizer.pad_token_id or 0)
    with torch.no_grad(), autocast(precision, device):
        for chosen, batch in iter_batches(windows, batch_size, pad_id):
            batch = {key: value.to(device) for key, value in batch.items()}
            hidden = encoder(**batch).last_hidden_state  # (b, t, hidden)
            pooled[chosen] = masked_mean(hidden, batch["attention_mask"])
    counts = np.bincount(windows.item_index, minlength=windows.n_items).astype(np.int64)
    return mean_by_item(pooled, windows.item_index, windows.n_items), counts


def mean_pooled_embeddings(
    model_name_or_path: str,
    inputs: Sequence[ModelInput],
    *,
    max_length: int,
    stride: int,
    batch_size: int = 32,
    precision: Precision = "auto",
) -> FloatArray:
    """Frozen-encoder embeddings of items: mean over tokens, then over windows.

    Each window's last hidden states are averaged over its real tokens (attention-mask
    weighted mean pooling, Reimers & Gurevych 2019, "Sentence-BERT"), and an item's
    embedding is the mean of its windows' embeddings. Runs under ``torch.no_grad()`` in
    eval mode, with bf16 autocast where ``precision`` resolves to bf16.

    Args:
        model_name_or_path: a ``model.base_model`` value (see :func:`resolve_base_model`).
        inputs: n model inputs.
        max_length: tokens per window, 16-512.
        stride: tokens shared by consecutive summary windows.
        batch_size: windows per forward pass.
        precision: ``"auto"``, ``"bf16"`` (autocast) or ``"fp32"``.

    Returns:
        Shape ``(n, hidden_size)``, float64 (384 for MiniLM-L6, 768 for BERT-base).

    Raises:
        ModelNotFoundError, IncompatibleModelError: the encoder cannot be loaded.
        InvalidInputError: see :func:`encode_windows`.
    """
    tokenizer = load_tokenizer(model_name_or_path, max_length)
    encoder = load_encoder(model_name_or_path)
    embeddings, _ = pooled_embeddings(
        encoder,
        tokenizer,
        inputs,
        max_length=max_length,
        stride=stride,
        batch_size=batch_size,
        precision=precision,
    )
    return embeddings
