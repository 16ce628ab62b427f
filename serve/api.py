"""The HTTP API and the web page (FastAPI), for one model loaded at startup.

Build the app with :func:`create_app` and run it with uvicorn (``imr-outcome serve``).
Nothing is loaded at import: the lifespan loads the model in a worker thread, so
``GET /healthz`` answers at once and ``GET /readyz`` turns 200 once the model is loaded.

Endpoints (bodies in :mod:`imr_outcome.serve.api_schemas`, errors in
:mod:`imr_outcome.serve.api_errors`):

- ``POST /v1/predict``: one request + summary -> :class:`Prediction`.
- ``POST /v1/predict/batch``: 1 to ``max_batch_items`` items -> predictions in order.
- ``POST /v1/similar``: the outcome rates of this kind of request and the k most similar
  past decisions (case number, date, request, outcome, similarity, rationale excerpt).
- ``POST /v1/letters``: a PDF/TXT letter upload -> its items with predictions (each
  from the item's request, the case summary and the patient's age/sex; the letter's
  decisions and rationales are never model inputs).
- ``GET /v1/model``: name, version, alias, training data fingerprint, held-out metrics,
  and for a followed alias the latest checks (``last_check``, ``last_reload``).
- ``POST /v1/admin/reload``: check the followed alias now and swap in the version it
  points at (:mod:`~imr_outcome.serve.model_follower`); 409 for a pinned URI.
- ``GET /healthz`` (alive), ``GET /readyz`` (model loaded), ``GET /docs``,
  ``GET /openapi.json``, the web page at ``/`` (files under ``static/``) and its icon.

With an API key in the settings every ``/v1/*`` route needs ``Authorization: Bearer``
(:mod:`~imr_outcome.serve.api_auth`). Model calls pass an :class:`InFlightGate`: when it
is full the API answers 503 with ``Retry-After``, before reading the body. Each request
has ``request_timeout_s`` in all: past it the API answers 504 and frees the model slot,
and the model is handed the same deadline; a client that disconnects frees its slot too
(:mod:`~imr_outcome.serve.api_calls`). Case text is never logged at INFO or above.
Once the server drains (SIGTERM, :mod:`~imr_outcome.serve.api_drain`), new requests get
503 with ``Retry-After`` while those in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from imr_outcome.errors import InvalidInputError
from imr_outcome.model.defaults import SIMILAR_K
from imr_outcome.model.prediction import Prediction
from imr_outcome.serve.api_auth import ApiKeyMiddleware
from imr_outcome.serve.api_calls import (
    MICRO_BATCH_ITEMS,
    MICRO_BATCH_WAIT_S,
    MicroBatcher,
    ModelCall,
    ServerState,
    call_model,
    call_model_batched,
)
from imr_outcome.serve.api_drain import DrainMiddleware
from imr_outcome.serve.api_errors import (
    CatchAllMiddleware,
    NotFollowing,
    SafeJSONResponse,
    TimedOut,
    TooLarge,
    install_error_handlers,
)
from imr_outcome.serve.api_letters import letter_metadata, parse_upload
from imr_outcome.serve.api_limits import (
    BodyLimitMiddleware,
    InFlightGate,
    ServeSettings,
    ShedLoadMiddleware,
)
from imr_outcome.serve.api_openapi import ERROR_RESPONSES, openapi_builder
from imr_outcome.serve.api_schemas import (
    DEFAULT_TOP_K,
    MAX_TOP_K,
    BatchRequest,
    BatchResponse,
    ErrorBody,
    Health,
    LetterItem,
    LetterResponse,
    Metadata,
    ModelCard,
    PredictRequest,
    ReloadReport,
    SimilarRequest,
    SimilarResponse,
)
from imr_outcome.serve.model_follower import (
    Loader,
    ModelFollower,
    load_at_startup,
    load_predictor,
)
from imr_outcome.serve.predictor import PredictInput, Source, check_length

logger = logging.getLogger(__name__)

#: The web page's files (index.html, app.js, style.css), packaged with the module.
STATIC_DIR = Path(__file__).with_name("static")
#: The files under ``/static/`` and their media types.
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
#: The page loads nothing from elsewhere; this header makes the browser enforce it.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: The icon of the page (the browser tab): a scale, in two colours of the page.
FAVICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">'
    '<rect width="32" height="32" rx="6" fill="#1f4e79"/>'
    '<path d="M16 6v20M9 26h14M6 11h20" stroke="#fff" stroke-width="2" fill="none"/>'
    '<path d="M6 11l-3 7h6zM26 11l-3 7h6z" fill="#f2c14e"/></svg>'
)
#: Request paths that need a model slot (refused at once while the gate is full).
MODEL_PATHS = frozenset({"/v1/predict", "/v1/predict/batch", "/v1/letters"})


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


def _metadata(metadata: Metadata | None) -> dict[str, Any] | None:
    return None if metadata is None else metadata.values()


def _check_count(field_name: str, n: int, limit: int) -> None:
    if n > limit:
        raise TooLarge(
            field_name, f"{n} items, more than the limit of {limit}; split them into batches"
        )


def create_app(
    settings: ServeSettings,
    *,
    loader: Loader = load_predictor,
    on_load_failure: Callable[[], None] = lambda: None,
) -> FastAPI:
    """The FastAPI app serving one model (loaded by the lifespan, not here).

    Args:
        settings: model URI, limits and API key.
        loader: loads the predictor, in a worker thread: at startup, and for each new
            version of a followed alias (with ``model_uri`` set to
            ``models:/<name>/<version>``).
        on_load_failure: called after loading failed (``imr-outcome serve`` stops the
            server); the app keeps answering ``/readyz`` with 503 and the reason.

    Returns:
        The app; ``app.state.server`` is its :class:`ServerState`, ``app.state.follower``
        its :class:`ModelFollower`.
    """
    state = ServerState(settings)
    follower = ModelFollower(state, loader)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.gate = InFlightGate(
            settings.max_in_flight, settings.max_waiting, settings.wait_timeout_s
        )
        state.executor = ThreadPoolExecutor(settings.max_in_flight, thread_name_prefix="model")
        state.batcher = MicroBatcher(
            state, MICRO_BATCH_WAIT_S, min(MICRO_BATCH_ITEMS, settings.max_batch_items)
        )
        loading = asyncio.create_task(load_at_startup(state, loader, on_load_failure))
        following = asyncio.create_task(follower.follow())
        try:
            yield
        finally:
            follower.close()
            for task in (following, loading):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            state.executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="imr-outcome",
        summary="Likely California IMR outcome (Upheld / Overturned) with evidence spans.",
        description="A statistical estimate from past IMR decisions; not legal or medical "
        "advice. Evidence offsets index the request and summary strings sent.",
        version="1",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.server = state
    app.state.follower = follower
    app.openapi = openapi_builder(app, settings)  # type: ignore[method-assign]
    install_error_handlers(app)

    def body_limit(path: str) -> int:
        if path == "/v1/letters":
            return settings.max_upload_bytes + 64 * 1024  # multipart framing and fields
        return settings.max_json_bytes

    def gate_full() -> str | None:
        return None if state.gate is None else state.gate.full()

    # outermost last: catch-all > drain > API key > load shedding > body limit > routes,
    # so a request is authenticated, then admitted, before any of its body is read
    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(
        ShedLoadMiddleware,
        full=gate_full,
        paths=MODEL_PATHS,
        retry_after_s=settings.retry_after_s,
    )
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(DrainMiddleware, drain=state.drain, retry_after_s=settings.retry_after_s)
    app.add_middleware(CatchAllMiddleware)

    def deadline() -> float:
        return time.monotonic() + settings.request_timeout_s

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

    @app.get("/v1/model", response_model=ModelCard, tags=["model"], responses=ERROR_RESPONSES)
    async def model_card() -> ModelCard:
        """The model answering now: name, version, alias, data fingerprint, held-out
        metrics; for a followed alias also the latest checks of it."""
        state.ready()
        assert state.card is not None
        return follower.card(state.card)

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadReport,
        tags=["model"],
        responses={
            **ERROR_RESPONSES,
            409: {"model": ErrorBody, "description": "a pinned model URI: nothing to follow"},
        },
    )
    async def reload() -> ReloadReport:
        """Check the followed alias now; a new version is loaded, tested and swapped in.

        Answers when the check has ended (a load takes seconds); requests keep being
        answered meanwhile. A version refused before is tried again.
        """
        state.ready()
        if follower.uri is None:
            raise NotFollowing(
                f"the server serves the pinned URI {settings.model_uri}, which never "
                "changes; start it with --model models:/<name>@<alias> to follow an alias"
            )
        return await follower.check_now()

    @app.post("/v1/predict", response_model=Prediction, tags=["predict"], responses=ERROR_RESPONSES)
    async def predict(body: PredictRequest, request: Request) -> Prediction:
        """Predict one item; evidence offsets index ``request`` / ``summary`` as sent."""
        until = deadline()
        state.ready()
        item = _validated(
            "", body.request, body.summary, _metadata(body.metadata), None, settings.max_chars
        )
        if not body.explain and not body.similar and state.batcher is not None:
            return await call_model_batched(state.batcher, request, item, until)
        similar_k = SIMILAR_K if body.similar else 0
        call = ModelCall([item], [body.explain], body.top_k, similar_k)
        [prediction] = await call_model(state, request, call, until)
        return prediction

    @app.post(
        "/v1/similar", response_model=SimilarResponse, tags=["predict"], responses=ERROR_RESPONSES
    )
    async def similar(body: SimilarRequest, request: Request) -> SimilarResponse:
        """The outcome rates of this kind of request and the k most similar past decisions
        (from the model's training letters; the rationale excerpts are display only)."""
        until = deadline()
        state.ready()
        item = _validated(
            "", body.request, body.summary, _metadata(body.metadata), None, settings.max_chars
        )
        call = ModelCall([item], [False], DEFAULT_TOP_K, body.k)
        [prediction] = await call_model(state, request, call, until)
        return SimilarResponse(
            outcome_rates=prediction.outcome_rates,
            rate_summary=prediction.rate_summary,
            similar=prediction.similar,
            model_name=prediction.model_name,
            model_version=prediction.model_version,
        )

    @app.post(
        "/v1/predict/batch",
        response_model=BatchResponse,
        tags=["predict"],
        responses=ERROR_RESPONSES,
    )
    async def predict_batch(body: BatchRequest, request: Request) -> BatchResponse:
        """Predict 1 to ``max_batch_items`` items together, in input order."""
        until = deadline()
        state.ready()
        if not body.items:
            raise InvalidInputError(
                "items", f"is empty; send 1 to {settings.max_batch_items} items"
            )
        _check_count("items", len(body.items), settings.max_batch_items)
        items = [
            _validated(
                f"items[{n}].",
                i.request,
                i.summary,
                _metadata(i.metadata),
                None,
                settings.max_chars,
            )
            for n, i in enumerate(body.items)
        ]
        call = ModelCall(items, [body.explain] * len(items), body.top_k)
        return BatchResponse(predictions=await call_model(state, request, call, until))

    @app.post(
        "/v1/letters",
        response_model=LetterResponse,
        tags=["predict"],
        responses={
            **ERROR_RESPONSES,
            415: {"model": ErrorBody, "description": "not a PDF or text"},
        },
    )
    async def letters(
        request: Request,
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
        until = deadline()
        state.ready()
        files = (await request.form()).getlist("file")
        if len(files) > 1:
            raise InvalidInputError(
                "file", f"{len(files)} files were sent; upload one letter per request"
            )
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise TooLarge(
                "file", f"larger than {settings.max_upload_bytes} bytes; upload one letter"
            )
        filename = file.filename or ""
        try:
            with anyio.fail_after(max(until - time.monotonic(), 0.0)):
                letter = await anyio.to_thread.run_sync(
                    parse_upload,
                    data,
                    filename,
                    file.content_type or "",
                    abandon_on_cancel=True,
                )
        except TimeoutError:
            raise TimedOut(
                f"reading the letter took longer than this server's limit of "
                f"{settings.request_timeout_s:g} s; upload the letter as .txt"
            ) from None
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
        case_number = letter.case_number.value if letter.case_number else None
        # the letter's own decisions are never shown as similar past decisions
        call = ModelCall(
            inputs, [explain] * len(inputs), top_k, SIMILAR_K, [case_number] * len(inputs)
        )
        predictions = await call_model(state, request, call, until)
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

    @app.get("/favicon.svg", include_in_schema=False)
    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        """The page's icon (SVG, also at the path browsers try by default)."""
        return Response(
            FAVICON_SVG,
            media_type="image/svg+xml",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return app
