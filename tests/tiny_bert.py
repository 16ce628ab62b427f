"""Build a tiny random BERT and a WordPiece tokenizer trained on fixture text, offline.

:func:`make_tiny_bert` writes a directory that ``from_pretrained`` reads like any saved
model, so tests can pass it as ``model.base_model`` (a local path) without downloads.
The weights are random (seeded): the model learns only what a test trains into it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import AddedToken, BertWordPieceTokenizer
from transformers import (  # type: ignore[attr-defined]  # the fast alias is not in the stubs
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
)

from imr_outcome.data.schema import LABELS

#: Special tokens in id order; ``[PAD]`` is id 0, as in BERT.
SPECIAL_TOKENS: list[str | AddedToken] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

#: Target WordPiece vocabulary size (the fixture corpus may yield fewer entries).
VOCAB_SIZE = 800

#: Seed of the random initialization.
SEED = 0


def train_vocabulary(corpus: Iterable[str], path: Path) -> Path:
    """Train a WordPiece vocabulary on ``corpus`` into ``path`` (special tokens first, the
    rest sorted).

    The trainer breaks ties between equally frequent merges with a per-process hash, so the
    same corpus gives another vocabulary (another token set at the size cut) in every
    process. The tests therefore read :data:`FIXTURE_VOCAB`, trained once with this
    function on the invented fixture letters; rerun it when those letters change.
    """
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(
        iter(corpus), vocab_size=VOCAB_SIZE, min_frequency=1, special_tokens=SPECIAL_TOKENS
    )
    folder = path.parent / f"{path.name}.training"
    folder.mkdir(parents=True, exist_ok=True)
    wordpiece.save_model(str(folder))
    tokens = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    specials = [str(token) for token in SPECIAL_TOKENS]
    ordered = specials + sorted(token for token in tokens if token not in specials)
    path.write_text("\n".join(ordered) + "\n", encoding="utf-8")
    return path


#: The vocabulary trained once on tests/fixtures/letters (see :func:`train_vocabulary`).
FIXTURE_VOCAB = Path(__file__).resolve().parent / "fixtures" / "tiny_bert_vocab.txt"


def make_tiny_bert(directory: Path, vocabulary: Path = FIXTURE_VOCAB) -> Path:
    """Save a WordPiece tokenizer and a tiny random BERT (seeded) in ``directory``.

    Architecture: hidden size 32, 2 layers, 2 heads, feed-forward 64, 512 positions
    (the BERT-base layout of Devlin et al. 2019, scaled down), a 2-way classification
    head labelled with :data:`LABELS`.

    Args:
        directory: where to save (created if missing).
        vocabulary: a WordPiece ``vocab.txt`` (default: :data:`FIXTURE_VOCAB`).

    Returns:
        ``directory``, now holding ``config.json``, ``model.safetensors`` and the tokenizer.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_bytes(vocabulary.read_bytes())
    tokenizer = BertTokenizerFast.from_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))

    torch.manual_seed(SEED)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        id2label=dict(enumerate(LABELS)),
        label2id={label: index for index, label in enumerate(LABELS)},
    )
    BertForSequenceClassification(config).save_pretrained(str(directory))
    return directory
