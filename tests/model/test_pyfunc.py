"""The MLflow pyfunc: a bad row comes back with its error, never as an exception."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imr_outcome.model.baselines import TfidfLogReg
from imr_outcome.model.pyfunc import ImrOutcomePyfunc
from imr_outcome.model.scoring import OUTPUT_FIELDS

from toy_cue import REQUEST, toy_frame, toy_items, wrap_toy


@pytest.fixture(scope="module")
def pyfunc() -> ImrOutcomePyfunc:
    items, labels = toy_items(24, 0)
    classifier = TfidfLogReg(min_df=1).fit(toy_frame(items), np.asarray(labels))
    wrapped = ImrOutcomePyfunc()
    wrapped.model = wrap_toy(classifier, "none")
    return wrapped


@pytest.mark.parametrize("missing", [None, np.nan, "  "])
def test_a_missing_request_is_that_row_s_error_and_the_others_are_scored(
    pyfunc: ImrOutcomePyfunc, missing: object
) -> None:
    frame = pd.DataFrame({"request": [REQUEST, missing], "summary": ["Gait is normal.", "x"]})

    scored = pyfunc.predict(None, frame)  # type: ignore[arg-type]

    assert list(scored.columns) == list(OUTPUT_FIELDS)
    good, bad = scored.to_dict("records")
    assert good["error"] is None and 0 < good["p_overturned"] < 1
    assert str(bad["error"]).startswith("request: is empty")
    assert bad["p_overturned"] != bad["p_overturned"] and bad["label"] is None  # NaN, None


def test_a_missing_summary_is_scored_as_no_summary(pyfunc: ImrOutcomePyfunc) -> None:
    frame = pd.DataFrame({"request": [REQUEST] * 3, "summary": [None, np.nan, ""]})

    scored = pyfunc.predict(None, frame)  # type: ignore[arg-type]

    assert scored["p_overturned"].nunique() == 1
