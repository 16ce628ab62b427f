"""Fine-tuning the top of a BERT-family encoder on cached lower-layer states.

With ``training.frozen_layers = k`` > 0 the embeddings and the lower k encoder layers keep
their pretrained weights. Their output for a window then depends on the window's tokens
alone, so it is computed once per process (:class:`PrefixCache`) and reused by every
epoch, every inner cross-fitting model, every fold and every repeat; only the upper
layers, the pooler and the classifier train (:class:`TopLayers`), on those cached states.
Lee, Tang & Lin (2019), "What would Elsa do? Freezing layers during transformer
fine-tuning" (arXiv:1911.03090), find that tuning only the upper layers keeps most of the
quality of full fine-tuning; issue 22 measures it on our letters.

The network stays one Hugging Face model whose lower layers are untouched, so what is
saved and served is a plain full forward pass; :func:`top_outputs` gives the same logits
from the cache (a test checks the two agree). Serving never imports this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import SequenceClassifierOutput

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.encoders import Windows, collate
from imr_outcome.model.pooling import masked_mean

#: Cached states kept per process before the oldest are dropped (about 2 GiB of fp32).
MAX_CACHED_BYTES = 2 * 1024**3

#: Windows per forward pass when filling the cache.
PREFIX_BATCH = 32


def _parts(network: PreTrainedModel) -> tuple[nn.ModuleList, nn.Module, nn.Module, nn.Module]:
    """(encoder layers, pooler, dropout, classifier) of a BERT-family classifier."""
    base = network.base_model
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    pooler = getattr(base, "pooler", None)
    dropout = getattr(network, "dropout", None)
    classifier = getattr(network, "classifier", None)
    if not isinstance(layers, nn.ModuleList) or pooler is None or dropout is None:
        raise InvalidInputError(
            "training.frozen_layers",
            f"{type(network).__name__} is not a BERT-family classifier (encoder.layer, "
            "pooler, dropout, classifier); set training.frozen_layers=0 for this base model",
        )
    assert classifier is not None
    return layers, pooler, dropout, classifier


def check_frozen_layers(network: PreTrainedModel, frozen_layers: int) -> None:
    """Raise unless ``network`` can be tuned above ``frozen_layers`` cached layers.

    Raises:
        InvalidInputError: not a BERT-family classifier, or ``frozen_layers`` leaves no
            layer to train.
    """
    layers, *_ = _parts(network)
    if not 0 < frozen_layers < len(layers):
        raise InvalidInputError(
            "training.frozen_layers",
            f"expected 1..{len(layers) - 1} for this {len(layers)}-layer encoder, found "
            f"{frozen_layers}; set 0 to fine-tune every layer",
        )


def freeze_lower(network: PreTrainedModel, frozen_layers: int) -> None:
    """Stop gradients to the embeddings and the lower ``frozen_layers`` layers (in place)."""
    check_frozen_layers(network, frozen_layers)
    layers, *_ = _parts(network)
    for module in (network.base_model.embeddings, *layers[:frozen_layers]):
        for parameter in module.parameters():
            parameter.requires_grad_(False)


class PrefixCache:
    """Hidden states after the lower k layers, per window, computed once per process.

    Entries are keyed by a digest of the frozen weights (embeddings and lower layers) and
    the window's token ids, so two networks share entries only when their frozen parts are
    identical. States are fp32 on the CPU, shape ``(tokens, hidden)`` per window; the
    oldest entries are dropped past :data:`MAX_CACHED_BYTES`.
    """

    def __init__(self, max_bytes: int = MAX_CACHED_BYTES) -> None:
        self.max_bytes = max_bytes
        self._states: dict[tuple[str, bytes], torch.Tensor] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    def clear(self) -> None:
        """Drop every entry."""
        self._states.clear()
        self._bytes = 0

    def states(
        self, network: PreTrainedModel, windows: Windows, frozen_layers: int
    ) -> list[torch.Tensor]:
        """The state of every window after ``frozen_layers`` layers, shape ``(t_i, d)``.

        Args:
            network: a BERT-family sequence classifier (its lower layers as pretrained).
            windows: w token windows.
            frozen_layers: k, 1 <= k < number of layers.

        Returns:
            w fp32 CPU tensors, in window order.

        Raises:
            InvalidInputError: see :func:`check_frozen_layers`.
        """
        check_frozen_layers(network, frozen_layers)
        weights = _frozen_digest(network, frozen_layers)
        keys = [(weights, np.asarray(ids, dtype=np.int64).tobytes()) for ids in windows.input_ids]
        missing = [i for i, key in enumerate(keys) if key not in self._states]
        if missing:
            computed = _prefix_states(network, windows, missing, frozen_layers)
            found = dict(zip((keys[i] for i in missing), computed, strict=True))
            for key, state in found.items():
                self._add(key, state)
            return [self._states.get(key, found.get(key)) for key in keys]  # type: ignore[misc]
        return [self._states[key] for key in keys]

    def _add(self, key: tuple[str, bytes], state: torch.Tensor) -> None:
        size = state.numel() * state.element_size()
        while self._states and self._bytes + size > self.max_bytes:
            oldest = next(iter(self._states))
            removed = self._states.pop(oldest)
            self._bytes -= removed.numel() * removed.element_size()
        if size <= self.max_bytes:
            self._states[key] = state
            self._bytes += size


#: The process's cache (shared by every fit in a cross-validation).
PREFIX_CACHE = PrefixCache()


def _frozen_digest(network: PreTrainedModel, frozen_layers: int) -> str:
    layers, *_ = _parts(network)
    sha = hashlib.sha256(str(frozen_layers).encode())
    for module in (network.base_model.embeddings, *layers[:frozen_layers]):
        for name, tensor in module.state_dict().items():
            sha.update(name.encode())
            sha.update(tensor.detach().float().cpu().numpy().tobytes())
    return sha.hexdigest()


def _prefix_states(
    network: PreTrainedModel, windows: Windows, chosen: list[int], frozen_layers: int
) -> list[torch.Tensor]:
    """Hidden states of the ``chosen`` windows after ``frozen_layers`` layers (eval mode,
    fp32, no gradients), in the order of ``chosen``."""
    states: list[torch.Tensor] = []
    was_training = network.training
    network.train(False)
    device = next(network.parameters()).device
    pad_id = int(getattr(network.config, "pad_token_id", None) or 0)
    with torch.no_grad():
        for start in range(0, len(chosen), PREFIX_BATCH):
            part = chosen[start : start + PREFIX_BATCH]
            batch = collate([windows.features(w) for w in part], pad_id)
            batch = {key: value.to(device) for key, value in batch.items()}
            output = network.base_model(**batch, output_hidden_states=True)
            hidden = output.hidden_states[frozen_layers].float().cpu()
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            states += [hidden[row, : int(n)].clone() for row, n in enumerate(lengths)]
    network.train(was_training)
    return states


def pad_states(states: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Right-padded ``hidden_states`` ``(b, t, d)`` and ``attention_mask`` ``(b, t)``."""
    hidden = nn.utils.rnn.pad_sequence(list(states), batch_first=True)
    mask = torch.zeros(hidden.shape[:2], dtype=torch.long)
    for row, state in enumerate(states):
        mask[row, : state.shape[0]] = 1
    return {"hidden_states": hidden, "attention_mask": mask}


class TopLayers(nn.Module):
    """The upper layers, pooler, dropout and classifier of ``network``, applied to cached
    states. The modules are the network's own (shared, not copied): training this trains
    the network.

    Args:
        network: a BERT-family sequence classifier.
        frozen_layers: k; layers k.. are applied.
    """

    def __init__(self, network: PreTrainedModel, frozen_layers: int) -> None:
        super().__init__()
        check_frozen_layers(network, frozen_layers)
        layers, self.pooler, self.dropout, self.classifier = _parts(network)
        self.layers = nn.ModuleList(list(layers[frozen_layers:]))
        self.config = network.config

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, **_: Any
    ) -> SequenceClassifierOutput:
        """Logits ``(b, 2)`` and the last hidden state ``(b, t, d)`` (as ``hidden_states``).

        Args:
            hidden_states: shape ``(b, t, d)``, the cached states.
            attention_mask: shape ``(b, t)``, 1 for real tokens.
        """
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        for layer in self.layers:
            hidden_states = layer(hidden_states, mask)
        logits = self.classifier(self.dropout(self.pooler(hidden_states)))
        return SequenceClassifierOutput(logits=logits, hidden_states=(hidden_states,))


def top_outputs(
    network: PreTrainedModel,
    windows: Windows,
    frozen_layers: int,
    *,
    batch_size: int,
    pooled: bool,
    cache: PrefixCache = PREFIX_CACHE,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]:
    """Window logits ``(w, 2)`` and, when ``pooled``, the mean-pooled last hidden state
    ``(w, d)``, from cached lower states and the upper layers in eval mode, fp32: the
    same function as the full network's forward pass.
    """
    states = cache.states(network, windows, frozen_layers)
    top = TopLayers(network, frozen_layers)
    was_training = network.training
    network.train(False)
    scores = np.zeros((len(windows), 2), dtype=np.float64)
    hidden = np.zeros((len(windows), network.config.hidden_size)) if pooled else None
    order = np.argsort([-len(state) for state in states], kind="stable")
    device = next(network.parameters()).device
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = pad_states([states[int(w)] for w in chosen])
            batch = {key: value.to(device) for key, value in batch.items()}
            output = top(**batch)
            scores[chosen] = output.logits.float().cpu().numpy()
            if hidden is not None:
                assert output.hidden_states is not None
                hidden[chosen] = masked_mean(output.hidden_states[-1], batch["attention_mask"])
    network.train(was_training)
    return scores, hidden
