"""The interface every classifier kind implements, and the registry of kinds.

A classifier maps model inputs (:class:`imr_outcome.data.model_input.ModelInput`, built
only from pre-filing text) to two-class logits. Calibration and the decision threshold
are applied on top by :class:`imr_outcome.model.model.OutcomeModel`, so a
classifier only has to produce scores that rank well.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

import numpy as np
import numpy.typing as npt

from imr_outcome.data.model_input import ModelInput
from imr_outcome.errors import IncompatibleModelError

if TYPE_CHECKING:
    from imr_outcome.model.ood import MahalanobisOod

Logits = npt.NDArray[np.float64]
"""Shape ``(n, 2)``: unnormalized scores for [Upheld, Overturned] (label-id order)."""


@dataclass(frozen=True)
class ItemScores:
    """What one inference pass of a classifier gives per item.

    Attributes:
        logits: shape ``(n, 2)``, see :data:`Logits`.
        windows: shape ``(n,)``, token windows each item was cut into (1 for kinds that
            do not window).
        ood_distance: shape ``(n,)``, each item's distance from the training items as the
            classifier's :attr:`Classifier.ood` detector measures it; None without one.
    """

    logits: Logits
    windows: npt.NDArray[np.int64]
    ood_distance: npt.NDArray[np.float64] | None


def single_windows(logits: Logits) -> ItemScores:
    """:class:`ItemScores` of a kind that neither windows nor detects OOD inputs."""
    return ItemScores(logits, np.ones(len(logits), dtype=np.int64), None)


class Classifier(Protocol):
    """A fitted two-class classifier over model inputs: what a saved model loads.

    Implementations own their inference and persistence (like setfit's model object);
    fitting (:class:`imr_outcome.train.pipeline.Estimator`), training loops, tracking and
    calibration live in training.
    """

    #: Name of the kind, as written in configs and in ``imr_model.json``.
    kind: ClassVar[str]
    #: Whether the kind reads the request / the case summary (warnings about text a
    #: model ignores are noise).
    reads_request: ClassVar[bool]
    reads_summary: ClassVar[bool]
    #: Out-of-distribution detector fitted on the training items, or None.
    ood: MahalanobisOod | None

    def logits(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> Logits:
        """Scores for each input, shape ``(n, 2)``; softmax of a row is the raw probability."""
        ...

    def score_items(
        self, inputs: Sequence[ModelInput], metadata: Sequence[dict[str, Any]] | None = None
    ) -> ItemScores:
        """Logits, windows per item and OOD distances from one inference pass."""
        ...

    def save(self, directory: Path) -> None:
        """Write everything needed by :meth:`load` into ``directory`` (created if missing)."""
        ...

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read a classifier written by :meth:`save`."""
        ...


_KINDS: dict[str, Callable[[], type[Any]]] = {}


def register_kind(kind: str, loader: Callable[[], type[Any]]) -> None:
    """Register a classifier kind; ``loader`` imports and returns its class lazily.

    Lazy loading keeps ``import imr_outcome.model`` light: torch and transformers are
    imported only when a transformer kind is used.
    """
    _KINDS[kind] = loader


def classifier_class(kind: str) -> type[Any]:
    """The classifier class registered under ``kind``.

    Raises:
        IncompatibleModelError: when no such kind is registered.
    """
    if kind not in _KINDS:
        raise IncompatibleModelError(
            f"unknown classifier kind {kind!r}; known kinds: {sorted(_KINDS)}"
        )
    return _KINDS[kind]()


def _lazy(module: str, name: str) -> Callable[[], type[Any]]:
    def load() -> type[Any]:
        cls: type[Any] = getattr(importlib.import_module(module), name)
        return cls

    return load


register_kind("majority", _lazy("imr_outcome.model.baselines", "MajorityClassifier"))
register_kind("tfidf_lr", _lazy("imr_outcome.model.baselines", "TfidfLogReg"))
register_kind("metadata_lr", _lazy("imr_outcome.model.baselines", "MetadataLogReg"))
register_kind("frozen_encoder_lr", _lazy("imr_outcome.model.frozen_encoder", "FrozenEncoderLogReg"))
register_kind("transformer", _lazy("imr_outcome.model.transformer", "TransformerClassifier"))
