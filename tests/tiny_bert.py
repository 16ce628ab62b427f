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


def make_tiny_bert(directory: Path, corpus: Iterable[str]) -> Path:
    """Train a WordPiece tokenizer on ``corpus`` and save it with a tiny random BERT.

    Architecture: hidden size 32, 2 layers, 2 heads, feed-forward 64, 512 positions
    (the BERT-base layout of Devlin et al. 2019, scaled down), a 2-way classification
    head labelled with :data:`LABELS`.

    Args:
        directory: where to save (created if missing).
        corpus: texts to train the tokenizer on (invented fixture text, never real data).

    Returns:
        ``directory``, now holding ``config.json``, ``model.safetensors`` and the tokenizer.
    """
    directory.mkdir(parents=True, exist_ok=True)
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(
        iter(corpus), vocab_size=VOCAB_SIZE, min_frequency=1, special_tokens=SPECIAL_TOKENS
    )
    wordpiece.save_model(str(directory))  # vocab.txt
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
