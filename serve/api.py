"""The HTTP API and the web page (FastAPI), for one model loaded at startup.

Build the app with :func:`create_app` and run it with uvicorn (``imr-outcome serve``).
Nothing is loaded at import: the lifespan loads the model in a worker thread, so
``GET /healthz`` answers at once and ``GET /readyz`` turns 200 once the model is loaded.

Endpoints (bodies in :mod:`imr_outcome.serve.api_schemas`, errors in
:mod:`imr_outcome.serve.api_errors`):

- ``POST /v1/predict``: one request + summary -> :class:`Prediction`.
- ``POST /v1/predict/batch``: 1 to ``max_batch_items`` items -> predictions in order.
- ``POST /v1/letters``: a PDF/TXT letter upload -> its items with predictions (each
  from the item's request, the case summary and the patient's age/sex; the letter's
  decisions and rationales are never model inputs).
- ``GET /v1/model``: name, version, alias, training data fingerprint, held-out metrics.
- ``GET /healthz`` (alive), ``GET /readyz`` (model loaded), ``GET /docs``,
  ``GET /openapi.json``, and the web page at ``/`` (files under ``static/``).

Model calls pass an :class:`InFlightGate`: when it is full the API answers 503 with
``Retry-After``. Case text is never logged at INFO or above.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException

from imr_outcome.errors import ImrOutcomeError, InvalidInputError
from imr_outcome.serve.api_errors import (
    CatchAllMiddleware,
    NotReady,
    TooLarge,
    install_error_handlers,
)
from imr_outcome.serve.api_letters import letter_metadata, parse_upload
from imr_outcome.serve.api_limits import BodyLimitMiddleware, InFlightGate, ServeSettings
from imr_outcome.serve.api_model import describe_model
from imr_outcome.serve.api_schemas import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    Health,
    LetterItem,
    LetterResponse,
    ModelCard,
    PredictRequest,
)
from imr_outcome.serve.predictor import PredictInput, Predictor, Source, check_length
from imr_outcome.serve.schemas import Prediction

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: The web page's files (index.html, app.js, style.css), packaged with the module.
STATIC_DIR = Path(__file__).with_name("static")
#: The files under ``/static/`` and their media types.
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
#: The page loads nothing from elsewhere; this header makes the browser enforce it.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: Loads the predictor for the settings (runs in a worker thread at startup).
Loader = Callable[[ServeSettings], Predictor]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        413: "text, items or body over the server's limits",
        422: "invalid input (the field and the fix are named)",
        503: "model not loaded yet, or busy (see Retry-After)",
    }.items()
}


def load_predictor(settings: ServeSettings) -> Predictor:
    """The default :data:`Loader`: :meth:`Predictor.load` of ``settings.model_uri``."""
    return Predictor.load(settings.model_uri, max_chars=settings.max_chars)


@dataclass
class ServerState:
    """What the app holds between requests (``app.state.server``).

    Attributes:
        settings: the server settings.
        predictor / card: the loaded model and its card; None until loaded.
        error: why loading failed, else None.
        gate: the model-call limiter, created in the lifespan's event loop.
        executor: the ``max_in_flight`` threads model calls run on (lifespan-owned).
    """

    settings: ServeSettings
    predictor: Predictor | None = None
    card: ModelCard | None = None
    error: str | None = None
    gate: InFlightGate | None = field(default=None, repr=False)
    executor: ThreadPoolExecutor | None = field(default=None, repr=False)

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


async def _load(state: ServerState, loader: Loader, on_failure: Callable[[], None]) -> None:
    started = time.perf_counter()
    try:
        predictor = await anyio.to_thread.run_sync(loader, state.settings)
        card = await anyio.to_thread.run_sync(describe_model, predictor, state.settings)
    except ImrOutcomeError as exc:
        state.error = str(exc)
    except Exception as exc:  # a broken artifact must not leave /readyz "loading" forever
        state.error = f"{type(exc).__name__} while loading; see the server log"
        logger.exception("loading %s failed", state.settings.model_uri)
    else:
        state.predictor, state.card = predictor, card
        logger.info(
            "model %s version %s ready in %.1f s",
            card.name,
            card.version,
            time.perf_counter() - started,
        )
        return
    logger.error("cannot serve: %s", state.error)
    on_failure()


def _validated(
    prefix: str,
    request: str,
    summary: str,
    metadata: Mapping[str, Any] | None,
    source: Source | None,
    max_chars: int,
) -> PredictInput:
    """One item as :class:`PredictInput`; field names get ``prefix`` (``"items[3]."``).

    Raises:
        TooLarge: the request or summary is over ``max_chars``.
        InvalidInputError: anything else :meth:`PredictInput.of` rejects.
    """
    for name, text in (("request", request), ("summary", summary)):
        try:
            check_length(f"{prefix}{name}", text, max_chars)
        except InvalidInputError as exc:
            raise TooLarge(exc.field, exc.reason) from None
    try:
        return PredictInput.of(request, summary, metadata, source=source, max_chars=max_chars)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{prefix}{exc.field}", exc.reason) from None


def _check_count(field_name: str, n: int, limit: int) -> None:
    if n > limit:
        raise TooLarge(
            field_name, f"{n} items, more than the limit of {limit}; split them into batches"
        )


async def _predict(
    gate: InFlightGate,
    executor: ThreadPoolExecutor,
    predictor: Predictor,
    items: list[PredictInput],
    explain: bool,
    top_k: int,
) -> list[Prediction]:
    """Predict ``items`` on a model thread while holding a model slot.

    Model calls run on a fixed pool of ``max_in_flight`` threads (not anyio's pool of up
    to 40): every thread that calls torch gets its own malloc arena, and a growing set of
    threads shows up as resident memory that grows run after run.
    """
    started = time.perf_counter()
    async with gate.slot():
        predictions = await asyncio.get_running_loop().run_in_executor(
            executor, lambda: predictor.predict_batch(items, explain=explain, top_k=top_k)
        )
    logger.info(
        "predicted %d item(s) (explain=%s) in %.0f ms",
        len(items),
        explain,
        (time.perf_counter() - started) * 1000,
    )
    return predictions


def create_app(
    settings: ServeSettings,
    *,
    loader: Loader = load_predictor,
    on_load_failure: Callable[[], None] = lambda: None,
) -> FastAPI:
    """The FastAPI app serving one model (loaded by the lifespan, not here).

    Args:
        settings: model URI and limits.
        loader: loads the predictor (called once, in a worker thread, at startup).
        on_load_failure: called after loading failed (``imr-outcome serve`` stops the
            server); the app keeps answering ``/readyz`` with 503 and the reason.

    Returns:
        The app; ``app.state.server`` is its :class:`ServerState`.
    """
    state = ServerState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.gate = InFlightGate(
            settings.max_in_flight, settings.max_waiting, settings.wait_timeout_s
        )
        state.executor = ThreadPoolExecutor(settings.max_in_flight, thread_name_prefix="model")
        loading = asyncio.create_task(_load(state, loader, on_load_failure))
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            state.executor.shutdown(wait=True)

    app = FastAPI(
        title="imr-outcome",
        summary="Likely California IMR outcome (Upheld / Overturned) with evidence spans.",
        description="A statistical estimate from past IMR decisions; not legal or medical "
        "advice. Evidence offsets index the request and summary strings sent.",
        version="1",
        lifespan=lifespan,
    )
    app.state.server = state
    install_error_handlers(app)

    def body_limit(path: str) -> int:
        if path == "/v1/letters":
            return settings.max_upload_bytes + 64 * 1024  # multipart framing and fields
        return settings.max_json_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(CatchAllMiddleware)

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Alive: the process answers (the model may still be loading)."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "loading or failed"}},
    )
    async def readyz() -> Any:
        """Ready: 200 once the model is loaded, else 503 with the reason."""
        if state.predictor is not None:
            return Health(status="ok")
        status = "failed" if state.error else "loading"
        detail = state.error or f"loading {settings.model_uri}"
        return JSONResponse(
            Health(status=status, detail=detail).model_dump(),
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    @app.get("/v1/model", response_model=ModelCard, tags=["model"], responses=_ERRORS)
    async def model_card() -> ModelCard:
        """The loaded model: name, version, alias, data fingerprint, held-out metrics."""
        state.ready()
        assert state.card is not None
        return state.card

    @app.post("/v1/predict", response_model=Prediction, tags=["predict"], responses=_ERRORS)
    async def predict(body: PredictRequest) -> Prediction:
        """Predict one item; evidence offsets index ``request`` / ``summary`` as sent."""
        predictor, gate, executor = state.ready()
        item = _validated("", body.request, body.summary, body.metadata, None, settings.max_chars)
        [prediction] = await _predict(gate, executor, predictor, [item], body.explain, body.top_k)
        return prediction

    @app.post(
        "/v1/predict/batch", response_model=BatchResponse, tags=["predict"], responses=_ERRORS
    )
    async def predict_batch(body: BatchRequest) -> BatchResponse:
        """Predict 1 to ``max_batch_items`` items together, in input order."""
        predictor, gate, executor = state.ready()
        if not body.items:
            raise InvalidInputError(
                "items", f"is empty; send 1 to {settings.max_batch_items} items"
            )
        _check_count("items", len(body.items), settings.max_batch_items)
        items = [
            _validated(f"items[{n}].", i.request, i.summary, i.metadata, None, settings.max_chars)
            for n, i in enumerate(body.items)
        ]
        predictions = await _predict(gate, executor, predictor, items, body.explain, body.top_k)
        return BatchResponse(predictions=predictions)

    @app.post(
        "/v1/letters",
        response_model=LetterResponse,
        tags=["predict"],
        responses={**_ERRORS, 415: {"model": ErrorBody, "description": "not a PDF or text"}},
    )
    async def letters(
        file: Annotated[UploadFile, File(description="The letter, .pdf or .txt.")],
        explain: Annotated[bool, Form(description="Also return evidence spans.")] = False,
        top_k: Annotated[
            int, Form(ge=1, le=MAX_TOP_K, description="Evidence spans per direction.")
        ] = DEFAULT_TOP_K,
    ) -> LetterResponse:
        """Parse an uploaded IMR letter and predict each disputed item.

        Inputs are each item's request, the case summary and the patient's age/sex; the
        letter's decisions and rationales are never model inputs (``letter_decision``
        is returned for comparison only).
        """
        predictor, gate, executor = state.ready()
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise TooLarge(
                "file", f"larger than {settings.max_upload_bytes} bytes; upload one letter"
            )
        filename = file.filename or ""
        letter = await anyio.to_thread.run_sync(
            parse_upload, data, filename, file.content_type or ""
        )
        _check_count("file", len(letter.items), settings.max_batch_items)
        metadata = letter_metadata(letter)
        summary = letter.summary.value
        inputs = [
            _validated(
                f"items[{item.index}].",
                item.request.value,
                summary,
                metadata,
                "dwc",
                settings.max_chars,
            )
            for item in letter.items
        ]
        predictions = await _predict(gate, executor, predictor, inputs, explain, top_k)
        return LetterResponse(
            filename=filename,
            case_number=letter.case_number.value if letter.case_number else None,
            summary=summary,
            items=[
                LetterItem(
                    index=item.index,
                    request=item.request.value,
                    letter_decision=item.outcome.decision.value.value,
                    prediction=prediction,
                )
                for item, prediction in zip(letter.items, predictions, strict=True)
            ],
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The web page."""
        return FileResponse(
            STATIC_DIR / "index.html",
            headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        """The page's script and style sheet (a fixed list: nothing else is readable)."""
        if name not in STATIC_FILES:
            raise HTTPException(404, "Not Found")
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name])

    return app
