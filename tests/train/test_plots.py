from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib import pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from imr_outcome.errors import InvalidInputError
from imr_outcome.train.plots import (
    DPI,
    FIGSIZE,
    plot_all,
    plot_reliability,
    pr_figure,
    reliability_figure,
    roc_figure,
    score_histogram_figure,
)

# Six items: AUROC 8/9 = 0.889; average precision (1 + 1 + 3/4) / 3 = 0.917; one item
# per 10-wide bin, so ECE = (0.05 + 0.15 + 0.75 + 0.55 + 0.35 + 0.15) / 6 = 0.333.
Y = [0, 0, 1, 0, 1, 1]
P = [0.05, 0.15, 0.25, 0.55, 0.65, 0.85]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXPECTED_PIXELS = (round(FIGSIZE[1] * DPI), round(FIGSIZE[0] * DPI))


def _bar_heights(axes: Axes) -> list[float]:
    return [patch.get_height() for patch in axes.patches if isinstance(patch, Rectangle)]


def _assert_plausible_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(_PNG_SIGNATURE), path
    assert 5_000 < len(data) < 500_000, (path, len(data))
    assert matplotlib.image.imread(path).shape[:2] == _EXPECTED_PIXELS


def test_plot_all_writes_four_prefixed_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, size=200), 0, 1)

    written = plot_all(y, p, tmp_path / "plots", prefix="test_")

    assert {name: path.name for name, path in written.items()} == {
        "roc": "test_roc.png",
        "pr": "test_pr.png",
        "reliability": "test_reliability.png",
        "score_histogram": "test_score_histogram.png",
    }
    assert sorted(path.name for path in (tmp_path / "plots").iterdir()) == sorted(
        path.name for path in written.values()
    )
    for path in written.values():
        _assert_plausible_png(path)
    assert plt.get_fignums() == []


def test_titles_state_the_metrics() -> None:
    assert roc_figure(Y, P).axes[0].get_title() == "ROC: AUROC = 0.889"
    assert pr_figure(Y, P).axes[0].get_title() == (
        "Precision-recall: AUPRC = 0.917 (prevalence 0.500)"
    )
    assert reliability_figure(Y, P).axes[0].get_title() == "Reliability: ECE = 0.333 (10 bins)"
    assert score_histogram_figure(Y, P).axes[0].get_title() == (
        "Scores by true class: AUROC = 0.889"
    )


def test_reliability_bars_count_items_per_bin() -> None:
    figure = reliability_figure([0, 1, 1, 0, 1], [0.05, 0.08, 0.5, 0.52, 0.97], n_bins=4)

    assert _bar_heights(figure.axes[1]) == [2, 1, 1, 1]


def test_score_histogram_splits_by_true_class() -> None:
    figure = score_histogram_figure(Y, P)

    legend = figure.axes[0].get_legend()

    assert legend is not None
    assert [text.get_text() for text in legend.get_texts()] == [
        "true Upheld (n=3)",
        "true Overturned (n=3)",
    ]
    assert sum(_bar_heights(figure.axes[0])) == len(Y)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_gives_nan_metrics_and_still_writes(label: int, tmp_path: Path) -> None:
    y = [label] * 5
    p = [0.1, 0.3, 0.5, 0.7, 0.9]

    written = plot_all(y, p, tmp_path)

    assert roc_figure(y, p).axes[0].get_title() == "ROC: AUROC = nan"
    assert pr_figure(y, p).axes[0].get_title().startswith("Precision-recall: AUPRC = nan")
    assert score_histogram_figure(y, p).axes[0].get_title().endswith("AUROC = nan")
    for path in written.values():
        _assert_plausible_png(path)


def test_invalid_input_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"^p: expected one probability per label"):
        plot_all(Y, P[:-1], tmp_path / "plots")
    with pytest.raises(InvalidInputError, match=r"^y: expected labels 0 \(Upheld\)"):
        plot_reliability([0, 2], [0.1, 0.2], tmp_path / "plots" / "reliability.png")

    assert not (tmp_path / "plots").exists()
