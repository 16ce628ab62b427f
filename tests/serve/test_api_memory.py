"""The server hands memory a model call freed back to the OS after every call."""

from __future__ import annotations

import platform
import time
from typing import Any

import pytest

from imr_outcome.errors import DeadlineExceededError
from imr_outcome.serve import api_calls
from imr_outcome.serve.predictor import PredictInput


class _Failing:
    def predict_batch(self, items: Any, **kwargs: Any) -> Any:
        raise DeadlineExceededError("integrated gradients ran past the deadline")


def test_freed_memory_is_released_even_when_the_model_call_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[bool] = []
    monkeypatch.setattr(api_calls, "release_freed_memory", lambda: released.append(True))
    item = PredictInput(request="MRI of the lumbar spine", summary="Low back pain for a year.")

    with pytest.raises(DeadlineExceededError):
        api_calls.score(
            _Failing(),  # type: ignore[arg-type]
            [item],
            explain=[False],
            top_k=3,
            deadline=time.monotonic() + 1,
            max_explain_chars=10_000,
        )
    assert released == [True]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_malloc_trim_is_found_and_callable() -> None:
    assert api_calls._malloc_trim() is not None
    api_calls.release_freed_memory()
