"""Evaluation plots for P(Overturned): ROC, precision-recall, reliability, score histogram.

Figures are built as :class:`matplotlib.figure.Figure` objects drawn by the Agg canvas,
never through ``pyplot``: nothing needs a display, no global figure registry grows, and a
figure is freed once its last reference goes. The ``*_figure`` functions return the
figure (for ``mlflow.log_figure`` or a notebook); the ``plot_*`` functions write a PNG.

Every function takes labels ``y`` (0 = Upheld, 1 = Overturned) and ``p``, the probability
of Overturned, and works when only one class is present: the ranking metrics are then
undefined, shown as ``nan`` in the title, and the curves that need both classes are left
out with a note on the axes.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm

from imr_outcome.data.schema import LABELS
from imr_outcome.model.arrays import as_labels, as_probabilities
from imr_outcome.train.metrics import (
    DEFAULT_N_BINS,
    FloatArray,
    IntArray,
    expected_calibration_error,
    reliability_curve,
)

logger = logging.getLogger(__name__)

#: Figure size in inches (width, height) and resolution; PNGs are 600 x 500 pixels.
FIGSIZE: tuple[float, float] = (6.0, 5.0)
DPI = 100

#: File names written by :func:`plot_all`, by plot name (before the prefix).
FILE_NAMES: dict[str, str] = {
    "roc": "roc.png",
    "pr": "pr.png",
    "reliability": "reliability.png",
    "score_histogram": "score_histogram.png",
}

_POSITIVE, _NEGATIVE = LABELS[1], LABELS[0]
_ONE_CLASS_NOTE = "undefined: only one class present"


def _validated(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    labels = as_labels(y, field="y")
    return labels, as_probabilities(p, labels.size, "p")


def _both_classes(y: IntArray) -> bool:
    return 0 < int(y.sum()) < y.size


def _new_figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _note(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="0.3")


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    figure.clear()
    logger.debug("wrote %s", path)
    return path


# ------------------------------------------------------------------------------ figures


def roc_figure(y: npt.ArrayLike, p: npt.ArrayLike) -> Figure:
    """ROC curve of P(Overturned), Overturned positive, with the chance diagonal.

    Args:
        y: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].

    Returns:
        The figure; its title states the AUROC (Hanley & McNeil 1982), ``nan`` on one class.

    Raises:
        InvalidInputError: bad labels or probabilities.
    """
    labels, probs = _validated(y, p)
    figure, axes = _new_figure()
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.6", label="chance")
    auroc = math.nan
    if _both_classes(labels):
        fpr, tpr, _ = skm.roc_curve(labels, probs)
        auroc = float(skm.roc_auc_score(labels, probs))
        axes.plot(fpr, tpr, drawstyle="steps-post", label=f"model (n={labels.size})")
    else:
        _note(axes, _ONE_CLASS_NOTE)
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel=f"false positive rate ({_NEGATIVE} flagged)",
        ylabel=f"true positive rate (recall of {_POSITIVE})",
        title=f"ROC: AUROC = {auroc:.3f}",
    )
    axes.legend(loc="lower right")
    return figure


def pr_figure(y: npt.ArrayLike, p: npt.ArrayLike) -> Figure:
    """Precision-recall curve of Overturned, with the prevalence (no-skill) baseline.

    Args:
        y: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].

    Returns:
        The figure; its title states the AUPRC (average precision, scikit-learn
        ``average_precision_score``) and the prevalence; AUPRC is ``nan`` on one class.

    Raises:
        InvalidInputError: bad labels or probabilities.
    """
    labels, probs = _validated(y, p)
    prevalence = float(labels.mean())
    figure, axes = _new_figure()
    axes.axhline(prevalence, linestyle="--", color="0.6", label=f"prevalence = {prevalence:.3f}")
    auprc = math.nan
    if _both_classes(labels):
        precision, recall, _ = skm.precision_recall_curve(labels, probs)
        auprc = float(skm.average_precision_score(labels, probs))
        axes.plot(recall, precision, drawstyle="steps-post", label=f"model (n={labels.size})")
    else:
        _note(axes, _ONE_CLASS_NOTE)
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel=f"recall of {_POSITIVE}",
        ylabel=f"precision of {_POSITIVE}",
        title=f"Precision-recall: AUPRC = {auprc:.3f} (prevalence {prevalence:.3f})",
    )
    axes.legend(loc="best")
    return figure


def reliability_figure(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = DEFAULT_N_BINS) -> Figure:
    """Reliability diagram: observed Overturned rate against mean P(Overturned) per bin.

    Equal-width bins from :func:`imr_outcome.train.metrics.reliability_curve` (DeGroot &
    Fienberg 1983; Niculescu-Mizil & Caruana 2005); the diagonal is perfect calibration,
    and the bars (right axis) count the items per bin. Empty bins are not drawn.

    Args:
        y: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].
        n_bins: the number of bins on [0, 1], >= 1.

    Returns:
        The figure; its title states the ECE with the same bins.

    Raises:
        InvalidInputError: bad labels, probabilities or ``n_bins``.
    """
    labels, probs = _validated(y, p)
    mean_p, frac_pos, count = reliability_curve(labels, probs, n_bins)
    ece = expected_calibration_error(labels, probs, n_bins)
    figure, axes = _new_figure()

    counts_axes = axes.twinx()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts_axes.bar(
        edges[:-1], count, width=np.diff(edges), align="edge", color="0.85", edgecolor="0.6"
    )
    counts_axes.set_ylabel("items per bin")
    counts_axes.set_ylim(0, max(1, int(count.max())) * 3)  # bars in the lower third
    axes.set_zorder(counts_axes.get_zorder() + 1)
    axes.patch.set_visible(False)

    axes.plot([0, 1], [0, 1], linestyle="--", color="0.6", label="perfect calibration")
    filled = count > 0
    axes.plot(mean_p[filled], frac_pos[filled], marker="o", label=f"model (n={labels.size})")
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel=f"mean predicted P({_POSITIVE})",
        ylabel=f"observed fraction {_POSITIVE}",
        title=f"Reliability: ECE = {ece:.3f} ({n_bins} bins)",
    )
    axes.legend(loc="upper left")
    return figure


def score_histogram_figure(y: npt.ArrayLike, p: npt.ArrayLike) -> Figure:
    """Histograms of P(Overturned) for truly Upheld and truly Overturned items.

    Args:
        y: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].

    Returns:
        The figure (20 bins on [0, 1], one histogram per class present); its title
        states the AUROC, ``nan`` on one class.

    Raises:
        InvalidInputError: bad labels or probabilities.
    """
    labels, probs = _validated(y, p)
    figure, axes = _new_figure()
    bins = [k / 20 for k in range(21)]
    for label_id, name in enumerate(LABELS):
        scores = probs[labels == label_id]
        if scores.size:
            axes.hist(scores, bins=bins, alpha=0.6, label=f"true {name} (n={scores.size})")
    auroc = float(skm.roc_auc_score(labels, probs)) if _both_classes(labels) else math.nan
    axes.set(
        xlim=(0, 1),
        xlabel=f"predicted P({_POSITIVE})",
        ylabel="items",
        title=f"Scores by true class: AUROC = {auroc:.3f}",
    )
    axes.legend(loc="upper center")
    return figure


# ------------------------------------------------------------------------------- files


def plot_roc(y: npt.ArrayLike, p: npt.ArrayLike, path: Path) -> Path:
    """Write :func:`roc_figure` as a PNG to ``path`` (parents created); returns ``path``."""
    return _save(roc_figure(y, p), path)


def plot_pr(y: npt.ArrayLike, p: npt.ArrayLike, path: Path) -> Path:
    """Write :func:`pr_figure` as a PNG to ``path`` (parents created); returns ``path``."""
    return _save(pr_figure(y, p), path)


def plot_reliability(
    y: npt.ArrayLike, p: npt.ArrayLike, path: Path, n_bins: int = DEFAULT_N_BINS
) -> Path:
    """Write :func:`reliability_figure` as a PNG to ``path``; returns ``path``."""
    return _save(reliability_figure(y, p, n_bins), path)


def plot_score_histogram(y: npt.ArrayLike, p: npt.ArrayLike, path: Path) -> Path:
    """Write :func:`score_histogram_figure` as a PNG to ``path``; returns ``path``."""
    return _save(score_histogram_figure(y, p), path)


def plot_all(
    y: npt.ArrayLike, p: npt.ArrayLike, out_dir: Path, prefix: str = ""
) -> dict[str, Path]:
    """Write the four evaluation plots into ``out_dir`` (created).

    Args:
        y: shape (n,), labels 0 (Upheld) or 1 (Overturned).
        p: shape (n,), probabilities of Overturned in [0, 1].
        out_dir: the folder to write into.
        prefix: prepended to each file name, e.g. ``"test_"`` gives ``test_roc.png``.

    Returns:
        Plot name (the keys of :data:`FILE_NAMES`) -> the PNG written.

    Raises:
        InvalidInputError: bad labels or probabilities (nothing is written then).
    """
    labels, probs = _validated(y, p)
    out_dir = Path(out_dir)
    writers = {
        "roc": plot_roc,
        "pr": plot_pr,
        "reliability": plot_reliability,
        "score_histogram": plot_score_histogram,
    }
    return {
        name: write(labels, probs, out_dir / f"{prefix}{FILE_NAMES[name]}")
        for name, write in writers.items()
    }
