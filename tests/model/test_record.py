from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from imr_outcome.data.dataset import load_dataset, records_from_split
from imr_outcome.data.model_input import build_model_input, record_model_input
from imr_outcome.data.schema import OutcomeText
from imr_outcome.errors import InvalidInputError
from imr_outcome.model import precedents as precedents_module
from imr_outcome.model.outcome_rates import (
    MAX_PRIOR,
    MIN_ITEM_CASES,
    OutcomeRates,
    RateRow,
    prior_strength,
    wilson_interval,
)
from imr_outcome.model.precedents import Precedent, PrecedentIndex
from imr_outcome.model.record import Record, RecordItem, build_record, record_items
from imr_outcome.model.vector_index import VectorIndex
from imr_outcome.train.pipeline import rows_from_dataset

from dataset_factory import learnable_records, write_dataset

MARKER = "zqxrationalemarker"


@pytest.mark.parametrize(
    ("overturned", "n", "low", "high"),
    # Reference values: Newcombe (1998), "Two-sided confidence intervals for the single
    # proportion", Stat Med 17: 857-872, Table I (Wilson score, method 3).
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (81, 263, 0.2553, 0.3662),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(
    overturned: int, n: int, low: float, high: float
) -> None:
    assert wilson_interval(overturned, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(InvalidInputError):
        wilson_interval(3, 2)


def test_prior_strength_pools_groups_that_differ_by_noise_only() -> None:
    same = [("cat", 40, 4, 0.1)] * 10
    spread = [("cat", 40, x, 0.1) for x in (0, 0, 0, 1, 2, 4, 6, 8, 9, 10)]

    assert prior_strength(same) == MAX_PRIOR
    assert 1.0 <= prior_strength(spread) < 50.0


def _rows() -> list[RateRow]:
    # One drug under its brand and its generic name: one item.
    rows = [RateRow("Norco 10/325 #60", int(i < 1), "pharmaceuticals", 2016) for i in range(2)]
    rows += [
        RateRow("Hydrocodone/APAP 10/325 #60", int(i < 1), "pharmaceuticals", 2016)
        for i in range(2)
    ]
    rows += [
        RateRow("Gabapentin 300mg #90", int(i < 3), "pharmaceuticals", 2017) for i in range(30)
    ]
    rows += [RateRow("Tramadol 50mg #30", 0, "pharmaceuticals", 2016) for _ in range(2)]
    rows += [RateRow("MRI of the lumbar spine", int(i < 1), None, 2016) for i in range(20)]
    return rows


def test_rates_count_interval_and_shrink_small_items_toward_their_category(tmp_path: Path) -> None:
    rates = OutcomeRates.fit(_rows(), source_name="dwc", source_label="test letters")

    norco = rates.lookup("Norco 10/325mg #120", category="pharmaceuticals")
    assert norco.category is not None and norco.item is not None
    assert (norco.category.n, norco.category.overturned) == (36, 5)
    assert (norco.item.key, norco.item.n, norco.item.overturned) == ("Hydrocodone", 4, 2)
    assert norco.item.small_sample and not norco.category.small_sample
    parent = norco.category.rate
    assert parent < norco.item.shrunk_rate < norco.item.rate
    assert norco.item.ci_low < norco.item.rate < norco.item.ci_high
    assert (norco.item.year_min, norco.item.year_max, norco.item.source) == (
        2016,
        2016,
        "test letters",
    )
    assert norco.source.n == 56
    # Fewer than MIN_ITEM_CASES: only the category is reported.
    assert MIN_ITEM_CASES > 2
    assert rates.lookup("Tramadol 50mg", category="pharmaceuticals").item is None
    # The category is derived from the request the way the dataset derives it.
    mri = rates.lookup("MRI of the lumbar spine with contrast")
    assert mri.category is not None and mri.category.key == "imaging and diagnostics"
    assert mri.item is not None and mri.item.key == "lumbar MRI"
    assert [r.level for r in mri.rates()] == ["item", "category", "source"]

    rates.save(tmp_path)
    assert OutcomeRates.load(tmp_path).lookup("Norco 10/325mg #120") == rates.lookup(
        "Norco 10/325mg #120"
    )


def test_dmhc_rates_by_treatment_subcategory_and_diagnosis() -> None:
    rows = [
        RateRow("Pharmacy: Brand Name", int(i % 2 == 0), "Pharmacy", 2014, "Mental")
        for i in range(12)
    ] + [
        RateRow("Pharmacy: Generic", int(i % 5 == 0), "Pharmacy", 2015, "Cancer") for i in range(10)
    ]

    rates = OutcomeRates.fit(rows, source_name="dmhc", source_label="DMHC table")
    found = rates.lookup("Pharmacy: Brand Name", diagnosis="Mental")

    assert found.category is not None and found.category.n == 22
    assert found.item is not None and (found.item.key, found.item.n) == ("Brand Name", 12)
    assert found.diagnosis is not None and found.diagnosis.key == "Pharmacy | Mental"


def test_a_letter_is_never_its_own_precedent_and_the_index_round_trips(tmp_path: Path) -> None:
    records = learnable_records(20)
    items = [
        dataclasses.replace(item, rationale_excerpt=f"excerpt {item.item_id}")
        for item in record_items(_split(tmp_path, records))
    ]
    inputs = [record_model_input(r) for r in records]
    record = build_record(items, inputs, source_name="dwc")

    own = [item.letter_id for item in items]
    found = record.lookup(inputs, k=5, exclude_groups=own)

    for item, lookup in zip(items, found, strict=True):
        assert len(lookup.similar) == 5
        assert all(p.case_number != item.letter_id for p in lookup.similar)
        assert [p.similarity for p in lookup.similar] == sorted(
            (p.similarity for p in lookup.similar), reverse=True
        )
        assert lookup.similar[0].rationale_excerpt == f"excerpt {lookup.similar[0].item_id}"
    record.save(tmp_path / "model")
    again = Record.load(tmp_path / "model").lookup(inputs, k=5, exclude_groups=own)
    assert again == found


def test_hnsw_finds_the_exact_neighbours_of_a_small_index(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    exact, hnsw = VectorIndex(vectors, "exact"), VectorIndex(vectors, "hnsw")

    e_idx, e_sim = exact.search(vectors[:20], 5)
    h_idx, h_sim = hnsw.search(vectors[:20], 5)

    assert (e_idx == h_idx).mean() > 0.95
    np.testing.assert_allclose(e_sim, h_sim, atol=1e-4)
    assert e_idx[:, 0].tolist() == list(range(20))
    hnsw.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    assert loaded.backend == "hnsw"
    assert (loaded.search(vectors[:20], 5)[0] == h_idx).all()
    with pytest.raises(InvalidInputError, match="dimension 16"):
        exact.search(rng.standard_normal((1, 8)), 5)


def test_precedent_index_rejects_mismatched_lengths() -> None:
    with pytest.raises(InvalidInputError):
        PrecedentIndex([], [], VectorIndex(np.eye(2)))


def _split(tmp_path: Path, records: list) -> object:  # type: ignore[type-arg]
    return load_dataset(write_dataset(tmp_path / "dataset", records))["dwc"]


def test_the_rationale_excerpt_never_reaches_a_model_input(tmp_path: Path) -> None:
    """Poison the display-only column with a marker: it must reach the displayed
    precedents and nothing a model reads (training rows, serving inputs, TF-IDF terms)."""
    records = [
        dataclasses.replace(r, rationale_excerpt=OutcomeText(f"{MARKER} {r.id} upheld.", 0, 9))
        for r in learnable_records(20)
    ]
    split = load_dataset(write_dataset(tmp_path / "dataset", records))["dwc"]
    assert all(MARKER in text for text in split["rationale_excerpt"])

    # Training: the rows every kind is fitted on.
    rows = rows_from_dataset(split, context_columns=["group_id", "request_category"])
    texts = [f"{i.text}\n{i.text_pair}" for i in rows.inputs]
    assert not any(MARKER in text for text in texts)
    assert not any(MARKER in str(v) for values in rows.context.values() for v in values)
    assert not any(MARKER in str(m) for m in rows.metadata)
    # Serving: the model input of a dataset row, as the predictor builds it.
    served = [record_model_input(r) for r in records_from_split(split)]
    assert not any(MARKER in f"{i.text}\n{i.text_pair}" for i in served)
    # The record's own index: its TF-IDF vocabulary and vectors.
    record = build_record(record_items(split), rows.inputs, source_name="dwc")
    assert record.tfidf is not None
    assert not any(MARKER in term for term in record.tfidf.vocabulary())
    record.save(tmp_path / "model")
    loaded = Record.load(tmp_path / "model")
    assert loaded.tfidf is not None
    assert not any(MARKER in term for term in loaded.tfidf.vocabulary())
    # ...while a person still reads it beside the precedents.
    found = loaded.lookup(rows.inputs[:1], k=3, exclude_groups=[rows.groups[0]])
    assert all(MARKER in (p.rationale_excerpt or "") for p in found[0].similar)


def test_a_large_tfidf_record_goes_dense_and_uses_hnsw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imr_outcome.model.record as record_module
    import imr_outcome.model.vector_index as vector_index

    monkeypatch.setattr(vector_index, "HNSW_MIN_ITEMS", 10)
    monkeypatch.setattr(record_module, "HNSW_MIN_ITEMS", 10)
    monkeypatch.setattr(record_module, "LSA_COMPONENTS", 8)
    records = learnable_records(20)
    items = record_items(_split(tmp_path, records))
    inputs = [record_model_input(r) for r in records]

    record = build_record(items, inputs, source_name="dwc")
    found = record.lookup(inputs[:3], k=4, exclude_groups=[i.letter_id for i in items[:3]])

    assert record.precedents.index.backend == "hnsw"
    assert record.precedents.index.dim == 8
    assert record.tfidf is not None and record.tfidf.svd is not None
    for item, lookup in zip(items[:3], found, strict=True):
        assert len(lookup.similar) == 4
        assert all(p.case_number != item.letter_id for p in lookup.similar)
    record.save(tmp_path / "model")
    assert not (tmp_path / "model" / "record" / "vectors.npy").exists()
    assert (
        Record.load(tmp_path / "model").lookup(
            inputs[:3], k=4, exclude_groups=[i.letter_id for i in items[:3]]
        )
        == found
    )


def test_a_table_without_summaries_is_indexed_by_its_requests() -> None:
    requests = ["Pharmacy: Brand Name", "Pharmacy: Generic", "Diagnostic Imaging: MRI"] * 4
    items = [
        RecordItem(f"R{i}", f"R{i}", f"R{i}", r, i % 2, r.split(":")[0], 2014, source="dmhc")
        for i, r in enumerate(requests)
    ]
    inputs = [build_model_input(r, "") for r in requests]

    record = build_record(items, inputs, source_name="dmhc")
    found = record.lookup(inputs[:1], k=3, exclude_groups=["R0"])

    assert record.tfidf is not None and record.tfidf.request_weight == 1.0
    assert [p.request for p in found[0].similar] == ["Pharmacy: Brand Name"] * 3
    assert found[0].rates.item is not None and found[0].rates.item.key == "Brand Name"


def _like_index(backend: str) -> PrecedentIndex:
    """Six decisions around the query vector (1, 0): the nearest are of another kind."""
    rows = [  # (case, category, item, vector)
        ("A", "surgery", "arthroscopy", (1.0, 0.0)),
        ("B", "pharmaceuticals", "Gabapentin", (0.8, 0.6)),
        ("C", "pharmaceuticals", "Norco", (0.0, 1.0)),
        ("D", "pharmaceuticals", "Norco", (0.6, 0.8)),
        ("E", "pharmaceuticals", "Norco", (1.0, 0.0)),
        ("F", "surgery", None, (0.9, 0.1)),
    ]
    precedents = [
        Precedent(f"{case}#1", case, None, 2016, "r", "Upheld", None, category, 0.0, item)
        for case, category, item, _ in rows
    ]
    vectors = np.array([vector for *_, vector in rows], dtype=np.float32)
    return PrecedentIndex(
        precedents, [(p.case_number,) for p in precedents], VectorIndex(vectors, backend)
    )


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_like_requests_come_first_then_their_category_then_the_nearest(backend: str) -> None:
    index = _like_index(backend)
    query = np.array([[1.0, 0.0]])

    plain = index.query(query, k=5, exclude_groups=["E"])
    like = index.query(query, k=5, exclude_groups=["E"], like=[("pharmaceuticals", "Norco")])
    category_only = index.query(query, k=2, exclude_groups=["E"], like=[("surgery", "Norco")])
    unknown = index.query(query, k=5, exclude_groups=["E"], like=[("dental", None)])

    assert [p.case_number for p in plain[0]] == ["A", "F", "B", "D", "C"]
    assert [p.case_number for p in like[0]] == ["D", "C", "B", "A", "F"]
    assert [p.similarity for p in like[0]] == pytest.approx([0.6, 0.0, 0.8, 1.0, 0.9939], abs=1e-4)
    assert [p.case_number for p in category_only[0]] == ["A", "F"]
    assert unknown == plain
    with pytest.raises(InvalidInputError, match="like"):
        index.query(query, k=5, like=[None, None])


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_like_first_queries_ranked_together_equal_each_ranked_alone(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A chunk of 2 puts the five queries in three chunks, the last one short.
    monkeypatch.setattr(precedents_module, "EXACT_QUERY_CHUNK", 2)
    index = _like_index(backend)
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 0.9], [1.0, 0.0], [0.3, 0.95]])
    exclude = ["E", None, ["A", "C"], "A", "E"]
    like = [
        ("pharmaceuticals", "Norco"),
        ("surgery", None),
        None,
        ("pharmaceuticals", "Gabapentin"),
        ("dental", None),
    ]

    together = index.query(queries, k=4, exclude_groups=exclude, like=like)
    alone = [
        index.query(queries[row : row + 1], k=4, exclude_groups=[exclude[row]], like=[like[row]])[0]
        for row in range(len(queries))
    ]

    assert together == alone
    assert [p.case_number for p in together[2]] == ["D", "B", "F", "E"]
    assert [p.case_number for p in together[3]] == ["B", "E", "D", "C"]
    assert [p.case_number for p in together[4]] == ["C", "D", "B", "F"]


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_search_returns_only_allowed_items_nearest_first(backend: str) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((200, 8)).astype(np.float32)
    allowed = rng.random(200) < 0.2
    index = VectorIndex(vectors, backend)

    indices, similarities = index.search(vectors[:10], 5, allowed=allowed)
    exact_idx, exact_sim = VectorIndex(vectors[allowed], "exact").search(vectors[:10], 5)

    assert indices.shape == (10, 5) and allowed[indices].all()
    assert (indices == np.flatnonzero(allowed)[exact_idx]).mean() > 0.95
    np.testing.assert_allclose(similarities, exact_sim, atol=1e-4)
    none_allowed = index.search(vectors[:3], 5, allowed=np.zeros(200, dtype=bool))
    assert none_allowed[0].shape == (3, 0)
    with pytest.raises(InvalidInputError, match="allowed"):
        index.search(vectors[:1], 5, allowed=allowed[:10])


def test_an_hnsw_filter_that_cannot_be_met_falls_back_to_ranking_the_allowed_items() -> None:
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((100, 8)).astype(np.float32)
    index = VectorIndex(vectors, "hnsw")
    graph = index._search

    class Unreachable:
        def set_ef(self, ef: int) -> None:
            graph.set_ef(ef)

        def knn_query(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("Cannot return the results in a contiguous 2D array")

        def get_items(self, ids: object) -> object:
            return graph.get_items(ids)

    index._search = Unreachable()
    allowed = np.arange(100) % 7 == 0

    indices, similarities = index.search(vectors[:4], 3, allowed=allowed)
    exact_idx, exact_sim = VectorIndex(vectors[allowed], "exact").search(vectors[:4], 3)

    assert (indices == np.flatnonzero(allowed)[exact_idx]).all()
    np.testing.assert_allclose(similarities, exact_sim, atol=1e-5)


def test_the_record_serves_decisions_on_the_same_item_first() -> None:
    requests = ["Norco 10/325mg #60"] * 3 + ["Physical therapy 8 sessions"] * 6
    summary = "The injured worker reports chronic low back pain radiating to the left leg."
    items = [
        RecordItem(f"CM16-{i:07d}#1", f"CM16-{i:07d}", f"CM16-{i:07d}", r, i % 2)
        for i, r in enumerate(requests)
    ]
    inputs = [
        build_model_input(r, summary if "therapy" in r else "Post-operative shoulder care.")
        for r in requests
    ]
    record = build_record(items, inputs, source_name="dwc")

    query = [build_model_input("Norco 5/325mg #30", summary)]
    found = record.lookup(query, k=4)[0].similar

    assert [p.request_item for p in found[:3]] == ["Hydrocodone"] * 3
    assert found[3].request_item == "physical therapy"
    assert found[3].similarity > found[0].similarity
