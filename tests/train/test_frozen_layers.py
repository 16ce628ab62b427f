"""Fine-tuning above frozen, cached lower layers (``training.frozen_layers``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from transformers import AutoModelForSequenceClassification

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.encoders import encode_windows, load_tokenizer
from imr_outcome.model.settings import TrainingConfig, TransformerConfig
from imr_outcome.model.transformer import TransformerClassifier
from imr_outcome.train.fine_tune import TrainableTransformer
from imr_outcome.train.frozen_layers import PREFIX_CACHE, PrefixCache, check_frozen_layers

from toy_cue import FILLER, separable_inputs


def _toy_set(n: int = 40) -> tuple[list[ModelInput], np.ndarray]:
    return separable_inputs(n)


def _training(**overrides: object) -> TrainingConfig:
    fields: dict[str, object] = {
        "epochs": 10,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "windows_per_item": None,
        "precision": "fp32",
        "frozen_layers": 1,
    }
    return TrainingConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def fitted(tiny_bert: Path) -> TrainableTransformer:
    inputs, labels = _toy_set()
    config = TransformerConfig(base_model=str(tiny_bert), max_length=64, stride=16)
    classifier = TrainableTransformer(config, _training())
    return classifier.fit(inputs, labels)


def test_tuning_above_a_frozen_layer_learns_the_toy_set(fitted: TrainableTransformer) -> None:
    inputs, labels = _toy_set()

    logits = fitted.logits(inputs)

    assert roc_auc_score(labels, logits[:, 1] - logits[:, 0]) >= 0.95


def test_the_frozen_layers_keep_their_pretrained_weights(
    fitted: TrainableTransformer, tiny_bert: Path
) -> None:
    pretrained = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert))
    tuned = fitted.model.state_dict()

    for name, tensor in pretrained.state_dict().items():
        frozen = name.startswith(("bert.embeddings.", "bert.encoder.layer.0."))
        same = torch.equal(tensor, tuned[name])
        assert same == frozen or name.endswith("position_ids"), name
    # Gradients are back on for the explainers (integrated gradients need them).
    assert all(p.requires_grad for p in fitted.model.parameters())


def test_scores_from_the_cache_equal_the_saved_full_forward_pass(
    fitted: TrainableTransformer, tmp_path: Path
) -> None:
    inputs, _ = _toy_set(12)
    inputs.append(ModelInput("Physical therapy", " ".join(FILLER * 8), 0))  # several windows

    fitted.save(tmp_path / "model")
    served = TransformerClassifier.load(tmp_path / "model")

    assert type(served) is TransformerClassifier
    np.testing.assert_allclose(fitted.logits(inputs), served.logits(inputs), atol=1e-5)
    np.testing.assert_allclose(
        fitted.item_embeddings(inputs), served.item_embeddings(inputs), atol=1e-5
    )


def test_a_second_fit_on_the_same_windows_reuses_the_cache(tiny_bert: Path) -> None:
    inputs, labels = _toy_set(12)
    config = TransformerConfig(base_model=str(tiny_bert), max_length=64, stride=16)
    TrainableTransformer(config, _training(epochs=1)).fit(inputs, labels)
    cached = len(PREFIX_CACHE)

    TrainableTransformer(config, _training(epochs=1, seed=5)).fit(inputs[:8], labels[:8])

    assert len(PREFIX_CACHE) == cached


def test_the_cache_drops_its_oldest_states_past_its_budget(tiny_bert: Path) -> None:
    inputs, _ = _toy_set(6)
    network = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert))
    windows = encode_windows(load_tokenizer(str(tiny_bert), 64), inputs, 64, 16)
    uncached = PrefixCache().states(network, windows, 1)
    largest = max(state.numel() * state.element_size() for state in uncached)
    cache = PrefixCache(max_bytes=3 * largest)

    states = cache.states(network, windows, 1)

    assert len(states) == len(windows) == 6
    assert 1 <= len(cache) <= 3
    for state, expected in zip(states, uncached, strict=True):
        torch.testing.assert_close(state, expected)


def test_freezing_every_layer_is_refused_with_the_fix(tiny_bert: Path) -> None:
    network = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert))

    with pytest.raises(InvalidInputError, match=r"training\.frozen_layers.*1\.\.1"):
        check_frozen_layers(network, 2)
