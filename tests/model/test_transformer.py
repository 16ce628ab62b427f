from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from transformers import TrainerCallback

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError, ModelNotFoundError
from imr_outcome.model.pooling import aggregate
from imr_outcome.model.settings import TrainingConfig, TransformerConfig
from imr_outcome.model.transformer import TransformerClassifier
from imr_outcome.train.fine_tune import TrainableTransformer
from imr_outcome.train.training_windows import (
    class_weights,
    sample_training_windows,
    window_loss,
)

from toy_cue import FILLER, separable_inputs

IntArray = npt.NDArray[np.int64]


def _toy_set(n: int = 40, seed: int = 0) -> tuple[list[ModelInput], IntArray]:
    return separable_inputs(n, seed)


def _model_config(tiny_bert: Path, **overrides: Any) -> TransformerConfig:
    return TransformerConfig(base_model=str(tiny_bert), max_length=64, stride=16, **overrides)


@pytest.fixture(scope="module")
def fitted(tiny_bert: Path) -> TransformerClassifier:
    inputs, labels = _toy_set()
    training = TrainingConfig(
        epochs=10,
        batch_size=4,
        learning_rate=1e-3,
        windows_per_item=None,
        precision="fp32",
        torch_threads=2,
    )
    return TrainableTransformer(_model_config(tiny_bert), training).fit(inputs, labels)


def _log_loss(logits: npt.NDArray[np.float64], labels: IntArray) -> float:
    return float(-log_softmax(logits, axis=1)[np.arange(len(labels)), labels].mean())


# ---------------------------------------------------------------------- training


def test_fit_learns_a_separable_toy_set(fitted: TransformerClassifier) -> None:
    inputs, labels = _toy_set()

    logits = fitted.logits(inputs)

    margin = logits[:, 1] - logits[:, 0]
    assert logits.shape == (40, 2)
    assert logits.dtype == np.float64
    assert ((margin > 0) == labels).mean() >= 0.9
    assert roc_auc_score(labels, margin) >= 0.95
    assert _log_loss(logits, labels) < 0.6  # chance is log 2 = 0.693


def test_logits_aggregate_the_window_logits(tiny_bert: Path, fitted: TransformerClassifier) -> None:
    inputs = [
        ModelInput("Physical therapy", " ".join(FILLER * 6) + " No objective improvement.", 0),
        ModelInput("Physical therapy", "Documented functional improvement.", 0),
    ]

    windows, window_logits = fitted.window_logits(inputs, batch_size=1)

    assert len(windows) > len(inputs)
    assert window_logits.shape == (len(windows), 2)
    np.testing.assert_allclose(
        fitted.logits(inputs),
        aggregate(window_logits, windows.item_index, 2, "mean"),
        atol=1e-5,
    )


def test_bf16_sampled_training_runs_and_reports_to_callbacks(tiny_bert: Path) -> None:
    class Recorder(TrainerCallback):
        def __init__(self) -> None:
            self.logs: list[dict[str, float]] = []

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.logs.append(kwargs["logs"])

    inputs, labels = _toy_set(12)
    recorder = Recorder()
    training = TrainingConfig(epochs=1.5, batch_size=4, windows_per_item=1, precision="bf16")

    classifier = TrainableTransformer(_model_config(tiny_bert), training, [recorder])
    logits = classifier.fit(inputs, labels).logits(inputs)

    assert logits.shape == (12, 2)
    assert np.isfinite(logits).all()
    assert any("train_loss" in log for log in recorder.logs)


def test_an_unfitted_classifier_says_so(tiny_bert: Path) -> None:
    classifier = TransformerClassifier(_model_config(tiny_bert), TrainingConfig())

    with pytest.raises(NotFittedError, match="call fit"):
        classifier.logits(_toy_set(2)[0])


def test_fit_rejects_labels_that_do_not_match_the_inputs(tiny_bert: Path) -> None:
    inputs, _ = _toy_set(4)

    with pytest.raises(InvalidInputError, match=r"one label per input \(4\), found 3"):
        TrainableTransformer(_model_config(tiny_bert), TrainingConfig()).fit(
            inputs, np.array([0, 1, 0])
        )


# ------------------------------------------------------------------ loss, sampling


def test_class_weights_are_inverse_frequency() -> None:
    weights = class_weights(np.array([0] * 9 + [1]))

    np.testing.assert_allclose(weights, [10 / 18, 10 / 2])


def test_class_weights_need_both_classes() -> None:
    with pytest.raises(InvalidInputError, match=r"found counts \{'Upheld': 3, 'Overturned': 0\}"):
        class_weights(np.array([0, 0, 0]))


def test_weighted_loss_differs_from_unweighted_on_imbalanced_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 2, generator=generator)
    labels = torch.tensor([0] * 9 + [1])
    weights = torch.tensor(class_weights(labels.numpy()), dtype=torch.float32)

    plain = window_loss(logits, labels)
    weighted = window_loss(logits, labels, weights)

    per_item = F.cross_entropy(logits, labels, reduction="none")
    assert plain.item() == pytest.approx(F.cross_entropy(logits, labels).item())
    assert weighted.item() == pytest.approx((per_item * weights[labels]).mean().item())
    assert weighted.item() != pytest.approx(plain.item(), rel=1e-3)


def test_weighting_survives_a_batch_of_one_class() -> None:
    logits = torch.tensor([[0.2, -0.1], [1.0, 0.5]])
    labels = torch.tensor([0, 0])
    weights = torch.tensor([0.5, 5.0])

    assert window_loss(logits, labels, weights).item() == pytest.approx(
        0.5 * window_loss(logits, labels).item()
    )


def test_window_sampling_is_seeded() -> None:
    item_index = np.repeat(np.arange(6), [1, 3, 2, 5, 1, 4])

    first = sample_training_windows(item_index, 1, 2.0, seed=13)
    again = sample_training_windows(item_index, 1, 2.0, seed=13)
    other = sample_training_windows(item_index, 1, 2.0, seed=14)

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(first) == 2 * 6
    assert sorted(np.bincount(item_index[first], minlength=6)) == [2] * 6


def test_window_sampling_takes_all_of_a_short_item_and_a_fraction_of_the_last_epoch() -> None:
    item_index = np.repeat(np.arange(4), [1, 2, 5, 2])

    drawn = sample_training_windows(item_index, 2, 2.5, seed=0)

    assert len(drawn) == 2 * 7 + round(0.5 * 7)
    assert np.bincount(drawn, minlength=10)[0] >= 2  # item 0's only window, every epoch
    assert set(drawn) <= set(range(10))


# ------------------------------------------------------------------ save and load


def test_save_then_load_gives_identical_logits(
    tiny_bert: Path, fitted: TransformerClassifier, tmp_path: Path
) -> None:
    inputs, _ = _toy_set(8, seed=1)
    fitted.save(tmp_path / "model")

    loaded = TransformerClassifier.load(tmp_path / "model")

    np.testing.assert_array_equal(loaded.logits(inputs), fitted.logits(inputs))
    config = json.loads((tmp_path / "model" / "config.json").read_text(encoding="utf-8"))
    assert [config["id2label"][str(i)] for i in range(len(LABELS))] == list(LABELS)
    assert loaded.model.config.id2label == dict(enumerate(LABELS))
    settings = json.loads((tmp_path / "model" / "transformer.json").read_text(encoding="utf-8"))
    assert settings["base_model"] == str(tiny_bert)
    assert (settings["max_length"], settings["stride"], settings["aggregation"]) == (64, 16, "mean")
    assert loaded.tokenizer.model_max_length == 64


def test_fit_leaves_an_ood_detector_of_the_training_embeddings(
    fitted: TransformerClassifier, tmp_path: Path
) -> None:
    inputs, _ = _toy_set()

    embeddings = fitted.item_embeddings(inputs)
    scored = fitted.score_items(inputs)
    logits, distances = scored.logits, scored.ood_distance

    assert fitted.ood is not None
    assert embeddings.shape == (40, fitted.model.config.hidden_size)
    np.testing.assert_allclose(logits, fitted.logits(inputs), rtol=1e-6, atol=1e-6)
    assert distances is not None and distances.shape == (40,)
    np.testing.assert_allclose(distances, fitted.ood.distances(embeddings), rtol=1e-6)
    # The threshold is the training items' 99th percentile: at most one of 40 reaches it.
    assert (distances >= fitted.ood.threshold).sum() <= 1

    fitted.save(tmp_path / "model")
    loaded = TransformerClassifier.load(tmp_path / "model")
    assert loaded.ood is not None
    assert loaded.ood.threshold == fitted.ood.threshold
    reloaded = loaded.score_items(inputs).ood_distance
    assert reloaded is not None
    np.testing.assert_allclose(reloaded, distances, rtol=1e-6)


def test_a_model_saved_without_a_detector_scores_no_distances(
    fitted: TransformerClassifier, tmp_path: Path
) -> None:
    inputs, _ = _toy_set(4)
    fitted.save(tmp_path / "model")
    (tmp_path / "model" / "ood.npz").unlink()

    loaded = TransformerClassifier.load(tmp_path / "model")

    assert loaded.ood is None
    assert loaded.score_items(inputs).ood_distance is None


def test_a_tampered_label_map_is_incompatible(
    fitted: TransformerClassifier, tmp_path: Path
) -> None:
    fitted.save(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["id2label"] = {"0": "Overturned", "1": "Upheld"}
    config_path.write_text(json.dumps(config), encoding="utf-8")

    with pytest.raises(IncompatibleModelError) as caught:
        TransformerClassifier.load(tmp_path / "model")

    assert str(caught.value).startswith(
        f"{tmp_path / 'model'}: config.json id2label is {{0: 'Overturned', 1: 'Upheld'}}, "
        "expected {0: 'Upheld', 1: 'Overturned'}"
    )


def test_loading_missing_files_names_the_directory(
    fitted: TransformerClassifier, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no transformer\.json"):
        TransformerClassifier.load(tmp_path / "nothing-here")

    fitted.save(tmp_path / "model")
    shutil.move(tmp_path / "model" / "model.safetensors", tmp_path / "weights.bak")
    loaded = TransformerClassifier.load(tmp_path / "model")  # the network is read on first use
    with pytest.raises(ModelNotFoundError, match=r"no file named model\.safetensors"):
        _ = loaded.model
    with pytest.raises(ModelNotFoundError, match=r"no file named model\.safetensors"):
        loaded.select_backend("torch")


# --------------------------------------------------------- the GPU config, run small

CLINICAL_BERT_VOCAB = 28_996  # emilyalsentzer/Bio_ClinicalBERT (BERT-base cased vocab)


def _clinical_like_bert(directory: Path) -> Path:
    """The tiny BERT with Bio_ClinicalBERT's vocabulary size and casing: a cased WordPiece
    vocabulary trained on the fixture letters, filled up with unused tokens to 28,996."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import (  # type: ignore[attr-defined]  # the fast alias is not in the stubs
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
    )

    from tiny_bert import SPECIAL_TOKENS

    letters = Path(__file__).resolve().parents[1] / "fixtures" / "letters"
    corpus = [path.read_text(encoding="utf-8") for path in sorted(letters.glob("*.txt"))]
    wordpiece = BertWordPieceTokenizer(lowercase=False, strip_accents=False)
    wordpiece.train_from_iterator(
        iter(corpus), vocab_size=800, min_frequency=1, special_tokens=SPECIAL_TOKENS
    )
    vocab = list(wordpiece.get_vocab(with_added_tokens=True))
    vocab = sorted(vocab, key=wordpiece.get_vocab(with_added_tokens=True).__getitem__)
    vocab += [f"[unused{i}]" for i in range(CLINICAL_BERT_VOCAB - len(vocab))]
    directory.mkdir(parents=True)
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(str(directory / "vocab.txt"), do_lower_case=False)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=CLINICAL_BERT_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertForSequenceClassification(config).save_pretrained(str(directory))
    return directory


def test_bio_clinicalbert_config_trains_on_every_window_from_a_local_path(
    tmp_path: Path,
) -> None:
    from imr_outcome.model.encoders import encode_windows
    from imr_outcome.train.config import load_config

    class Steps(TrainerCallback):
        max_steps = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            Steps.max_steps = int(state.max_steps)

    weights = _clinical_like_bert(tmp_path / "Bio_ClinicalBERT")
    experiments = Path(__file__).resolve().parents[2] / "experiments"
    config = load_config(
        experiments / "bio_clinicalbert.yaml",
        [f"model.base_model={weights}", "training.epochs=2", "training.torch_threads=2"],
    )
    assert config.training.precision == "auto"
    assert config.training.windows_per_item is None
    inputs, labels = _toy_set(8)
    # Long summaries: several 512-token windows per item.
    inputs = [ModelInput(i.text, " ".join([i.text_pair] * 60), 0) for i in inputs]

    assert isinstance(config.model, TransformerConfig)
    assert (config.model.max_length, config.training.batch_size) == (512, 16)
    classifier = TrainableTransformer(config.model, config.training, [Steps()])
    classifier.fit(inputs, labels)

    assert classifier.model.config.vocab_size == CLINICAL_BERT_VOCAB
    assert classifier.tokenizer("MRI")["input_ids"] != classifier.tokenizer("mri")["input_ids"]
    n_windows = len(encode_windows(classifier.tokenizer, inputs, 512, config.model.stride))
    assert n_windows > len(inputs)
    assert Steps.max_steps == -(-2 * n_windows // 16)  # every window, both epochs
