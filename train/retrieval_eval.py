"""Does retrieval find like cases? The similar-decisions check on grouped CV (issue 20).

On every fold of one repeat of grouped cross-validation (``StratifiedGroupKFold`` over
the merged letter groups, the same splits as the first repeat of
:func:`imr_outcome.train.evaluate.cross_validate`), a record (:func:`build_record`) is
built from the training folds only, and each held-out item retrieves its ``k`` most
similar past decisions from it, excluding its own letter, like requests first (the same
requested item, then the same category), as serving ranks them. Reported:

* ``auroc``: AUROC of the k-NN outcome vote (share of Overturned among the ``k``
  retrieved) against the held-out labels, pooled over folds (target >= 0.60);
  ``auroc_weighted``: the same with the vote weighted by similarity;
* ``category_share``: the share of retrieved items with the query's request category
  (target >= 0.60);
* ``leaks``: retrieved items from the query's letter or from a test fold; anything but 0
  raises :class:`RetrievalLeakError`.

The representation is the model's own: its classifier's embeddings where it has an
encoder (:func:`~imr_outcome.model.record.embedding_function`), else TF-IDF cosine.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import InvalidInputError
from imr_outcome.model.model import OutcomeModel
from imr_outcome.model.record import (
    DEFAULT_K,
    EmbedFn,
    Record,
    RecordItem,
    build_record,
    embedding_function,
)
from imr_outcome.train.pipeline import Rows

logger = logging.getLogger(__name__)

#: The issue's targets, reported beside the figures.
TARGET_AUROC = 0.60
TARGET_CATEGORY_SHARE = 0.60


class RetrievalLeakError(AssertionError):
    """A retrieved item came from the query's letter or from a test fold (a bug in the
    index or its exclusions; the check must never see one)."""


@dataclass
class RetrievalReport:
    """Pooled out-of-fold retrieval figures of one repeat.

    Attributes:
        representation: ``"tfidf"`` or ``"encoder"``.
        k: retrieved items per query.
        n_items / n_folds: queries and folds.
        auroc / auroc_weighted: AUROC of the k-NN vote (unweighted / similarity-weighted).
        category_share: share of retrieved items sharing the query's request category.
        leaks: retrieved items from the query's letter or a test fold (always 0).
        retrieved: retrieved items in all (about ``k * n_items``).
    """

    representation: str
    k: int
    n_items: int = 0
    n_folds: int = 0
    auroc: float = float("nan")
    auroc_weighted: float = float("nan")
    category_share: float = float("nan")
    leaks: int = 0
    retrieved: int = 0
    _labels: list[int] = field(default_factory=list, repr=False)
    _votes: list[float] = field(default_factory=list, repr=False)
    _weighted: list[float] = field(default_factory=list, repr=False)
    _same_category: int = field(default=0, repr=False)

    def figures(self) -> dict[str, float]:
        """Flat MLflow metric names ``retrieval.<name>``."""
        return {
            "retrieval.auroc": self.auroc,
            "retrieval.auroc_weighted": self.auroc_weighted,
            "retrieval.category_share": self.category_share,
            "retrieval.leaks": float(self.leaks),
            "retrieval.k": float(self.k),
            "retrieval.n_items": float(self.n_items),
        }

    def add_fold(
        self,
        train_items: Sequence[RecordItem],
        train_inputs: Sequence[ModelInput],
        test_items: Sequence[RecordItem],
        test_inputs: Sequence[ModelInput],
        embed: EmbedFn | None,
    ) -> None:
        """Index ``train_*``, query with ``test_*``, check and accumulate.

        Raises:
            RetrievalLeakError: a retrieved item is a test item or from the query's letter.
        """
        record = build_record(
            train_items, train_inputs, source_name=train_items[0].source, embed=embed
        )
        vectors = record.vectors(test_inputs, embed)
        exclude = [(item.letter_id, item.fold_group) for item in test_items]
        like = [
            record.rates.request_kind(q.request, category=q.request_category) for q in test_items
        ]
        found = record.precedents.query(vectors, k=self.k, exclude_groups=exclude, like=like)
        train_ids = {item.item_id for item in train_items}
        for query, similar in zip(test_items, found, strict=True):
            for precedent in similar:
                if precedent.item_id not in train_ids or precedent.case_number == query.letter_id:
                    self.leaks += 1
            labels = np.array([p.outcome == "Overturned" for p in similar], dtype=float)
            weights = np.clip([p.similarity for p in similar], 1e-6, None)
            self._labels.append(query.label)
            self._votes.append(float(labels.mean()) if len(labels) else 0.0)
            self._weighted.append(
                float(np.average(labels, weights=weights)) if len(labels) else 0.0
            )
            self._same_category += sum(
                p.request_category == query.request_category for p in similar
            )
            self.retrieved += len(similar)
        self.n_items += len(test_items)
        self.n_folds += 1
        if self.leaks:
            raise RetrievalLeakError(
                f"{self.leaks} retrieved item(s) came from the query's letter or a test fold"
            )
        self._summarise()

    def _summarise(self) -> None:
        labels = np.asarray(self._labels)
        self.auroc = _auroc(labels, np.asarray(self._votes))
        self.auroc_weighted = _auroc(labels, np.asarray(self._weighted))
        self.category_share = self._same_category / self.retrieved if self.retrieved else 0.0


def _auroc(labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> float:
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def retrieval_cv(
    items: Sequence[RecordItem],
    inputs: Sequence[ModelInput],
    *,
    folds: int,
    seed: int,
    k: int = DEFAULT_K,
    embed: EmbedFn | None = None,
) -> RetrievalReport:
    """The retrieval check on all folds of one repeat of grouped CV, without classifiers.

    The splits are ``StratifiedGroupKFold(folds, shuffle=True, random_state=seed)`` over
    the items' ``fold_group`` and labels: those of the first repeat of ``evaluate``.

    Args:
        items: every item of the split, length n.
        inputs: their model inputs, length n.
        folds: CV folds, >= 2.
        seed: the CV seed (``training.seed``).
        k: retrieved items per query.
        embed: an embedding function whose vectors do not depend on the training folds
            (a frozen encoder); None: TF-IDF fitted on each fold's training items.

    Returns:
        The pooled :class:`RetrievalReport`.

    Raises:
        InvalidInputError: lengths differ or a single class.
        RetrievalLeakError: see :meth:`RetrievalReport.add_fold`.
    """
    if len(items) != len(inputs):
        raise InvalidInputError("items", f"{len(items)} items and {len(inputs)} inputs")
    labels = np.array([item.label for item in items])
    if len(np.unique(labels)) < 2:
        raise InvalidInputError("dataset", "needs both Upheld and Overturned items")
    report = RetrievalReport("tfidf" if embed is None else "encoder", k)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    groups = [item.fold_group for item in items]
    for train_idx, test_idx in splitter.split(np.zeros(len(items)), labels, groups):
        report.add_fold(
            [items[i] for i in train_idx],
            [inputs[i] for i in train_idx],
            [items[i] for i in test_idx],
            [inputs[i] for i in test_idx],
            embed,
        )
        logger.info("retrieval fold %d: AUROC so far %.3f", report.n_folds, report.auroc)
    return report


class FoldRetrieval:
    """The check as a ``cross_validate`` fold hook: each fold model of the first repeat
    indexes its training items in its own representation and is queried with the
    held-out items (``on_fold_model(repeat, fold, model, test_rows)``).

    Args:
        items: the :class:`RecordItem` of every row given to ``cross_validate``, in order.
        ids: the row ids, same order.
        inputs: the rows' model inputs, same order.
        k: retrieved items per query.
    """

    def __init__(
        self,
        items: Sequence[RecordItem],
        ids: Sequence[str],
        inputs: Sequence[ModelInput],
        k: int = DEFAULT_K,
    ) -> None:
        self.items = list(items)
        self.ids = list(ids)
        self.inputs = list(inputs)
        self.report: RetrievalReport | None = None
        self.k = k

    def __call__(self, repeat: int, fold: int, model: OutcomeModel, test_rows: Rows) -> None:
        """Add one fold of repeat 0 (later repeats are skipped).

        Raises:
            RetrievalLeakError: see :meth:`RetrievalReport.add_fold`.
        """
        if repeat > 0:
            return
        embed = embedding_function(model.classifier)
        if self.report is None:
            self.report = RetrievalReport("tfidf" if embed is None else "encoder", self.k)
        held_out = set(test_rows.ids)
        train = [i for i, item_id in enumerate(self.ids) if item_id not in held_out]
        test = [i for i, item_id in enumerate(self.ids) if item_id in held_out]
        self.report.add_fold(
            [self.items[i] for i in train],
            [self.inputs[i] for i in train],
            [self.items[i] for i in test],
            [self.inputs[i] for i in test],
            embed,
        )
        logger.info("retrieval fold %d: AUROC so far %.3f", fold, self.report.auroc)


def record_for_model(
    model: OutcomeModel, items: Sequence[RecordItem], inputs: Sequence[ModelInput]
) -> Record:
    """The record of a fitted model: rates and the similar-decisions index over its
    training items, in the model's own representation (what registration saves).

    Args:
        model: the fitted model.
        items: its training items (never test items), length n.
        inputs: their model inputs, length n.

    Raises:
        InvalidInputError: no items, or lengths differ.
    """
    if not items:
        raise InvalidInputError("items", "no training items for the record")
    return build_record(
        items, inputs, source_name=items[0].source, embed=embedding_function(model.classifier)
    )
