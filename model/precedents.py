"""Similar past decisions: a cosine nearest-neighbour index over the training items.

Each indexed item keeps what a person reads beside an estimate (:class:`Precedent`): the
case number, decision date, request, outcome and a short excerpt of the decision's own
rationale. The excerpt is display only: the vectors come from the model input alone
(:func:`~imr_outcome.data.model_input.build_model_input`), never from the rationale.

Representations (the champion's own, chosen by :mod:`imr_outcome.model.record`):

* ``tfidf`` (scikit-learn kinds): :class:`TfidfRepresentation`, TF-IDF cosine of the
  style-blind request and summary, each block L2-normalised and weighted, so that the
  similarity is ``w * cos(requests) + (1 - w) * cos(summaries)``; from
  :data:`~imr_outcome.model.vector_index.HNSW_MIN_ITEMS` items on, projected to
  :data:`LSA_COMPONENTS` dense LSA dimensions so that an HNSW graph can index it;
* ``encoder`` (transformer kinds): the model's item embeddings, L2-normalised.

Search: :class:`~imr_outcome.model.vector_index.VectorIndex` (exact, or an HNSW graph
from :data:`~imr_outcome.model.vector_index.HNSW_MIN_ITEMS` items on). Similar decisions
are ranked like requests first (:meth:`PrecedentIndex.query`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import IncompatibleModelError, InvalidInputError
from imr_outcome.model.vector_index import VectorIndex, Vectors, unit_rows

#: Weight of the request block in the TF-IDF similarity (the summary gets the rest). The
#: like-first tiers already group by request, so within a tier the summary ranks.
#: ``/tmp`` probe of stop 34 (``retrieval_cv`` with the default overridden), k-NN vote
#: AUROC over 5-fold CV seeds 20-24, chosen on those: weight 0 0.593, 0.25 0.610,
#: 0.5 0.592, 0.75 0.579, 1 0.562; on seed 13 (``evaluate``'s repeat) 0.5 -> 0.25 moved it
#: 0.575 -> 0.588 (experiments/README.md).
REQUEST_WEIGHT = 0.25
#: Stop words stay in the TF-IDF vocabularies: "no", "not", "without" and "after" carry the
#: case ("no relief", "not working", "after surgery"). ``experiments/retrieval_tfidf_sweep.py``
#: (stop 35), k-NN vote AUROC, mean of seeds 20-24: English stop list 0.610, none 0.626
#: (higher on each of the 5); seed 13 0.588 -> 0.603.
STOP_WORDS: str | None = None
#: LSA dimensions of a TF-IDF index of >= HNSW_MIN_ITEMS items.
LSA_COMPONENTS = 256
#: Queries ranked together on the exact backend: bounds the (chunk, n) rankings held.
EXACT_QUERY_CHUNK = 256


@dataclass(frozen=True)
class Precedent:
    """One past decision similar to a query (display fields only).

    Attributes:
        item_id: dataset row id, e.g. ``CM16-0213037#1``.
        case_number: the letter's case number (DWC) or the DMHC reference id.
        decision_date: ISO date of the decision, None when unknown.
        year: the decision's year, None when unknown.
        request: the request as the letter states it.
        outcome: ``"Upheld"`` or ``"Overturned"``.
        rationale_excerpt: the first ~300 characters of the decision's own rationale
            (display only), None when the source has none.
        request_category: the request category.
        similarity: cosine similarity to the query in [-1, 1] (0 for stored items).
        request_item: the finer requested item ("Hydrocodone", "lumbar MRI"; the DMHC
            treatment subcategory), None when none is known.
    """

    item_id: str
    case_number: str
    decision_date: str | None
    year: int | None
    request: str
    outcome: str
    rationale_excerpt: str | None
    request_category: str | None
    similarity: float = 0.0
    request_item: str | None = None


class TfidfRepresentation:
    """TF-IDF cosine over the model input: request block + summary block.

    Word 1-2-grams, sublinear tf, stop words kept (:data:`STOP_WORDS`), terms in >= 2
    items (one vocabulary per block; Salton & Buckley 1988). Fitted on the indexed items
    only. With ``components``, the weighted TF-IDF rows are projected on their top singular
    vectors (latent semantic analysis, Deerwester et al. 1990; scikit-learn
    ``TruncatedSVD``) and come out dense, so that an HNSW graph can index them: exact
    sparse search is too slow past :data:`~imr_outcome.model.vector_index.HNSW_MIN_ITEMS` items
    (``experiments/bench_similar.py``).

    Args:
        request_weight: ``w`` in ``w * cos(request) + (1 - w) * cos(summary)``, in [0, 1].
        components: LSA dimensions, or None for sparse TF-IDF (exact search).
    """

    name = "tfidf"

    def __init__(self, request_weight: float = REQUEST_WEIGHT, components: int | None = None):
        if not 0.0 <= request_weight <= 1.0:
            raise InvalidInputError("request_weight", f"must be in [0, 1], got {request_weight}")
        self.request_weight = request_weight
        self.components = components
        self.request_vectorizer = self._vectorizer()
        self.summary_vectorizer = self._vectorizer()
        self.svd: TruncatedSVD | None = None

    @staticmethod
    def _vectorizer() -> TfidfVectorizer:
        return TfidfVectorizer(
            ngram_range=(1, 2), min_df=2, sublinear_tf=True, stop_words=STOP_WORDS, dtype=np.float32
        )

    @staticmethod
    def _parts(inputs: Sequence[ModelInput]) -> tuple[list[str], list[str]]:
        return [item.text for item in inputs], [item.text_pair for item in inputs]

    def fit(self, inputs: Sequence[ModelInput]) -> TfidfRepresentation:
        """Learn both vocabularies from ``inputs`` (the indexed items); returns self.

        A block none of whose terms occurs in two items (no summaries at all, as in the
        DMHC 2001-2016 table; a handful of items) keeps every term (``min_df=1``); a block
        with no term at all gets weight 0.

        Raises:
            InvalidInputError: no item has a request term either.
        """
        requests, summaries = self._parts(inputs)
        weights = {"request": self.request_weight, "summary": 1 - self.request_weight}
        for name, vectorizer, texts in (
            ("request", self.request_vectorizer, requests),
            ("summary", self.summary_vectorizer, summaries),
        ):
            if not _fit_vocabulary(vectorizer, texts):
                weights[name] = 0.0
        if weights["request"] == weights["summary"] == 0.0:
            raise InvalidInputError("inputs", "no indexable term in any request or summary")
        total = weights["request"] + weights["summary"]
        self.request_weight = weights["request"] / total
        if self.components:
            weighted = self._weighted(inputs)
            n_components = max(1, min(self.components, weighted.shape[1] - 1, len(inputs) - 1))
            self.svd = TruncatedSVD(n_components=n_components, random_state=0).fit(weighted)
        return self

    def transform(self, inputs: Sequence[ModelInput]) -> Vectors:
        """Vectors of ``inputs``: sparse, shape ``(n, |V_request| + |V_summary|)``, rows
        of norm <= 1 (1 unless a block has no known term); with LSA dense unit rows,
        shape ``(n, components)``."""
        weighted = self._weighted(inputs)
        if self.svd is None:
            return weighted
        return unit_rows(self.svd.transform(weighted))

    def _weighted(self, inputs: Sequence[ModelInput]) -> sp.csr_matrix:
        requests, summaries = self._parts(inputs)
        blocks = [
            normalize(vectorizer.transform(texts)) * np.sqrt(weight)
            for vectorizer, texts, weight in (
                (self.request_vectorizer, requests, self.request_weight),
                (self.summary_vectorizer, summaries, 1 - self.request_weight),
            )
            if weight > 0
        ]
        return sp.csr_matrix(sp.hstack(blocks, format="csr"), dtype=np.float32)

    def vocabulary(self) -> set[str]:
        """Every term of both vocabularies (for leakage tests)."""
        return {
            term
            for vectorizer in (self.request_vectorizer, self.summary_vectorizer)
            for term in getattr(vectorizer, "vocabulary_", {})
        }


def _fit_vocabulary(vectorizer: TfidfVectorizer, texts: Sequence[str]) -> bool:
    """Fit ``vectorizer`` on ``texts``, with ``min_df=1`` when no term occurs twice;
    False when there is no term at all."""
    for min_df in (vectorizer.min_df, 1):
        try:
            vectorizer.set_params(min_df=min_df).fit(texts)
            return True
        except ValueError:  # "empty vocabulary" / "no terms remain"
            continue
    return False


class PrecedentIndex:
    """Past decisions and their vectors; :meth:`query` finds the most similar.

    Args:
        precedents: the indexed items, length n (``similarity`` unused).
        groups: the groups of each item that a query may exclude (its letter and its
            merged near-duplicate group), length n.
        index: the items' :class:`VectorIndex`, n rows in the same order.

    Raises:
        InvalidInputError: lengths differ.
    """

    def __init__(
        self,
        precedents: Sequence[Precedent],
        groups: Sequence[Sequence[str]],
        index: VectorIndex,
    ) -> None:
        if not len(precedents) == len(groups) == len(index):
            raise InvalidInputError(
                "precedents",
                f"{len(precedents)} items, {len(groups)} groups and {len(index)} vectors",
            )
        self.precedents = list(precedents)
        self.groups = [tuple(g) for g in groups]
        self.index = index
        self._group_sizes: dict[str, int] = {}
        self._members: dict[str, list[int]] = {}
        for i, item_groups in enumerate(self.groups):
            for group in set(item_groups):
                self._group_sizes[group] = self._group_sizes.get(group, 0) + 1
                self._members.setdefault(group, []).append(i)
        # Integer codes of each item's category and (category, item), for like-first tiers.
        self._kind_codes: dict[tuple[str | None, str | None], int] = {}
        self._category_code = self._codes([(p.request_category, None) for p in self.precedents])
        self._item_code = self._codes(
            [(p.request_category, p.request_item) for p in self.precedents]
        )

    def _codes(self, kinds: Sequence[tuple[str | None, str | None]]) -> npt.NDArray[np.int64]:
        return np.array([self._kind_codes.setdefault(k, len(self._kind_codes)) for k in kinds])

    def query(
        self,
        vectors: Vectors | npt.ArrayLike,
        k: int = 5,
        exclude_groups: Sequence[Sequence[str] | str | None] | None = None,
        like: Sequence[tuple[str | None, str | None] | None] | None = None,
    ) -> list[list[Precedent]]:
        """The ``k`` most similar past decisions of each query vector.

        Args:
            vectors: shape ``(q, d)``, in the index's representation.
            k: results per query, >= 1.
            exclude_groups: per query, a group id or ids (letter / case number / merged
                group) whose items are never returned: a letter is never its own
                precedent. None: exclude nothing.
            like: per query, its request's ``(category, item)``
                (:meth:`~imr_outcome.model.outcome_rates.OutcomeRates.request_kind`):
                decisions on the same requested item come first, then the same category,
                then the rest, each tier most similar first.
                A person asking how a Norco request fares reads hydrocodone decisions first,
                and the vote of the top 5 finds like cases more often that way
                (experiments/README.md). None: by similarity alone.

        Returns:
            q lists of at most ``k`` :class:`Precedent` (fewer only when the index has
            fewer eligible items), ``similarity`` set.

        Raises:
            InvalidInputError: ``k`` < 1, or ``exclude_groups`` / ``like`` of another
                length.
        """
        queries: Vectors = (
            sp.csr_matrix(vectors, dtype=np.float32)
            if sp.issparse(vectors)
            else np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        )
        excluded = self._exclusions(exclude_groups, queries.shape[0])
        if not excluded:
            return []
        if like is not None:
            if len(like) != len(excluded):
                raise InvalidInputError("like", f"{len(like)} entries for {len(excluded)} queries")
            if k < 1:
                raise InvalidInputError("k", f"must be >= 1, got {k}")
            if self.index.backend == "exact":
                return self._like_first_exact(queries, k, excluded, like)
            return [
                self._like_first(queries[row : row + 1], k, ex, kind)
                for row, (ex, kind) in enumerate(zip(excluded, like, strict=True))
            ]
        wanted = max(k + sum(self._group_sizes.get(g, 0) for g in ex) for ex in excluded)
        indices, similarities = self.index.search(queries, min(wanted, len(self.index)))
        results: list[list[Precedent]] = []
        for row, ex in enumerate(excluded):
            found: list[Precedent] = []
            for i, similarity in zip(indices[row], similarities[row], strict=True):
                if i < 0 or ex.intersection(self.groups[i]):
                    continue
                found.append(_with_similarity(self.precedents[i], float(similarity)))
                if len(found) == k:
                    break
            results.append(found)
        return results

    def _like_first_exact(
        self,
        queries: Vectors,
        k: int,
        excluded: Sequence[set[str]],
        like: Sequence[tuple[str | None, str | None] | None],
    ) -> list[list[Precedent]]:
        """Like-first results on the exact backend (see :meth:`query`): every item ranked
        once per query, the queries searched together in chunks of
        :data:`EXACT_QUERY_CHUNK` (one scikit-learn call per chunk, not per query: 14x
        faster per batch of 32, ``experiments/bench_spark.py``), then stably re-ordered
        by tier."""
        results: list[list[Precedent]] = []
        for start in range(0, queries.shape[0], EXACT_QUERY_CHUNK):
            indices, similarities = self.index.search(
                queries[start : start + EXACT_QUERY_CHUNK], len(self.index)
            )
            for row in range(indices.shape[0]):
                keep = self._eligible(excluded[start + row])[indices[row]]
                ranked, cosines = indices[row][keep], similarities[row][keep]
                order = np.argsort(self._tiers(like[start + row])[ranked], kind="stable")[:k]
                results.append(
                    [
                        _with_similarity(self.precedents[i], float(c))
                        for i, c in zip(ranked[order], cosines[order], strict=True)
                    ]
                )
        return results

    def _eligible(self, excluded: set[str]) -> npt.NDArray[np.bool_]:
        """Per indexed item: not in any of the ``excluded`` groups."""
        eligible = np.ones(len(self.precedents), dtype=bool)
        for group in excluded:
            eligible[self._members.get(group, [])] = False
        return eligible

    def _like_first(
        self, query: Vectors, k: int, excluded: set[str], like: tuple[str | None, str | None] | None
    ) -> list[Precedent]:
        """One query's ``k`` results, like requests first, on an HNSW graph (see
        :meth:`query`): searched once per tier with hnswlib's ``filter``, so a tier's items
        are found however far they lie."""
        eligible = self._eligible(excluded)
        tiers = self._tiers(like)
        found: list[Precedent] = []
        for tier in range(3):
            allowed = eligible & (tiers == tier)
            wanted = k - len(found)
            indices, similarities = self.index.search(query, wanted, allowed=allowed)
            found += [
                _with_similarity(self.precedents[i], float(s))
                for i, s in zip(indices[0], similarities[0], strict=True)
            ]
            if len(found) >= k:
                break
        return found[:k]

    def _tiers(self, like: tuple[str | None, str | None] | None) -> npt.NDArray[np.int64]:
        """Per indexed item: 0 the same requested item as ``like``, 1 the same category,
        2 another kind (all 2 when ``like`` is None or unknown to the index)."""
        tiers = np.full(len(self.precedents), 2)
        if like is None:
            return tiers
        category = self._kind_codes.get((like[0], None), -1)
        tiers[self._category_code == category] = 1
        if like[1] is not None:
            item = self._kind_codes.get((like[0], like[1]), -1)
            tiers[self._item_code == item] = 0
        return tiers

    @staticmethod
    def _exclusions(
        exclude_groups: Sequence[Sequence[str] | str | None] | None, n_queries: int
    ) -> list[set[str]]:
        if exclude_groups is None:
            return [set() for _ in range(n_queries)]
        if len(exclude_groups) != n_queries:
            raise InvalidInputError(
                "exclude_groups", f"{len(exclude_groups)} entries for {n_queries} queries"
            )
        return [
            {g} if isinstance(g, str) else set(g) if g is not None else set()
            for g in exclude_groups
        ]

    def save(self, directory: Path) -> None:
        """Write the items (JSON) and the index into ``directory`` (created)."""
        directory.mkdir(parents=True, exist_ok=True)
        items = [
            {**_as_dict(p), "groups": list(g)}
            for p, g in zip(self.precedents, self.groups, strict=True)
        ]
        (directory / "precedents.json").write_text(json.dumps(items) + "\n", encoding="utf-8")
        self.index.save(directory)

    @classmethod
    def load(cls, directory: Path) -> PrecedentIndex:
        """Read what :meth:`save` wrote.

        Raises:
            IncompatibleModelError: files missing.
        """
        path = directory / "precedents.json"
        if not path.is_file():
            raise IncompatibleModelError(f"{path} is missing; re-register the model")
        items = json.loads(path.read_text(encoding="utf-8"))
        groups = [entry.pop("groups") for entry in items]
        return cls([Precedent(**entry) for entry in items], groups, VectorIndex.load(directory))


def _as_dict(precedent: Precedent) -> dict[str, Any]:
    fields = dict(precedent.__dict__)
    fields.pop("similarity")
    return fields


def _with_similarity(precedent: Precedent, similarity: float) -> Precedent:
    return Precedent(**{**_as_dict(precedent), "similarity": round(similarity, 6)})


def save_representation(representation: TfidfRepresentation, directory: Path) -> None:
    """Pickle a fitted TF-IDF representation into ``directory`` (joblib)."""
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(representation, directory / "tfidf.joblib")


def load_representation(directory: Path) -> TfidfRepresentation:
    """Read :func:`save_representation`'s file.

    Raises:
        IncompatibleModelError: missing or not a TF-IDF representation.
    """
    path = directory / "tfidf.joblib"
    if not path.is_file():
        raise IncompatibleModelError(f"{path} is missing; re-register the model")
    loaded = joblib.load(path)
    if not isinstance(loaded, TfidfRepresentation):
        raise IncompatibleModelError(f"{path} holds {type(loaded).__name__}, not TF-IDF")
    return loaded
