"""Micro-batching of concurrent /v1/predict calls without evidence (api_calls.MicroBatcher)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.prediction import Prediction
from imr_outcome.serve.api_calls import MicroBatcher, ServerState
from imr_outcome.serve.api_limits import InFlightGate, ServeSettings
from imr_outcome.serve.predictor import PredictInput, Predictor


class CountingPredictor:
    """Answers every item with p = len(request) / 100 and records each call's size."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_batch(
        self,
        items: Sequence[PredictInput],
        *,
        explain: bool = False,
        top_k: int = 5,
        deadline: float | None = None,
        **_: Any,
    ) -> list[Prediction]:
        self.calls.append(len(items))
        if any(item.request == "bad" for item in items):
            raise InvalidInputError("request", "is bad")
        return [
            Prediction(
                p_overturned=len(item.request) / 100,
                p_upheld=1 - len(item.request) / 100,
                label="Upheld",
                threshold=0.5,
                model_name="counting",
                model_version="1",
                evidence=[],
                warnings=[],
            )
            for item in items
        ]


def _state(predictor: CountingPredictor) -> ServerState:
    state = ServerState(ServeSettings(model_uri="counting"))
    state.predictor = cast(Predictor, predictor)
    state.gate = InFlightGate(1, 64, 30.0)
    state.executor = ThreadPoolExecutor(1)
    return state


def _item(request: str) -> PredictInput:
    return PredictInput.of(request, "The summary of the case.", None, max_chars=1000)


def _submit_all(state: ServerState, requests: list[str], max_items: int) -> list[Any]:
    async def run() -> list[Any]:
        batcher = MicroBatcher(state, wait_s=0.05, max_items=max_items)
        deadline = time.monotonic() + 30
        answers = [batcher.submit(_item(request), deadline) for request in requests]
        return await asyncio.gather(*answers, return_exceptions=True)

    return asyncio.run(run())


def test_concurrent_calls_in_the_wait_window_share_one_model_call() -> None:
    predictor = CountingPredictor()
    requests = [f"MRI {'x' * n}" for n in range(5)]

    answers = _submit_all(_state(predictor), requests, max_items=16)

    assert predictor.calls == [5]
    assert [a.p_overturned for a in answers] == pytest.approx([len(r) / 100 for r in requests])


def test_a_batch_is_cut_at_the_item_bound() -> None:
    predictor = CountingPredictor()

    answers = _submit_all(_state(predictor), [f"MRI {n}" for n in range(7)], max_items=3)

    assert sorted(predictor.calls) == [1, 3, 3]
    assert len(answers) == 7 and all(isinstance(a, Prediction) for a in answers)


def test_one_bad_item_fails_alone() -> None:
    predictor = CountingPredictor()

    good, bad, other = _submit_all(_state(predictor), ["MRI", "bad", "Physical therapy"], 16)

    assert isinstance(bad, InvalidInputError) and "request" in str(bad)
    assert isinstance(good, Prediction) and isinstance(other, Prediction)
    assert predictor.calls == [3, 1, 1, 1]
