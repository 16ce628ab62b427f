from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from imr_outcome.data.model_input import record_model_input
from imr_outcome.model.precedents import PrecedentIndex
from imr_outcome.model.record import RecordItem
from imr_outcome.train.retrieval_eval import FoldRetrieval, RetrievalLeakError, retrieval_cv

from dataset_factory import learnable_records


def _items() -> tuple[list[RecordItem], list[Any]]:
    records = learnable_records(40)
    items = [
        RecordItem(r.id, r.group_id, r.group_id, r.request, r.label, r.request_category)
        for r in records
    ]
    return items, [record_model_input(r) for r in records]


def test_retrieval_finds_like_cases_from_training_folds_only() -> None:
    items, inputs = _items()

    report = retrieval_cv(items, inputs, folds=4, seed=1, k=5)

    assert (report.n_items, report.n_folds, report.leaks) == (len(items), 4, 0)
    assert report.retrieved == 5 * len(items)
    # The invented summaries carry an outcome cue sentence: like cases share it.
    assert report.auroc > 0.9
    assert report.category_share == 1.0
    assert set(report.figures()) >= {"retrieval.auroc", "retrieval.category_share"}


def test_a_retrieved_item_of_the_query_letter_fails_the_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items, inputs = _items()
    query = PrecedentIndex.query

    def leaky(
        self: PrecedentIndex, vectors: Any, k: int = 5, exclude_groups: Any = None, like: Any = None
    ) -> Any:
        return query(self, vectors, k=k, exclude_groups=None, like=like)

    monkeypatch.setattr(PrecedentIndex, "query", leaky)
    # With exclusions off, a test item still never finds its own letter in the training
    # folds; put a copy of it there under its letter to see the check fire.
    items[1] = RecordItem(
        items[1].item_id, items[0].letter_id, items[0].fold_group, items[0].request, 0
    )
    inputs[1] = inputs[0]
    with pytest.raises(RetrievalLeakError, match="query's letter or a test fold"):
        FoldRetrieval(items, [i.item_id for i in items], inputs)(
            0,
            0,
            SimpleNamespace(classifier=object()),  # type: ignore[arg-type]
            SimpleNamespace(ids=[items[0].item_id]),  # type: ignore[arg-type]
        )


def test_the_fold_hook_skips_later_repeats_and_uses_the_model_representation() -> None:
    items, inputs = _items()
    hook = FoldRetrieval(items, [i.item_id for i in items], inputs)
    model = SimpleNamespace(classifier=object())

    hook(1, 0, model, SimpleNamespace(ids=[items[0].item_id]))  # type: ignore[arg-type]
    assert hook.report is None
    hook(0, 0, model, SimpleNamespace(ids=[i.item_id for i in items[:10]]))  # type: ignore[arg-type]
    assert hook.report is not None
    assert (hook.report.representation, hook.report.n_items) == ("tfidf", 10)
