"""How much a model's P(Overturned) moves under counterfactual rewrites.

For each rewrite of :data:`imr_outcome.data.counterfactuals.REWRITES` the request, the
summary and every string metadata value (so a sex swap also swaps ``patient_sex``) are
rewritten, the model input is rebuilt with
:func:`imr_outcome.data.model_input.build_model_input`, and the change in
P(Overturned) is summarised. A fair model scores the case, not its wording: the issue's
target is a mean |dP| of at most 0.005 per rewrite, with AUROC not lower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from imr_outcome.data.counterfactuals import REWRITES, Rewrite
from imr_outcome.data.model_input import MetadataValue, ModelInput, build_model_input
from imr_outcome.errors import InvalidInputError

PredictOverturned = Callable[[list[ModelInput]], "NDArray[np.floating] | Sequence[float]"]
Metadata = Mapping[str, MetadataValue] | None


@dataclass(frozen=True)
class InvarianceFigure:
    """The effect of one rewrite on P(Overturned).

    Attributes:
        n_items: items scored.
        n_changed: items whose request, summary or metadata the rewrite changed.
        mean_abs_delta: mean |P_after - P_before| over the changed items only (0-1; NaN
            when none changed), so items the rewrite cannot touch do not dilute it.
        max_abs_delta: largest |dP| (0-1; 0 when none changed).
        mean_abs_delta_all: mean |dP| over all items (unchanged items count as 0).
        auroc_before: AUROC on all items before the rewrite (None without labels or
            when the labels hold one class).
        auroc_after: AUROC on all items after the rewrite (same conditions).
    """

    n_items: int
    n_changed: int
    mean_abs_delta: float
    max_abs_delta: float
    mean_abs_delta_all: float
    auroc_before: float | None = None
    auroc_after: float | None = None


def _rewrite_metadata(metadata: Metadata, rewrite: Rewrite) -> Metadata:
    if metadata is None:
        return None
    return {
        key: rewrite(value) if isinstance(value, str) else value for key, value in metadata.items()
    }


def _predict(
    predict_overturned: PredictOverturned, inputs: list[ModelInput]
) -> NDArray[np.float64]:
    if not inputs:
        return np.zeros(0)
    scores = np.asarray(predict_overturned(inputs), dtype=np.float64)
    if scores.shape != (len(inputs),):
        raise InvalidInputError(
            "predict_overturned",
            f"expected P(Overturned) of shape ({len(inputs)},), got {scores.shape}",
        )
    return scores


def _auroc(labels: NDArray[np.int64] | None, scores: NDArray[np.float64]) -> float | None:
    if labels is None or len(np.unique(labels)) < 2:
        return None
    return float(roc_auc_score(labels, scores))


def invariance_report(
    predict_overturned: PredictOverturned,
    requests: Sequence[str],
    summaries: Sequence[str],
    metadata: Sequence[Metadata] | None = None,
    *,
    labels: Sequence[int] | None = None,
    rewrites: Mapping[str, Rewrite] | None = None,
) -> dict[str, InvarianceFigure]:
    """Score held-out items before and after each rewrite.

    Only the changed items are scored again (the model is assumed deterministic), so
    the cost is one pass plus one pass per rewrite over the items it changes.

    Args:
        predict_overturned: maps a list of ``n`` :class:`ModelInput` to P(Overturned),
            shape ``(n,)``, values 0-1.
        requests: the requests, length ``n``.
        summaries: the case summaries, length ``n``.
        metadata: pre-filing metadata per item (length ``n``), or None for none.
        labels: 1 = Overturned, 0 = Upheld, length ``n``; adds AUROC before/after.
        rewrites: named rewrites; default :data:`REWRITES`.

    Returns:
        An :class:`InvarianceFigure` per rewrite name.

    Raises:
        InvalidInputError: when the sequences differ in length, there are no items, or
            ``predict_overturned`` returns the wrong shape.
    """
    n = len(requests)
    if n == 0:
        raise InvalidInputError("requests", "is empty; give at least one held-out item")
    metadata_rows: Sequence[Metadata] = metadata if metadata is not None else [None] * n
    for name, values in (("summaries", summaries), ("metadata", metadata_rows), ("labels", labels)):
        if values is not None and len(values) != n:
            raise InvalidInputError(name, f"has {len(values)} items, requests has {n}")
    label_array = None if labels is None else np.asarray(labels, dtype=np.int64)
    before = _predict(
        predict_overturned,
        [
            build_model_input(r, s, m)
            for r, s, m in zip(requests, summaries, metadata_rows, strict=True)
        ],
    )
    auroc_before = _auroc(label_array, before)
    report: dict[str, InvarianceFigure] = {}
    for name, rewrite in (rewrites if rewrites is not None else REWRITES).items():
        changed_rows: list[int] = []
        inputs: list[ModelInput] = []
        for index, (request, summary, meta) in enumerate(
            zip(requests, summaries, metadata_rows, strict=True)
        ):
            new = (rewrite(request), rewrite(summary), _rewrite_metadata(meta, rewrite))
            if new != (request, summary, meta):
                changed_rows.append(index)
                inputs.append(build_model_input(*new))
        changed = np.asarray(changed_rows, dtype=np.intp)
        after = before.copy()
        after[changed] = _predict(predict_overturned, inputs)
        delta = np.abs(after - before)
        report[name] = InvarianceFigure(
            n_items=n,
            n_changed=int(changed.size),
            mean_abs_delta=float(delta[changed].mean()) if changed.size else math.nan,
            max_abs_delta=float(delta.max()),
            mean_abs_delta_all=float(delta.mean()),
            auroc_before=auroc_before,
            auroc_after=_auroc(label_array, after),
        )
    return report


def flatten_report(
    report: Mapping[str, InvarianceFigure], prefix: str = "invariance"
) -> dict[str, float]:
    """Flat dot-keys for MLflow, e.g. ``invariance.sex_swap.mean_abs_delta``.

    Args:
        report: the output of :func:`invariance_report`.
        prefix: the key prefix.

    Returns:
        ``{f"{prefix}.{rewrite}.{field}": value}``; None fields are left out, counts
        are floats.
    """
    flat: dict[str, float] = {}
    for name, figure in report.items():
        for field, value in asdict(figure).items():
            if value is not None:
                flat[f"{prefix}.{name}.{field}"] = float(value)
    return flat
