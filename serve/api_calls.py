"""How the API calls the model: within each request's deadline, freed when its client leaves.

A model call holds one slot of the server's :class:`~imr_outcome.serve.api_limits.InFlightGate`
and runs on one of the ``max_in_flight`` model threads (:func:`call_model`); it races its
deadline and its client's disconnect (:func:`answer_or_give_up`), and whichever ends first
decides: the predictions, a 504 (:class:`~imr_outcome.serve.api_errors.TimedOut`) or
nothing to answer (:class:`~imr_outcome.serve.api_errors.ClientGone`); the model is handed
the same deadline (:func:`score`). Concurrent single-item calls without evidence are merged
into one model call by the :class:`MicroBatcher` (:func:`call_model_batched`). The app
(:mod:`imr_outcome.serve.api`) holds a :class:`ServerState`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from fastapi import Request

from imr_outcome.errors import ImrOutcomeError
from imr_outcome.model.prediction import Prediction
from imr_outcome.model.warnings import evidence_budget_warning
from imr_outcome.serve.api_drain import Drain
from imr_outcome.serve.api_errors import ClientGone, NotReady, TimedOut
from imr_outcome.serve.api_limits import InFlightGate, Saturated, ServeSettings
from imr_outcome.serve.api_schemas import DEFAULT_TOP_K, ModelCard
from imr_outcome.serve.predictor import PredictInput, Predictor

#: The API's logger: its per-request lines ("predict 1 item(s) ...") keep the name
#: ``imr_outcome.serve.api`` that log filters and the JSON log's ``logger`` field show.
logger = logging.getLogger("imr_outcome.serve.api")

T = TypeVar("T")


@dataclass
class ServerState:
    """What the app holds between requests (``app.state.server``).

    Attributes:
        settings: the server settings.
        predictor / card: the loaded model and its card; None until loaded.
        error: why loading failed, else None.
        gate: the model-call limiter, created in the lifespan's event loop.
        executor: the ``max_in_flight`` threads model calls run on (lifespan-owned).
        batcher: merges concurrent ``/v1/predict`` calls without evidence
            (:class:`MicroBatcher`), created in the lifespan's event loop.
        drain: whether the server is shutting down, and the requests in flight
            (:class:`~imr_outcome.serve.api_drain.Drain`, ``settings.drain_s`` long).
    """

    settings: ServeSettings
    predictor: Predictor | None = None
    card: ModelCard | None = None
    error: str | None = None
    gate: InFlightGate | None = field(default=None, repr=False)
    executor: ThreadPoolExecutor | None = field(default=None, repr=False)
    batcher: MicroBatcher | None = field(default=None, repr=False)
    drain: Drain = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.drain = Drain(self.settings.drain_s)

    def ready(self) -> tuple[Predictor, InFlightGate, ThreadPoolExecutor]:
        """The predictor, gate and model threads.

        Raises:
            NotReady: the model is still loading or failed to load.
        """
        if self.error is not None:
            raise NotReady(f"the model failed to load: {self.error}")
        if self.predictor is None or self.gate is None or self.executor is None:
            raise NotReady(f"loading the model {self.settings.model_uri}; retry shortly")
        return self.predictor, self.gate, self.executor


def score(
    predictor: Predictor,
    items: Sequence[PredictInput],
    *,
    explain: Sequence[bool],
    top_k: int,
    deadline: float,
    max_explain_chars: int,
    similar_k: int = 0,
    exclude_groups: Sequence[str | None] | None = None,
) -> list[Prediction]:
    """The one place the API calls the model (on a model thread).

    Args:
        predictor: the loaded model.
        items: n validated inputs.
        explain: per item, whether evidence was asked for.
        top_k: evidence spans per direction.
        deadline: :func:`time.monotonic` time by which the request must be answered; handed
            to the model as ``predict_batch(..., deadline=deadline)``, so that it stops
            its own work (above all integrated gradients) in time.
        max_explain_chars: items longer than this (request + summary, in characters) are
            predicted without evidence and get :func:`evidence_budget_warning`.
        similar_k: similar past decisions to return in full per item (0: ids only).
        exclude_groups: per item, a letter whose decisions are never returned as similar.

    Returns:
        n predictions, in input order.
    """
    sizes = [len(item.request) + len(item.summary) for item in items]
    wanted = [ask and size <= max_explain_chars for ask, size in zip(explain, sizes, strict=True)]
    kwargs: dict[str, Any] = {"top_k": top_k, "deadline": deadline, "similar_k": similar_k}
    found: dict[int, Prediction] = {}
    for explained in (False, True):
        chosen = [n for n, want in enumerate(wanted) if want == explained]
        if chosen:
            excluded = None if exclude_groups is None else [exclude_groups[n] for n in chosen]
            predictions = predictor.predict_batch(
                [items[n] for n in chosen], explain=explained, exclude_groups=excluded, **kwargs
            )
            found.update(zip(chosen, predictions, strict=True))
    out = []
    for n, (ask, want) in enumerate(zip(explain, wanted, strict=True)):
        prediction = found[n]
        if ask and not want:
            prediction = prediction.with_warning(
                evidence_budget_warning(sizes[n], max_explain_chars)
            )
        out.append(prediction)
    return out


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def answer_or_give_up(
    future: asyncio.Future[T], request: Request, deadline: float, timeout_s: float
) -> T:
    """The result of ``future``, unless the deadline passes or the client goes first.

    Giving up cancels ``future`` (a model call that has not started never starts; one that
    runs stops at the deadline it was given, see :func:`score`).

    Raises:
        TimedOut: the deadline passed.
        ClientGone: the client disconnected.
    """
    ended = await _race(future, _disconnected(request), deadline)
    if ended == "done":
        return future.result()
    if ended == "gone":
        raise ClientGone("the client disconnected")
    raise _timed_out(timeout_s)


async def _race(
    future: asyncio.Future[Any], gone: Awaitable[Any], deadline: float
) -> Literal["done", "gone", "late"]:
    """Wait for ``future`` until ``gone`` completes or ``deadline`` passes.

    Returns:
        ``"done"`` when ``future`` finished first; otherwise ``future`` is cancelled (a model
        call that has not started never starts) and the answer says why: ``"gone"`` (the
        callers left) or ``"late"`` (the deadline passed).
    """
    watcher = asyncio.ensure_future(gone)
    racing: set[asyncio.Future[Any]] = {future, watcher}
    try:
        done, _ = await asyncio.wait(
            racing,
            timeout=max(deadline - time.monotonic(), 0.0),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        watcher.cancel()
    if future in done:
        return "done"
    future.cancel()
    return "gone" if watcher in done else "late"


def _timed_out(timeout_s: float) -> TimedOut:
    """The 504 for a request that reached its deadline (``timeout_s``: the server's limit)."""
    return TimedOut(
        f"the estimate took longer than this server's limit of {timeout_s:g} s and was "
        "stopped; send a shorter summary, leave out the evidence (explain: false), or "
        "retry when the server is less busy"
    )


@dataclass(frozen=True)
class ModelCall:
    """What one request asks of the model."""

    items: list[PredictInput]
    explain: list[bool]
    top_k: int
    similar_k: int = 0
    exclude_groups: list[str | None] | None = None


#: Micro-batching of ``/v1/predict`` calls without evidence: calls arriving within this
#: many seconds of the first one waiting go to the model together (one forward pass over
#: all their windows, sorted by length), at most :data:`MICRO_BATCH_ITEMS` (and at most
#: ``max_batch_items``) at a time. 5 ms is small beside a transformer forward pass
#: (tens to hundreds of ms on a CPU) and long enough to catch concurrent clients.
def _score_on_model_thread(
    state: ServerState,
    items: Sequence[PredictInput],
    explain: Sequence[bool],
    top_k: int,
    deadline: float,
    similar_k: int = 0,
    exclude_groups: Sequence[str | None] | None = None,
) -> asyncio.Future[list[Prediction]]:
    """Start :func:`score` on the model executor; the caller holds a model slot."""
    predictor, _, executor = state.ready()
    return asyncio.get_running_loop().run_in_executor(
        executor,
        functools.partial(
            score,
            predictor,
            items,
            explain=explain,
            top_k=top_k,
            deadline=deadline,
            max_explain_chars=state.settings.max_explain_chars,
            similar_k=similar_k,
            exclude_groups=exclude_groups,
        ),
    )


MICRO_BATCH_WAIT_S = 0.005
MICRO_BATCH_ITEMS = 16


@dataclass
class _Waiting:
    item: PredictInput
    deadline: float
    answer: asyncio.Future[Prediction]


class MicroBatcher:
    """Collects concurrent single-item predictions without evidence into one model call.

    Runs on the event loop (no locks needed). A batch holds one model slot of the gate,
    so ``max_waiting`` counts waiting batches, not requests. If the merged call fails, its
    items are retried one by one, so one bad item cannot fail the others.

    Args:
        state: the server state (predictor, gate, model threads).
        wait_s: the wait window after the first waiting call, >= 0.
        max_items: most items per model call, >= 1.
    """

    def __init__(self, state: ServerState, wait_s: float, max_items: int) -> None:
        self.state = state
        self.wait_s = wait_s
        self.max_items = max_items
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, item: PredictInput, deadline: float) -> asyncio.Future[Prediction]:
        """A future of ``item``'s prediction; cancel it to drop the item."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Prediction] = loop.create_future()
        self._waiting.append(_Waiting(item, deadline, answer))
        if len(self._waiting) >= self.max_items:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.wait_s, self._flush)
        return answer

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _call(self, live: list[_Waiting], deadline: float) -> list[Prediction] | None:
        """The predictions of ``live``'s items, or None when every caller has gone.

        The slot is never held past ``deadline`` nor after the last caller left: waiting
        stops then (a model call that has not started is cancelled; one that runs ends on
        its own thread, bounded by the deadline it was given).

        Raises:
            Saturated: no slot in time. TimedOut: the deadline passed.
        """
        _, gate, _ = self.state.ready()
        items = [entry.item for entry in live]
        async with gate.slot(timeout_s=deadline - time.monotonic()):
            future = _score_on_model_thread(
                self.state, items, [False] * len(items), DEFAULT_TOP_K, deadline
            )
            ended = await _race(future, asyncio.wait([e.answer for e in live]), deadline)
            if ended == "done":
                return future.result()
            if ended == "gone":
                return None
            raise _timed_out(self.state.settings.request_timeout_s)

    async def _run(self, batch: list[_Waiting]) -> None:
        live = [entry for entry in batch if not entry.answer.done()]
        if not live:
            return
        deadline = max(entry.deadline for entry in live)
        try:
            predictions = await self._call(live, deadline)
        except Exception as exc:
            if len(live) == 1 or not isinstance(exc, ImrOutcomeError) or isinstance(exc, Saturated):
                for entry in live:
                    if not entry.answer.done():
                        entry.answer.set_exception(exc)
                return
            for entry in live:  # one bad item must not fail the others
                await self._run([entry])
            return
        if predictions is None:  # every caller left
            return
        if len(live) > 1:
            logger.debug("micro-batch of %d predictions", len(live))
        for entry, prediction in zip(live, predictions, strict=True):
            if not entry.answer.done():
                entry.answer.set_result(prediction)


async def call_model(
    state: ServerState, request: Request, call: ModelCall, deadline: float
) -> list[Prediction]:
    """Predict on a model thread while holding a model slot, within ``deadline``.

    Model calls run on a fixed pool of ``max_in_flight`` threads (not anyio's pool of up
    to 40): every thread that calls torch gets its own malloc arena, and a growing set of
    threads shows up as resident memory that grows run after run.

    Raises:
        Saturated: no slot (wait list full, or none freed in time).
        TimedOut / ClientGone: see :func:`answer_or_give_up`; the slot is freed at once.
    """
    _, gate, _ = state.ready()
    settings = state.settings
    started = time.perf_counter()
    outcome = "ok"
    try:
        async with gate.slot(timeout_s=deadline - time.monotonic()):
            future = _score_on_model_thread(
                state,
                call.items,
                call.explain,
                call.top_k,
                deadline,
                call.similar_k,
                call.exclude_groups,
            )
            return await answer_or_give_up(future, request, deadline, settings.request_timeout_s)
    except (TimedOut, ClientGone) as exc:
        outcome = "timed out" if isinstance(exc, TimedOut) else "client disconnected"
        raise
    finally:
        logger.info(
            "predict %d item(s) explain=%d: %s in %.0f ms",
            len(call.items),
            sum(call.explain),
            outcome,
            (time.perf_counter() - started) * 1000,
        )


async def call_model_batched(
    batcher: MicroBatcher, request: Request, item: PredictInput, deadline: float
) -> Prediction:
    """One prediction without evidence through the micro-batcher, within ``deadline``.

    Raises:
        Saturated, TimedOut, ClientGone: as :func:`call_model`.
    """
    batcher.state.ready()
    started = time.perf_counter()
    outcome = "ok"
    try:
        answer = batcher.submit(item, deadline)
        timeout = batcher.state.settings.request_timeout_s
        return await answer_or_give_up(answer, request, deadline, timeout)
    except (TimedOut, ClientGone) as exc:
        outcome = "timed out" if isinstance(exc, TimedOut) else "client disconnected"
        raise
    finally:
        logger.info(
            "predict 1 item(s) explain=0: %s in %.0f ms (micro-batched)",
            outcome,
            (time.perf_counter() - started) * 1000,
        )
