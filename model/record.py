"""The record behind each estimate: outcome rates and similar past decisions (issue 20).

:func:`build_record` is called once at registration with the model's training items;
:class:`Record` is saved in the model directory (``record/``) and answers, per request,
the Overturned rates of its kind (:mod:`imr_outcome.model.outcome_rates`) and the most
similar past decisions (:mod:`imr_outcome.model.precedents`). Nothing is read from the
data folder at serve time.

The rationale excerpts stored here are display only: the index is built from model
inputs, and a test poisons the excerpts to prove they never reach a vector.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from imr_outcome.data.model_input import ModelInput
from imr_outcome.data.schema import LABELS
from imr_outcome.errors import IncompatibleModelError, InvalidInputError
from imr_outcome.model.outcome_rates import OutcomeRates, RateLookup, RateRow, request_kind
from imr_outcome.model.precedents import (
    LSA_COMPONENTS,
    Precedent,
    PrecedentIndex,
    TfidfRepresentation,
    load_representation,
    save_representation,
)
from imr_outcome.model.vector_index import HNSW_MIN_ITEMS, VectorIndex, Vectors

if TYPE_CHECKING:
    import datasets

EmbedFn = Callable[[Sequence[ModelInput]], npt.NDArray[Any]]
"""Model inputs (n) -> item embeddings, shape ``(n, d)``."""

#: Sub-folder of a model directory that holds the record.
RECORD_DIR = "record"
#: Bump when the layout changes incompatibly.
FORMAT_VERSION = 1
#: Similar decisions returned by default.
DEFAULT_K = 5
#: Human-readable sources, by dataset split.
SOURCE_LABELS = {
    "dwc": "California DWC IMR decisions",
    "dmhc": "California DMHC IMR decisions",
}


@dataclass(frozen=True)
class RecordItem:
    """One decided training item, with what the record counts and shows.

    Attributes:
        item_id: dataset row id.
        letter_id: the letter (DWC case number) or DMHC reference id (``group_id``).
        fold_group: the merged near-duplicate group (``fold_group``).
        request: the request text.
        label: 0 Upheld, 1 Overturned.
        request_category: the dataset's request category.
        year: decision year; decision_date: ISO decision date (display).
        diagnosis: DMHC diagnosis category.
        rationale_excerpt: display only, never a model input.
        source: ``"dwc"`` or ``"dmhc"``.
    """

    item_id: str
    letter_id: str
    fold_group: str
    request: str
    label: int
    request_category: str | None = None
    year: int | None = None
    decision_date: str | None = None
    diagnosis: str | None = None
    rationale_excerpt: str | None = None
    source: str = "dwc"

    def precedent(self) -> Precedent:
        """This item as a :class:`Precedent` to display (and to rank like requests first)."""
        kind = request_kind(self.request, self.request_category, self.source)
        return Precedent(
            item_id=self.item_id,
            case_number=self.letter_id,
            decision_date=self.decision_date,
            year=self.year,
            request=self.request,
            outcome=LABELS[self.label],
            rationale_excerpt=self.rationale_excerpt,
            request_category=kind.category,
            request_item=kind.item,
        )


def record_items(split: datasets.Dataset) -> list[RecordItem]:
    """The :class:`RecordItem` of each row of a dataset split, in order.

    Reads only ids, groups, request, label, category, year, diagnosis and the
    display-only columns (a dataset without them gives None); never the summary.

    Raises:
        InvalidInputError: a required column is missing.
    """
    required = {"id", "group_id", "fold_group", "request", "label"}
    missing = sorted(required - set(split.column_names))
    if missing:
        raise InvalidInputError("dataset", f"missing columns {missing}; rebuild it")
    wanted = [
        c
        for c in (
            *sorted(required),
            "request_category",
            "report_year",
            "decision_date",
            "diagnosis_category",
            "rationale_excerpt",
            "source",
        )
        if c in split.column_names
    ]
    columns = split.select_columns(wanted).to_dict()
    n = len(split)

    def column(name: str) -> list[Any]:
        return list(columns.get(name, [None] * n))

    years = column("report_year")
    return [
        RecordItem(
            item_id=str(item_id),
            letter_id=str(letter),
            fold_group=str(group),
            request=str(request),
            label=int(label),
            request_category=column("request_category")[i],
            year=int(years[i]) if years[i] is not None else None,
            decision_date=column("decision_date")[i],
            diagnosis=column("diagnosis_category")[i],
            rationale_excerpt=column("rationale_excerpt")[i],
            source=str(column("source")[i] or "dwc"),
        )
        for i, (item_id, letter, group, request, label) in enumerate(
            zip(
                column("id"),
                column("group_id"),
                column("fold_group"),
                column("request"),
                column("label"),
                strict=True,
            )
        )
    ]


@dataclass(frozen=True)
class RecordLookup:
    """What the record says about one request: ready for the output row.

    Attributes:
        rates: the Overturned rates of its category, item (and DMHC diagnosis).
        similar: the most similar past decisions, most similar first.
    """

    rates: RateLookup
    similar: list[Precedent] = field(default_factory=list)


class Record:
    """Outcome rates and the similar-decisions index of one model.

    Attributes:
        rates: the :class:`OutcomeRates` table.
        precedents: the :class:`PrecedentIndex`.
        representation: ``"tfidf"`` or ``"encoder"``: what :meth:`lookup` needs as
            ``vectors`` (nothing for tfidf; the model's item embeddings for encoder).
        tfidf: the fitted TF-IDF representation (tfidf only).
    """

    def __init__(
        self,
        rates: OutcomeRates,
        precedents: PrecedentIndex,
        representation: str,
        tfidf: TfidfRepresentation | None = None,
    ) -> None:
        if representation not in ("tfidf", "encoder"):
            raise InvalidInputError("representation", f"unknown {representation!r}")
        if representation == "tfidf" and tfidf is None:
            raise InvalidInputError("tfidf", "a tfidf record needs its fitted representation")
        self.rates = rates
        self.precedents = precedents
        self.representation = representation
        self.tfidf = tfidf

    def vectors(
        self, inputs: Sequence[ModelInput], embed: EmbedFn | None = None
    ) -> Vectors | npt.NDArray[Any]:
        """Query vectors of ``inputs`` in the record's representation.

        Args:
            inputs: model inputs (n).
            embed: the model's embedding function (encoder records only).

        Raises:
            InvalidInputError: an encoder record without ``embed``.
        """
        if self.tfidf is not None:
            return self.tfidf.transform(inputs)
        if embed is None:
            raise InvalidInputError(
                "vectors", "this record indexes encoder embeddings; pass the model's embed"
            )
        return embed(inputs)

    def lookup(
        self,
        inputs: Sequence[ModelInput],
        vectors: Vectors | npt.NDArray[Any] | None = None,
        *,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        k: int = DEFAULT_K,
        exclude_groups: Sequence[Sequence[str] | str | None] | None = None,
    ) -> list[RecordLookup]:
        """Rates and the ``k`` most similar past decisions of each input, decisions on
        the same requested item first, then the same category
        (:meth:`~imr_outcome.model.precedents.PrecedentIndex.query`'s ``like``).

        Args:
            inputs: model inputs (n), built with ``build_model_input``.
            vectors: their vectors, shape ``(n, d)``; None for tfidf records (computed
                here), required for encoder records (the model's item embeddings).
            metadata: per input, pre-filing metadata (``diagnosis_category`` for DMHC).
            k: similar decisions per input, >= 1.
            exclude_groups: per input, a letter / case number whose items are never
                returned (its own letter, when the input comes from a letter).

        Returns:
            n :class:`RecordLookup`, in input order.

        Raises:
            InvalidInputError: ``k`` < 1, missing vectors, or mismatched lengths.
        """
        if vectors is None:
            vectors = self.vectors(inputs)
        similar = self.precedents.query(
            vectors,
            k=k,
            exclude_groups=exclude_groups,
            like=[self.rates.request_kind(item.caller_request) for item in inputs],
        )
        metas = list(metadata) if metadata is not None else [None] * len(inputs)
        if len(metas) != len(inputs):
            raise InvalidInputError("metadata", f"{len(metas)} entries for {len(inputs)} inputs")
        return [
            RecordLookup(
                rates=self.rates.lookup(
                    item.caller_request, diagnosis=(meta or {}).get("diagnosis_category")
                ),
                similar=found,
            )
            for item, meta, found in zip(inputs, metas, similar, strict=True)
        ]

    def save(self, model_dir: Path) -> Path:
        """Write the record into ``model_dir/record`` (created); returns that folder."""
        directory = model_dir / RECORD_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.rates.save(directory)
        self.precedents.save(directory)
        if self.tfidf is not None:
            save_representation(self.tfidf, directory)
        meta = {"format_version": FORMAT_VERSION, "representation": self.representation}
        (directory / "record.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, model_dir: Path) -> Record:
        """Read the record :meth:`save` wrote under ``model_dir``.

        Raises:
            IncompatibleModelError: no record, or another format version.
        """
        directory = model_dir / RECORD_DIR
        meta_path = directory / "record.json"
        if not meta_path.is_file():
            raise IncompatibleModelError(
                f"{model_dir} has no record of past decisions; re-register the model"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise IncompatibleModelError(
                f"record format {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        representation = str(meta["representation"])
        tfidf = load_representation(directory) if representation == "tfidf" else None
        return cls(
            OutcomeRates.load(directory), PrecedentIndex.load(directory), representation, tfidf
        )


def build_record(
    items: Sequence[RecordItem],
    inputs: Sequence[ModelInput],
    *,
    source_name: str,
    source_label: str | None = None,
    embed: EmbedFn | None = None,
    backend: str = "auto",
) -> Record:
    """Fit the rates and the similar-decisions index on a model's training items.

    Args:
        items: the training items (never test items), length n.
        inputs: their model inputs (``build_model_input``), length n, same order.
        source_name: ``"dwc"`` or ``"dmhc"``.
        source_label: the source shown with every rate (default: :data:`SOURCE_LABELS`).
        embed: the model's embedding function for transformer kinds
            (:func:`embedding_function`); None: TF-IDF cosine (scikit-learn kinds), in
            :data:`LSA_COMPONENTS` LSA dimensions from :data:`HNSW_MIN_ITEMS` items on.
        backend: the :class:`VectorIndex` backend (``"auto"``, ``"exact"``, ``"hnsw"``).

    Returns:
        The :class:`Record`.

    Raises:
        InvalidInputError: no items, or ``items`` and ``inputs`` of different lengths.
    """
    if not items or len(items) != len(inputs):
        raise InvalidInputError("items", f"{len(items)} items and {len(inputs)} inputs")
    label = source_label or SOURCE_LABELS.get(source_name, source_name)
    rates = OutcomeRates.fit(
        [
            RateRow(item.request, item.label, item.request_category, item.year, item.diagnosis)
            for item in items
        ],
        source_name=source_name,
        source_label=label,
    )
    tfidf = None
    if embed is None:
        large = len(items) >= HNSW_MIN_ITEMS
        tfidf = TfidfRepresentation(components=LSA_COMPONENTS if large else None).fit(inputs)
        vectors: Any = tfidf.transform(inputs)
    else:
        vectors = np.asarray(embed(inputs))
    index = PrecedentIndex(
        [item.precedent() for item in items],
        [(item.letter_id, item.fold_group) for item in items],
        VectorIndex(vectors, backend=backend),
    )
    return Record(rates, index, "tfidf" if embed is None else "encoder", tfidf)


def embedding_function(classifier: object) -> EmbedFn | None:
    """The classifier's own item embeddings, or None for kinds without an encoder.

    The fine-tuned transformer's ``item_embeddings`` and the frozen encoder's ``embed``
    (mean-pooled windows); scikit-learn kinds (TF-IDF, metadata, majority) get None,
    which means TF-IDF cosine.
    """
    for name in ("item_embeddings", "embed"):
        method = getattr(classifier, name, None)
        if callable(method):
            function: EmbedFn = method
            return function
    return None
