from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pytest
import torch

from imr_outcome.data.model_input import MetadataValue, ModelInput, build_model_input
from imr_outcome.errors import IncompatibleModelError, InvalidInputError
from imr_outcome.model.attribution_spans import (
    Attribution,
    TokenAttribution,
    WordAttribution,
    phrase_spans,
    strongest_disjoint,
    word_scores,
)
from imr_outcome.model.attribution_tokens import token_attributions
from imr_outcome.model.base import model_frame
from imr_outcome.model.baselines import TfidfLogReg
from imr_outcome.model.encoders import encode_windows
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.prediction import EvidenceSpan
from imr_outcome.model.transformer import TransformerClassifier
from imr_outcome.serve.evidence import CANDIDATE_FACTOR, content_bounds, explain, to_span

from toy_cue import CUE, FILLER, REQUEST, toy_inputs, toy_items, toy_transformer
from toy_cue import toy_info as _info
from toy_cue import wrap_toy as _wrap

IntArray = npt.NDArray[np.int64]

METADATA: dict[str, MetadataValue] = {
    "patient_age": 48,
    "patient_sex": "Female",
    "diagnosis_category": "Musculoskeletal",
}


def _toy_set(
    n: int = 24, seed: int = 0, metadata: dict[str, MetadataValue] | None = None
) -> tuple[list[ModelInput], IntArray]:
    items, labels = toy_items(n, seed, metadata=metadata)
    return toy_inputs(items), labels


@pytest.fixture(scope="module")
def transformer(tiny_bert: Path) -> OutcomeModel:
    return _wrap(toy_transformer(tiny_bert), "integrated_gradients")


@pytest.fixture(scope="module")
def tfidf() -> TfidfLogReg:
    """TF-IDF + LR where the metadata prefix is as telling as the cue (female = Overturned)."""
    rng = np.random.default_rng(0)
    labels = np.arange(24, dtype=np.int64) % 2
    metadata = [{**METADATA, "patient_sex": "Female" if y else "Male"} for y in labels]
    inputs = [
        build_model_input(REQUEST, " ".join(rng.choice(FILLER, 2)) + " " + CUE[int(y)], meta)
        for y, meta in zip(labels, metadata, strict=True)
    ]
    return TfidfLogReg(ngram_max=2, min_df=1).fit(model_frame(inputs, metadata), labels)


def _text(span: EvidenceSpan | Attribution, request: str, summary: str) -> str:
    return request if span.field == "request" else summary


def _piece_offsets(classifier: TransformerClassifier, text: str) -> set[tuple[int, int]]:
    """Offsets of the word pieces of ``text`` tokenized on its own."""
    encoding = classifier.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return {(start, end) for start, end in encoding["offset_mapping"] if end > start}


# ------------------------------------------------------------- integrated gradients

ODD_TEXTS = {
    "accents": (
        "Physiothérapie — café x 12",
        "Naïve Ångström résumé: Lumbar pain persists. Without improvement documented.",
    ),
    "cjk_and_emoji": (
        "MRI 東京 🙂",
        "患者 reports 🙂 pain.東京。 Without improvement documented. ﬁne",
    ),
    "odd_whitespace": (
        "Physical\ttherapy\u00a0\u00a0x 12",
        "Gait is normal.\n\n  Without\timprovement   documented.\r\n"
        "\u3000Seen in follow-up today. ",
    ),
    "case_and_combining_marks": (
        "PHYSICAL THERAPY",
        "GAIT IS NORMAL. WITHOUT IMPROVEMENT DOCUMENTED. İstanbul cafe\u0301",
    ),
}


@pytest.mark.parametrize("case", sorted(ODD_TEXTS))
def test_spans_index_the_callers_exact_strings(transformer: OutcomeModel, case: str) -> None:
    request, summary = ODD_TEXTS[case]
    model_input = build_model_input(request, summary, METADATA)

    spans = explain(transformer, model_input, request, summary, top_k=50, n_steps=8)

    assert spans
    assert {span.field for span in spans} == {"request", "summary"}
    for span in spans:
        text = _text(span, request, summary)
        assert 0 <= span.start < span.end <= len(text)
        assert span.text == text[span.start : span.end]
        assert span.text == span.text.strip()  # spans start and end on words
    for field in ("request", "summary"):
        ordered = sorted((s.start, s.end) for s in spans if s.field == field)
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(ordered))


@pytest.mark.parametrize("case", sorted(ODD_TEXTS))
def test_token_offsets_are_the_fields_own_tokens_without_the_metadata_prefix(
    transformer: OutcomeModel, case: str
) -> None:
    request, summary = ODD_TEXTS[case]
    classifier = transformer.classifier
    assert isinstance(classifier, TransformerClassifier)
    model_input = build_model_input(request, summary, METADATA)
    assert model_input.request_offset > 0

    tokens = token_attributions(classifier, model_input, n_steps=4)

    found = {
        field: {(t.start, t.end) for t in tokens if t.field == field}
        for field in ("request", "summary")
    }
    assert found["request"] == _piece_offsets(classifier, request)
    assert found["summary"] == _piece_offsets(classifier, summary)


def test_directions_follow_the_sign_of_the_summed_token_attributions(
    transformer: OutcomeModel,
) -> None:
    classifier = transformer.classifier
    assert isinstance(classifier, TransformerClassifier)
    # Integrated gradients explain the change from the all-[PAD] baseline; the saturated
    # toy model puts that baseline in one class, so explain an item of the other class.
    # 512 steps: see test_integrated_gradients_are_complete.
    request, summary = max(
        ((REQUEST, f"{FILLER[0]} {CUE[label]}") for label in (0, 1)),
        key=lambda pair: abs(_margin_change(classifier, build_model_input(*pair))),
    )
    model_input = build_model_input(request, summary)
    tokens = token_attributions(classifier, model_input, n_steps=512)

    spans = explain(transformer, model_input, request, summary, top_k=50, n_steps=512)
    stretches = transformer.explain(model_input, request, summary, top_k=150, n_steps=512)

    assert max(span.weight for span in spans) > 1.0  # not a flat path: signs mean something
    for span in spans:
        # a span is a stretch trimmed to its content words; its weight is the stretch's
        (stretch,) = [
            s
            for s in stretches
            if s.field == span.field and s.start <= span.start and span.end <= s.end
        ]
        inside = [
            t.score
            for t in tokens
            if t.field == span.field and stretch.start <= t.start and t.end <= stretch.end
        ]
        assert sum(inside) == pytest.approx(stretch.score, rel=1e-6, abs=1e-9)
        assert span.weight == abs(stretch.score)
        assert span.direction == ("Overturned" if stretch.score > 0 else "Upheld")
    weights = [span.weight for span in spans]
    assert weights == sorted(weights, reverse=True)


def test_top_k_keeps_the_strongest_spans_of_each_direction(transformer: OutcomeModel) -> None:
    request, summary = ODD_TEXTS["odd_whitespace"]
    model_input = build_model_input(request, summary)

    every = explain(transformer, model_input, request, summary, top_k=50, n_steps=8)
    top = explain(transformer, model_input, request, summary, top_k=2, n_steps=8)

    for direction in ("Overturned", "Upheld"):
        expected = [(s.field, s.start, s.end) for s in every if s.direction == direction][:2]
        assert [(s.field, s.start, s.end) for s in top if s.direction == direction] == expected
    assert len(every) > len(top)


def test_a_long_summary_is_explained_in_every_window(transformer: OutcomeModel) -> None:
    classifier = transformer.classifier
    assert isinstance(classifier, TransformerClassifier)
    summary = " ".join(FILLER * 6) + " " + CUE[1]
    model_input = build_model_input(REQUEST, summary, METADATA)
    windows = encode_windows(classifier.tokenizer, [model_input], 64, 16)
    first_window_end = max(
        end
        for (_, end), sequence in zip(
            windows.offset_mapping[0], windows.sequence_ids[0], strict=True
        )
        if sequence == 1
    )
    assert len(windows) >= 3

    tokens = token_attributions(classifier, model_input, n_steps=8)
    spans = explain(transformer, model_input, REQUEST, summary, top_k=100, n_steps=8)

    summary_tokens = {(t.start, t.end) for t in tokens if t.field == "summary"}
    assert summary_tokens == _piece_offsets(classifier, summary)
    late = [s for s in spans if s.field == "summary" and s.start >= first_window_end]
    assert late


def test_overlapping_windows_average_their_attributions(transformer: OutcomeModel) -> None:
    """A token's score is the mean over the windows holding it.

    Each window is re-attributed on its own, as an input whose summary is just that
    window's chunk (the summary is built from one-piece words, so the chunk tokenizes to
    the same ids), and the chunked result must be the per-window mean.
    """
    classifier = transformer.classifier
    assert isinstance(classifier, TransformerClassifier)
    one_piece = "pain relief progress documented functional improvement without medical"
    summary = "  ".join([one_piece] * 8)
    model_input = build_model_input(REQUEST, summary, METADATA)
    windows = encode_windows(classifier.tokenizer, [model_input], 64, 16)
    assert len(windows) >= 3

    chunked = token_attributions(classifier, model_input, n_steps=8)

    collected: dict[tuple[str, int, int], list[float]] = {}
    for offsets, sequences in zip(windows.offset_mapping, windows.sequence_ids, strict=True):
        chunk = [span for span, sequence in zip(offsets, sequences, strict=True) if sequence == 1]
        begin, finish = chunk[0][0], chunk[-1][1]
        alone = build_model_input(REQUEST, summary[begin:finish], METADATA)
        for t in token_attributions(classifier, alone, n_steps=8):
            shift = begin if t.field == "summary" else 0
            collected.setdefault((t.field, t.start + shift, t.end + shift), []).append(t.score)
    assert {(t.field, t.start, t.end) for t in chunked} == set(collected)
    assert len(collected[("request", 0, 8)]) == len(windows)  # "Physical", in every window
    assert max(len(scores) for scores in collected.values()) == len(windows)
    assert any(len(scores) == 2 for key, scores in collected.items() if key[0] == "summary")
    # A mean differs from a sum here: the strongest token clears the tolerance tenfold (the
    # toy fit's scale varies with the suite's order: 0.0004 to above 0.01 was seen).
    tolerance = 1e-5
    assert max(abs(t.score) for t in chunked) > 10 * tolerance
    for t in chunked:
        expected = float(np.mean(collected[(t.field, t.start, t.end)]))
        assert t.score == pytest.approx(expected, rel=1e-3, abs=tolerance)


def _margin_change(classifier: TransformerClassifier, model_input: ModelInput) -> float:
    """margin(input) - margin(IG baseline) of a one-window input, computed directly."""
    windows = encode_windows(classifier.tokenizer, [model_input], 64, 16)
    assert len(windows) == 1
    features = {key: torch.tensor([value]) for key, value in windows.features(0).items()}
    pad = classifier.tokenizer.pad_token_id
    ids = zip(windows.input_ids[0], windows.sequence_ids[0], strict=True)
    baseline_ids = torch.tensor([[token if sequence is None else pad for token, sequence in ids]])
    with torch.no_grad():
        logits = classifier.model(**features).logits[0]
        baseline = classifier.model(**{**features, "input_ids": baseline_ids}).logits[0]
    return float((logits[1] - logits[0]) - (baseline[1] - baseline[0]))


def test_integrated_gradients_are_complete(transformer: OutcomeModel) -> None:
    """Sum of attributions = margin(input) - margin(baseline) (Sundararajan et al. 2017).

    Checked with n_steps=512 Gauss-Legendre points, to 2% of the margin change (plus 0.05
    logits). The saturated toy model flips its margin within a sliver of the path, so the
    quadrature needs many points: on nine fits the error was up to 100% at 32-64 points,
    4% at 128, 6% at 256 and below 0.01% at 512.
    """
    classifier = transformer.classifier
    assert isinstance(classifier, TransformerClassifier)
    summaries = [f"{FILLER[0]} {CUE[label]}" for label in (0, 1)]
    changes = []
    for summary in summaries:
        model_input = build_model_input(REQUEST, summary)
        change = _margin_change(classifier, model_input)

        total = sum(t.score for t in token_attributions(classifier, model_input, n_steps=512))

        assert total == pytest.approx(change, rel=0.02, abs=0.05), summary
        changes.append(abs(change))
    assert max(changes) > 1.0  # the inputs move the margin: the check is not vacuous


# -------------------------------------------------------------------------- TF-IDF


def test_tfidf_evidence_finds_the_cue_in_the_right_direction(tfidf: TfidfLogReg) -> None:
    model = _wrap(tfidf, "tfidf_coefficients")
    for label, direction in ((1, "Overturned"), (0, "Upheld")):
        request, summary = "Physical\ttherapy  x 12", "Gait is normal.\n" + CUE[label]
        model_input = build_model_input(request, summary, METADATA)

        spans = explain(model, model_input, request, summary, top_k=3)

        assert all(
            span.text == _text(span, request, summary)[span.start : span.end] for span in spans
        )
        strongest = max((s for s in spans if s.direction == direction), key=lambda s: s.weight)
        assert strongest.field == "summary"
        assert CUE[label].split()[0] in strongest.text
        assert len([s for s in spans if s.direction == direction]) <= 3


def test_tfidf_evidence_never_maps_prefix_hits_into_the_request(tfidf: TfidfLogReg) -> None:
    model = _wrap(tfidf, "tfidf_coefficients")
    request, summary = "Physical therapy for a female patient", CUE[1]
    model_input = build_model_input(request, summary, METADATA)
    assert "patient" in model_input.text[: model_input.request_offset]  # shared with the request

    spans = explain(model, model_input, request, summary, top_k=50)

    request_spans = [span for span in spans if span.field == "request"]
    assert request_spans
    assert all(span.text == request[span.start : span.end] for span in request_spans)
    # The patient's sex is normalised away before TF-IDF (invariance), so it is no evidence.
    assert not [span for span in request_spans if "female" in span.text]


def test_overlapping_stretches_keep_only_the_strongest() -> None:
    kept = strongest_disjoint(
        [
            Attribution("summary", 0, 10, 0.2),
            Attribution("summary", 0, 22, 0.5),
            Attribution("summary", 11, 22, -0.3),
            Attribution("summary", 23, 30, -0.45),
            Attribution("summary", 21, 25, 0.4),  # overlaps both kept neighbours
            Attribution("summary", 30, 35, -0.1),
            Attribution("request", 0, 10, 0.4),
        ]
    )

    assert kept == [
        Attribution("request", 0, 10, 0.4),
        Attribution("summary", 0, 22, 0.5),
        Attribution("summary", 23, 30, -0.45),
        Attribution("summary", 30, 35, -0.1),
    ]


def test_tfidf_evidence_on_a_long_summary_is_separate_ngrams_each_named_once(
    tfidf: TfidfLogReg,
) -> None:
    """Every word and bigram of the fixture is a feature (min_df=1); merging overlapping
    n-grams used to chain a whole summary into one stretch."""
    model = _wrap(tfidf, "tfidf_coefficients")
    summary = " ".join([*FILLER, CUE[1], *FILLER, CUE[1], *FILLER])
    model_input = build_model_input(REQUEST, summary, METADATA)

    spans = explain(model, model_input, REQUEST, summary, top_k=5)

    texts = [span.text.lower() for span in spans]
    assert spans and all(len(text.split()) <= 2 for text in texts)  # ngram_max=2
    assert len(texts) == len(set(texts))  # the repeated cue is listed once
    by_field = sorted((span.field, span.start, span.end) for span in spans)
    for (field, _, end), (next_field, start, _) in itertools.pairwise(by_field):
        assert field != next_field or end <= start


# ------------------------------------------------------------- words and phrases


def test_word_scores_sum_pieces_and_split_ngrams() -> None:
    request, summary = "Physio-therapy\u00a0now", "No  improvement"
    pieces = [
        TokenAttribution("request", 0, 6, 0.5),
        TokenAttribution("request", 6, 7, 0.25),
        TokenAttribution("request", 7, 14, 0.25),
        TokenAttribution("request", 15, 18, -1.0),
        Attribution("summary", 0, 15, 2.0),
    ]

    scored = word_scores(pieces, request, summary)

    assert scored == [
        WordAttribution("request", 0, 14, 1.0),
        WordAttribution("request", 15, 18, -1.0),
        WordAttribution("summary", 0, 2, 1.0),
        WordAttribution("summary", 4, 15, 1.0),
    ]


def test_phrases_stop_at_sign_changes_sentence_ends_zeros_and_eight_words() -> None:
    text = "a b. c d\ne f g h i j k l m n"
    spans = [match.span() for match in re.finditer(r"\S+", text)]
    scores = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0]
    words = [
        WordAttribution("summary", start, end, score)
        for (start, end), score in zip(spans, scores, strict=True)
    ]

    phrases = phrase_spans(words, text, max_words=3)

    assert [(text[p.start : p.end], p.score) for p in phrases] == [
        ("a b.", 2.0),
        ("c d", 2.0),
        ("e f", 2.0),
        ("h", 1.0),
        ("i j k", -3.0),
        ("l m n", -3.0),
    ]


# ------------------------------------------------------------------------- dispatch


def test_the_none_explainer_gives_no_spans(tfidf: TfidfLogReg) -> None:
    model_input = build_model_input(REQUEST, CUE[1])

    assert explain(_wrap(tfidf, "none"), model_input, REQUEST, CUE[1]) == []


def test_an_explainer_for_another_kind_is_incompatible(
    tfidf: TfidfLogReg, transformer: OutcomeModel
) -> None:
    model_input = build_model_input(REQUEST, CUE[1])

    with pytest.raises(
        IncompatibleModelError,
        match=r"explainer 'integrated_gradients' does not fit classifier kind 'tfidf_lr'",
    ):
        explain(_wrap(tfidf, "integrated_gradients"), model_input, REQUEST, CUE[1])
    mismatched = OutcomeModel(
        transformer.classifier,
        transformer.calibrator,
        0.5,
        _info("transformer", "tfidf_coefficients"),
    )
    with pytest.raises(IncompatibleModelError) as caught:
        explain(mismatched, model_input, REQUEST, CUE[1])
    assert str(caught.value) == (
        "explainer 'tfidf_coefficients' does not fit classifier kind 'transformer' (it explains "
        "['tfidf_lr', 'two_stage']); retrain with explainer set to one of ['gradient_x_input', "
        "'integrated_gradients', 'none', 'occlusion']"
    )
    with pytest.raises(IncompatibleModelError, match="unknown explainer 'lime'"):
        explain(_wrap(tfidf, "lime"), model_input, REQUEST, CUE[1])


def test_explain_rejects_an_input_built_from_other_text(tfidf: TfidfLogReg) -> None:
    model = _wrap(tfidf, "tfidf_coefficients")
    model_input = build_model_input(REQUEST, CUE[1], METADATA)

    with pytest.raises(InvalidInputError, match="model_input: was not built from the request"):
        explain(model, model_input, REQUEST + " ", CUE[1])
    with pytest.raises(InvalidInputError, match="top_k: expected an integer >= 1, found 0"):
        explain(model, model_input, REQUEST, CUE[1], top_k=0)


# ------------------------------------------------------------- content-word trimming


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("of the lumbar spine,", "lumbar spine"),
        ("(Norco 10/325mg #90)", "Norco 10/325mg #90"),
        ("the patient's", "patient's"),
        ("is not medically necessary.", "not medically necessary"),
        ("without improvement", "without improvement"),
        ("MRI of the", "MRI"),
        ("of the", None),
        ("a", None),
        ("...", None),
        ("état of", "état"),
    ],
)
def test_spans_are_trimmed_to_their_content_words(text: str, expected: str | None) -> None:
    summary = f"Seen today: {text} Follow-up in two weeks."
    start = summary.index(text)
    stretch = Attribution("summary", start, start + len(text), -0.75)

    span = to_span(stretch, "MRI", summary)

    if expected is None:
        assert span is None
        assert content_bounds(text) is None
    else:
        assert span is not None
        assert span.text == expected == summary[span.start : span.end]
        assert (span.weight, span.direction) == (0.75, "Upheld")


def test_function_word_stretches_are_dropped_and_replaced_by_the_next_strongest(
    monkeypatch: pytest.MonkeyPatch, tfidf: TfidfLogReg
) -> None:
    request = "MRI of the lumbar spine"
    summary = "Pain is not improving with the medications."

    def at(field: Literal["request", "summary"], words: str, score: float) -> Attribution:
        start = (request if field == "request" else summary).index(words)
        return Attribution(field, start, start + len(words), score)

    stretches = [
        at("request", "of the", 2.0),  # dropped
        at("request", "MRI", 1.5),
        at("summary", "not improving", 1.0),
        at("summary", "with the", -0.9),  # dropped
        at("request", "lumbar spine", -0.5),
    ]
    asked: list[int] = []

    def fake_explain(*args: object, top_k: int, **kwargs: object) -> list[Attribution]:
        asked.append(top_k)
        return stretches

    model = _wrap(tfidf, "tfidf_coefficients")
    monkeypatch.setattr(model, "explain", fake_explain)

    spans = explain(model, build_model_input(request, summary), request, summary, top_k=2)

    assert asked == [2 * CANDIDATE_FACTOR]
    assert [(s.text, s.direction, s.weight) for s in spans] == [
        ("MRI", "Overturned", 1.5),
        ("not improving", "Overturned", 1.0),
        ("lumbar spine", "Upheld", 0.5),
    ]
